"""Root conftest: makes the shared fixtures of tests/fixtures.py available everywhere."""

pytest_plugins = ["tests.fixtures", "tests.net"]

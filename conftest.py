"""Root conftest: makes the shared fixtures of tests/fixtures.py (and the session's ZFS
pool) available everywhere."""

pytest_plugins = ["tests.fixtures", "tests.net", "tests.store.zfs_fixture"]

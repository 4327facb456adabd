from __future__ import annotations

import click
import pytest

from jetpack.cli.options import human_age, human_size, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("24h", 86400),
        ("1h30m", 5400),
        ("7d", 604800),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10x", "1h30", "soon", "1..5h", "-5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a duration"):
        parse_duration(text)


def test_human_size_and_age() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(256 << 20) == "256.0 MiB"
    assert human_age(5) == "just now"
    assert human_age(61) == "1 minute ago"
    assert human_age(7200) == "2 hours ago"
    assert human_age(3 * 86400) == "3 days ago"

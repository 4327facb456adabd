"""Kubernetes-style resource quantities, parsed to exact values."""

from __future__ import annotations

from fractions import Fraction

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import Quantity


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0", 0),
        ("1", 1),
        ("100m", Fraction(1, 10)),
        ("250m", Fraction(1, 4)),
        ("0.3", Fraction(3, 10)),
        (".5", Fraction(1, 2)),
        ("1.", 1),
        ("1.5", Fraction(3, 2)),
        ("1k", 1000),
        ("1M", 10**6),
        ("1G", 10**9),
        ("2T", 2 * 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("1Ki", 1024),
        ("512Mi", 512 * 2**20),
        ("123Mi", 128974848),
        ("125952Ki", 128974848),
        ("128974848", 128974848),
        ("1.5Gi", 3 * 2**29),
        ("1Ti", 2**40),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("1e3", 1000),
        ("1E3", 1000),
        ("5e-3", Fraction(5, 1000)),
        ("1e+2", 100),
        ("+7", 7),
        ("-7", -7),
        ("100n", Fraction(1, 10**7)),
        ("3u", Fraction(3, 10**6)),
        ("007", 7),
        (2048, 2048),
        (0.5, Fraction(1, 2)),
        (0.3, Fraction(3, 10)),
    ],
)
def test_quantity_valid(raw: str | int | float, value: Fraction | int) -> None:
    quantity = Quantity(raw)
    assert quantity.value == value
    assert quantity.to_json() == raw


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " 1",
        "1 ",
        "1GB",
        "1g",
        "1mi",
        "1KiB",
        "1ki",
        "one",
        ".",
        "1..2",
        "1e",
        "e3",
        "--1",
        "0x10",
        "1_000",
        "\u0661",
        "1e999",
        "9" * 70,
        "10Ei",
        2**63,
        True,
        None,
        float("inf"),
    ],
)
def test_quantity_invalid(raw: object) -> None:
    with pytest.raises(ManifestError):
        Quantity(raw)  # type: ignore[arg-type]


def test_quantity_equality_is_by_value() -> None:
    assert Quantity("1G") == Quantity("1000M") == Quantity(10**9)
    assert hash(Quantity("1Ki")) == hash(Quantity(1024))
    assert Quantity("1Gi") != Quantity("1G")


@pytest.mark.parametrize(
    ("raw", "ceil", "milli"),
    [("100m", 1, 100), ("1.5", 2, 1500), ("2", 2, 2000), ("1n", 1, 1), ("1G", 10**9, 10**12)],
)
def test_quantity_integer_views_round_up(raw: str, ceil: int, milli: int) -> None:
    quantity = Quantity(raw)
    assert quantity.ceil() == ceil
    assert quantity.milli() == milli


def test_quantity_max_is_allowed() -> None:
    assert Quantity(str(2**63 - 1)).value == 2**63 - 1
    assert str(Quantity("512Mi")) == "512Mi"

"""Resource quantities, Kubernetes style (``100m``, ``1G``, ``512Mi``, ``1e3``, ``0.3``).

The spec wants quantities handled as exact integers in the resource's base unit, never
floats, so the value is kept as a :class:`fractions.Fraction` and the text as written
(for round trips). Grammar (Kubernetes ``resource.Quantity``)::

    quantity  ::= [+-] number suffix
    number    ::= digits | digits "." digits | digits "." | "." digits
    suffix    ::= "" | n | u | m | k | K | M | G | T | P | E      (powers of 1000)
                | Ki | Mi | Gi | Ti | Pi | Ei                     (powers of 1024)
                | (e | E) [+-] digits                             (power of ten)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Final

from jetpack.errors import ManifestError
from jetpack.schema._json import quote

if TYPE_CHECKING:
    from fractions import Fraction

# The schema is imported to start every pod, and most manifests hold no quantity: the
# pattern, the suffix table and the fractions and decimal modules are loaded on first use.


@cache
def _quantity() -> re.Pattern[str]:
    return re.compile(
        r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
        r"(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkKMGTPE])?)"
    )


@cache
def _decimal_suffix() -> dict[str, Fraction]:
    from fractions import Fraction

    # "K" is not in Kubernetes (nor in the Go code, which rejects "1K"), but the spec text
    # lists "E, P, T, G, M, K" as the metric suffixes, so it is accepted as kilo.
    return {
        "n": Fraction(1, 10**9),
        "u": Fraction(1, 10**6),
        "m": Fraction(1, 1000),
        "": Fraction(1),
        "k": Fraction(10**3),
        "K": Fraction(10**3),
        "M": Fraction(10**6),
        "G": Fraction(10**9),
        "T": Fraction(10**12),
        "P": Fraction(10**15),
        "E": Fraction(10**18),
    }


_BINARY_SUFFIX: Final = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
# Kubernetes caps quantities at 2^63-1 in magnitude; we reject beyond it rather than
# silently clamping, and bound the text so big exponents cannot cost time or memory.
MAX_MAGNITUDE: Final = 2**63 - 1
_MAX_TEXT: Final = 64
_MAX_EXPONENT: Final = 40


def _parse_text(text: str) -> Fraction:
    from fractions import Fraction

    if len(text) > _MAX_TEXT:
        raise ManifestError("", f"{quote(text)} is not a valid quantity (too long)")
    match = _quantity().fullmatch(text)
    if match is None:
        raise ManifestError(
            "", f"{quote(text)} is not a valid quantity", "e.g. 500m, 2, 1.5, 128M, 512Mi, 1e3"
        )
    sign, number, exponent, suffix = match.groups()
    value = Fraction(number if not number.endswith(".") else number[:-1])
    if exponent is not None:
        power = int(exponent[1:])
        if abs(power) > _MAX_EXPONENT:
            raise ManifestError("", f"{quote(text)} is not a valid quantity (exponent too large)")
        value *= Fraction(10) ** power
    elif suffix in _BINARY_SUFFIX:
        value *= _BINARY_SUFFIX[suffix]
    else:
        value *= _decimal_suffix()[suffix or ""]
    return -value if sign == "-" else value


@dataclass(frozen=True, eq=False)
class Quantity:
    """An exact resource quantity. Equal quantities compare equal whatever their spelling.

    Args:
        raw: the JSON value as written: a string such as ``"512Mi"``, or a JSON number.

    Raises:
        ManifestError: ``raw`` is not a quantity, or exceeds 2^63-1 in magnitude.
    """

    raw: str | int | float
    value: Fraction = field(init=False)

    def __post_init__(self) -> None:
        from decimal import Decimal
        from fractions import Fraction

        raw = self.raw
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ManifestError("", f"expected a quantity string, got {type(raw).__name__}")
        if isinstance(raw, str):
            value = _parse_text(raw)
        elif isinstance(raw, int):
            value = Fraction(raw)
        else:
            if not math.isfinite(raw):
                raise ManifestError("", f"{raw} is not a valid quantity")
            # repr() is the shortest text that reads back as the same float, i.e. what
            # the author most likely wrote ("0.3", not 0.299999...).
            value = Fraction(Decimal(repr(raw)))
        if abs(value) > MAX_MAGNITUDE:
            raise ManifestError("", f"{quote(raw)} is too large a quantity (over 2^63-1)")
        object.__setattr__(self, "value", value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return str(self.raw)

    def ceil(self) -> int:
        """The value in whole base units, rounded up (bytes, cores, operations...)."""
        return math.ceil(self.value)

    def milli(self) -> int:
        """The value in thousandths of a base unit, rounded up (CPU millicores)."""
        return math.ceil(self.value * 1000)

    def to_json(self) -> str | int | float:
        return self.raw

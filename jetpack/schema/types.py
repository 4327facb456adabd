"""The appc value types shared by image and pod manifests (spec ``types.md``).

Identifiers are ``str`` subclasses validated on construction, so holding an
``ACIdentifier`` proves it is valid. Name/value lists (labels, annotations,
environment) are immutable ordered mappings that also remember any unknown keys of
their item objects, so they round-trip unchanged.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

from jetpack.errors import ManifestError
from jetpack.schema._json import (
    EMPTY,
    Fields,
    FrozenDict,
    JSONObject,
    JSONValue,
    at,
    expect_list,
    quote,
    with_extra,
)

APPC_VERSION: Final = "0.8.11"

# Spec text regexes, matched in full. The Go code only checks the character class and
# the first/last character, so it accepts "a--b" or "a..b"; we follow the text.
_AC_IDENTIFIER = re.compile(r"[a-z0-9]+(?:[-._~/][a-z0-9]+)*")
_AC_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9.-]*")
# SemVer 2.0.0 (semver.org), with ASCII classes: Python's \d also matches other digits.
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_IMAGE_ID = re.compile(r"sha512-[0-9a-f]{128}")


# The patterns below are compiled on first use: most processes never match them, and
# compiling costs start-up time (this module is imported to start every pod).
@cache
def _image_id_prefix() -> re.Pattern[str]:
    return re.compile(r"sha512-[0-9a-f]{2,128}")


@cache
def _uuid() -> re.Pattern[str]:
    return re.compile(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    )


@cache
def _rfc3339() -> re.Pattern[str]:
    # RFC 3339 section 5.6 date-time; the spec insists on the "T" separator.
    return re.compile(
        r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
        r"(Z|[+-]([0-9]{2}):([0-9]{2}))"
    )


#: os label value -> the arch label values allowed with it (Go's ``types.ValidOSArch``).
OS_ARCH: Final[Mapping[str, frozenset[str]]] = FrozenDict(
    {
        "linux": frozenset(
            {
                "amd64",
                "i386",
                "aarch64",
                "aarch64_be",
                "armv6l",
                "armv7l",
                "armv7b",
                "ppc64",
                "ppc64le",
                "s390x",
            }
        ),
        "freebsd": frozenset({"amd64", "i386", "arm"}),
        "darwin": frozenset({"x86_64", "i386"}),
    }
)


def _need_str(value: object, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(path, f"{what} must be a string, got {type(value).__name__}")
    return value


class ACIdentifier(str):
    """An AC Identifier: ``^[a-z0-9]+([-._~/][a-z0-9]+)*$`` (image names, label names...)."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        _need_str(value, "", "an AC Identifier")
        if not _AC_IDENTIFIER.fullmatch(value):
            raise ManifestError(
                "",
                f"{quote(value)} is not a valid AC Identifier",
                "lower-case letters and digits, separated by single '-', '.', '_', '~' or '/'",
            )
        return super().__new__(cls, value)


class ACName(str):
    """An AC Name: ``^[a-z0-9]+([-][a-z0-9]+)*$`` (app, volume, port, mount point names)."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        _need_str(value, "", "an AC Name")
        if not _AC_NAME.fullmatch(value):
            raise ManifestError(
                "",
                f"{quote(value)} is not a valid AC Name",
                "lower-case letters and digits, separated by single '-'",
            )
        return super().__new__(cls, value)


class SemVer(str):
    """A SemVer 2.0.0 version string other than ``0.0.0`` (``acVersion``)."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        _need_str(value, "", "a version")
        match = _SEMVER.fullmatch(value)
        if not match:
            raise ManifestError("", f"{quote(value)} is not a SemVer 2.0.0 version (e.g. 0.8.11)")
        if value == "0.0.0":
            raise ManifestError("", "version 0.0.0 is not allowed")
        return super().__new__(cls, value)

    def _part(self, index: int) -> str | None:
        match = _SEMVER.fullmatch(self)
        assert match is not None  # validated in __new__
        return match.group(index)

    @property
    def major(self) -> int:
        return int(self._part(1) or 0)

    @property
    def minor(self) -> int:
        return int(self._part(2) or 0)

    @property
    def patch(self) -> int:
        return int(self._part(3) or 0)

    @property
    def prerelease(self) -> str | None:
        return self._part(4)

    @property
    def build(self) -> str | None:
        return self._part(5)


class ImageID(str):
    """``sha512-`` followed by the 128 lower-case hex digits of the uncompressed tar's digest."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        _need_str(value, "", "an image ID")
        # The Go code accepts any "sha512-<anything>"; types.md says "hex encoded digest".
        if not _IMAGE_ID.fullmatch(value):
            raise ManifestError(
                "",
                f"{quote(value)} is not a valid image ID",
                "sha512- followed by 128 lower-case hex digits",
            )
        return super().__new__(cls, value)

    @property
    def digest(self) -> str:
        """The hex digest without the ``sha512-`` prefix."""
        return self[len("sha512-") :]


def _validated(cls: type[str], value: object, path: str) -> Any:
    try:
        return cls(value)
    except ManifestError as err:
        raise err.prefixed(path) from None


def validate_ac_identifier(s: object, path: str = "") -> ACIdentifier:
    """Return ``s`` as an :class:`ACIdentifier`; ManifestError at ``path`` if invalid."""
    result: ACIdentifier = _validated(ACIdentifier, s, path)
    return result


def validate_ac_name(s: object, path: str = "") -> ACName:
    """Return ``s`` as an :class:`ACName`; ManifestError at ``path`` if invalid."""
    result: ACName = _validated(ACName, s, path)
    return result


def validate_semver(s: object, path: str = "") -> SemVer:
    """Return ``s`` as a :class:`SemVer`; ManifestError at ``path`` if invalid."""
    result: SemVer = _validated(SemVer, s, path)
    return result


def validate_image_id(s: object, path: str = "") -> ImageID:
    """Return ``s`` as an :class:`ImageID`; ManifestError at ``path`` if invalid."""
    result: ImageID = _validated(ImageID, s, path)
    return result


def validate_image_id_prefix(s: object, path: str = "") -> str:
    """Check a possibly abbreviated image ID: ``sha512-`` and at least 2 lower-case hex digits.

    Lookups by prefix need that much so that ``sha512-`` alone never matches every image.
    """
    _need_str(s, path, "an image ID prefix")
    assert isinstance(s, str)
    if not _image_id_prefix().fullmatch(s):
        raise ManifestError(
            path,
            f"{quote(s)} is not a valid image ID prefix",
            "sha512- followed by 2 to 128 lower-case hex digits",
        )
    return s


def validate_uuid(s: object, path: str = "") -> str:
    """Check an RFC 4122 UUID in its 8-4-4-4-12 form and return it in lower case.

    The nil UUID, other variants (NCS, Microsoft) and versions outside 1-5 are rejected.
    """
    _need_str(s, path, "a UUID")
    assert isinstance(s, str)
    if not _uuid().fullmatch(s):
        raise ManifestError(
            path, f"{quote(s)} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )
    parsed = uuid.UUID(s)
    if parsed.variant != uuid.RFC_4122 or parsed.version not in (1, 2, 3, 4, 5):
        raise ManifestError(path, f"{quote(s)} is not an RFC 4122 UUID (variant or version)")
    return str(parsed)


def validate_env_name(s: object, path: str = "") -> str:
    """An environment variable name: ``^[A-Za-z_][A-Za-z_0-9.-]*$``."""
    _need_str(s, path, "an environment variable name")
    assert isinstance(s, str)
    if not _ENV_NAME.fullmatch(s):
        raise ManifestError(path, f"{quote(s)} is not a valid environment variable name")
    return s


def validate_timestamp(s: str, path: str = "") -> datetime:
    """Parse an RFC 3339 date-time (``2014-10-27T19:32:27.67021798Z``)."""
    match = _rfc3339().fullmatch(s)
    if match is None:
        raise ManifestError(path, f"{quote(s)} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    try:
        # RFC 3339 allows a leap second (":60"); datetime cannot hold it, so clamp.
        if second > 60:
            raise ValueError("second out of range")
        offset = timedelta(0)
        if match.group(8) != "Z":
            oh, om = int(match.group(9)), int(match.group(10))
            if oh > 23 or om > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=oh, minutes=om) * (-1 if match.group(8)[0] == "-" else 1)
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone(offset))
    except ValueError:
        raise ManifestError(
            path, f"{quote(s)} is not an RFC 3339 timestamp (out of range)"
        ) from None


def validate_http_url(s: str, path: str = "") -> str:
    """A URL with scheme http or https and a host."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        raise ManifestError(path, f"{quote(s)} is not a valid URL (contains spaces or controls)")
    try:
        parts = urlsplit(s)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ManifestError(path, f"{quote(s)} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ManifestError(path, f"{quote(s)} is not an http or https URL")
    if not host:
        raise ManifestError(path, f"{quote(s)} is not a valid URL (no host)")
    return s


def validate_ipv4(s: str, path: str = "") -> str:
    """An IPv4 address in dotted-quad notation."""
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        raise ManifestError(
            path, f"{quote(s)} is not an IPv4 address in dotted-quad form"
        ) from None
    return s


class NameValueList(FrozenDict[str, str]):
    """An ordered, immutable ``name -> value`` mapping, stored in JSON as
    ``[{"name": ..., "value": ...}, ...]``.

    Names are unique (a repeated name is an error, not "last one wins"). ``item_extra``
    holds unknown keys of individual item objects, by name, so they are written back.
    Subclasses define the name rule in :meth:`_check_name` and cross-item rules in
    :meth:`_check_values`.
    """

    __slots__ = ("item_extra",)
    what: ClassVar[str] = "entry"

    def __init__(
        self,
        items: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        item_extra: Mapping[str, JSONObject] | None = None,
    ) -> None:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        checked: list[tuple[str, str]] = []
        seen: set[str] = set()
        for i, (name, value) in enumerate(pairs):
            with at(f"[{i}]"):
                name = self._check_name(name)
                if name in seen:
                    raise ManifestError("name", f"duplicate {self.what} {quote(name)}")
                seen.add(name)
                if not isinstance(value, str):
                    raise ManifestError("value", f"expected a string, got {type(value).__name__}")
            checked.append((name, value))
        super().__init__(checked)
        self.item_extra: FrozenDict[str, JSONObject] = FrozenDict(
            (k, v) for k, v in (item_extra or {}).items() if v and k in seen
        )
        self._check_values()

    def _check_name(self, name: str) -> str:
        return validate_ac_identifier(name, "name")

    def _check_values(self) -> None:
        """Rules that look at values; errors point at ``[i].value``."""

    def _index(self, name: str) -> int:
        return list(self).index(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameValueList):
            return super().__eq__(other)
        return dict(self.items()) == dict(other.items()) and self.item_extra == other.item_extra

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.item_extra))

    @classmethod
    def from_json(cls, value: JSONValue) -> Self:
        items = expect_list(value)
        pairs: list[tuple[str, str]] = []
        extras: dict[str, JSONObject] = {}
        for i, item in enumerate(items):
            with at(f"[{i}]"):
                fields = Fields(item, f"a {{name, value}} {cls.what} object")
                name = fields.req_str("name")
                val = fields.req_str("value")
                extra = fields.extra()
            pairs.append((name, val))
            if extra and name not in extras:
                extras[name] = extra
        return cls(pairs, item_extra=extras)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            with_extra({"name": k, "value": v}, self.item_extra.get(k, EMPTY))
            for k, v in self.items()
        ]


class Labels(NameValueList):
    """Image labels: unique AC Identifiers, never ``name``; ``os``/``arch`` from :data:`OS_ARCH`."""

    __slots__ = ()
    what = "label"

    def _check_name(self, name: str) -> str:
        checked = validate_ac_identifier(name, "name")
        if checked == "name":
            raise ManifestError("name", '"name" cannot be a label (it is the image name)')
        return checked

    def _check_values(self) -> None:
        os_name = self.get("os")
        if os_name is None:
            # "arch is meaningful only if os is provided": an arch alone is not checked.
            return
        if os_name not in OS_ARCH:
            raise ManifestError(
                f"[{self._index('os')}].value",
                f"unsupported os {quote(os_name)}",
                "one of " + ", ".join(sorted(OS_ARCH)),
            )
        arch = self.get("arch")
        if arch is not None and arch not in OS_ARCH[os_name]:
            raise ManifestError(
                f"[{self._index('arch')}].value",
                f"unsupported arch {quote(arch)} for os {quote(os_name)}",
                "one of " + ", ".join(sorted(OS_ARCH[os_name])),
            )


class Annotations(NameValueList):
    """Annotations: unique AC Identifiers; ``created`` is RFC 3339, ``homepage`` and
    ``documentation`` are http(s) URLs."""

    __slots__ = ()
    what = "annotation"

    def _check_values(self) -> None:
        for name, check in (
            ("created", validate_timestamp),
            ("homepage", validate_http_url),
            ("documentation", validate_http_url),
        ):
            if name in self:
                check(self[name], f"[{self._index(name)}].value")


class Environment(NameValueList):
    """Environment variables: unique names matching ``^[A-Za-z_][A-Za-z_0-9.-]*$``."""

    __slots__ = ()
    what = "environment variable"

    def _check_name(self, name: str) -> str:
        return validate_env_name(name, "name")


UserMap = FrozenDict[str, str]


#: The appc version this package implements, as written into new manifests.
CURRENT_VERSION: Final = SemVer(APPC_VERSION)


def short_id(image_id: str) -> str:
    """How an image ID is shown: the algorithm and 12 hex digits (rkt's display form)."""
    return image_id[: len("sha512-") + 12]

"""App strings: ``name[:version][,label=value...]``, as ``rkt fetch`` and ``actool`` take them.

The rules follow appc's ``discovery.NewAppFromString``: a colon may appear once, right after
the name, and means ``version``; every other label is ``,label=value``; a label may be given
only once (``:1.0`` and ``,version=1.0`` together is a duplicate); label names are AC
Identifiers and never ``name``. Values may not be empty nor hold ``,`` ``:`` ``=`` or white
space (Go would percent-decode them; nobody writes that, and an app string with a space is
more often a quoting mistake, so it is refused with a hint).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass

from jetpack.errors import DiscoveryError, ManifestError
from jetpack.schema.types import ACIdentifier

_HINT = "write name[:version][,label=value...], e.g. example.com/app:1.0,channel=beta"

# Python's platform.machine() spelling → appc's arch label.
_APPC_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "aarch64_be": "aarch64_be",
    "armv6l": "armv6l",
    "armv7l": "armv7l",
    "armv7b": "armv7b",
    "ppc64": "ppc64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def host_labels() -> dict[str, str]:
    """This host's ``os`` and ``arch`` labels in appc spelling."""
    system = platform.system().lower()
    machine = platform.machine()
    return {"os": system, "arch": _APPC_ARCH.get(machine, machine.lower())}


@dataclass(frozen=True)
class AppString:
    """A parsed app string: an image name and the labels asked for, in the order given."""

    name: ACIdentifier
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def with_defaults(self, defaults: Mapping[str, str]) -> AppString:
        """The same, with each label of ``defaults`` added unless already given."""
        given = self.label_map
        extra = tuple((k, v) for k, v in defaults.items() if k not in given)
        return AppString(self.name, self.labels + extra)

    def __str__(self) -> str:
        labels = dict(self.labels)
        text = str(self.name)
        version = labels.pop("version", None)
        if version is not None:
            text += f":{version}"
        return text + "".join(f",{k}={v}" for k, v in labels.items())


def _bad(text: str, why: str) -> DiscoveryError:
    return DiscoveryError(f"invalid image name {text!r}", why, _HINT)


def parse_app_string(text: str) -> AppString:
    """Parse ``name[:version][,label=value...]``.

    Raises:
        DiscoveryError: the string breaks a rule; the message says which.
    """
    if not text:
        raise _bad(text, "it is empty")
    if any(ch.isspace() for ch in text):
        raise _bad(text, "it contains white space")
    head, *pairs = text.split(",")
    if head.count(":") > 1 or any(":" in p for p in pairs):
        raise _bad(text, "a colon may appear only once, right after the name")
    name, colon, version = head.partition(":")
    try:
        ident = ACIdentifier(name)
    except ManifestError as err:
        raise _bad(text, f"the name {err.rule}") from None
    labels: list[tuple[str, str]] = []
    if colon:
        if not version:
            raise _bad(text, "nothing follows the colon (the version)")
        labels.append(("version", version))
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise _bad(text, f"{pair!r} is not label=value")
        if not value or "=" in value:
            raise _bad(text, f"label {key!r} needs one non-empty value")
        if key == "name":
            raise _bad(text, "'name' is not a label; the name comes first")
        try:
            ACIdentifier(key)
        except ManifestError:
            raise _bad(text, f"{key!r} is not a valid label name") from None
        if any(k == key for k, _ in labels):
            raise _bad(text, f"label {key!r} is given twice")
        labels.append((key, value))
    return AppString(ident, tuple(labels))

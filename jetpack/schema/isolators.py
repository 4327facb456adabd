"""Isolators (spec ``ace.md`` "Isolators"): an AC Identifier name and an arbitrary JSON value.

An :class:`Isolator` keeps its JSON value exactly as given (so unknown keys inside it
round-trip) and, for the isolators this module knows, a typed view of it in
``isolator.value``, validated when the isolator is built. Isolators with other names
are kept with ``value`` ``None``: the spec lets an executor ignore isolators it does
not understand (it must then report them), so refusing them here would be wrong.

List-level rules (one seccomp set, retain/remove conflicts, app vs pod scope) live in
:func:`check_isolators`, called by the app and pod parsers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, Literal, TypeAlias

from jetpack.errors import ManifestError
from jetpack.schema._json import (
    MISSING,
    Fields,
    FrozenDict,
    JSONValue,
    at,
    expect_list,
    expect_str,
    expect_str_map,
    freeze,
    kind_of,
    quote,
    thaw,
    with_extra,
)
from jetpack.schema.isolator_names import (
    CAPABILITIES_REMOVE,
    CAPABILITIES_RETAIN,
    CPU_SHARES,
    NO_NEW_PRIVILEGES,
    OOM_SCORE_ADJ,
    RESOURCE_BLOCK_BANDWIDTH,
    RESOURCE_BLOCK_IOPS,
    RESOURCE_CPU,
    RESOURCE_MEMORY,
    RESOURCE_NETWORK_BANDWIDTH,
    SECCOMP_REMOVE,
    SECCOMP_RETAIN,
    SELINUX_CONTEXT,
    UNIX_SYSCTL,
)
from jetpack.schema.isolator_names import (
    DEFAULT_CAPABILITIES as DEFAULT_CAPABILITIES,  # re-exported
)
from jetpack.schema.quantity import Quantity
from jetpack.schema.types import ACIdentifier, validate_ac_identifier

SECCOMP_EMPTY: Final = "@appc.io/empty"
SECCOMP_ALL: Final = "@appc.io/all"

Scope = Literal["app", "pod"]


@cache
def _errno() -> re.Pattern[str]:
    return re.compile(r"E[A-Z0-9]+")  # compiled on first use: seccomp isolators are rare


@dataclass(frozen=True)
class ResourceValue:
    """``resource/*``: ``request``/``limit`` quantities; ``default`` for the per-device ones.

    Per the spec, a missing ``request`` means "equal to ``limit``" (see
    :attr:`effective_request`).
    """

    request: Quantity | None = None
    limit: Quantity | None = None
    default: bool | None = None

    @property
    def effective_request(self) -> Quantity | None:
        return self.request if self.request is not None else self.limit


@dataclass(frozen=True)
class CapabilitiesSet:
    """``os/linux/capabilities-retain-set`` / ``-remove-set``: ``{"set": [...]}``."""

    set: tuple[str, ...]


@dataclass(frozen=True)
class SeccompSet:
    """``os/linux/seccomp-retain-set`` / ``-remove-set``: ``{"set": [...], "errno"?: "E..."}``.

    ``errno`` ``None`` (missing or empty) means blocked syscalls kill the app with SIGSYS.
    """

    set: tuple[str, ...]
    errno: str | None = None


@dataclass(frozen=True)
class SELinuxContext:
    """``os/linux/selinux-context``: the four parts of ``user:role:type:level``."""

    user: str
    role: str
    type: str
    level: str

    def __str__(self) -> str:
        return f"{self.user}:{self.role}:{self.type}:{self.level}"


IsolatorValue: TypeAlias = (
    ResourceValue
    | CapabilitiesSet
    | SeccompSet
    | SELinuxContext
    | FrozenDict[str, str]
    | bool
    | int
)


def _quantity(fields: Fields, key: str) -> Quantity | None:
    raw = fields.raw(key)
    if raw is MISSING:
        return None
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise ManifestError(key, f"expected a quantity string, got {kind_of(raw)}")
    with at(key):
        quantity = Quantity(raw)
    if quantity.value < 0:
        # The spec is silent, but a negative amount of a resource has no meaning and
        # would reach cgroup files as garbage.
        raise ManifestError(key, f"{quote(raw)}: a resource quantity cannot be negative")
    return quantity


def _resource(value: JSONValue, *, per_device: bool) -> ResourceValue:
    fields = Fields(value, "an object {request, limit}")
    request = _quantity(fields, "request")
    limit = _quantity(fields, "limit")
    default = fields.opt_bool("default")
    if per_device:
        # Only the "apply to every device" form is defined: default must be true and
        # there is no request (Go: ErrDefaultRequired / ErrRequestNonEmpty).
        if default is not True:
            raise ManifestError("default", "must be true for this resource")
        if request is not None:
            raise ManifestError("request", "is not supported by this resource")
    elif default:
        raise ManifestError("default", "must be false or absent for this resource")
    return ResourceValue(request=request, limit=limit, default=default)


def _str_set(fields: Fields) -> tuple[str, ...]:
    items = fields.required("set")
    with at("set"):
        entries = expect_list(items)
        if not entries:
            raise ManifestError("", "must not be empty")
        result = []
        for i, item in enumerate(entries):
            text = expect_str(item, f"[{i}]")
            if not text:
                raise ManifestError(f"[{i}]", "must not be empty")
            result.append(text)
    return tuple(result)


def _capabilities(value: JSONValue) -> CapabilitiesSet:
    return CapabilitiesSet(set=_str_set(Fields(value, "an object {set}")))


def _seccomp(value: JSONValue) -> SeccompSet:
    fields = Fields(value, "an object {set, errno}")
    entries = _str_set(fields)
    for i, entry in enumerate(entries):
        # "@appc.io/" is reserved to the spec, which defines only these two wildcards;
        # other "@scope/..." values belong to implementations and are passed through.
        if entry.startswith("@appc.io/") and entry not in (SECCOMP_EMPTY, SECCOMP_ALL):
            raise ManifestError(f"set[{i}]", f"unknown special value {quote(entry)}")
    errno = fields.opt_str("errno")
    if errno and not _errno().fullmatch(errno):
        raise ManifestError(
            "errno", f"{quote(errno)} is not an errno name", "upper case, e.g. EPERM or ENOTSUP"
        )
    return SeccompSet(set=entries, errno=errno or None)


def _selinux(value: JSONValue) -> SELinuxContext:
    fields = Fields(value, "an object {user, role, type, level}")
    parts = {key: fields.req_str(key) for key in ("user", "role", "type", "level")}
    for key, part in parts.items():
        if not part:
            raise ManifestError(key, "must not be empty")
        # The level (MLS range, e.g. "s0:c1,c2") may itself contain colons.
        if key != "level" and ":" in part:
            raise ManifestError(key, f"{quote(part)} must not contain ':'")
    return SELinuxContext(**parts)


def _bool(value: JSONValue) -> bool:
    if not isinstance(value, bool):
        raise ManifestError("", f"expected a boolean, got {kind_of(value)}")
    return value


def _int_between(low: int, high: int) -> Any:
    def parse(value: JSONValue) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError("", f"expected an integer, got {kind_of(value)}")
        if not low <= value <= high:
            raise ManifestError("", f"{value} is out of range ({low} to {high})")
        return value

    return parse


def _sysctl(value: JSONValue) -> FrozenDict[str, str]:
    parsed = expect_str_map(value)
    for key in parsed:
        if not key:
            raise ManifestError("", "a sysctl name cannot be empty")
    return parsed


_PARSERS: Final[dict[str, Any]] = {
    RESOURCE_CPU: lambda v: _resource(v, per_device=False),
    RESOURCE_MEMORY: lambda v: _resource(v, per_device=False),
    RESOURCE_BLOCK_BANDWIDTH: lambda v: _resource(v, per_device=True),
    RESOURCE_BLOCK_IOPS: lambda v: _resource(v, per_device=True),
    RESOURCE_NETWORK_BANDWIDTH: lambda v: _resource(v, per_device=True),
    CAPABILITIES_RETAIN: _capabilities,
    CAPABILITIES_REMOVE: _capabilities,
    NO_NEW_PRIVILEGES: _bool,
    SECCOMP_RETAIN: _seccomp,
    SECCOMP_REMOVE: _seccomp,
    SELINUX_CONTEXT: _selinux,
    UNIX_SYSCTL: _sysctl,
    OOM_SCORE_ADJ: _int_between(-1000, 1000),
    CPU_SHARES: _int_between(2, 262144),
}

#: Names this module validates and gives a typed ``value``.
KNOWN_ISOLATORS: Final = frozenset(_PARSERS)

# "Scope:" lines of ace.md. Names absent here (oom-score-adj, cpu-shares) have no scope
# in the text and are allowed at both levels.
_APP_ONLY: Final = frozenset(
    {CAPABILITIES_RETAIN, CAPABILITIES_REMOVE, NO_NEW_PRIVILEGES, SECCOMP_RETAIN, SECCOMP_REMOVE}
)
_POD_ONLY: Final = frozenset({UNIX_SYSCTL})
# At most one per app / per pod (ace.md notes; Go's multipleAllowed() == false).
_SINGLE: Final = frozenset(
    {SECCOMP_RETAIN, SECCOMP_REMOVE, SELINUX_CONTEXT, UNIX_SYSCTL, OOM_SCORE_ADJ, CPU_SHARES}
)
_CONFLICTS: Final = (
    (SECCOMP_RETAIN, SECCOMP_REMOVE),
    # The Go code lets both capability sets through; ace.md: "The retain set cannot be
    # used in conjunction with the remove set."
    (CAPABILITIES_RETAIN, CAPABILITIES_REMOVE),
)


@dataclass(frozen=True)
class Isolator:
    """One isolator. ``raw`` is the JSON value as given; ``value`` is its typed view
    (``None`` for isolators this module does not know).

    Raises:
        ManifestError: the name is not an AC Identifier, or a known isolator's value
            breaks its rules (path relative to the isolator object).
    """

    name: ACIdentifier
    raw: JSONValue
    extra: FrozenDict[str, JSONValue] = field(default_factory=FrozenDict)
    value: IsolatorValue | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_ac_identifier(self.name, "name"))
        with at("value"):
            raw = freeze(self.raw)
            object.__setattr__(self, "raw", raw)
            # Unknown names keep value None. The Go code rejects them inside an app (its
            # Isolators.assertValid wants a typed value); the text allows any name and
            # lets the executor ignore what it does not know.
            parser = _PARSERS.get(self.name)
            object.__setattr__(self, "value", parser(raw) if parser else None)

    @classmethod
    def of(cls, name: str, value: Any) -> Isolator:
        """Build an isolator from a name and a plain JSON value (dicts, lists...)."""
        return cls(name=ACIdentifier(name), raw=freeze(value))

    @property
    def known(self) -> bool:
        """Whether this module knows (and has validated) the isolator."""
        return self.name in KNOWN_ISOLATORS

    @classmethod
    def from_json(cls, value: JSONValue) -> Isolator:
        fields = Fields(value, "an isolator object {name, value}")
        name = fields.req_str("name")
        if "value" not in fields.obj:
            raise ManifestError("value", "is required")
        raw = fields.obj["value"]
        fields.raw("value")
        return cls(name=validate_ac_identifier(name, "name"), raw=raw, extra=fields.extra())

    def to_json(self) -> dict[str, Any]:
        return with_extra({"name": str(self.name), "value": thaw(self.raw)}, self.extra)


def parse_isolators(value: JSONValue, scope: Scope) -> tuple[Isolator, ...]:
    """Parse a JSON isolator list and check it with :func:`check_isolators`."""
    items = expect_list(value)
    result = []
    for i, item in enumerate(items):
        with at(f"[{i}]"):
            result.append(Isolator.from_json(item))
    check_isolators(result, scope)
    return tuple(result)


def check_isolators(isolators: Sequence[Isolator], scope: Scope) -> None:
    """The rules about a list of isolators, as applied to an app or a whole pod.

    Raises:
        ManifestError: at ``[i].name``, for an isolator outside its scope, a second
            instance of a single-instance isolator, or a conflicting pair.
    """
    first: dict[str, int] = {}
    for i, iso in enumerate(isolators):
        name = str(iso.name)
        where = f"[{i}].name"
        if scope == "pod" and name in _APP_ONLY:
            raise ManifestError(where, f"{name} applies to apps only; set it in an app's isolators")
        if scope == "app" and name in _POD_ONLY:
            raise ManifestError(
                where, f"{name} applies to the whole pod; set it in the pod's isolators"
            )
        if name in first and name in _SINGLE:
            raise ManifestError(where, f"only one {name} isolator is allowed (see [{first[name]}])")
        for a, b in _CONFLICTS:
            other = b if name == a else a if name == b else None
            if other is not None and other in first:
                raise ManifestError(
                    where, f"{name} cannot be used together with {other} (see [{first[other]}])"
                )
        first.setdefault(name, i)

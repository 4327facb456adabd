"""The ``app`` object of an image manifest (also a pod app's override), and its parts.

Each dataclass validates its own rules in ``__post_init__`` (error paths relative to
the object, e.g. ``ports[1].port``), so an ``App`` built in code — by the patcher or the
pod planner — is held to the same rules as one parsed from JSON.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jetpack.errors import ManifestError
from jetpack.schema._json import (
    EMPTY,
    Fields,
    FrozenDict,
    JSONObject,
    JSONValue,
    at,
    expect_int,
    expect_list,
    quote,
    with_extra,
)
from jetpack.schema.types import ACName, Environment, UserMap, validate_ac_name

if TYPE_CHECKING:
    from jetpack.schema.isolators import Isolator

MAX_ID = 2**32 - 1
EVENT_NAMES = ("pre-start", "post-stop")
EventName = Literal["pre-start", "post-stop"]


def _check_exec(exec_: tuple[str, ...], path: str) -> None:
    for i, arg in enumerate(exec_):
        if not isinstance(arg, str):
            raise ManifestError(f"{path}[{i}]", f"expected a string, got {type(arg).__name__}")
    if exec_ and not exec_[0]:
        raise ManifestError(f"{path}[0]", "the executable cannot be an empty string")


@dataclass(frozen=True, kw_only=True)
class EventHandler:
    """``{"name": "pre-start" | "post-stop", "exec": [...]}``."""

    name: EventName
    exec: tuple[str, ...]
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        if self.name not in EVENT_NAMES:
            raise ManifestError(
                "name", f"{quote(self.name)} is not an event handler name", "pre-start or post-stop"
            )
        object.__setattr__(self, "exec", tuple(self.exec))
        # A handler is "an exec and a name": with nothing to execute it is not one.
        if not self.exec:
            raise ManifestError("exec", "an event handler needs a command")
        _check_exec(self.exec, "exec")

    @classmethod
    def from_json(cls, value: JSONValue) -> EventHandler:
        fields = Fields(value, "an event handler object {name, exec}")
        name = fields.req_str("name")
        raw_exec = fields.required("exec")
        with at("exec"):
            exec_ = _str_list(raw_exec)
        if name not in EVENT_NAMES:
            raise ManifestError(
                "name", f"{quote(name)} is not an event handler name", "pre-start or post-stop"
            )
        return cls(name=name, exec=exec_, extra=fields.extra())  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return with_extra({"name": self.name, "exec": list(self.exec)}, self.extra)


@dataclass(frozen=True, kw_only=True)
class MountPoint:
    """``{"name": AC Name, "path": ..., "readOnly"?: bool}``: where the app expects a volume."""

    name: ACName
    path: str
    read_only: bool = False
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_ac_name(self.name, "name"))
        # The Go code never validates mount points, so it takes them empty.
        if not self.path:
            raise ManifestError("path", "is required and cannot be empty")

    @classmethod
    def from_json(cls, value: JSONValue) -> MountPoint:
        fields = Fields(value, "a mount point object {name, path, readOnly}")
        return cls(
            name=validate_ac_name(fields.req_str("name"), "name"),
            path=fields.req_str("path"),
            read_only=bool(fields.opt_bool("readOnly")),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": str(self.name), "path": self.path}
        if self.read_only:
            out["readOnly"] = True
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class Port:
    """A port or range the app listens on: ``port`` .. ``port + count - 1``."""

    name: ACName
    protocol: str
    port: int
    count: int = 1
    socket_activated: bool = False
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_ac_name(self.name, "name"))
        # Required by the spec text; the Go code accepts a port without protocol.
        if not self.protocol:
            raise ManifestError("protocol", "is required and cannot be empty", "e.g. tcp or udp")
        if not 1 <= self.port <= 65535:
            raise ManifestError("port", f"{self.port} is not a port number (1 to 65535)")
        # The Go code turns count 0 into 1; the text says "Must be >=1".
        if self.count < 1:
            raise ManifestError("count", f"{self.count} is not a valid count (must be >= 1)")
        if self.port + self.count - 1 > 65535:
            raise ManifestError(
                "count", f"the range {self.port}+{self.count} ends beyond port 65535"
            )

    @classmethod
    def from_json(cls, value: JSONValue) -> Port:
        fields = Fields(value, "a port object {name, protocol, port, count, socketActivated}")
        count = fields.opt_int("count")
        return cls(
            name=validate_ac_name(fields.req_str("name"), "name"),
            protocol=fields.req_str("protocol"),
            port=fields.req_int("port"),
            count=1 if count is None else count,
            socket_activated=bool(fields.opt_bool("socketActivated")),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": str(self.name),
            "protocol": self.protocol,
            "port": self.port,
            "count": self.count,
            "socketActivated": self.socket_activated,
        }
        return with_extra(out, self.extra)


def _str_list(value: JSONValue) -> tuple[str, ...]:
    items = expect_list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ManifestError(f"[{i}]", "expected a string")
    return tuple(str(item) for item in items)


def _unique_names(items: tuple[Any, ...], key: str, what: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            raise ManifestError(
                f"{key}[{i}].name",
                f"duplicate {what} {quote(str(item.name))} (see [{seen[item.name]}])",
            )
        seen[item.name] = i


@dataclass(frozen=True, kw_only=True)
class App:
    """How to run an image: the ``app`` object (spec ``aci.md``).

    ``exec`` empty means "not given". ``working_directory`` ``None`` means the default,
    ``/``. ``user`` and ``group`` are required and non-empty.
    """

    exec: tuple[str, ...] = ()
    user: str
    group: str
    supplementary_gids: tuple[int, ...] = ()
    event_handlers: tuple[EventHandler, ...] = ()
    working_directory: str | None = None
    environment: Environment = field(default_factory=Environment)
    isolators: tuple[Isolator, ...] = ()
    mount_points: tuple[MountPoint, ...] = ()
    ports: tuple[Port, ...] = ()
    user_annotations: UserMap = field(default_factory=FrozenDict)
    user_labels: UserMap = field(default_factory=FrozenDict)
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        for name in (
            "exec",
            "supplementary_gids",
            "event_handlers",
            "isolators",
            "mount_points",
            "ports",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_exec(self.exec, "exec")
        if not self.user:
            raise ManifestError(
                "user", "is required and cannot be empty", "a name, a number or a path"
            )
        if not self.group:
            raise ManifestError(
                "group", "is required and cannot be empty", "a name, a number or a path"
            )
        for i, gid in enumerate(self.supplementary_gids):
            # "list of unsigned integers"; the Go code takes negative ones too.
            if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid <= MAX_ID:
                raise ManifestError(f"supplementaryGIDs[{i}]", f"{gid!r} is not a valid group ID")
        if self.working_directory is not None and not posixpath.isabs(self.working_directory):
            raise ManifestError(
                "workingDirectory", f"{quote(self.working_directory)} is not an absolute path"
            )
        _unique_names(self.event_handlers, "eventHandlers", "event handler")
        # Mount point and port names are keys other manifests refer to, so they must be
        # unique (the Go code does not check).
        _unique_names(self.mount_points, "mountPoints", "mount point")
        _unique_names(self.ports, "ports", "port")
        if self.isolators:  # the isolator module loads only for manifests that have some
            from jetpack.schema.isolators import check_isolators

            with at("isolators"):
                check_isolators(self.isolators, "app")

    def event_handler(self, name: EventName) -> EventHandler | None:
        return next((h for h in self.event_handlers if h.name == name), None)

    @classmethod
    def from_json(cls, value: JSONValue) -> App:
        fields = Fields(value, "an app object")
        exec_: tuple[str, ...] = ()
        if (raw_exec := fields.opt("exec")) is not None:
            with at("exec"):
                exec_ = _str_list(raw_exec)
        gids = []
        for i, gid in enumerate(fields.opt_list("supplementaryGIDs")):
            gids.append(expect_int(gid, f"supplementaryGIDs[{i}]"))
        handlers = []
        for i, item in enumerate(fields.opt_list("eventHandlers")):
            with at(f"eventHandlers[{i}]"):
                handlers.append(EventHandler.from_json(item))
        environment = Environment()
        if (raw_env := fields.opt("environment")) is not None:
            with at("environment"):
                environment = Environment.from_json(raw_env)
        isolators: tuple[Isolator, ...] = ()
        if (raw_isolators := fields.opt("isolators")) is not None:
            with at("isolators"):
                from jetpack.schema.isolators import parse_isolators

                isolators = parse_isolators(raw_isolators, "app")
        mount_points = []
        for i, item in enumerate(fields.opt_list("mountPoints")):
            with at(f"mountPoints[{i}]"):
                mount_points.append(MountPoint.from_json(item))
        ports = []
        for i, item in enumerate(fields.opt_list("ports")):
            with at(f"ports[{i}]"):
                ports.append(Port.from_json(item))
        return cls(
            exec=exec_,
            user=fields.req_str("user"),
            group=fields.req_str("group"),
            supplementary_gids=tuple(gids),
            event_handlers=tuple(handlers),
            working_directory=fields.opt_str("workingDirectory"),
            environment=environment,
            isolators=isolators,
            mount_points=tuple(mount_points),
            ports=tuple(ports),
            user_annotations=fields.opt_str_map("userAnnotations"),
            user_labels=fields.opt_str_map("userLabels"),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.exec:
            out["exec"] = list(self.exec)
        if self.event_handlers:
            out["eventHandlers"] = [h.to_json() for h in self.event_handlers]
        out["user"] = self.user
        out["group"] = self.group
        if self.supplementary_gids:
            out["supplementaryGIDs"] = list(self.supplementary_gids)
        if self.working_directory is not None:
            out["workingDirectory"] = self.working_directory
        if self.environment:
            out["environment"] = self.environment.to_json()
        if self.mount_points:
            out["mountPoints"] = [m.to_json() for m in self.mount_points]
        if self.ports:
            out["ports"] = [p.to_json() for p in self.ports]
        if self.isolators:
            out["isolators"] = [i.to_json() for i in self.isolators]
        if self.user_annotations:
            out["userAnnotations"] = dict(self.user_annotations)
        if self.user_labels:
            out["userLabels"] = dict(self.user_labels)
        return with_extra(out, self.extra)

"""``actool patch-manifest`` as a pure function, and parsers for its option strings.

Plan then apply: the CLI turns its options into a :class:`ManifestPatch` with the
``parse_*_option`` helpers (each error names the option), then :func:`apply_patch`
returns a new, re-validated :class:`ImageManifest`.

Merging differs from actool on purpose in one way: actool *appends* mount points,
ports and isolators, so patching twice with the same name leaves a duplicate that
this package (rightly) rejects. Here an entry replaces the existing one of the same
name and new names are appended, so patching is idempotent.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from jetpack.errors import ManifestError
from jetpack.schema._json import at, quote
from jetpack.schema.app import MAX_ID, App, MountPoint, Port
from jetpack.schema.image import ImageManifest, parse_image_manifest
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
)
from jetpack.schema.isolators import Isolator
from jetpack.schema.types import validate_ac_identifier

SeccompMode = Literal["remove", "retain"]

_RESOURCES = (
    RESOURCE_CPU,
    RESOURCE_MEMORY,
    RESOURCE_BLOCK_BANDWIDTH,
    RESOURCE_BLOCK_IOPS,
    RESOURCE_NETWORK_BANDWIDTH,
)
_SCALARS = (NO_NEW_PRIVILEGES, OOM_SCORE_ADJ, CPU_SHARES)


@dataclass(frozen=True, kw_only=True)
class ManifestPatch:
    """What to change; ``None`` leaves a field alone (as an absent actool option does)."""

    name: str | None = None
    exec: tuple[str, ...] | None = None
    user: str | None = None
    group: str | None = None
    supplementary_gids: tuple[int, ...] | None = None
    capabilities_retain: tuple[str, ...] | None = None
    capabilities_remove: tuple[str, ...] | None = None
    mounts: tuple[MountPoint, ...] | None = None
    ports: tuple[Port, ...] | None = None
    isolators: tuple[Isolator, ...] | None = None
    seccomp_mode: SeccompMode | None = None
    seccomp_errno: str | None = None
    seccomp_set: tuple[str, ...] | None = None

    def touches_app(self) -> bool:
        return any(
            getattr(self, f.name) is not None for f in dataclasses.fields(self) if f.name != "name"
        )


def _option_error(option: str, text: str, why: str) -> ManifestError:
    return ManifestError(f"--{option}", f"{quote(text)}: {why}")


_T = TypeVar("_T", MountPoint, Port, Isolator)


def _upsert(existing: Iterable[_T], new: Iterable[_T]) -> tuple[_T, ...]:
    """Replace entries of the same name in place; append the others."""
    result = list(existing)
    for item in new:
        for i, old in enumerate(result):
            if old.name == item.name:
                result[i] = item
                break
        else:
            result.append(item)
    return tuple(result)


def _replace_isolators(
    isolators: tuple[Isolator, ...], names: tuple[str, ...], new: Isolator
) -> tuple[Isolator, ...]:
    return (*(i for i in isolators if i.name not in names), new)


def apply_patch(manifest: ImageManifest, patch: ManifestPatch) -> ImageManifest:
    """Return ``manifest`` with ``patch`` applied, validated like a parsed manifest.

    An image without ``app`` gets one when the patch sets app fields; it must then end
    up with a user and a group.

    Raises:
        ManifestError: conflicting patch options, or a result that breaks the spec.
    """
    if patch.capabilities_retain is not None and patch.capabilities_remove is not None:
        raise ManifestError(
            "--capability", "cannot be combined with --revoke-capability (conflicting sets)"
        )
    if patch.seccomp_mode is None and (patch.seccomp_set is not None or patch.seccomp_errno):
        raise ManifestError("--seccomp-set", "needs --seccomp-mode")
    if patch.seccomp_mode is not None and not patch.seccomp_set:
        raise ManifestError(
            "--seccomp-mode", "needs --seccomp-set (the syscalls to retain or remove)"
        )

    name = manifest.name if patch.name is None else validate_ac_identifier(patch.name, "--name")
    app = manifest.app
    if patch.touches_app():
        app = _patch_app(app, patch)
    result = dataclasses.replace(manifest, name=name, app=app)
    # Parse the serialised result: the same checks as any manifest read from disk.
    return parse_image_manifest(result.to_json())


def _patch_app(app: App | None, patch: ManifestPatch) -> App:
    changes: dict[str, Any] = {}
    if patch.exec is not None:
        changes["exec"] = patch.exec
    if patch.user is not None:
        changes["user"] = patch.user
    if patch.group is not None:
        changes["group"] = patch.group
    if patch.supplementary_gids is not None:
        changes["supplementary_gids"] = patch.supplementary_gids
    base_isolators = app.isolators if app is not None else ()
    isolators = base_isolators
    caps = (CAPABILITIES_RETAIN, CAPABILITIES_REMOVE)
    if patch.capabilities_retain is not None:
        isolators = _replace_isolators(
            isolators,
            caps,
            Isolator.of(CAPABILITIES_RETAIN, {"set": list(patch.capabilities_retain)}),
        )
    if patch.capabilities_remove is not None:
        isolators = _replace_isolators(
            isolators,
            caps,
            Isolator.of(CAPABILITIES_REMOVE, {"set": list(patch.capabilities_remove)}),
        )
    if patch.seccomp_mode is not None:
        seccomp_name = SECCOMP_REMOVE if patch.seccomp_mode == "remove" else SECCOMP_RETAIN
        value: dict[str, Any] = {"set": list(patch.seccomp_set or ())}
        if patch.seccomp_errno:
            value["errno"] = patch.seccomp_errno
        try:
            isolator = Isolator.of(seccomp_name, value)
        except ManifestError as err:
            # Name the option at fault rather than a JSON path the user never wrote.
            option = "--seccomp-mode" if err.path.endswith("errno") else "--seccomp-set"
            raise ManifestError(option, err.rule, err.hint) from None
        isolators = _replace_isolators(isolators, (SECCOMP_REMOVE, SECCOMP_RETAIN), isolator)
    if patch.isolators is not None:
        isolators = _upsert(isolators, patch.isolators)
    if isolators != base_isolators:
        changes["isolators"] = isolators
    if patch.mounts is not None:
        changes["mount_points"] = _upsert(app.mount_points if app else (), patch.mounts)
    if patch.ports is not None:
        changes["ports"] = _upsert(app.ports if app else (), patch.ports)
    with at("app"):
        if app is None:
            # actool only creates an app for --exec; we create one for any app option
            # but, like any app, it needs a user and a group.
            for key in ("user", "group"):
                if not changes.get(key):
                    raise ManifestError(
                        key, "is required to create the app this image lacks", f"pass --{key}"
                    )
            return App(**changes)
        return dataclasses.replace(app, **changes)


def parse_exec_option(text: str) -> tuple[str, ...]:
    """``--exec="/app --debug"``: split like a POSIX shell (quotes group words)."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as err:
        raise _option_error("exec", text, str(err)) from None
    if not argv:
        raise _option_error("exec", text, "no command given")
    return argv


def _parse_bool(option: str, text: str, key: str, value: str) -> bool:
    # The same spellings as Go's strconv.ParseBool, which actool uses.
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise _option_error(option, text, f"{key}={value!r} is not a boolean (true or false)")


def _parse_uint(option: str, text: str, key: str, value: str, high: int) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > high:
        raise _option_error(option, text, f"{key}={value!r} is not an integer from 0 to {high}")
    return int(value)


def _split_params(
    option: str, text: str, allowed: Iterable[str] | None
) -> tuple[str, dict[str, str]]:
    """``"name,key=value,..."`` → ``("name", {key: value})``; keys unique."""
    head, *rest = text.split(",")
    params: dict[str, str] = {}
    allowed_set = None if allowed is None else set(allowed)
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep:
            raise _option_error(option, text, f"{part!r} has no value (expected key=value)")
        if allowed_set is not None and key not in allowed_set:
            raise _option_error(
                option,
                text,
                f"unknown parameter {key!r} (expected {', '.join(sorted(allowed_set))})",
            )
        if key in params:
            raise _option_error(option, text, f"parameter {key!r} given twice")
        params[key] = value
    return head, params


def _entries(option: str, text: str) -> list[str]:
    entries = text.split(":")
    if any(not entry for entry in entries):
        raise _option_error(option, text, "empty entry (entries are separated by ':')")
    return entries


def _build(option: str, text: str, make: Any, **kwargs: Any) -> Any:
    try:
        return make(**kwargs)
    except ManifestError as err:
        raise _option_error(
            option, text, f"{err.path}: {err.rule}" if err.path else err.rule
        ) from None


def parse_mounts_option(text: str) -> tuple[MountPoint, ...]:
    """``--mounts=work,path=/opt,readOnly=true:work2,path=/x``."""
    result = []
    for entry in _entries("mounts", text):
        name, params = _split_params("mounts", entry, ("path", "readOnly"))
        if "path" not in params:
            raise _option_error("mounts", entry, "path=... is required")
        read_only = _parse_bool("mounts", entry, "readOnly", params.get("readOnly", "false"))
        result.append(
            _build("mounts", entry, MountPoint, name=name, path=params["path"], read_only=read_only)
        )
    return tuple(result)


def parse_ports_option(text: str) -> tuple[Port, ...]:
    """``--ports=query,protocol=tcp,port=8080[,count=2,socketActivated=true]:...``."""
    result = []
    for entry in _entries("ports", text):
        name, params = _split_params(
            "ports", entry, ("protocol", "port", "count", "socketActivated")
        )
        for key in ("protocol", "port"):
            if key not in params:
                raise _option_error("ports", entry, f"{key}=... is required")
        result.append(
            _build(
                "ports",
                entry,
                Port,
                name=name,
                protocol=params["protocol"],
                port=_parse_uint("ports", entry, "port", params["port"], 65535),
                count=_parse_uint("ports", entry, "count", params.get("count", "1"), 65535),
                socket_activated=_parse_bool(
                    "ports", entry, "socketActivated", params.get("socketActivated", "false")
                ),
            )
        )
    return tuple(result)


def parse_isolators_option(text: str) -> tuple[Isolator, ...]:
    """``--isolators=resource/cpu,request=50m,limit=100m:resource/memory,limit=1G``.

    Resource isolators take ``request``, ``limit`` and ``default`` (a boolean);
    ``os/linux/no-new-privileges``, ``oom-score-adj`` and ``cpu-shares`` take one JSON
    value (``os/linux/no-new-privileges,true``). Capabilities and seccomp have their
    own options.
    """
    result = []
    for entry in _entries("isolators", text):
        name = entry.split(",", 1)[0]
        value: Any
        if name in _RESOURCES:
            _, params = _split_params("isolators", entry, ("request", "limit", "default"))
            value = dict(params)
            if "default" in params:
                value["default"] = _parse_bool("isolators", entry, "default", params["default"])
        elif name in _SCALARS:
            parts = entry.split(",")
            if len(parts) != 2:
                raise _option_error("isolators", entry, f"expected {name},VALUE")
            try:
                value = json.loads(parts[1])
            except ValueError:
                raise _option_error(
                    "isolators", entry, f"{parts[1]!r} is not a JSON value"
                ) from None
        elif name in (CAPABILITIES_RETAIN, CAPABILITIES_REMOVE, SECCOMP_RETAIN, SECCOMP_REMOVE):
            raise _option_error(
                "isolators", entry, "use --capability, --revoke-capability or --seccomp-* for this"
            )
        else:
            raise _option_error("isolators", entry, f"isolator {name!r} cannot be set by patching")
        result.append(_build("isolators", entry, Isolator.of, name=name, value=value))
    return tuple(result)


def parse_gids_option(text: str) -> tuple[int, ...]:
    """``--supplementary-groups=1,2,3``."""
    return tuple(
        _parse_uint("supplementary-groups", text, "gid", part, MAX_ID) for part in text.split(",")
    )


def parse_capabilities_option(text: str, option: str = "capability") -> tuple[str, ...]:
    """``--capability=CAP_SYS_ADMIN,CAP_NET_ADMIN`` (also ``--revoke-capability``)."""
    caps = tuple(text.split(","))
    for cap in caps:
        if not cap or not cap.replace("_", "").isalnum() or not cap.isascii():
            raise _option_error(
                option, text, f"{cap!r} is not a capability name like CAP_NET_ADMIN"
            )
    return caps


def parse_seccomp_mode_option(text: str) -> tuple[SeccompMode, str | None]:
    """``--seccomp-mode=remove|retain[,errno=EPERM]`` → ``(mode, errno)``."""
    mode, params = _split_params("seccomp-mode", text, ("errno",))
    if mode not in ("remove", "retain"):
        raise _option_error("seccomp-mode", text, f"unknown mode {mode!r} (remove or retain)")
    return mode, params.get("errno")  # type: ignore[return-value]


def parse_seccomp_set_option(text: str) -> tuple[str, ...]:
    """``--seccomp-set=syscall1,syscall2,...``."""
    syscalls = tuple(text.split(","))
    if any(not s for s in syscalls):
        raise _option_error("seccomp-set", text, "empty syscall name")
    return syscalls

"""The pod manifest (spec ``pods.md``, "Pod Manifest Schema").

Parsing enforces the schema as the spec text states it for a reified pod: every app
names its image by ID, every mount names a volume of the pod (or carries its own
``appVolume``). Whether each image's mount points are all satisfied needs the image
manifests, so it is left to the pod planner.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Final, Literal

from jetpack.errors import ManifestError
from jetpack.schema._json import (
    EMPTY,
    Fields,
    FrozenDict,
    JSONObject,
    JSONValue,
    at,
    dump_bytes,
    expect_list,
    load_document,
    quote,
    with_extra,
)
from jetpack.schema.app import MAX_ID, App, Port
from jetpack.schema.image import read_annotations, read_kind, read_labels
from jetpack.schema.types import (
    CURRENT_VERSION,
    ACIdentifier,
    ACName,
    Annotations,
    ImageID,
    Labels,
    SemVer,
    UserMap,
    validate_ac_identifier,
    validate_ac_name,
    validate_image_id,
    validate_ipv4,
    validate_semver,
)

if TYPE_CHECKING:
    from jetpack.schema.isolators import Isolator

POD_MANIFEST_KIND: Final = "PodManifest"
VolumeKind = Literal["host", "empty"]
EMPTY_VOLUME_DEFAULT_MODE = "0755"


@cache
def _mode() -> re.Pattern[str]:
    return re.compile(r"0?[0-7]{1,4}")  # compiled on first use: few pods set a mode


@dataclass(frozen=True, kw_only=True)
class Volume:
    """A pod volume. ``None`` fields were not given; see the ``effective_*`` properties
    for the spec's defaults.

    ``host``: ``source`` required and absolute; ``mode``/``uid``/``gid`` not allowed.
    ``empty``: ``source`` not allowed. (The text says those fields are "only
    interpreted" for the other kind; like the reference code we refuse them rather than
    silently ignore a likely mistake.)
    """

    name: ACName
    kind: VolumeKind
    source: str | None = None
    read_only: bool | None = None
    recursive: bool | None = None
    mode: str | None = None
    uid: int | None = None
    gid: int | None = None
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_ac_name(self.name, "name"))
        if self.kind == "host":
            if not self.source:
                raise ManifestError("source", "is required for a host volume")
            if not posixpath.isabs(self.source):
                raise ManifestError("source", f"{quote(self.source)} is not an absolute path")
            for key, value in (("mode", self.mode), ("uid", self.uid), ("gid", self.gid)):
                if value is not None:
                    raise ManifestError(key, "applies to empty volumes only, not to host volumes")
        elif self.kind == "empty":
            if self.source is not None:
                raise ManifestError("source", "applies to host volumes only, not to empty volumes")
            if self.mode is not None and not _mode().fullmatch(self.mode):
                raise ManifestError("mode", f"{quote(self.mode)} is not an octal mode such as 0755")
            for key, value in (("uid", self.uid), ("gid", self.gid)):
                if value is not None and not 0 <= value <= MAX_ID:
                    raise ManifestError(key, f"{value} is not a valid ID (0 to {MAX_ID})")
        else:
            raise ManifestError("kind", f"{quote(self.kind)} is not a volume kind", "host or empty")

    @property
    def effective_read_only(self) -> bool:
        return bool(self.read_only)

    @property
    def effective_recursive(self) -> bool:
        """Host volumes are mounted recursively unless ``recursive`` is false."""
        return self.recursive is not False

    @property
    def effective_mode(self) -> int:
        return int(self.mode or EMPTY_VOLUME_DEFAULT_MODE, 8)

    @property
    def effective_uid(self) -> int:
        return self.uid or 0

    @property
    def effective_gid(self) -> int:
        return self.gid or 0

    @classmethod
    def from_json(cls, value: JSONValue) -> Volume:
        fields = Fields(value, "a volume object")
        kind = fields.req_str("kind")
        if kind not in ("host", "empty"):
            raise ManifestError("kind", f"{quote(kind)} is not a volume kind", "host or empty")
        return cls(
            name=validate_ac_name(fields.req_str("name"), "name"),
            kind=kind,  # type: ignore[arg-type]
            source=fields.opt_str("source"),
            read_only=fields.opt_bool("readOnly"),
            recursive=fields.opt_bool("recursive"),
            mode=fields.opt_str("mode"),
            uid=fields.opt_int("uid"),
            gid=fields.opt_int("gid"),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": str(self.name), "kind": self.kind}
        for key, value in (
            ("source", self.source),
            ("readOnly", self.read_only),
            ("recursive", self.recursive),
            ("mode", self.mode),
            ("uid", self.uid),
            ("gid", self.gid),
        ):
            if value is not None:
                out[key] = value
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class Mount:
    """Maps a volume onto a path of an app: ``{volume, path, appVolume?}``."""

    volume: ACName
    path: str
    app_volume: Volume | None = None
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "volume", validate_ac_name(self.volume, "volume"))
        # Required by the text; the Go code accepts a mount without a path.
        if not self.path:
            raise ManifestError("path", "is required and cannot be empty")

    @classmethod
    def from_json(cls, value: JSONValue) -> Mount:
        fields = Fields(value, "a mount object {volume, path, appVolume}")
        app_volume = None
        if (raw := fields.opt("appVolume")) is not None:
            with at("appVolume"):
                app_volume = Volume.from_json(raw)
        return cls(
            volume=validate_ac_name(fields.req_str("volume"), "volume"),
            path=fields.req_str("path"),
            app_volume=app_volume,
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"volume": str(self.volume), "path": self.path}
        if self.app_volume is not None:
            out["appVolume"] = self.app_volume.to_json()
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class RuntimeImage:
    """The image of a pod app: ``{id, name?, labels?}``."""

    id: ImageID
    name: ACIdentifier | None = None
    labels: Labels = field(default_factory=Labels)
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        # Required by the text (a pod is reified before it runs); Go lets it be empty.
        object.__setattr__(self, "id", validate_image_id(self.id, "id"))
        if self.name is not None:
            object.__setattr__(self, "name", validate_ac_identifier(self.name, "name"))

    @classmethod
    def from_json(cls, value: JSONValue) -> RuntimeImage:
        fields = Fields(value, "an image object {id, name, labels}")
        name = fields.opt_str("name")
        return cls(
            id=validate_image_id(fields.req_str("id"), "id"),
            name=None if name is None else validate_ac_identifier(name, "name"),
            labels=read_labels(fields),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = str(self.name)
        out["id"] = str(self.id)
        if self.labels:
            out["labels"] = self.labels.to_json()
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class RuntimeApp:
    """One app of a pod: its name, its image, and optional overrides."""

    name: ACName
    image: RuntimeImage
    app: App | None = None
    read_only_root_fs: bool = False
    mounts: tuple[Mount, ...] = ()
    annotations: Annotations = field(default_factory=Annotations)
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_ac_name(self.name, "name"))
        object.__setattr__(self, "mounts", tuple(self.mounts))

    @classmethod
    def from_json(cls, value: JSONValue) -> RuntimeApp:
        fields = Fields(value, "a pod app object {name, image, app, ...}")
        name = validate_ac_name(fields.req_str("name"), "name")
        raw_image = fields.required("image")
        with at("image"):
            image = RuntimeImage.from_json(raw_image)
        app = None
        if (raw := fields.opt("app")) is not None:
            with at("app"):
                app = App.from_json(raw)
        mounts = []
        for i, item in enumerate(fields.opt_list("mounts")):
            with at(f"mounts[{i}]"):
                mounts.append(Mount.from_json(item))
        return cls(
            name=name,
            image=image,
            app=app,
            read_only_root_fs=bool(fields.opt_bool("readOnlyRootFS")),
            mounts=tuple(mounts),
            annotations=read_annotations(fields),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": str(self.name), "image": self.image.to_json()}
        if self.app is not None:
            out["app"] = self.app.to_json()
        if self.read_only_root_fs:
            out["readOnlyRootFS"] = True
        if self.mounts:
            out["mounts"] = [m.to_json() for m in self.mounts]
        if self.annotations:
            out["annotations"] = self.annotations.to_json()
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class ExposedPort:
    """A port the pod exposes on the host: ``{name, hostPort, hostIP?, podPort?}``."""

    name: ACName
    host_port: int
    host_ip: str | None = None
    pod_port: Port | None = None
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_ac_name(self.name, "name"))
        # "port number on the host": the Go code accepts any unsigned integer.
        if not 1 <= self.host_port <= 65535:
            raise ManifestError("hostPort", f"{self.host_port} is not a port number (1 to 65535)")
        if self.host_ip is not None:
            # The text asks for IPv4 dotted-quad; Go's net.IP would also take IPv6.
            validate_ipv4(self.host_ip, "hostIP")

    @classmethod
    def from_json(cls, value: JSONValue) -> ExposedPort:
        fields = Fields(value, "a port object {name, hostPort, hostIP, podPort}")
        pod_port = None
        if (raw := fields.opt("podPort")) is not None:
            with at("podPort"):
                pod_port = Port.from_json(raw)
        return cls(
            name=validate_ac_name(fields.req_str("name"), "name"),
            host_port=fields.req_int("hostPort"),
            host_ip=fields.opt_str("hostIP"),
            pod_port=pod_port,
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": str(self.name), "hostPort": self.host_port}
        if self.host_ip is not None:
            out["hostIP"] = self.host_ip
        if self.pod_port is not None:
            out["podPort"] = self.pod_port.to_json()
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class PodManifest:
    """A pod manifest. Build one with :func:`parse_pod_manifest` or directly.

    Raises:
        ManifestError: on construction, if a rule of the spec is broken.
    """

    ac_kind: Literal["PodManifest"] = POD_MANIFEST_KIND
    ac_version: SemVer = CURRENT_VERSION
    apps: tuple[RuntimeApp, ...] = ()
    volumes: tuple[Volume, ...] = ()
    isolators: tuple[Isolator, ...] = ()
    annotations: Annotations = field(default_factory=Annotations)
    ports: tuple[ExposedPort, ...] = ()
    user_annotations: UserMap = field(default_factory=FrozenDict)
    user_labels: UserMap = field(default_factory=FrozenDict)
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        if self.ac_kind != POD_MANIFEST_KIND:
            raise ManifestError(
                "acKind", f"expected {quote(POD_MANIFEST_KIND)}, got {quote(self.ac_kind)}"
            )
        object.__setattr__(self, "ac_version", validate_semver(self.ac_version, "acVersion"))
        for name in ("apps", "volumes", "isolators", "ports"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_unique("apps", [a.name for a in self.apps], "app")
        self._check_unique("volumes", [v.name for v in self.volumes], "volume")
        volumes = {v.name for v in self.volumes}
        port_owner: dict[str, str] = {}
        for i, app in enumerate(self.apps):
            for j, mount in enumerate(app.mounts):
                # The Go code accepts a mount naming no volume of the pod.
                if mount.app_volume is None and mount.volume not in volumes:
                    raise ManifestError(
                        f"apps[{i}].mounts[{j}].volume",
                        f"no volume named {quote(str(mount.volume))} in the pod",
                        "add it to volumes or give the mount an appVolume",
                    )
            if app.app is None:
                continue
            for j, port in enumerate(app.app.ports):
                # "port names MUST be unique among apps within a pod" (Go does not check).
                owner = port_owner.setdefault(port.name, str(app.name))
                if owner != app.name:
                    raise ManifestError(
                        f"apps[{i}].app.ports[{j}].name",
                        f"port {quote(str(port.name))} is also declared by app {quote(owner)}",
                    )
        if self.isolators:  # the isolator module loads only for manifests that have some
            from jetpack.schema.isolators import check_isolators

            with at("isolators"):
                check_isolators(self.isolators, "pod")

    @staticmethod
    def _check_unique(key: str, names: list[ACName], what: str) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                raise ManifestError(
                    f"{key}[{i}].name",
                    f"duplicate {what} name {quote(str(name))} (see [{seen[name]}])",
                )
            seen[name] = i

    def app(self, name: str) -> RuntimeApp | None:
        """The app called ``name``, or ``None``."""
        return next((a for a in self.apps if a.name == name), None)

    def volume(self, name: str) -> Volume | None:
        """The volume called ``name``, or ``None``."""
        return next((v for v in self.volumes if v.name == name), None)

    @classmethod
    def from_json(cls, value: JSONValue) -> PodManifest:
        fields = Fields(value, "a pod manifest object")
        # acVersion is required by the text; the Go code does not check it for pods.
        version = validate_semver(fields.req_str("acVersion"), "acVersion")
        read_kind(fields, POD_MANIFEST_KIND)
        # "apps" is required; Go accepts a pod without it. An empty list is allowed.
        raw_apps = expect_list(fields.required("apps"), "apps")
        apps = []
        for i, item in enumerate(raw_apps):
            with at(f"apps[{i}]"):
                apps.append(RuntimeApp.from_json(item))
        volumes = []
        for i, item in enumerate(fields.opt_list("volumes")):
            with at(f"volumes[{i}]"):
                volumes.append(Volume.from_json(item))
        isolators: tuple[Isolator, ...] = ()
        if (raw := fields.opt("isolators")) is not None:
            with at("isolators"):
                from jetpack.schema.isolators import parse_isolators

                isolators = parse_isolators(raw, "pod")
        ports = []
        for i, item in enumerate(fields.opt_list("ports")):
            with at(f"ports[{i}]"):
                ports.append(ExposedPort.from_json(item))
        return cls(
            ac_version=version,
            apps=tuple(apps),
            volumes=tuple(volumes),
            isolators=isolators,
            # pods.md restricts pod annotation names to AC Names, but types.md calls
            # annotation names AC Identifiers and rkt writes names like
            # "coreos.com/rkt/stage1/mutable"; we accept AC Identifiers everywhere.
            annotations=read_annotations(fields),
            ports=tuple(ports),
            user_annotations=fields.opt_str_map("userAnnotations"),
            user_labels=fields.opt_str_map("userLabels"),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as plain JSON data, keys in appc order, unknown fields last."""
        out: dict[str, Any] = {
            "acVersion": str(self.ac_version),
            "acKind": self.ac_kind,
            "apps": [a.to_json() for a in self.apps],
        }
        if self.volumes:
            out["volumes"] = [v.to_json() for v in self.volumes]
        if self.isolators:
            out["isolators"] = [i.to_json() for i in self.isolators]
        if self.annotations:
            out["annotations"] = self.annotations.to_json()
        if self.ports:
            out["ports"] = [p.to_json() for p in self.ports]
        if self.user_annotations:
            out["userAnnotations"] = dict(self.user_annotations)
        if self.user_labels:
            out["userLabels"] = dict(self.user_labels)
        return with_extra(out, self.extra)

    def dumps(self, *, pretty: bool = False) -> bytes:
        """UTF-8 JSON: compact, or indented by 4 like ``actool cat-manifest --pretty-print``."""
        return dump_bytes(self.to_json(), pretty=pretty)


def parse_pod_manifest(data: bytes | str | Mapping[str, Any]) -> PodManifest:
    """Parse and validate a pod manifest.

    Args:
        data: JSON bytes (UTF-8), a JSON string, or already decoded JSON data.

    Raises:
        ManifestError: for any invalid input, naming the JSON path and the rule.
    """
    return PodManifest.from_json(load_document(data))

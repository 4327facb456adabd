"""The image manifest (spec ``aci.md``, "Image Manifest Schema")."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from jetpack.errors import ManifestError
from jetpack.schema._json import (
    EMPTY,
    Fields,
    JSONObject,
    JSONValue,
    at,
    dump_bytes,
    expect_str,
    load_document,
    quote,
    with_extra,
)
from jetpack.schema.app import App
from jetpack.schema.types import (
    CURRENT_VERSION,
    ACIdentifier,
    Annotations,
    ImageID,
    Labels,
    SemVer,
    validate_ac_identifier,
    validate_image_id,
    validate_semver,
)

IMAGE_MANIFEST_KIND: Final = "ImageManifest"


def read_kind(fields: Fields, expected: str) -> None:
    """Check ``acKind`` against the manifest type being parsed."""
    kind = fields.req_str("acKind")
    if kind != expected:
        raise ManifestError("acKind", f"expected {quote(expected)}, got {quote(kind)}")


def read_labels(fields: Fields, key: str = "labels") -> Labels:
    raw = fields.opt(key)
    if raw is None:
        return Labels()
    with at(key):
        return Labels.from_json(raw)


def read_annotations(fields: Fields, key: str = "annotations") -> Annotations:
    raw = fields.opt(key)
    if raw is None:
        return Annotations()
    with at(key):
        return Annotations.from_json(raw)


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """An image to render below this one: ``{imageName, imageID?, labels?, size?}``."""

    image_name: ACIdentifier
    image_id: ImageID | None = None
    labels: Labels = field(default_factory=Labels)
    size: int | None = None
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_name", validate_ac_identifier(self.image_name, "imageName"))
        if self.image_id is not None:
            object.__setattr__(self, "image_id", validate_image_id(self.image_id, "imageID"))
        if self.size is not None and self.size < 0:
            raise ManifestError("size", f"{self.size} is not a valid size (bytes, >= 0)")

    @classmethod
    def from_json(cls, value: JSONValue) -> Dependency:
        fields = Fields(value, "a dependency object {imageName, imageID, labels, size}")
        image_id = fields.opt_str("imageID")
        return cls(
            image_name=validate_ac_identifier(fields.req_str("imageName"), "imageName"),
            image_id=None if image_id is None else validate_image_id(image_id, "imageID"),
            labels=read_labels(fields),
            size=fields.opt_int("size"),
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"imageName": str(self.image_name)}
        if self.image_id is not None:
            out["imageID"] = str(self.image_id)
        if self.labels:
            out["labels"] = self.labels.to_json()
        if self.size is not None:
            out["size"] = self.size
        return with_extra(out, self.extra)


@dataclass(frozen=True, kw_only=True)
class ImageManifest:
    """An image manifest. Build one with :func:`parse_image_manifest` or directly.

    Raises:
        ManifestError: on construction, if a rule of the spec is broken.
    """

    ac_kind: Literal["ImageManifest"] = IMAGE_MANIFEST_KIND
    ac_version: SemVer = CURRENT_VERSION
    name: ACIdentifier
    labels: Labels = field(default_factory=Labels)
    app: App | None = None
    annotations: Annotations = field(default_factory=Annotations)
    dependencies: tuple[Dependency, ...] = ()
    path_whitelist: tuple[str, ...] = ()
    extra: JSONObject = EMPTY

    def __post_init__(self) -> None:
        if self.ac_kind != IMAGE_MANIFEST_KIND:
            raise ManifestError(
                "acKind", f"expected {quote(IMAGE_MANIFEST_KIND)}, got {quote(self.ac_kind)}"
            )
        object.__setattr__(self, "ac_version", validate_semver(self.ac_version, "acVersion"))
        object.__setattr__(self, "name", validate_ac_identifier(self.name, "name"))
        object.__setattr__(self, "dependencies", tuple(self.dependencies))
        object.__setattr__(self, "path_whitelist", tuple(self.path_whitelist))
        for i, path in enumerate(self.path_whitelist):
            # "whitelist of absolute paths"; the Go code takes relative ones too.
            if not isinstance(path, str) or not posixpath.isabs(path):
                raise ManifestError(f"pathWhitelist[{i}]", f"{quote(path)} is not an absolute path")

    def label(self, name: str) -> str | None:
        """The value of label ``name``, or ``None``."""
        return self.labels.get(name)

    def annotation(self, name: str) -> str | None:
        """The value of annotation ``name``, or ``None``."""
        return self.annotations.get(name)

    @classmethod
    def from_json(cls, value: JSONValue) -> ImageManifest:
        fields = Fields(value, "an image manifest object")
        read_kind(fields, IMAGE_MANIFEST_KIND)
        version = validate_semver(fields.req_str("acVersion"), "acVersion")
        name = validate_ac_identifier(fields.req_str("name"), "name")
        labels = read_labels(fields)
        app = None
        if (raw_app := fields.opt("app")) is not None:
            with at("app"):
                app = App.from_json(raw_app)
        annotations = read_annotations(fields)
        dependencies = []
        for i, item in enumerate(fields.opt_list("dependencies")):
            with at(f"dependencies[{i}]"):
                dependencies.append(Dependency.from_json(item))
        whitelist = tuple(
            expect_str(item, f"pathWhitelist[{i}]")
            for i, item in enumerate(fields.opt_list("pathWhitelist"))
        )
        return cls(
            ac_version=version,
            name=name,
            labels=labels,
            app=app,
            annotations=annotations,
            dependencies=tuple(dependencies),
            path_whitelist=whitelist,
            extra=fields.extra(),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as plain JSON data, keys in appc order, unknown fields last."""
        out: dict[str, Any] = {
            "acKind": self.ac_kind,
            "acVersion": str(self.ac_version),
            "name": str(self.name),
        }
        if self.labels:
            out["labels"] = self.labels.to_json()
        if self.app is not None:
            out["app"] = self.app.to_json()
        if self.annotations:
            out["annotations"] = self.annotations.to_json()
        if self.dependencies:
            out["dependencies"] = [d.to_json() for d in self.dependencies]
        if self.path_whitelist:
            out["pathWhitelist"] = list(self.path_whitelist)
        return with_extra(out, self.extra)

    def dumps(self, *, pretty: bool = False) -> bytes:
        """UTF-8 JSON: compact, or indented by 4 like ``actool cat-manifest --pretty-print``."""
        return dump_bytes(self.to_json(), pretty=pretty)


def parse_image_manifest(data: bytes | str | Mapping[str, Any]) -> ImageManifest:
    """Parse and validate an image manifest.

    Args:
        data: JSON bytes (UTF-8), a JSON string, or already decoded JSON data.

    Raises:
        ManifestError: for any invalid input, naming the JSON path and the rule.
    """
    return ImageManifest.from_json(load_document(data))

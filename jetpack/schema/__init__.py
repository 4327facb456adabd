"""appc 0.8.11 types and manifests: parse, validate, serialise. Pure: values in, values out.

How the parts fit:

- ``_json``: strict decoding (UTF-8, no duplicate keys, no NaN) into immutable JSON
  (``FrozenDict``/tuples), the ``Fields`` reader that keeps unknown keys as ``extra``,
  and the ``at()`` helper that builds error paths like ``app.environment[2].name``.
- ``types``: identifiers (``ACIdentifier``, ``ACName``, ``SemVer``, ``ImageID``) as
  validated ``str`` subclasses, UUIDs, timestamps, URLs, and the name/value lists
  ``Labels``, ``Annotations``, ``Environment``.
- ``quantity``: exact Kubernetes-style resource quantities.
- ``isolators``: ``Isolator`` with a typed view of every isolator the spec (or the
  reference code) defines; unknown isolators are kept, not rejected.
- ``app``, ``image``, ``pod``: the manifest dataclasses. Every one validates itself in
  ``__post_init__``, so objects built in code obey the same rules as parsed ones.
- ``patch``: ``actool patch-manifest`` as a pure function, plus its option parsers.

Every rejection is a :class:`jetpack.errors.ManifestError` naming the JSON path. Where
the reference Go code and the spec text disagree, the text wins; each such place says
so in a comment and has a ``test_spec_text_*`` test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jetpack._lazy import lazy_attributes
from jetpack.errors import ManifestError
from jetpack.schema._json import FrozenDict, case_hint, load_document, quote
from jetpack.schema.app import App, EventHandler, MountPoint, Port
from jetpack.schema.image import (
    IMAGE_MANIFEST_KIND,
    Dependency,
    ImageManifest,
    parse_image_manifest,
)
from jetpack.schema.isolator_names import DEFAULT_CAPABILITIES
from jetpack.schema.pod import (
    POD_MANIFEST_KIND,
    ExposedPort,
    Mount,
    PodManifest,
    RuntimeApp,
    RuntimeImage,
    Volume,
    parse_pod_manifest,
)
from jetpack.schema.types import (
    APPC_VERSION,
    OS_ARCH,
    ACIdentifier,
    ACName,
    Annotations,
    Environment,
    ImageID,
    Labels,
    SemVer,
    validate_ac_identifier,
    validate_ac_name,
    validate_image_id,
    validate_image_id_prefix,
    validate_semver,
    validate_uuid,
)

if TYPE_CHECKING:
    from jetpack.schema.isolators import (
        KNOWN_ISOLATORS,
        CapabilitiesSet,
        Isolator,
        ResourceValue,
        SeccompSet,
        SELinuxContext,
    )
    from jetpack.schema.quantity import Quantity

# Loaded on first use: most manifests have no isolators, and a pod start should not pay
# for parsing them (see jetpack.schema.isolator_names).
_LAZY = {
    "KNOWN_ISOLATORS": "isolators",
    "CapabilitiesSet": "isolators",
    "Isolator": "isolators",
    "ResourceValue": "isolators",
    "SeccompSet": "isolators",
    "SELinuxContext": "isolators",
    "Quantity": "quantity",
}


if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "APPC_VERSION",
    "DEFAULT_CAPABILITIES",
    "KNOWN_ISOLATORS",
    "OS_ARCH",
    "ACIdentifier",
    "ACName",
    "Annotations",
    "App",
    "CapabilitiesSet",
    "Dependency",
    "Environment",
    "EventHandler",
    "ExposedPort",
    "FrozenDict",
    "ImageID",
    "ImageManifest",
    "Isolator",
    "Labels",
    "ManifestError",
    "Mount",
    "MountPoint",
    "PodManifest",
    "Port",
    "Quantity",
    "ResourceValue",
    "RuntimeApp",
    "RuntimeImage",
    "SELinuxContext",
    "SeccompSet",
    "SemVer",
    "Volume",
    "parse_image_manifest",
    "parse_manifest",
    "parse_pod_manifest",
    "validate_ac_identifier",
    "validate_ac_name",
    "validate_image_id",
    "validate_image_id_prefix",
    "validate_semver",
    "validate_uuid",
]


def parse_manifest(data: bytes | str | Mapping[str, Any]) -> ImageManifest | PodManifest:
    """Parse an image or a pod manifest, chosen by its ``acKind``.

    Raises:
        ManifestError: ``acKind`` is missing or unknown, or the manifest is invalid.
    """
    doc = load_document(data)
    kind = doc.get("acKind")
    if kind == IMAGE_MANIFEST_KIND:
        return ImageManifest.from_json(doc)
    if kind == POD_MANIFEST_KIND:
        return PodManifest.from_json(doc)
    if kind is None:
        hint = case_hint(doc, "acKind") or "ImageManifest or PodManifest"
        raise ManifestError("acKind", "is required", hint)
    raise ManifestError(
        "acKind", f"unknown manifest kind {quote(kind)}", "ImageManifest or PodManifest"
    )

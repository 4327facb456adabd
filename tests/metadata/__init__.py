"""Tests of the metadata service; the pods they register, shared by the modules here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jetpack.metadata.registry import Registration

CREATED = "2024-05-01T12:00:00Z"


def image_id(name: str) -> str:
    return "sha512-" + hashlib.sha512(name.encode()).hexdigest()


@dataclass(frozen=True)
class AppSpec:
    """One app of a test pod: its image manifest (exact bytes) and its annotations."""

    name: str
    image_manifest: bytes
    image_annotations: list[tuple[str, str]]
    pod_annotations: list[tuple[str, str]]
    merged: list[tuple[str, str]]  # what the service must answer, in order

    @property
    def image_id(self) -> str:
        return image_id(self.name)


@dataclass(frozen=True)
class PodSpec:
    uuid: str
    manifest: bytes
    annotations: list[tuple[str, str]]
    apps: list[AppSpec]

    @property
    def images(self) -> list[tuple[str, str, bytes]]:
        return [(app.name, app.image_id, app.image_manifest) for app in self.apps]

    def registration(self) -> Registration:
        return Registration.new(self.uuid, self.manifest, self.images, CREATED)

    def app(self, name: str) -> AppSpec:
        return next(app for app in self.apps if app.name == name)


def names(directory: Path) -> list[str]:
    """The names in ``directory``, sorted."""
    return sorted(entry.name for entry in directory.iterdir())


def annotations_json(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


def pod_manifest(
    apps: list[tuple[str, list[tuple[str, str]]]], annotations: list[tuple[str, str]]
) -> bytes:
    manifest: dict[str, Any] = {
        "acVersion": "0.8.11",
        "acKind": "PodManifest",
        "apps": [
            {
                "name": name,
                "image": {"name": f"example.com/{name}", "id": image_id(name)},
                **({"annotations": annotations_json(pairs)} if pairs else {}),
            }
            for name, pairs in apps
        ],
    }
    if annotations:
        manifest["annotations"] = annotations_json(annotations)
    return json.dumps(manifest, indent=1).encode()


def odd_image_manifest(name: str, annotations: list[tuple[str, str]]) -> bytes:
    """An image manifest as an image may have it: odd key order and spacing, a trailing
    newline, keys in annotations reversed. The service must serve these very bytes."""
    items = ",\n    ".join(
        f'{{ "value" :{json.dumps(value)},"name":{json.dumps(key)} }}' for key, value in annotations
    )
    return (
        f'{{  "name" : "example.com/{name}",\t"acVersion":"0.8.11",\n'
        f'  "labels": [ ],  "acKind":   "ImageManifest",\n'
        f'  "annotations": [\n    {items}\n  ]\n}}\n'
    ).encode()


def make_pod(
    uuid: str,
    names: tuple[str, str],
    *,
    pod_annotations: list[tuple[str, str]] | None = None,
) -> PodSpec:
    """A pod of two apps. The first has image annotations that the pod manifest replaces
    in part and extends; the second has image annotations only."""
    first, second = names
    image1 = [("authors", f"{first} team"), ("created", "2020-01-01"), ("homepage", "x")]
    pod1 = [("created", "2024-05-01"), ("extra", f"{first}-pod")]
    merged1 = [
        ("authors", f"{first} team"),
        ("created", "2024-05-01"),
        ("homepage", "x"),
        ("extra", f"{first}-pod"),
    ]
    image2 = [("documentation", f"https://example.com/{second}")]
    apps = [
        AppSpec(first, odd_image_manifest(first, image1), image1, pod1, merged1),
        AppSpec(second, odd_image_manifest(second, image2), image2, [], image2),
    ]
    pod_level = pod_annotations if pod_annotations is not None else [("owner", uuid[:8])]
    manifest = pod_manifest([(app.name, app.pod_annotations) for app in apps], pod_level)
    return PodSpec(uuid, manifest, pod_level, apps)


UUID_A = "0b6f1a2c-3d4e-4f50-8a1b-2c3d4e5f6a7b"
UUID_B = "9e8d7c6b-5a49-4384-9271-605f4e3d2c1b"
UUID_C = "11111111-2222-4333-8444-555555555555"


def pod_a() -> PodSpec:
    return make_pod(UUID_A, ("web", "db"))


def pod_b() -> PodSpec:
    return make_pod(UUID_B, ("api", "worker"))

"""Pod manifests: apps, images, volumes, mounts, exposed ports, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import PodManifest, RuntimeApp, RuntimeImage, Volume, parse_pod_manifest

from .conftest import IMAGE_ID, OTHER_ID


def test_full_example_parses(pod_doc: dict[str, Any]) -> None:
    pod = parse_pod_manifest(json.dumps(pod_doc))
    assert [a.name for a in pod.apps] == ["reduce-worker", "backup"]
    worker = pod.app("reduce-worker")
    assert worker is not None and worker.read_only_root_fs
    assert worker.image.name == "example.com/reduce-worker"
    assert worker.image.labels == {"version": "1.0.0"}
    backup = pod.app("backup")
    assert backup is not None and backup.app is None and backup.image.id == OTHER_ID
    scratch = backup.mounts[0].app_volume
    assert scratch is not None and scratch.effective_mode == 0o700 and scratch.effective_uid == 1
    host = pod.volume("worklib")
    assert host is not None and host.effective_read_only and host.effective_recursive
    empty = pod.volume("database")
    assert empty is not None
    assert (empty.effective_mode, empty.effective_uid, empty.effective_gid) == (0o755, 0, 0)
    assert pod.ports[0].host_ip == "203.0.113.23"
    assert pod.annotations == {"ip-address": "10.1.2.3"}
    assert pod.user_labels == {"tier": "batch"}
    assert pod.app("nope") is None and pod.volume("nope") is None


def test_round_trip_with_unknown_fields(pod_doc: dict[str, Any]) -> None:
    pod_doc["x-pod"] = 1
    pod_doc["apps"][0]["x-app"] = 2
    pod_doc["apps"][0]["image"]["x-image"] = 3
    pod_doc["apps"][0]["mounts"][0]["x-mount"] = 4
    pod_doc["apps"][1]["mounts"][0]["appVolume"]["x-appvol"] = 5
    pod_doc["volumes"][0]["x-vol"] = 6
    pod_doc["ports"][0]["x-port"] = 7
    pod_doc["ports"][0]["podPort"] = {"name": "ftp", "protocol": "tcp", "port": 21, "x-podport": 8}
    pod_doc["apps"][1]["annotations"][0]["x-anno"] = 9
    pod = parse_pod_manifest(pod_doc)
    again = parse_pod_manifest(pod.dumps())
    assert again == pod
    out = again.to_json()
    assert out["x-pod"] == 1
    assert out["apps"][0]["x-app"] == 2
    assert out["apps"][0]["image"]["x-image"] == 3
    assert out["apps"][0]["mounts"][0]["x-mount"] == 4
    assert out["apps"][1]["mounts"][0]["appVolume"]["x-appvol"] == 5
    assert out["volumes"][0]["x-vol"] == 6
    assert out["ports"][0]["x-port"] == 7
    assert out["ports"][0]["podPort"]["x-podport"] == 8
    assert out["apps"][1]["annotations"][0]["x-anno"] == 9
    assert list(out)[:3] == ["acVersion", "acKind", "apps"]


def test_go_style_nulls_read_as_absent() -> None:
    """The reference encoder writes ``null`` for empty lists without omitempty."""
    pod = parse_pod_manifest(
        {
            "acVersion": "0.8.11",
            "acKind": "PodManifest",
            "apps": [],
            "volumes": None,
            "isolators": None,
            "annotations": None,
            "ports": None,
        }
    )
    assert pod.apps == () and pod.volumes == () and pod.isolators == ()
    assert pod.to_json() == {"acVersion": "0.8.11", "acKind": "PodManifest", "apps": []}


@pytest.mark.parametrize(
    ("volume", "path", "message"),
    [
        ({"name": "v", "kind": "nfs"}, "volumes[2].kind", "not a volume kind"),
        ({"name": "v"}, "volumes[2].kind", "is required"),
        ({"kind": "empty"}, "volumes[2].name", "is required"),
        ({"name": "V", "kind": "empty"}, "volumes[2].name", "AC Name"),
        ({"name": "v", "kind": "host"}, "volumes[2].source", "is required"),
        ({"name": "v", "kind": "host", "source": "relative/dir"}, "volumes[2].source", "absolute"),
        (
            {"name": "v", "kind": "host", "source": "/x", "mode": "0755"},
            "volumes[2].mode",
            "empty volumes only",
        ),
        (
            {"name": "v", "kind": "host", "source": "/x", "uid": 0},
            "volumes[2].uid",
            "empty volumes only",
        ),
        (
            {"name": "v", "kind": "host", "source": "/x", "gid": 0},
            "volumes[2].gid",
            "empty volumes only",
        ),
        ({"name": "v", "kind": "empty", "source": "/x"}, "volumes[2].source", "host volumes only"),
        ({"name": "v", "kind": "empty", "mode": "rwx"}, "volumes[2].mode", "octal"),
        ({"name": "v", "kind": "empty", "mode": "0789"}, "volumes[2].mode", "octal"),
        ({"name": "v", "kind": "empty", "mode": 493}, "volumes[2].mode", "expected a string"),
        ({"name": "v", "kind": "empty", "uid": -1}, "volumes[2].uid", "not a valid ID"),
        ({"name": "v", "kind": "empty", "gid": "0"}, "volumes[2].gid", "expected an integer"),
        (
            {"name": "v", "kind": "host", "source": "/x", "readOnly": "true"},
            "volumes[2].readOnly",
            "expected a boolean",
        ),
        (
            {"name": "v", "kind": "host", "source": "/x", "recursive": 1},
            "volumes[2].recursive",
            "expected a boolean",
        ),
        ({"name": "worklib", "kind": "empty"}, "volumes[2].name", "duplicate volume name"),
        ("worklib", "volumes[2]", "expected a volume object"),
    ],
)
def test_volume_rules(volume: Any, path: str, message: str, pod_doc: dict[str, Any]) -> None:
    pod_doc["volumes"].append(volume)
    with pytest.raises(ManifestError, match=message) as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == path


@pytest.mark.parametrize(
    "volume",
    [
        {"name": "v", "kind": "empty", "mode": "1777", "uid": 1000, "gid": 1000, "readOnly": False},
        {"name": "v", "kind": "host", "source": "/", "recursive": False, "readOnly": True},
    ],
)
def test_volume_valid(volume: dict[str, Any], pod_doc: dict[str, Any]) -> None:
    pod_doc["volumes"].append(volume)
    parsed = parse_pod_manifest(pod_doc).volumes[2]
    assert parsed.to_json() == volume


def test_non_recursive_host_volume() -> None:
    volume = Volume(name="v", kind="host", source="/srv", recursive=False)  # type: ignore[arg-type]
    assert not volume.effective_recursive


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"acKind": "ImageManifest"}, "acKind", 'expected "PodManifest"'),
        ({"apps": {}}, "apps", "expected an array"),
        ({"apps": [{"image": {"id": IMAGE_ID}}]}, "apps[0].name", "is required"),
        ({"apps": [{"name": "a"}]}, "apps[0].image", "is required"),
        (
            {
                "apps": [
                    {"name": "a", "image": {"id": IMAGE_ID}},
                    {"name": "a", "image": {"id": IMAGE_ID}},
                ]
            },
            "apps[1].name",
            "duplicate app name",
        ),
        ({"apps": [{"name": "a_b", "image": {"id": IMAGE_ID}}]}, "apps[0].name", "AC Name"),
        (
            {"apps": [{"name": "a", "image": {"id": IMAGE_ID, "name": "A"}}]},
            "apps[0].image.name",
            "AC Identifier",
        ),
        (
            {
                "apps": [
                    {
                        "name": "a",
                        "image": {"id": IMAGE_ID, "labels": [{"name": "os", "value": "beos"}]},
                    }
                ]
            },
            "apps[0].image.labels[0].value",
            "unsupported os",
        ),
        (
            {"apps": [{"name": "a", "image": {"id": IMAGE_ID}, "readOnlyRootFS": "yes"}]},
            "apps[0].readOnlyRootFS",
            "expected a boolean",
        ),
        (
            {"apps": [{"name": "a", "image": {"id": IMAGE_ID}, "app": {"user": "0"}}]},
            "apps[0].app.group",
            "is required",
        ),
        (
            {"apps": [{"name": "a", "image": {"id": IMAGE_ID}, "mounts": [{"path": "/x"}]}]},
            "apps[0].mounts[0].volume",
            "is required",
        ),
        (
            {
                "apps": [
                    {
                        "name": "a",
                        "image": {"id": IMAGE_ID},
                        "annotations": [{"name": "x", "value": "1"}, {"name": "x", "value": "2"}],
                    }
                ]
            },
            "apps[0].annotations[1].name",
            "duplicate annotation",
        ),
        ({"ports": [{"name": "ftp"}]}, "ports[0].hostPort", "is required"),
        ({"ports": [{"name": "ftp", "hostPort": 0}]}, "ports[0].hostPort", "not a port number"),
        ({"ports": [{"name": "ftp", "hostPort": 21, "hostIP": "::1"}]}, "ports[0].hostIP", "IPv4"),
        (
            {"ports": [{"name": "ftp", "hostPort": 21, "hostIP": "1.2.3"}]},
            "ports[0].hostIP",
            "IPv4",
        ),
        (
            {
                "ports": [
                    {
                        "name": "ftp",
                        "hostPort": 21,
                        "podPort": {"name": "ftp", "protocol": "tcp", "port": 0},
                    }
                ]
            },
            "ports[0].podPort.port",
            "not a port number",
        ),
        (
            {"annotations": [{"name": "homepage", "value": "gopher://x"}]},
            "annotations[0].value",
            "http or https",
        ),
        ({"userAnnotations": {"k": ["v"]}}, "userAnnotations.k", "expected a string"),
        ({"isolators": {}}, "isolators", "expected an array"),
    ],
)
def test_pod_rules(
    change: dict[str, Any], path: str, message: str, pod_doc: dict[str, Any]
) -> None:
    pod_doc.update(change)
    with pytest.raises(ManifestError, match=message) as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == path


def test_pod_built_in_code_is_validated() -> None:
    app = RuntimeApp(name="a", image=RuntimeImage(id=IMAGE_ID))  # type: ignore[arg-type]
    assert PodManifest(apps=(app,)).to_json()["apps"] == [{"name": "a", "image": {"id": IMAGE_ID}}]
    with pytest.raises(ManifestError) as info:
        PodManifest(apps=(app, app))
    assert info.value.path == "apps[1].name"

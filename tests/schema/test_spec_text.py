"""One test per place where the reference Go code and the spec text disagree.

Jetpack follows the text. Each docstring says what the Go code does instead.
"""

from __future__ import annotations

from typing import Any

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import (
    Quantity,
    parse_image_manifest,
    parse_manifest,
    parse_pod_manifest,
    validate_ac_identifier,
)


def test_spec_text_keys_are_case_sensitive(make_app_doc: Any) -> None:
    """Go's encoding/json matches field names in any case ("ACKIND" reads as acKind)."""
    doc = make_app_doc()
    doc["ackind"] = doc.pop("acKind")
    with pytest.raises(ManifestError, match="is required") as info:
        parse_image_manifest(doc)
    assert info.value.path == "acKind"
    assert info.value.hint == 'found "ackind": keys are case-sensitive, write "acKind"'
    with pytest.raises(ManifestError, match='found "ackind": keys are case-sensitive'):
        parse_manifest(doc)
    doc = make_app_doc(supplementaryGids=[5])
    manifest = parse_image_manifest(doc)
    assert manifest.app is not None and manifest.app.supplementary_gids == ()
    assert manifest.app.extra == {"supplementaryGids": (5,)}


def test_spec_text_pod_requires_apps(pod_doc: dict[str, Any]) -> None:
    """Go accepts a pod manifest without "apps"; the text marks it required."""
    del pod_doc["apps"]
    with pytest.raises(ManifestError, match="is required") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "apps"


def test_spec_text_pod_app_image_requires_id(pod_doc: dict[str, Any]) -> None:
    """Go accepts an app image without "id"; the text says id is required."""
    del pod_doc["apps"][1]["image"]["id"]
    with pytest.raises(ManifestError, match="is required") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "apps[1].image.id"


def test_spec_text_mount_requires_path(pod_doc: dict[str, Any]) -> None:
    """Go never validates pod mounts, so a mount without "path" passes."""
    del pod_doc["apps"][0]["mounts"][0]["path"]
    with pytest.raises(ManifestError, match="is required") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "apps[0].mounts[0].path"


def test_spec_text_mount_must_name_a_volume(pod_doc: dict[str, Any]) -> None:
    """Go accepts a mount whose volume is not in "volumes" (and has no appVolume)."""
    pod_doc["apps"][0]["mounts"][0]["volume"] = "nowhere"
    with pytest.raises(ManifestError, match='no volume named "nowhere"') as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "apps[0].mounts[0].volume"


def test_spec_text_host_port_range(pod_doc: dict[str, Any]) -> None:
    """Go takes any unsigned hostPort (70000 passes); the text says it is a port number."""
    pod_doc["ports"][0]["hostPort"] = 70000
    with pytest.raises(ManifestError, match="not a port number") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "ports[0].hostPort"


def test_spec_text_port_requires_protocol(make_app_doc: Any) -> None:
    """Go accepts a port without "protocol"; the text marks it required."""
    doc = make_app_doc(ports=[{"name": "www", "port": 80}])
    with pytest.raises(ManifestError, match="is required") as info:
        parse_image_manifest(doc)
    assert info.value.path == "app.ports[0].protocol"


@pytest.mark.parametrize(
    ("mount_points", "path"),
    [
        ([{}], "app.mountPoints[0].name"),
        ([{"name": "db", "path": ""}], "app.mountPoints[0].path"),
        ([{"name": "db", "path": "/a"}, {"name": "db", "path": "/b"}], "app.mountPoints[1].name"),
    ],
)
def test_spec_text_mount_point_name_path_required_and_unique(
    mount_points: list[Any], path: str, make_app_doc: Any
) -> None:
    """Go never validates mountPoints: empty ones and duplicate names pass."""
    with pytest.raises(ManifestError) as info:
        parse_image_manifest(make_app_doc(mountPoints=mount_points))
    assert info.value.path == path


def test_spec_text_path_whitelist_absolute(make_app_doc: Any) -> None:
    """Go accepts relative pathWhitelist entries; the text says absolute paths."""
    doc = make_app_doc()
    doc["pathWhitelist"] = ["/etc/passwd", "usr/bin/x"]
    with pytest.raises(ManifestError, match="not an absolute path") as info:
        parse_image_manifest(doc)
    assert info.value.path == "pathWhitelist[1]"


def test_spec_text_capability_sets_conflict(make_app_doc: Any) -> None:
    """Go accepts a capabilities retain set together with a remove set; the text forbids it."""
    doc = make_app_doc(
        isolators=[
            {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}},
            {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_KILL"]}},
        ]
    )
    with pytest.raises(ManifestError, match="cannot be used together") as info:
        parse_image_manifest(doc)
    assert info.value.path == "app.isolators[1].name"


@pytest.mark.parametrize("value", ["a--b", "a..b", "a/-b", "example.com/~user/app"])
def test_spec_text_identifier_full_regex(value: str) -> None:
    """Go checks only the character class and the first/last character, so "a--b" passes.

    Note that the last case is (close to) an example in types.md that its own regex rejects.
    """
    with pytest.raises(ManifestError, match="not a valid AC Identifier"):
        validate_ac_identifier(value, "name")


def test_spec_text_supplementary_gids_unsigned(make_app_doc: Any) -> None:
    """Go reads supplementaryGIDs into []int, so -1 passes; the text says unsigned."""
    with pytest.raises(ManifestError, match="not a valid group ID") as info:
        parse_image_manifest(make_app_doc(supplementaryGIDs=[10, -1]))
    assert info.value.path == "app.supplementaryGIDs[1]"


def test_spec_text_port_count_at_least_one(make_app_doc: Any) -> None:
    """Go turns "count": 0 into 1; the text says count must be >= 1."""
    doc = make_app_doc(ports=[{"name": "www", "protocol": "tcp", "port": 80, "count": 0}])
    with pytest.raises(ManifestError, match="must be >= 1") as info:
        parse_image_manifest(doc)
    assert info.value.path == "app.ports[0].count"


def test_spec_text_image_id_is_hex(make_app_doc: Any) -> None:
    """Go accepts any "sha512-<anything>"; the text says the hex-encoded digest."""
    doc = make_app_doc()
    doc["dependencies"] = [{"imageName": "example.com/base", "imageID": "sha512-not-hex"}]
    with pytest.raises(ManifestError, match="not a valid image ID") as info:
        parse_image_manifest(doc)
    assert info.value.path == "dependencies[0].imageID"


def test_spec_text_pod_requires_ac_version(pod_doc: dict[str, Any]) -> None:
    """Go does not check acVersion on pod manifests; the text marks it required."""
    del pod_doc["acVersion"]
    with pytest.raises(ManifestError, match="is required") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "acVersion"


def test_spec_text_port_names_unique_in_pod(pod_doc: dict[str, Any]) -> None:
    """Go lets two apps of a pod declare the same port name; the text says MUST be unique."""
    pod_doc["apps"][1]["app"] = {
        "user": "0",
        "group": "0",
        "ports": [{"name": "ftp", "protocol": "tcp", "port": 2121}],
    }
    with pytest.raises(ManifestError, match='also declared by app "reduce-worker"') as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "apps[1].app.ports[0].name"


def test_spec_text_unknown_app_isolator_kept(make_app_doc: Any) -> None:
    """Go rejects an unknown isolator inside an app; the text allows any name and value."""
    doc = make_app_doc(isolators=[{"name": "example.com/gpu", "value": {"count": 1}}])
    app = parse_image_manifest(doc).app
    assert app is not None
    assert app.isolators[0].value is None
    assert app.to_json()["isolators"] == [{"name": "example.com/gpu", "value": {"count": 1}}]


def test_spec_text_quantity_uppercase_k() -> None:
    """Go (Kubernetes) rejects "1K"; the text lists K among the metric suffixes."""
    assert Quantity("1K").value == 1000
    assert Quantity("1K") == Quantity("1k")

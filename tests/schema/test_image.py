"""Image manifests: the app object, dependencies, JSON-level errors, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import (
    App,
    ImageManifest,
    Labels,
    Port,
    parse_image_manifest,
    parse_manifest,
    parse_pod_manifest,
)

from .conftest import IMAGE_ID


def test_full_example_parses(image_doc: dict[str, Any]) -> None:
    manifest = parse_image_manifest(json.dumps(image_doc).encode())
    assert manifest.ac_kind == "ImageManifest"
    assert manifest.name == "example.com/reduce-worker"
    assert manifest.label("os") == "linux"
    assert manifest.label("missing") is None
    assert manifest.annotation("homepage") == "https://example.com"
    app = manifest.app
    assert app is not None
    assert app.exec == ("/usr/bin/reduce-worker", "--quiet")
    assert app.supplementary_gids == (400, 500)
    assert [h.name for h in app.event_handlers] == ["pre-start", "post-stop"]
    assert app.event_handler("post-stop") is not None
    assert app.environment == {"REDUCE_WORKER_DEBUG": "true"}
    assert app.mount_points[0].read_only is True
    assert app.ports[0].count == 1 and app.ports[1].count == 1000
    assert app.ports[0].socket_activated and not app.ports[1].socket_activated
    assert app.user_annotations == {"any key": "value"}
    assert manifest.dependencies[0].image_id == IMAGE_ID
    assert manifest.dependencies[0].size == 22017258
    assert manifest.path_whitelist[0] == "/etc/ca/example.com/crt"


@pytest.mark.parametrize("form", ["bytes", "str", "mapping"])
def test_round_trip_is_identity(form: str, image_doc: dict[str, Any]) -> None:
    data: Any = {
        "bytes": json.dumps(image_doc).encode(),
        "str": json.dumps(image_doc),
        "mapping": image_doc,
    }[form]
    first = parse_image_manifest(data)
    second = parse_image_manifest(first.dumps())
    assert second == first
    assert second.to_json() == first.to_json()
    assert parse_image_manifest(first.dumps(pretty=True)) == first


def test_serialisation_keeps_appc_key_order(image_doc: dict[str, Any]) -> None:
    image_doc = {key: image_doc[key] for key in reversed(list(image_doc))}
    out = parse_image_manifest(image_doc).to_json()
    assert list(out) == [
        "acKind",
        "acVersion",
        "name",
        "labels",
        "app",
        "annotations",
        "dependencies",
        "pathWhitelist",
    ]
    assert list(out["app"])[:4] == ["exec", "eventHandlers", "user", "group"]


def test_dumps_compact_and_pretty(make_app_doc: Any) -> None:
    manifest = parse_image_manifest(make_app_doc())
    assert manifest.dumps().startswith(b'{"acKind":"ImageManifest","acVersion":"0.8.11"')
    pretty = manifest.dumps(pretty=True).decode()
    assert pretty.startswith('{\n    "acKind": "ImageManifest",\n')
    assert '\n        "exec": [\n            "/bin/true"\n        ],' in pretty


def test_dumps_non_ascii_is_utf8() -> None:
    doc = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "x",
        "annotations": [{"name": "authors", "value": "Zo\u00eb \u2603"}],
    }
    assert "Zo\u00eb \u2603".encode() in parse_image_manifest(doc).dumps()


def test_unknown_fields_round_trip_at_every_level(image_doc: dict[str, Any]) -> None:
    image_doc["x-top"] = {"nested": [1, 2.5, None, True]}
    image_doc["labels"][0]["x-label"] = "l"
    image_doc["annotations"][1]["x-anno"] = 1
    image_doc["dependencies"][0]["x-dep"] = []
    app = image_doc["app"]
    app["x-app"] = "a"
    app["eventHandlers"][0]["x-handler"] = {}
    app["environment"][0]["x-env"] = False
    app["isolators"][0]["x-iso"] = "i"
    app["mountPoints"][0]["x-mp"] = "m"
    app["ports"][1]["x-port"] = 8
    manifest = parse_image_manifest(image_doc)
    assert manifest.extra == {"x-top": {"nested": (1, 2.5, None, True)}}
    out = manifest.to_json()
    assert out["x-top"] == {"nested": [1, 2.5, None, True]}
    assert out["labels"][0]["x-label"] == "l"
    assert out["annotations"][1]["x-anno"] == 1
    assert out["dependencies"][0]["x-dep"] == []
    assert out["app"]["x-app"] == "a"
    assert out["app"]["eventHandlers"][0]["x-handler"] == {}
    assert out["app"]["environment"][0]["x-env"] is False
    assert out["app"]["isolators"][0]["x-iso"] == "i"
    assert out["app"]["mountPoints"][0]["x-mp"] == "m"
    assert out["app"]["ports"][1]["x-port"] == 8
    assert parse_image_manifest(manifest.dumps()) == manifest
    assert list(out)[-1] == "x-top"


def test_null_optional_fields_are_absent(make_app_doc: Any) -> None:
    """Go writes ``null`` for empty slices; they read as absent."""
    doc = make_app_doc(environment=None, isolators=None, ports=None, workingDirectory=None)
    doc["labels"] = None
    doc["annotations"] = None
    manifest = parse_image_manifest(doc)
    assert manifest.labels == Labels() and manifest.app is not None
    assert manifest.app.working_directory is None
    assert "labels" not in manifest.to_json()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"acKind": "ImageManifest",', "invalid JSON"),
        (b"", "invalid JSON"),
        (b"\xef\xbb\xbf{}", "invalid JSON"),
        ("[1, 2]", "top level must be a JSON object, got an array"),
        ('"ImageManifest"', "top level must be a JSON object, got a string"),
        ("null", "top level must be a JSON object, got null"),
        ('{"acKind": "ImageManifest", "name": Infinity}', "invalid JSON"),
        ('{"acKind": NaN}', "invalid JSON"),
    ],
)
def test_json_level_errors(data: bytes | str, message: str) -> None:
    for parse in (parse_image_manifest, parse_pod_manifest, parse_manifest):
        with pytest.raises(ManifestError, match=message) as info:
            parse(data)
        assert info.value.path == ""


def test_duplicate_keys_are_rejected_with_their_path(image_doc: dict[str, Any]) -> None:
    text = json.dumps(image_doc).replace('"user": "100"', '"user": "100", "user": "0"')
    with pytest.raises(ManifestError, match='duplicate key "user"') as info:
        parse_image_manifest(text)
    assert info.value.path == "app.user"


def test_lone_surrogate_is_rejected() -> None:
    text = (
        '{"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "x",'
        ' "labels": [{"name": "a", "value": "\\ud800"}]}'
    )
    with pytest.raises(ManifestError, match="surrogate") as info:
        parse_image_manifest(text)
    assert info.value.path == "labels[0].value"


@pytest.mark.parametrize("data", [42, None, ["a"], object()])
def test_wrong_input_type(data: Any) -> None:
    with pytest.raises(ManifestError, match="expected JSON bytes"):
        parse_image_manifest(data)


@pytest.mark.parametrize(
    ("value", "path"),
    [({1: "a"}, ""), ({"x": {1, 2}}, "x"), ({"x": [float("nan")]}, "x[0]")],
)
def test_mapping_input_must_be_json_data(value: Any, path: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_image_manifest(value)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"acKind": None}, "acKind", "is required"),
        ({"acKind": "PodManifest"}, "acKind", 'expected "ImageManifest", got "PodManifest"'),
        ({"acKind": 1}, "acKind", "expected a string, got an integer"),
        ({"acVersion": "0.8"}, "acVersion", "SemVer"),
        ({"acVersion": 8}, "acVersion", "expected a string"),
        ({"name": "Example.com/App"}, "name", "AC Identifier"),
        ({"name": ""}, "name", "AC Identifier"),
        ({"labels": {"os": "linux"}}, "labels", "expected an array, got an object"),
        ({"labels": [["os", "linux"]]}, "labels[0]", "expected a {name, value} label object"),
        ({"app": []}, "app", "expected an app object, got an array"),
        ({"app": "run"}, "app", "expected an app object, got a string"),
        ({"dependencies": [{}]}, "dependencies[0].imageName", "is required"),
        (
            {"dependencies": [{"imageName": "a", "imageID": "sha512-xyz"}]},
            "dependencies[0].imageID",
            "image ID",
        ),
        (
            {"dependencies": [{"imageName": "a", "size": -1}]},
            "dependencies[0].size",
            "not a valid size",
        ),
        (
            {"dependencies": [{"imageName": "a", "size": "1"}]},
            "dependencies[0].size",
            "expected an integer",
        ),
        ({"pathWhitelist": "/etc"}, "pathWhitelist", "expected an array"),
        ({"pathWhitelist": ["/etc", 1]}, "pathWhitelist[1]", "expected a string"),
        (
            {"annotations": [{"name": "created", "value": "now"}]},
            "annotations[0].value",
            "RFC 3339",
        ),
    ],
)
def test_manifest_field_errors(
    change: dict[str, Any], path: str, message: str, make_app_doc: Any
) -> None:
    doc = make_app_doc()
    for key, value in change.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    with pytest.raises(ManifestError, match=message) as info:
        parse_image_manifest(doc)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("app", "path", "message"),
    [
        ({"user": None}, "app.user", "is required"),
        ({"group": None}, "app.group", "is required"),
        ({"user": ""}, "app.user", "cannot be empty"),
        ({"group": 0}, "app.group", "expected a string"),
        ({"exec": "/bin/sh -c"}, "app.exec", "expected an array"),
        ({"exec": ["/bin/sh", 1]}, "app.exec[1]", "expected a string"),
        ({"exec": [""]}, "app.exec[0]", "executable cannot be an empty string"),
        ({"supplementaryGIDs": [1, "2"]}, "app.supplementaryGIDs[1]", "expected an integer"),
        ({"supplementaryGIDs": [2**32]}, "app.supplementaryGIDs[0]", "not a valid group ID"),
        ({"supplementaryGIDs": [True]}, "app.supplementaryGIDs[0]", "expected an integer"),
        ({"workingDirectory": "opt/work"}, "app.workingDirectory", "not an absolute path"),
        ({"workingDirectory": ""}, "app.workingDirectory", "not an absolute path"),
        (
            {"eventHandlers": [{"name": "pre-stop", "exec": ["/x"]}]},
            "app.eventHandlers[0].name",
            "not an event handler name",
        ),
        ({"eventHandlers": [{"name": "pre-start"}]}, "app.eventHandlers[0].exec", "is required"),
        (
            {"eventHandlers": [{"name": "pre-start", "exec": []}]},
            "app.eventHandlers[0].exec",
            "needs a command",
        ),
        (
            {
                "eventHandlers": [
                    {"name": "pre-start", "exec": ["/a"]},
                    {"name": "pre-start", "exec": ["/b"]},
                ]
            },
            "app.eventHandlers[1].name",
            "duplicate event handler",
        ),
        ({"mountPoints": [{"name": "Work", "path": "/w"}]}, "app.mountPoints[0].name", "AC Name"),
        ({"mountPoints": [{"name": "work"}]}, "app.mountPoints[0].path", "is required"),
        (
            {"mountPoints": [{"name": "work", "path": "/w", "readOnly": "yes"}]},
            "app.mountPoints[0].readOnly",
            "expected a boolean",
        ),
        (
            {"ports": [{"name": "http", "protocol": "tcp", "port": 0}]},
            "app.ports[0].port",
            "not a port number",
        ),
        (
            {"ports": [{"name": "http", "protocol": "tcp", "port": 65536}]},
            "app.ports[0].port",
            "not a port number",
        ),
        (
            {"ports": [{"name": "http", "protocol": "tcp", "port": 80.0}]},
            "app.ports[0].port",
            "expected an integer",
        ),
        (
            {"ports": [{"name": "http", "protocol": "tcp", "port": "80"}]},
            "app.ports[0].port",
            "expected an integer",
        ),
        ({"ports": [{"name": "http", "protocol": "tcp"}]}, "app.ports[0].port", "is required"),
        (
            {"ports": [{"name": "http", "protocol": "tcp", "port": 65530, "count": 7}]},
            "app.ports[0].count",
            "beyond port 65535",
        ),
        (
            {"ports": [{"name": "http", "protocol": "tcp", "port": 80, "socketActivated": 1}]},
            "app.ports[0].socketActivated",
            "expected a boolean",
        ),
        (
            {
                "ports": [
                    {"name": "http", "protocol": "tcp", "port": 80},
                    {"name": "http", "protocol": "udp", "port": 81},
                ]
            },
            "app.ports[1].name",
            "duplicate port",
        ),
        ({"userAnnotations": {"a": 1}}, "app.userAnnotations.a", "expected a string"),
        ({"userLabels": ["a"]}, "app.userLabels", "expected an object of strings"),
        ({"environment": {"A": "1"}}, "app.environment", "expected an array"),
    ],
)
def test_app_rules(app: dict[str, Any], path: str, message: str, make_app_doc: Any) -> None:
    doc = make_app_doc()
    for key, value in app.items():
        if value is None:
            del doc["app"][key]
        else:
            doc["app"][key] = value
    with pytest.raises(ManifestError, match=message) as info:
        parse_image_manifest(doc)
    assert info.value.path == path


@pytest.mark.parametrize(
    "app",
    [
        {"exec": None},
        {"user": "root", "group": "wheel"},
        {"user": "/usr/bin/ping", "group": "/usr/bin/ping"},
        {"ports": [{"name": "range", "protocol": "udp", "port": 65535, "count": 1}]},
        {"ports": [{"name": "any", "protocol": "sctp", "port": 1}]},
        {"supplementaryGIDs": [0, 2**32 - 1]},
        {"workingDirectory": "/"},
    ],
)
def test_app_valid_variants(app: dict[str, Any], make_app_doc: Any) -> None:
    doc = make_app_doc()
    for key, value in app.items():
        if value is None:
            del doc["app"][key]
        else:
            doc["app"][key] = value
    manifest = parse_image_manifest(doc)
    assert parse_image_manifest(manifest.dumps()) == manifest


def test_manifest_without_app_or_optional_fields() -> None:
    manifest = parse_image_manifest(
        {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/base"}
    )
    assert manifest.app is None
    assert manifest.to_json() == {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "example.com/base",
    }


def test_objects_built_in_code_are_validated() -> None:
    manifest = ImageManifest(name="example.com/x", app=App(exec=("/x",), user="0", group="0"))  # type: ignore[arg-type]
    assert manifest.ac_version == "0.8.11"
    with pytest.raises(ManifestError) as info:
        App(
            user="0",
            group="0",
            ports=(Port(name="a", protocol="tcp", port=1), Port(name="a", protocol="tcp", port=2)),
        )  # type: ignore[arg-type]
    assert info.value.path == "ports[1].name"
    with pytest.raises(ManifestError):
        ImageManifest(name="BAD")  # type: ignore[arg-type]
    with pytest.raises(ManifestError):
        ImageManifest(name="x", path_whitelist=("relative",))  # type: ignore[arg-type]


def test_manifests_are_immutable(make_app_doc: Any) -> None:
    manifest = parse_image_manifest(make_app_doc())
    with pytest.raises(AttributeError):
        manifest.name = "other"  # type: ignore[misc]
    assert hash(manifest) == hash(parse_image_manifest(make_app_doc()))


def test_parse_manifest_dispatches(make_app_doc: Any, pod_doc: dict[str, Any]) -> None:
    assert isinstance(parse_manifest(make_app_doc()), ImageManifest)
    assert parse_manifest(json.dumps(pod_doc)).ac_kind == "PodManifest"
    with pytest.raises(ManifestError, match="is required") as info:
        parse_manifest({"acVersion": "0.8.11"})
    assert info.value.path == "acKind"
    with pytest.raises(ManifestError, match="unknown manifest kind") as info:
        parse_manifest({"acKind": "ContainerManifest"})
    assert info.value.path == "acKind"

"""Registrations: tokens and keys, the answers computed once, their files, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jetpack.metadata.paths import MetadataPaths, existing_pods, metadata_url
from jetpack.metadata.registry import KEY_BYTES, Registration, Registry, merge_annotations
from tests.metadata import (
    CREATED,
    UUID_A,
    UUID_B,
    UUID_C,
    annotations_json,
    make_pod,
    names,
    pod_a,
    pod_b,
    pod_manifest,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- Registration.new ------------------------------------------------------------------------


def test_new_draws_a_long_url_safe_token_and_a_64_byte_key() -> None:
    pod = pod_a()
    first, second = pod.registration(), pod.registration()
    for reg in (first, second):
        assert reg.token.isascii()
        assert set(reg.token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        raw = base64.urlsafe_b64decode(reg.token + "=" * (-len(reg.token) % 4))
        assert len(raw) * 8 >= 128
        assert len(reg.key) == KEY_BYTES == 64
    assert first.token != second.token
    assert first.key != second.key
    assert first.uuid == second.uuid == UUID_A
    assert first.created == CREATED


def test_new_computes_every_answer() -> None:
    pod = pod_a()
    reg = pod.registration()
    assert reg.manifest == pod.manifest
    assert json.loads(reg.annotations) == annotations_json(pod.annotations)
    assert list(reg.apps) == ["web", "db"]
    for spec in pod.apps:
        app = reg.apps[spec.name]
        assert app.image_id == spec.image_id
        assert app.image_manifest == spec.image_manifest  # byte for byte
        assert json.loads(app.annotations) == annotations_json(spec.merged)


def test_image_manifest_is_kept_byte_for_byte() -> None:
    pod = pod_a()
    odd = b'{"name":"example.com/web",   "acKind"  :"ImageManifest",\r\n\t"acVersion":"0.8.11"}  \n'
    images = [("web", "sha512-1", odd), pod.images[1]]
    reg = Registration.new(pod.uuid, pod.manifest, images, CREATED)
    assert reg.apps["web"].image_manifest == odd
    again = Registration.from_json(json.loads(json.dumps(reg.to_json())))
    assert again.apps["web"].image_manifest == odd
    # no annotations in the image, only the pod manifest's
    assert json.loads(reg.apps["web"].annotations) == annotations_json(pod.apps[0].pod_annotations)


def test_pod_annotations_are_an_empty_list_when_none() -> None:
    pod = make_pod(UUID_C, ("one", "two"), pod_annotations=[])
    assert b'"annotations"' not in pod.manifest.split(b'"apps"')[0]
    reg = pod.registration()
    assert reg.annotations == b"[]"


def test_app_annotations_are_an_empty_list_when_none() -> None:
    manifest = pod_manifest([("bare", [])], [])
    image = b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bare"}'
    reg = Registration.new(UUID_C, manifest, [("bare", "sha512-2", image)], CREATED)
    assert reg.apps["bare"].annotations == b"[]"


def test_to_json_from_json_round_trip() -> None:
    reg = pod_b().registration()
    data = json.loads(json.dumps(reg.to_json()))
    again = Registration.from_json(data)
    assert again == reg
    assert again.to_json() == reg.to_json()


# -- merge_annotations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "pod_app", "expected"),
    [
        ([], [], []),
        ([("a", "1"), ("b", "2")], [], [("a", "1"), ("b", "2")]),
        ([], [("a", "1")], [("a", "1")]),
        # replaced in place, image order kept, new names appended in the pod's order
        (
            [("a", "1"), ("b", "2"), ("c", "3")],
            [("d", "4"), ("b", "B"), ("e", "5")],
            [("a", "1"), ("b", "B"), ("c", "3"), ("d", "4"), ("e", "5")],
        ),
        # the pod manifest names one twice: the last value wins, still in place
        ([("a", "1"), ("b", "2")], [("a", "x"), ("a", "y")], [("a", "y"), ("b", "2")]),
        # a new name given twice is appended once
        ([("a", "1")], [("n", "x"), ("n", "y")], [("a", "1"), ("n", "y")]),
    ],
)
def test_merge_annotations(
    image: list[tuple[str, str]],
    pod_app: list[tuple[str, str]],
    expected: list[tuple[str, str]],
) -> None:
    image_before = list(image)
    assert merge_annotations(image, pod_app) == expected
    assert image == image_before  # not modified


def test_merged_annotations_empty_body_is_brackets() -> None:
    manifest = pod_manifest([("x", [])], [])
    image = b'{"acKind":"ImageManifest","name":"example.com/x","annotations":[]}'
    reg = Registration.new(UUID_C, manifest, [("x", "sha512-3", image)], CREATED)
    assert reg.apps["x"].annotations == b"[]"


# -- from_json rejects -----------------------------------------------------------------------


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data[key] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        del data[key]

    return change


def _manifest(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        manifest = json.loads(data["manifest"])
        edit(manifest)
        data["manifest"] = json.dumps(manifest)

    return change


def _app(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["apps"][index][key] = value

    return change


def _extra_pod_app(manifest: dict[str, Any]) -> None:
    manifest["apps"].append({"name": "ghost", "image": {"id": "sha512-9"}})


def _pod_app_annotations(manifest: dict[str, Any]) -> None:
    manifest["apps"][0]["annotations"] = [{"name": "a", "value": 1}]


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "no uuid": _drop("uuid"),
    "bad uuid": _set("uuid", "not-a-uuid"),
    "uuid in capitals": _set("uuid", UUID_A.upper()),
    "uuid path": _set("uuid", "../../etc/passwd"),
    "no token": _drop("token"),
    "short token": _set("token", "abc"),
    "token not url-safe": _set("token", "a/b+c" * 8),
    "token not a string": _set("token", 12345678901234567890123),
    "no key": _drop("key"),
    "key not base64": _set("key", "!!not base64!!"),
    "short key": _set("key", base64.b64encode(b"12345678").decode()),
    "created not a string": _set("created", 3),
    "no manifest": _drop("manifest"),
    "manifest not JSON": _set("manifest", '{"apps": ['),
    "manifest a list": _set("manifest", "[]"),
    "manifest without apps": _set("manifest", '{"acKind": "PodManifest"}'),
    "pod annotations not a list": _manifest(lambda m: m.update(annotations={"a": "b"})),
    "pod annotation without value": _manifest(lambda m: m.update(annotations=[{"name": "a"}])),
    "pod-app annotation not a string": _manifest(_pod_app_annotations),
    "an app of the manifest is not registered": _manifest(_extra_pod_app),
    "no apps": _drop("apps"),
    "apps not a list": _set("apps", {"web": {}}),
    "an app not an object": _set("apps", ["web"]),
    "an app not in the manifest": _app(0, "name", "intruder"),
    "app without image id": _app(1, "image_id", None),
    "image manifest not JSON": _app(0, "image_manifest", "{nope"),
    "image manifest a list": _app(0, "image_manifest", "[1, 2]"),
    "image manifest missing": _app(0, "image_manifest", None),
    "image annotations not a list": _app(0, "image_manifest", '{"annotations": "x"}'),
    "image annotation not an object": _app(0, "image_manifest", '{"annotations": ["x"]}'),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_from_json_rejects(case: str) -> None:
    data = pod_a().registration().to_json()
    Registration.from_json(json.loads(json.dumps(data)))  # the unchanged one is fine
    MALFORMED[case](data)
    with pytest.raises(ValueError):
        Registration.from_json(data)


def test_from_json_rejects_an_app_missing() -> None:
    data = pod_a().registration().to_json()
    data["apps"] = data["apps"][:1]
    with pytest.raises(ValueError, match="not the pod manifest's"):
        Registration.from_json(data)


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_from_json_rejects_non_objects(data: object) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Registration.from_json(data)


def test_from_json_rejects_an_unhashable_app_name() -> None:
    data = pod_a().registration().to_json()
    manifest = json.loads(data["manifest"])
    manifest["apps"][0]["name"] = ["web"]
    data["manifest"] = json.dumps(manifest)
    with pytest.raises(ValueError):
        Registration.from_json(data)


def test_new_rejects_images_of_other_apps() -> None:
    pod = pod_a()
    with pytest.raises(ValueError):
        Registration.new(pod.uuid, pod.manifest, pod.images[:1], CREATED)
    with pytest.raises(ValueError):
        Registration.new(pod.uuid, pod.manifest, pod_b().images, CREATED)
    with pytest.raises(ValueError):
        Registration.new(pod.uuid, b"\xff not utf-8", pod.images, CREATED)


# -- sign / verify -----------------------------------------------------------------------------


def _with_key(reg: Registration, key: bytes) -> Registration:
    data = reg.to_json()
    data["key"] = base64.b64encode(key).decode()
    return Registration.from_json(data)


def test_sign_known_answer_rfc_4231() -> None:
    # RFC 4231, test case 1, HMAC-SHA-512
    reg = _with_key(pod_a().registration(), b"\x0b" * 20)
    expected = bytes.fromhex(
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
    )
    assert reg.sign(b"Hi There") == base64.b64encode(expected)
    assert reg.verify(b"Hi There", base64.b64encode(expected))


@pytest.mark.parametrize("content", [b"", b"hello", b"\xff\x00\r\n%", bytes(range(256)) * 40])
def test_sign_is_base64_of_hmac_sha512(content: bytes) -> None:
    reg = pod_a().registration()
    expected = base64.b64encode(hmac.new(reg.key, content, hashlib.sha512).digest())
    signature = reg.sign(content)
    assert signature == expected
    assert len(base64.b64decode(signature)) == 64
    assert reg.verify(content, signature)


def test_verify_rejects() -> None:
    a, b = pod_a().registration(), pod_b().registration()
    content = b"the content"
    good = a.sign(content)
    raw = bytearray(base64.b64decode(good))
    raw[10] ^= 1
    assert not a.verify(content, base64.b64encode(bytes(raw)))  # tampered
    assert not a.verify(content + b"!", good)  # other content
    assert not a.verify(content, b"not base64 at all!")
    assert not a.verify(content, good[:-4])  # truncated
    assert not a.verify(content, good + b"\n")
    assert not a.verify(content, b"\xff\xfe")
    assert not a.verify(content, b"")
    assert not a.verify(content, base64.b64encode(base64.b64decode(good)[:32]))
    assert not b.verify(content, good)  # another pod's signature
    assert b.verify(content, b.sign(content))


# -- Registry ------------------------------------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> MetadataPaths:
    paths = MetadataPaths.for_data_dir(tmp_path / "data")
    paths.ensure()
    return paths


def test_paths_layout_and_modes(tmp_path: Path) -> None:
    paths = MetadataPaths.for_data_dir(tmp_path / "data")
    assert paths.root == tmp_path / "data" / "mds"
    assert paths.control == paths.root / "run" / "control.sock"
    assert paths.pods == paths.root / "pods"
    assert paths.pods_of_runtime == tmp_path / "data" / "pods"
    (paths.root / "pods").mkdir(parents=True, mode=0o755)
    (paths.root / "pods").chmod(0o755)
    old = os.umask(0)
    try:
        paths.ensure()
    finally:
        os.umask(old)
    for path in (paths.root, paths.run_dir, paths.pods):
        assert mode(path) == 0o700


def test_save_writes_a_0600_file_and_no_temporary(paths: MetadataPaths) -> None:
    registry = Registry(paths)
    reg = pod_a().registration()
    old = os.umask(0)
    try:
        registry.save(reg)
    finally:
        os.umask(old)
    path = paths.pods / f"{UUID_A}.json"
    assert names(paths.pods) == [path.name]
    assert mode(path) == 0o600
    assert Registration.from_json(json.loads(path.read_bytes())) == reg


def test_save_replaces_the_file(paths: MetadataPaths) -> None:
    registry = Registry(paths)
    first = pod_a().registration()
    registry.save(first)
    path = paths.pods / f"{UUID_A}.json"
    path.chmod(0o644)
    before = path.stat().st_ino
    second = pod_a().registration()
    registry.save(second)
    assert path.stat().st_ino != before  # a new file renamed over it: never half written
    assert mode(path) == 0o600
    assert names(paths.pods) == [path.name]
    found, problems = registry.load_all()
    assert (found, problems) == ([second], [])


def test_load_all_skips_and_reports_a_corrupted_file(paths: MetadataPaths) -> None:
    registry = Registry(paths)
    a, b = pod_a().registration(), pod_b().registration()
    registry.save(a)
    registry.save(b)
    corrupted = paths.pods / f"{UUID_C}.json"
    corrupted.write_bytes(json.dumps(a.to_json()).encode()[:100])  # truncated
    misplaced = paths.pods / "22222222-3333-4444-8555-666666666666.json"
    misplaced.write_text(json.dumps(a.to_json()))  # holds pod A under another name
    (paths.pods / f".{UUID_A}.json.123").write_text("half written")  # a temporary
    (paths.pods / "notes.txt").write_text("not a registration")
    found, problems = registry.load_all()
    assert sorted(r.uuid for r in found) == sorted([UUID_A, UUID_B])
    assert {r.uuid: r for r in found} == {UUID_A: a, UUID_B: b}
    assert len(problems) == 2
    assert str(corrupted) in problems[0] or str(corrupted) in problems[1]
    assert any(str(misplaced) in p and UUID_A in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_load_all_without_a_directory(tmp_path: Path) -> None:
    registry = Registry(MetadataPaths.for_data_dir(tmp_path / "nowhere"))
    assert registry.load_all() == ([], [])


def test_delete(paths: MetadataPaths) -> None:
    registry = Registry(paths)
    registry.save(pod_a().registration())
    registry.save(pod_b().registration())
    assert registry.delete(UUID_A) is True
    assert registry.delete(UUID_A) is False
    assert registry.delete("../../../etc/passwd") is False
    assert registry.delete(UUID_C) is False
    assert names(paths.pods) == [f"{UUID_B}.json"]
    assert [r.uuid for r in registry.load_all()[0]] == [UUID_B]


def test_existing_pods(paths: MetadataPaths) -> None:
    assert existing_pods(paths) == set()  # no pods directory at all
    runtime = paths.pods_of_runtime
    (runtime / "run" / UUID_A).mkdir(parents=True)
    (runtime / "exited-garbage" / UUID_B).mkdir(parents=True)
    (runtime / "embryo" / f".{UUID_C}").mkdir(parents=True)  # being created: hidden
    (runtime / "stray-file").write_text("")
    assert existing_pods(paths) == {UUID_A, UUID_B, UUID_C}


# -- metadata_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "net", "url"),
    [
        ("127.0.0.1", "host", "http://127.0.0.1:18112/TOK"),
        ("192.168.1.5", "host", "http://192.168.1.5:18112/TOK"),
        ("0.0.0.0", "host", "http://127.0.0.1:18112/TOK"),
        ("::", "host", "http://[::1]:18112/TOK"),
        ("::1", "host", "http://[::1]:18112/TOK"),
        ("fd00::1", "host", "http://[fd00::1]:18112/TOK"),
        # a pod with a network of its own: its loopback, where its PID 1 forwards
        ("192.168.1.5", "default", "http://127.0.0.1:18112/TOK"),
        ("::", "default", "http://127.0.0.1:18112/TOK"),
        ("0.0.0.0", "none", "http://127.0.0.1:18112/TOK"),
    ],
)
def test_metadata_url(host: str, net: str, url: str) -> None:
    assert metadata_url(host, 18112, "TOK", net) == url

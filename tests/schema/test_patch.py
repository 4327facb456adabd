"""actool patch-manifest, as a pure function, and its option parsers."""

from __future__ import annotations

from typing import Any

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import ImageManifest, Isolator, MountPoint, Port, parse_image_manifest
from jetpack.schema.patch import (
    ManifestPatch,
    apply_patch,
    parse_capabilities_option,
    parse_exec_option,
    parse_gids_option,
    parse_isolators_option,
    parse_mounts_option,
    parse_ports_option,
    parse_seccomp_mode_option,
    parse_seccomp_set_option,
)

BASE: dict[str, Any] = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/base",
}


@pytest.fixture
def manifest(make_app_doc: Any) -> ImageManifest:
    doc = make_app_doc(
        isolators=[
            {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_MKNOD"]}},
            {"name": "resource/memory", "value": {"limit": "1G"}},
        ],
        mountPoints=[{"name": "work", "path": "/work"}],
        ports=[{"name": "www", "protocol": "tcp", "port": 80}],
    )
    return parse_image_manifest(doc)


def test_empty_patch_changes_nothing(manifest: ImageManifest) -> None:
    assert apply_patch(manifest, ManifestPatch()) == manifest


def test_patch_simple_fields(manifest: ImageManifest) -> None:
    patched = apply_patch(
        manifest,
        ManifestPatch(
            name="example.com/renamed",
            exec=("/app", "--debug"),
            user="nobody",
            group="nogroup",
            supplementary_gids=(1, 2),
        ),
    )
    assert patched.name == "example.com/renamed"
    assert patched.app is not None
    assert (patched.app.exec, patched.app.user, patched.app.group) == (
        ("/app", "--debug"),
        "nobody",
        "nogroup",
    )
    assert patched.app.supplementary_gids == (1, 2)
    assert manifest.name == "example.com/app"  # the input is untouched


def test_patch_capabilities_replace_both_sets(manifest: ImageManifest) -> None:
    patched = apply_patch(manifest, ManifestPatch(capabilities_retain=("CAP_NET_ADMIN",)))
    assert patched.app is not None
    assert [i.to_json() for i in patched.app.isolators] == [
        {"name": "resource/memory", "value": {"limit": "1G"}},
        {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_NET_ADMIN"]}},
    ]
    removed = apply_patch(patched, ManifestPatch(capabilities_remove=("CAP_CHOWN",)))
    assert removed.app is not None
    assert [str(i.name) for i in removed.app.isolators] == [
        "resource/memory",
        "os/linux/capabilities-remove-set",
    ]


def test_patch_capabilities_conflict(manifest: ImageManifest) -> None:
    with pytest.raises(ManifestError, match="--revoke-capability") as info:
        apply_patch(
            manifest, ManifestPatch(capabilities_retain=("CAP_A",), capabilities_remove=("CAP_B",))
        )
    assert info.value.path == "--capability"


def test_patch_seccomp(manifest: ImageManifest) -> None:
    patched = apply_patch(
        manifest,
        ManifestPatch(
            seccomp_mode="remove", seccomp_errno="EPERM", seccomp_set=("reboot", "kexec_load")
        ),
    )
    assert patched.app is not None
    assert patched.app.isolators[-1].to_json() == {
        "name": "os/linux/seccomp-remove-set",
        "value": {"set": ["reboot", "kexec_load"], "errno": "EPERM"},
    }
    retained = apply_patch(
        patched, ManifestPatch(seccomp_mode="retain", seccomp_set=("@appc.io/all",))
    )
    assert retained.app is not None
    assert [str(i.name) for i in retained.app.isolators][-1] == "os/linux/seccomp-retain-set"
    assert sum(str(i.name).startswith("os/linux/seccomp") for i in retained.app.isolators) == 1


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        (ManifestPatch(seccomp_set=("reboot",)), "--seccomp-set"),
        (ManifestPatch(seccomp_mode="remove"), "--seccomp-mode"),
        (
            ManifestPatch(seccomp_mode="remove", seccomp_set=("reboot",), seccomp_errno="eperm"),
            "--seccomp-mode",
        ),
        (ManifestPatch(name="Bad Name"), "--name"),
        (ManifestPatch(user=""), "app.user"),
        (ManifestPatch(supplementary_gids=(-1,)), "app.supplementaryGIDs[0]"),
        (ManifestPatch(seccomp_mode="retain", seccomp_set=("@appc.io/none",)), "--seccomp-set"),
    ],
)
def test_patch_errors(patch: ManifestPatch, path: str, manifest: ImageManifest) -> None:
    with pytest.raises(ManifestError) as info:
        apply_patch(manifest, patch)
    assert info.value.path == path


def test_patch_upserts_mounts_ports_and_isolators(manifest: ImageManifest) -> None:
    patch = ManifestPatch(
        mounts=(
            MountPoint(name="work", path="/new", read_only=True),
            MountPoint(name="cache", path="/cache"),
        ),  # type: ignore[arg-type]
        ports=(Port(name="www", protocol="tcp", port=8080),),  # type: ignore[arg-type]
        isolators=(
            Isolator.of("resource/memory", {"limit": "2G"}),
            Isolator.of("resource/cpu", {"limit": "1"}),
        ),
    )
    patched = apply_patch(manifest, patch)
    assert apply_patch(patched, patch) == patched  # idempotent
    assert patched.app is not None
    assert [(m.name, m.path, m.read_only) for m in patched.app.mount_points] == [
        ("work", "/new", True),
        ("cache", "/cache", False),
    ]
    assert [p.port for p in patched.app.ports] == [8080]
    assert [i.to_json()["value"] for i in patched.app.isolators][1:] == [
        {"limit": "2G"},
        {"limit": "1"},
    ]


def test_patch_creates_app_with_user_and_group() -> None:
    base = parse_image_manifest(BASE)
    patched = apply_patch(base, ManifestPatch(exec=("/bin/sh",), user="0", group="0"))
    assert patched.app is not None and patched.app.exec == ("/bin/sh",)


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        (ManifestPatch(exec=("/bin/sh",)), "app.user"),
        (ManifestPatch(exec=("/bin/sh",), user="0"), "app.group"),
        (ManifestPatch(ports=()), "app.user"),
    ],
)
def test_patch_cannot_create_app_without_user_group(patch: ManifestPatch, path: str) -> None:
    with pytest.raises(ManifestError, match="--") as info:
        apply_patch(parse_image_manifest(BASE), patch)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("/app --debug", ("/app", "--debug")),
        ("/bin/sh -c 'echo hi there'", ("/bin/sh", "-c", "echo hi there")),
        ("app", ("app",)),
    ],
)
def test_parse_exec_option(text: str, argv: tuple[str, ...]) -> None:
    assert parse_exec_option(text) == argv


@pytest.mark.parametrize("text", ["", "   ", "/bin/sh -c 'unterminated"])
def test_parse_exec_option_invalid(text: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_exec_option(text)
    assert info.value.path == "--exec"


def test_parse_mounts_option() -> None:
    mounts = parse_mounts_option("work,path=/opt,readOnly=true:work2,path=/x")
    assert mounts == (
        MountPoint(name="work", path="/opt", read_only=True),
        MountPoint(name="work2", path="/x"),
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("work", "path=... is required"),
        ("work,path=/opt,readOnly=maybe", "not a boolean"),
        ("work,path=/opt,mode=0755", "unknown parameter"),
        ("work,path", "has no value"),
        ("work,path=/a,path=/b", "given twice"),
        ("Work,path=/a", "AC Name"),
        ("a,path=/a::b,path=/b", "empty entry"),
    ],
)
def test_parse_mounts_option_invalid(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_mounts_option(text)
    assert info.value.path == "--mounts"


def test_parse_ports_option() -> None:
    ports = parse_ports_option(
        "query,protocol=tcp,port=8080,count=2,socketActivated=true:dns,protocol=udp,port=53"
    )
    assert ports[0] == Port(name="query", protocol="tcp", port=8080, count=2, socket_activated=True)  # type: ignore[arg-type]
    assert ports[1] == Port(name="dns", protocol="udp", port=53)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("query,port=8080", "protocol=... is required"),
        ("query,protocol=tcp", "port=... is required"),
        ("query,protocol=tcp,port=http", "not an integer"),
        ("query,protocol=tcp,port=70000", "not an integer from 0 to 65535"),
        ("query,protocol=tcp,port=0", "not a port number"),
        ("query,protocol=tcp,port=80,count=0", "must be >= 1"),
        ("query,protocol=tcp,port=80,host=1", "unknown parameter"),
    ],
)
def test_parse_ports_option_invalid(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_ports_option(text)
    assert info.value.path == "--ports"


def test_parse_isolators_option() -> None:
    isolators = parse_isolators_option(
        "resource/cpu,request=50m,limit=100m:resource/memory,limit=1G:resource/block-iops,default=true,limit=100"
        ":os/linux/no-new-privileges,true:os/linux/oom-score-adj,-500"
    )
    assert [i.to_json() for i in isolators] == [
        {"name": "resource/cpu", "value": {"request": "50m", "limit": "100m"}},
        {"name": "resource/memory", "value": {"limit": "1G"}},
        {"name": "resource/block-iops", "value": {"default": True, "limit": "100"}},
        {"name": "os/linux/no-new-privileges", "value": True},
        {"name": "os/linux/oom-score-adj", "value": -500},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resource/cpu,limit=lots", "not a valid quantity"),
        ("resource/cpu,max=1", "unknown parameter"),
        ("resource/block-iops,limit=100", "must be true"),
        ("os/linux/no-new-privileges", "expected os/linux/no-new-privileges,VALUE"),
        ("os/linux/no-new-privileges,yes", "not a JSON value"),
        ("os/linux/oom-score-adj,5000", "out of range"),
        ("os/linux/capabilities-retain-set,set=CAP_A", "--capability"),
        ("os/linux/seccomp-remove-set,set=reboot", "--seccomp"),
        ("example.com/custom,x=1", "cannot be set by patching"),
    ],
)
def test_parse_isolators_option_invalid(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_isolators_option(text)
    assert info.value.path == "--isolators"


def test_parse_gids_and_capabilities() -> None:
    assert parse_gids_option("1,2,3") == (1, 2, 3)
    assert parse_capabilities_option("CAP_SYS_ADMIN,CAP_NET_ADMIN") == (
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
    )
    assert parse_seccomp_mode_option("remove,errno=EPERM") == ("remove", "EPERM")
    assert parse_seccomp_mode_option("retain") == ("retain", None)
    assert parse_seccomp_set_option("read,write") == ("read", "write")


@pytest.mark.parametrize(
    ("parse", "text", "path"),
    [
        (parse_gids_option, "1,,3", "--supplementary-groups"),
        (parse_gids_option, "-1", "--supplementary-groups"),
        (parse_gids_option, "4294967296", "--supplementary-groups"),
        (parse_capabilities_option, "CAP_A,,CAP_B", "--capability"),
        (parse_capabilities_option, "CAP A", "--capability"),
        (parse_seccomp_mode_option, "block", "--seccomp-mode"),
        (parse_seccomp_mode_option, "remove,code=1", "--seccomp-mode"),
        (parse_seccomp_set_option, "read,", "--seccomp-set"),
    ],
)
def test_option_parsers_invalid(parse: Any, text: str, path: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse(text)
    assert info.value.path == path

"""Isolator values, the rules about isolator lists, and unknown isolators."""

from __future__ import annotations

from typing import Any

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import (
    CapabilitiesSet,
    Isolator,
    Quantity,
    ResourceValue,
    SeccompSet,
    SELinuxContext,
    parse_image_manifest,
    parse_pod_manifest,
)

from .conftest import IMAGE_ID


def app_with(make_app_doc: Any, *isolators: dict[str, Any]) -> Any:
    return parse_image_manifest(make_app_doc(isolators=list(isolators))).app


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "resource/cpu",
            {"request": "250m", "limit": "500m"},
            ResourceValue(Quantity("250m"), Quantity("500m")),
        ),
        ("resource/cpu", {"limit": 2}, ResourceValue(None, Quantity(2))),
        (
            "resource/memory",
            {"request": "1G", "limit": "2G"},
            ResourceValue(Quantity("1G"), Quantity("2G")),
        ),
        (
            "resource/memory",
            {"limit": "1G", "default": False},
            ResourceValue(None, Quantity("1G"), False),
        ),
        ("resource/memory", {}, ResourceValue()),
        (
            "resource/block-bandwidth",
            {"default": True, "limit": "2M"},
            ResourceValue(None, Quantity("2M"), True),
        ),
        (
            "resource/block-iops",
            {"default": True, "limit": "1000"},
            ResourceValue(None, Quantity(1000), True),
        ),
        (
            "resource/network-bandwidth",
            {"default": True, "limit": "1G"},
            ResourceValue(None, Quantity("1G"), True),
        ),
        (
            "os/linux/capabilities-retain-set",
            {"set": ["CAP_NET_ADMIN"]},
            CapabilitiesSet(("CAP_NET_ADMIN",)),
        ),
        (
            "os/linux/capabilities-remove-set",
            {"set": ["CAP_MKNOD", "CAP_SYS_CHROOT"]},
            CapabilitiesSet(("CAP_MKNOD", "CAP_SYS_CHROOT")),
        ),
        ("os/linux/no-new-privileges", True, True),
        ("os/linux/no-new-privileges", False, False),
        (
            "os/linux/seccomp-remove-set",
            {"errno": "ENOTSUP", "set": ["reboot"]},
            SeccompSet(("reboot",), "ENOTSUP"),
        ),
        (
            "os/linux/seccomp-retain-set",
            {"errno": "", "set": ["read", "write"]},
            SeccompSet(("read", "write"), None),
        ),
        ("os/linux/seccomp-retain-set", {"set": ["@appc.io/all"]}, SeccompSet(("@appc.io/all",))),
        (
            "os/linux/seccomp-remove-set",
            {"set": ["@appc.io/empty"]},
            SeccompSet(("@appc.io/empty",)),
        ),
        (
            "os/linux/seccomp-remove-set",
            {"set": ["@rkt/default-blacklist"], "errno": "E2BIG"},
            SeccompSet(("@rkt/default-blacklist",), "E2BIG"),
        ),
        (
            "os/linux/selinux-context",
            {"user": "system_u", "role": "system_r", "type": "dhcpc_t", "level": "s0:c1,c2"},
            SELinuxContext("system_u", "system_r", "dhcpc_t", "s0:c1,c2"),
        ),
        ("os/linux/oom-score-adj", -1000, -1000),
        ("os/linux/oom-score-adj", 1000, 1000),
        ("os/linux/cpu-shares", 2, 2),
        ("os/linux/cpu-shares", 262144, 262144),
    ],
)
def test_known_isolator_values(name: str, value: Any, expected: Any, make_app_doc: Any) -> None:
    app = app_with(make_app_doc, {"name": name, "value": value})
    isolator = app.isolators[0]
    assert isolator.known
    assert isolator.value == expected


def test_resource_request_defaults_to_limit() -> None:
    value = Isolator.of("resource/memory", {"limit": "1G"}).value
    assert isinstance(value, ResourceValue)
    assert value.effective_request == Quantity("1G")


@pytest.mark.parametrize(
    ("name", "value", "path"),
    [
        ("resource/cpu", {"limit": "lots"}, "value.limit"),
        ("resource/cpu", {"request": ["1"]}, "value.request"),
        ("resource/cpu", {"limit": "-1"}, "value.limit"),
        ("resource/cpu", {"limit": True}, "value.limit"),
        ("resource/cpu", {"default": True, "limit": "1"}, "value.default"),
        ("resource/memory", "1G", "value"),
        ("resource/memory", {"limit": "1K", "default": "no"}, "value.default"),
        ("resource/block-bandwidth", {"limit": "2M"}, "value.default"),
        ("resource/block-bandwidth", {"default": False, "limit": "2M"}, "value.default"),
        ("resource/block-iops", {"default": True, "request": "1", "limit": "2"}, "value.request"),
        ("resource/network-bandwidth", {"default": True, "limit": "1Gb"}, "value.limit"),
        ("os/linux/capabilities-retain-set", {"set": []}, "value.set"),
        ("os/linux/capabilities-retain-set", {}, "value.set"),
        ("os/linux/capabilities-retain-set", {"set": "CAP_NET_ADMIN"}, "value.set"),
        ("os/linux/capabilities-remove-set", {"set": ["CAP_A", 5]}, "value.set[1]"),
        ("os/linux/capabilities-remove-set", {"set": [""]}, "value.set[0]"),
        ("os/linux/capabilities-remove-set", ["CAP_A"], "value"),
        ("os/linux/no-new-privileges", "true", "value"),
        ("os/linux/no-new-privileges", 1, "value"),
        ("os/linux/seccomp-remove-set", {"set": []}, "value.set"),
        ("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": "eperm"}, "value.errno"),
        ("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": "PERM"}, "value.errno"),
        ("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": 1}, "value.errno"),
        ("os/linux/seccomp-retain-set", {"set": ["@appc.io/everything"]}, "value.set[0]"),
        ("os/linux/selinux-context", {"user": "u", "role": "r", "type": "t"}, "value.level"),
        (
            "os/linux/selinux-context",
            {"user": "u:x", "role": "r", "type": "t", "level": "s0"},
            "value.user",
        ),
        (
            "os/linux/selinux-context",
            {"user": "u", "role": "", "type": "t", "level": "s0"},
            "value.role",
        ),
        ("os/linux/oom-score-adj", 1001, "value"),
        ("os/linux/oom-score-adj", "5", "value"),
        ("os/linux/cpu-shares", 1, "value"),
        ("os/linux/cpu-shares", 262145, "value"),
        ("os/linux/cpu-shares", 2.5, "value"),
    ],
)
def test_known_isolator_invalid(name: str, value: Any, path: str, make_app_doc: Any) -> None:
    with pytest.raises(ManifestError) as info:
        app_with(
            make_app_doc,
            {"name": "resource/cpu", "value": {"limit": "1"}},
            {"name": name, "value": value},
        )
    assert info.value.path == f"app.isolators[1].{path}"


@pytest.mark.parametrize(
    ("isolators", "message"),
    [
        (["os/linux/seccomp-retain-set", "os/linux/seccomp-remove-set"], "cannot be used together"),
        (["os/linux/seccomp-remove-set", "os/linux/seccomp-retain-set"], "cannot be used together"),
        (["os/linux/seccomp-remove-set", "os/linux/seccomp-remove-set"], "only one"),
        (["os/linux/selinux-context", "os/linux/selinux-context"], "only one"),
        (["os/linux/oom-score-adj", "os/linux/oom-score-adj"], "only one"),
        (["os/linux/cpu-shares", "os/linux/cpu-shares"], "only one"),
        (["os/unix/sysctl"], "applies to the whole pod"),
    ],
)
def test_app_isolator_list_rules(isolators: list[str], message: str, make_app_doc: Any) -> None:
    values = {
        "os/linux/seccomp-retain-set": {"set": ["read"]},
        "os/linux/seccomp-remove-set": {"set": ["reboot"]},
        "os/linux/selinux-context": {"user": "u", "role": "r", "type": "t", "level": "s0"},
        "os/linux/oom-score-adj": 10,
        "os/linux/cpu-shares": 512,
        "os/unix/sysctl": {"net.ipv4.ip_forward": "0"},
    }
    items = [{"name": "resource/memory", "value": {"limit": "1G"}}]
    items += [{"name": n, "value": values[n]} for n in isolators]
    with pytest.raises(ManifestError, match=message) as info:
        app_with(make_app_doc, *items)
    assert info.value.path == f"app.isolators[{len(items) - 1}].name"


def test_app_isolator_multiples_allowed(make_app_doc: Any) -> None:
    app = app_with(
        make_app_doc,
        {"name": "resource/memory", "value": {"limit": "1G"}},
        {"name": "resource/memory", "value": {"limit": "2G"}},
        {"name": "os/linux/no-new-privileges", "value": True},
        {"name": "os/linux/no-new-privileges", "value": False},
        {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}},
        {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_KILL"]}},
    )
    assert len(app.isolators) == 6


@pytest.mark.parametrize(
    "name",
    [
        "os/linux/capabilities-retain-set",
        "os/linux/capabilities-remove-set",
        "os/linux/no-new-privileges",
        "os/linux/seccomp-retain-set",
        "os/linux/seccomp-remove-set",
    ],
)
def test_app_scoped_isolator_rejected_in_pod(name: str, pod_doc: dict[str, Any]) -> None:
    value: Any = True if name.endswith("privileges") else {"set": ["x"]}
    pod_doc["isolators"].append({"name": name, "value": value})
    with pytest.raises(ManifestError, match="applies to apps only") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "isolators[2].name"


def test_pod_sysctl_single(pod_doc: dict[str, Any]) -> None:
    pod_doc["isolators"].append({"name": "os/unix/sysctl", "value": {}})
    with pytest.raises(ManifestError, match="only one os/unix/sysctl") as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == "isolators[2].name"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": 1}, "isolators[1].value.a"),
        ("x", "isolators[1].value"),
        ({"": "1"}, "isolators[1].value"),
    ],
)
def test_pod_sysctl_value(value: Any, path: str, pod_doc: dict[str, Any]) -> None:
    pod_doc["isolators"][1]["value"] = value
    with pytest.raises(ManifestError) as info:
        parse_pod_manifest(pod_doc)
    assert info.value.path == path


@pytest.mark.parametrize("value", [None, 1, "x", [1, {"a": None}], {"deep": {"er": [True, 1.5]}}])
def test_unknown_isolators_are_kept_opaque(value: Any, pod_doc: dict[str, Any]) -> None:
    pod_doc["isolators"].append({"name": "example.com/custom", "value": value, "note": "kept"})
    pod = parse_pod_manifest(pod_doc)
    isolator = pod.isolators[-1]
    assert not isolator.known
    assert isolator.value is None
    assert pod.to_json()["isolators"][-1] == {
        "name": "example.com/custom",
        "value": value,
        "note": "kept",
    }


def test_isolator_inner_unknown_keys_round_trip(make_app_doc: Any) -> None:
    item = {"name": "resource/memory", "value": {"limit": "1G", "x-vendor": {"swap": "0"}}}
    app = app_with(make_app_doc, item)
    assert app.to_json()["isolators"] == [item]


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"value": {}}, "app.isolators[0].name"),
        ({"name": "resource/memory"}, "app.isolators[0].value"),
        ({"name": "Resource/Memory", "value": {}}, "app.isolators[0].name"),
        ({"name": 5, "value": {}}, "app.isolators[0].name"),
        (["resource/memory", {}], "app.isolators[0]"),
    ],
)
def test_isolator_shape(item: Any, path: str, make_app_doc: Any) -> None:
    with pytest.raises(ManifestError) as info:
        app_with(make_app_doc, item)
    assert info.value.path == path


def test_isolator_built_in_code_is_validated() -> None:
    with pytest.raises(ManifestError) as info:
        Isolator.of("os/linux/cpu-shares", 0)
    assert info.value.path == "value"
    assert Isolator.of("os/linux/cpu-shares", 1024).value == 1024


def test_selinux_context_renders() -> None:
    assert (
        str(SELinuxContext("system_u", "system_r", "dhcpc_t", "s0"))
        == "system_u:system_r:dhcpc_t:s0"
    )


def test_pod_isolator_selinux_and_resources(pod_doc: dict[str, Any]) -> None:
    pod_doc["isolators"].append(
        {
            "name": "os/linux/selinux-context",
            "value": {"user": "u", "role": "r", "type": "t", "level": "s0"},
        }
    )
    pod_doc["isolators"].append({"name": "resource/cpu", "value": {"limit": "500m"}})
    pod = parse_pod_manifest(pod_doc)
    assert [str(i.name) for i in pod.isolators][-2:] == ["os/linux/selinux-context", "resource/cpu"]
    assert pod.apps[0].image.id == IMAGE_ID

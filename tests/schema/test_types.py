"""Identifiers, versions, IDs, UUIDs and the name/value lists (spec types.md)."""

from __future__ import annotations

from typing import Any

import pytest

from jetpack.errors import ManifestError
from jetpack.schema import (
    OS_ARCH,
    ACIdentifier,
    ACName,
    Annotations,
    Environment,
    ImageID,
    Labels,
    SemVer,
    parse_image_manifest,
    validate_ac_identifier,
    validate_ac_name,
    validate_image_id,
    validate_image_id_prefix,
    validate_semver,
    validate_uuid,
)

from .conftest import IMAGE_ID

GOOD_IDENTIFIERS = [
    "asdf",
    "foo-bar-baz",
    "zab_rab_oof",
    "database",
    "my~database",
    "example.com/database",
    "example.com/ourapp-1.0.0",
    "sub-domain.example.com/org/product/release-1.0.0",
    "a",
    "0",
]
BAD_IDENTIFIERS = [
    "",
    "BAR",
    "foo#",
    "EXAMPLE.com",
    "foo.com/BAR",
    "/app",
    "app/",
    "-app",
    "app-",
    ".app",
    "app.",
    "_app",
    "app_",
    "~app",
    "app~",
    "a--b",
    "a./b",
    "app\n",
    "caf\u00e9",
]


@pytest.mark.parametrize("value", GOOD_IDENTIFIERS)
def test_ac_identifier_valid(value: str) -> None:
    assert validate_ac_identifier(value) == value
    assert isinstance(ACIdentifier(value), ACIdentifier)


@pytest.mark.parametrize("value", BAD_IDENTIFIERS)
def test_ac_identifier_invalid(value: str) -> None:
    with pytest.raises(ManifestError, match="not a valid AC Identifier") as info:
        validate_ac_identifier(value, "labels[0].name")
    assert info.value.path == "labels[0].name"


@pytest.mark.parametrize("value", ["database", "product-database", "a1-b2-c3", "0"])
def test_ac_name_valid(value: str) -> None:
    assert validate_ac_name(value) == value
    assert isinstance(ACName(value), ACName)


@pytest.mark.parametrize(
    "value", ["", "Database", "a_b", "a.b", "a/b", "-a", "a-", "a--b", "a b", "example.com"]
)
def test_ac_name_invalid(value: str) -> None:
    with pytest.raises(ManifestError, match="not a valid AC Name") as info:
        validate_ac_name(value, "apps[1].name")
    assert info.value.path == "apps[1].name"


@pytest.mark.parametrize("value", [5, None, ["a"]])
def test_identifier_wrong_python_type(value: Any) -> None:
    with pytest.raises(ManifestError, match="must be a string"):
        validate_ac_identifier(value, "name")


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("1.0.0", (1, 0, 0, None, None)),
        ("3.2.1", (3, 2, 1, None, None)),
        ("3.2.1-foo", (3, 2, 1, "foo", None)),
        ("1.2.3-alpha+git", (1, 2, 3, "alpha", "git")),
        ("0.8.11", (0, 8, 11, None, None)),
        ("0.0.0-rc.1", (0, 0, 0, "rc.1", None)),
    ],
)
def test_semver_valid(value: str, parts: tuple[Any, ...]) -> None:
    version = validate_semver(value)
    assert (version.major, version.minor, version.patch, version.prerelease, version.build) == parts


@pytest.mark.parametrize(
    "value",
    ["", "1", "1.2", "1.2.3.4", "v1.2.3", "0.0.0", "01.2.3", "1.2.3-", "1.2.3+", "1.2.\u0663"],
)
def test_semver_invalid(value: str) -> None:
    with pytest.raises(ManifestError) as info:
        validate_semver(value, "acVersion")
    assert info.value.path == "acVersion"


def test_image_id_valid() -> None:
    image_id = validate_image_id(IMAGE_ID)
    assert isinstance(image_id, ImageID)
    assert image_id.digest == IMAGE_ID[7:]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha512-",
        "sha512-abc",
        "sha256-" + "a" * 128,
        "sha512-" + "A" * 128,
        "sha512-" + "g" * 128,
        "sha512-" + "a" * 127,
        "sha512-" + "a" * 129,
        "sha512" + "a" * 128,
    ],
)
def test_image_id_invalid(value: str) -> None:
    with pytest.raises(ManifestError, match="not a valid image ID"):
        validate_image_id(value, "id")


@pytest.mark.parametrize("value", ["sha512-ab", "sha512-0123456789ab", IMAGE_ID])
def test_image_id_prefix_valid(value: str) -> None:
    assert validate_image_id_prefix(value) == value


@pytest.mark.parametrize(
    "value", ["sha512-", "sha512-a", "sha512-AB", "ab", "sha512-" + "a" * 129, "sha512-zz"]
)
def test_image_id_prefix_invalid(value: str) -> None:
    with pytest.raises(ManifestError, match="image ID prefix") as info:
        validate_image_id_prefix(value, "image")
    assert info.value.path == "image"


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("6733c9f8-2bb5-4d46-8a53-f1a0b9c3b41c", "6733c9f8-2bb5-4d46-8a53-f1a0b9c3b41c"),
        ("6733C9F8-2BB5-4D46-8A53-F1A0B9C3B41C", "6733c9f8-2bb5-4d46-8a53-f1a0b9c3b41c"),
        ("c9a2e9d2-58f3-11e5-9b0a-0242ac110002", "c9a2e9d2-58f3-11e5-9b0a-0242ac110002"),
    ],
)
def test_uuid_valid(value: str, canonical: str) -> None:
    assert validate_uuid(value) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00000000-0000-0000-0000-000000000000",
        "6733c9f82bb54d468a53f1a0b9c3b41c",
        "6733c9f8-2bb5-4d46-8a53-f1a0b9c3b41",
        "6733c9f8-2bb5-4d46-8a53-f1a0b9c3b41cc",
        "6733c9f8-2bb5-4d46-ca53-f1a0b9c3b41c",
        "6733c9f8-2bb5-0d46-8a53-f1a0b9c3b41c",
        "{6733c9f8-2bb5-4d46-8a53-f1a0b9c3b41c}",
        "6733c9f8-2bb5-4d46-8a53-f1a0b9c3b4zz",
    ],
)
def test_uuid_invalid(value: str) -> None:
    with pytest.raises(ManifestError, match="UUID") as info:
        validate_uuid(value, "uuid")
    assert info.value.path == "uuid"


def test_os_arch_matrix() -> None:
    assert set(OS_ARCH) == {"linux", "freebsd", "darwin"}
    assert OS_ARCH["linux"] == frozenset(
        {
            "amd64",
            "i386",
            "aarch64",
            "aarch64_be",
            "armv6l",
            "armv7l",
            "armv7b",
            "ppc64",
            "ppc64le",
            "s390x",
        }
    )
    assert OS_ARCH["freebsd"] == frozenset({"amd64", "i386", "arm"})
    assert OS_ARCH["darwin"] == frozenset({"x86_64", "i386"})


VALID_OS_ARCH = [(os_name, arch) for os_name, arches in OS_ARCH.items() for arch in sorted(arches)]


@pytest.mark.parametrize(("os_name", "arch"), VALID_OS_ARCH)
def test_labels_os_arch_valid(os_name: str, arch: str) -> None:
    labels = Labels([("os", os_name), ("arch", arch)])
    assert labels["arch"] == arch


@pytest.mark.parametrize(
    ("pairs", "path", "message"),
    [
        ([("os", "plan9")], "[0].value", "unsupported os"),
        ([("os", "linux"), ("arch", "x86_64")], "[1].value", "unsupported arch"),
        ([("os", "darwin"), ("arch", "amd64")], "[1].value", "unsupported arch"),
        ([("os", "freebsd"), ("arch", "aarch64")], "[1].value", "unsupported arch"),
        ([("version", "1"), ("os", "Linux")], "[1].value", "unsupported os"),
        ([("name", "x")], "[0].name", '"name" cannot be a label'),
        ([("a", "1"), ("a", "2")], "[1].name", "duplicate label"),
        ([("Version", "1")], "[0].name", "not a valid AC Identifier"),
    ],
)
def test_labels_invalid(pairs: list[tuple[str, str]], path: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        Labels(pairs)
    assert info.value.path == path


def test_labels_arch_without_os_is_not_checked() -> None:
    """The spec: "arch is meaningful only if os is provided"."""
    assert Labels([("arch", "anything")])["arch"] == "anything"


def test_labels_keep_order_and_are_immutable() -> None:
    labels = Labels([("version", "1"), ("os", "linux"), ("arch", "amd64")])
    assert list(labels) == ["version", "os", "arch"]
    with pytest.raises(TypeError):
        labels["os"] = "freebsd"  # type: ignore[index]
    assert hash(labels) == hash(Labels([("version", "1"), ("os", "linux"), ("arch", "amd64")]))


def test_labels_error_path_in_manifest(image_doc: dict[str, Any]) -> None:
    image_doc["dependencies"][0]["labels"][0]["value"] = "templeos"
    with pytest.raises(ManifestError) as info:
        parse_image_manifest(image_doc)
    assert info.value.path == "dependencies[0].labels[0].value"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created", "2014-10-27T19:32:27.67021798Z"),
        ("created", "2015-05-18T13:49:28-04:00"),
        ("created", "2016-12-31T23:59:60Z"),
        ("created", "2015-05-18T13:49:28.351729952+05:30"),
        ("homepage", "http://example.com"),
        ("homepage", "https://example.com/a?b=c#d"),
        ("documentation", "HTTPS://EXAMPLE.COM:8443/docs"),
        ("authors", "anything goes"),
    ],
)
def test_annotations_valid(name: str, value: str) -> None:
    assert Annotations([(name, value)])[name] == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created", "2014-10-27 19:32:27Z"),
        ("created", "2014-10-27T19:32:27"),
        ("created", "2014-13-27T19:32:27Z"),
        ("created", "2014-02-30T19:32:27Z"),
        ("created", "2014-10-27T25:32:27Z"),
        ("created", "2014-10-27T19:32:27+24:00"),
        ("created", "yesterday"),
        ("created", "2014-10-27"),
        ("homepage", "ftp://example.com"),
        ("homepage", "example.com"),
        ("homepage", "http://"),
        ("homepage", "http://exa mple.com"),
        ("homepage", "http://[::1"),
        ("documentation", "javascript:alert(1)"),
        ("documentation", "http://example.com:99999/"),
    ],
)
def test_annotations_invalid(name: str, value: str) -> None:
    with pytest.raises(ManifestError) as info:
        Annotations([("authors", "x"), (name, value)])
    assert info.value.path == "[1].value"


def test_annotations_duplicate() -> None:
    with pytest.raises(ManifestError, match="duplicate annotation") as info:
        Annotations([("a", "1"), ("b", "2"), ("a", "3")])
    assert info.value.path == "[2].name"


@pytest.mark.parametrize("name", ["DEBUG", "_x", "a.b-c", "PATH", "x1", "A_B.9-z"])
def test_environment_names_valid(name: str) -> None:
    assert Environment([(name, "v")])[name] == "v"


@pytest.mark.parametrize("name", ["0DEBUG", "", "A B", "A=B", "-x", ".x", "\u00e9t\u00e9", "a\n"])
def test_environment_names_invalid(name: str, make_app_doc: Any) -> None:
    doc = make_app_doc(
        environment=[
            {"name": "OK", "value": ""},
            {"name": "ALSO_OK", "value": "x"},
            {"name": name, "value": "1"},
        ]
    )
    with pytest.raises(ManifestError, match="is not a valid environment variable name") as info:
        parse_image_manifest(doc)
    assert info.value.path == "app.environment[2].name"
    assert str(info.value).startswith("app.environment[2].name: ")


def test_environment_duplicate(make_app_doc: Any) -> None:
    doc = make_app_doc(environment=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])
    with pytest.raises(ManifestError, match="duplicate environment variable") as info:
        parse_image_manifest(doc)
    assert info.value.path == "app.environment[1].name"


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"name": "A"}, "app.environment[0].value"),
        ({"value": "1"}, "app.environment[0].name"),
        ({"name": "A", "value": 1}, "app.environment[0].value"),
        ({"name": ["A"], "value": "1"}, "app.environment[0].name"),
        ("A=1", "app.environment[0]"),
    ],
)
def test_environment_item_shape(item: Any, path: str, make_app_doc: Any) -> None:
    with pytest.raises(ManifestError) as info:
        parse_image_manifest(make_app_doc(environment=[item]))
    assert info.value.path == path


def test_semver_is_a_str() -> None:
    assert SemVer("0.8.11") == "0.8.11"

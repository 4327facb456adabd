"""Pod planning: option strings, app groups on the command line, and reification."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from jetpack.errors import PodError
from jetpack.runtime.plan import (
    AppOptions,
    complete,
    default_app_name,
    parse_annotation,
    parse_app_arguments,
    parse_dns,
    parse_env,
    parse_mount,
    parse_volume,
    reify,
    validate_hostname,
)
from jetpack.schema import (
    App,
    Environment,
    ImageManifest,
    Labels,
    Mount,
    PodManifest,
    RuntimeApp,
    RuntimeImage,
    Volume,
    parse_image_manifest,
    parse_pod_manifest,
)
from jetpack.schema.types import Annotations

ID_A = "sha512-" + "a" * 128
ID_B = "sha512-" + "b" * 128
ID_C = "sha512-" + "c" * 128


def make_image(name: str = "example.com/tools/hello", **app: Any) -> ImageManifest:
    """An image manifest whose app is ``app`` merged over a minimal valid one."""
    doc: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [{"name": "version", "value": "1.0"}],
        "app": {"exec": ["/bin/hello", "--greet"], "user": "1000", "group": "100", **app},
    }
    return parse_image_manifest(doc)


def bare_image(name: str = "example.com/base") -> ImageManifest:
    return ImageManifest(name=name)  # type: ignore[arg-type]


def the_app(pod: PodManifest, index: int = 0) -> App:
    app = pod.apps[index].app
    assert app is not None
    return app


# --- parse_volume -------------------------------------------------------------------------


def test_parse_volume_host_with_every_host_key() -> None:
    volume = parse_volume("data,kind=host,source=/srv/data,readOnly=true,recursive=false")
    assert volume == Volume(
        name="data",  # type: ignore[arg-type]
        kind="host",
        source="/srv/data",
        read_only=True,
        recursive=False,
    )


def test_parse_volume_empty_with_every_empty_key() -> None:
    volume = parse_volume("scratch,kind=empty,mode=0700,uid=1000,gid=100,readOnly=false")
    assert volume == Volume(
        name="scratch",  # type: ignore[arg-type]
        kind="empty",
        read_only=False,
        mode="0700",
        uid=1000,
        gid=100,
    )
    assert (volume.effective_mode, volume.effective_uid, volume.effective_gid) == (0o700, 1000, 100)


def test_parse_volume_minimal_keeps_the_defaults_unset() -> None:
    volume = parse_volume("scratch,kind=empty")
    assert volume == Volume(name="scratch", kind="empty")  # type: ignore[arg-type]
    assert volume.to_json() == {"name": "scratch", "kind": "empty"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r'^invalid --volume "": no volume name \(NAME,kind=host,source=PATH\)$'),
        (",kind=empty", "no volume name"),
        ("data", r"kind is missing \(add kind=host or kind=empty\)$"),
        ("data,kind=tmpfs", r'kind="tmpfs" is not a volume kind \(host or empty\)$'),
        ("data,kind=host", r"a host volume needs a source \(add source=PATH\)$"),
        ("data,kind=host,source=srv", r'source: "srv" is not an absolute path$'),
        ("data,kind=empty,size=1", r'unknown key "size" \(known keys: kind, source, readOnly, '),
        ("data,kind=empty,readonly=true", r'unknown key "readonly" \(did you mean readOnly\?\)$'),
        ("data,kind=empty,kind=host", "kind given twice$"),
        ("data,kind=empty,readOnly=yes", r'readOnly="yes" is not a boolean \(true or false\)$'),
        ("data,kind=host,source=/x,recursive=True", r'recursive="True" is not a boolean'),
        ("data,kind=empty,uid=-1", r'uid="-1" is not a decimal number$'),
        ("data,kind=empty,gid=x", r'gid="x" is not a decimal number$'),
        ("data,kind=empty,uid=4294967296", r"uid: 4294967296 is not a valid ID"),
        ("data,kind=empty,mode=999", r'mode: "999" is not an octal mode'),
        ("data,kind=host,source=/x,mode=0755", "mode: applies to empty volumes only"),
        ("data,kind=empty,source=/x", "source: applies to host volumes only"),
        ("Data,kind=empty", r'"Data" is not a valid AC Name'),
        ("data,,kind=empty", r"empty parameter \(remove the extra ','\)$"),
        ("data,kind=empty,", "empty parameter"),
        ("data,kind", r'"kind" is not key=value$'),
    ],
)
def test_parse_volume_rejects(text: str, message: str) -> None:
    with pytest.raises(PodError, match=message) as info:
        parse_volume(text)
    assert str(info.value).startswith("invalid --volume ")
    assert "\n" not in str(info.value)


# --- parse_mount --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("volume=data,target=/data", ("data", "/data")),
        ("target=/data,volume=data", ("data", "/data")),
        ("volume=data,target=/srv//data/./x/", ("data", "/srv/data/x")),
        ("volume=data,target=//data", ("data", "/data")),
        ("volume=data,target=/", ("data", "/")),
    ],
)
def test_parse_mount(text: str, expected: tuple[str, str]) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("volume=data", r"target is missing \(volume=NAME,target=/PATH/IN/APP\)$"),
        ("target=/data", "volume is missing"),
        ("", "empty parameter"),
        ("volume=data,target=data", r'target "data" is not an absolute path \(an absolute'),
        ("volume=data,target=/a/../b", r"""target "/a/../b" contains a '\.\.' component"""),
        ("volume=data,target=/a/..", r"'\.\.' component"),
        ("volume=Data,target=/data", r'volume: "Data" is not a valid AC Name'),
        ("volume=data,target=/x,readOnly=true", r'unknown key "readOnly" \(known keys: volume'),
        ("volume=a,volume=b,target=/x", "volume given twice$"),
        ("volume=data,/x", r'"/x" is not key=value'),
    ],
)
def test_parse_mount_rejects(text: str, message: str) -> None:
    with pytest.raises(PodError, match=message) as info:
        parse_mount(text)
    assert str(info.value).startswith("invalid --mount ")


# --- parse_env, parse_annotation -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FOO=bar", ("FOO", "bar")),
        ("FOO=a=b", ("FOO", "a=b")),
        ("FOO=", ("FOO", "")),
        ("_x.y-z=1", ("_x.y-z", "1")),
    ],
)
def test_parse_env(text: str, expected: tuple[str, str]) -> None:
    assert parse_env(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FOO", r"""^invalid --set-env "FOO": no '=' \(NAME=VALUE\)$"""),
        ("1FOO=x", r'"1FOO" is not a valid environment variable name \(letters'),
        ("=x", r'"" is not a valid environment variable name'),
        ("A B=x", "not a valid environment variable name"),
    ],
)
def test_parse_env_rejects(text: str, message: str) -> None:
    with pytest.raises(PodError, match=message):
        parse_env(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com/owner=me", ("example.com/owner", "me")),
        ("note=a=b", ("note", "a=b")),
        ("created=2024-01-02T03:04:05Z", ("created", "2024-01-02T03:04:05Z")),
    ],
)
def test_parse_annotation(text: str, expected: tuple[str, str]) -> None:
    assert parse_annotation(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("owner", r"""^invalid --annotation "owner": no '='"""),
        ("Owner=me", r'"Owner" is not a valid AC Identifier'),
        ("=me", r'"" is not a valid AC Identifier'),
        ("created=yesterday", r'"yesterday" is not an RFC 3339 timestamp'),
        ("homepage=ftp://example.com", "not an http or https URL"),
    ],
)
def test_parse_annotation_rejects(text: str, message: str) -> None:
    with pytest.raises(PodError, match=message):
        parse_annotation(text)


# --- validate_hostname, parse_dns ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["pod", "pod-1", "A1", "1pod", "web.example.com", "a" * 63, "a" * 31 + "." + "b" * 32],
)
def test_validate_hostname_accepts(text: str) -> None:
    assert validate_hostname(text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r'^invalid --hostname "": empty hostname$'),
        ("a" * 32 + "." + "b" * 32, "65 characters, more than the 64 Linux allows"),
        ("-pod", r'"-pod" is not a valid hostname label \(1 to 63 letters'),
        ("pod-", r'"pod-" is not a valid hostname label'),
        ("a..b", r'"" is not a valid hostname label'),
        ("pod.", r'"" is not a valid hostname label'),
        ("pod_1", r'"pod_1" is not a valid hostname label'),
        ("pöd", r'"pöd" is not a valid hostname label'),
    ],
)
def test_validate_hostname_rejects(text: str, message: str) -> None:
    with pytest.raises(PodError, match=message):
        validate_hostname(text)


def test_hostname_label_longer_than_63_is_rejected_even_when_the_name_fits() -> None:
    with pytest.raises(PodError, match="is not a valid hostname label"):
        validate_hostname("a" * 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.53", "192.0.2.53"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_parse_dns(text: str, expected: str) -> None:
    assert parse_dns(text) == expected


@pytest.mark.parametrize("text", ["", "example.com", "192.0.2.256", "192.0.2", "1.2.3.4/24"])
def test_parse_dns_rejects(text: str) -> None:
    with pytest.raises(PodError, match=r"^invalid --dns .*: not an IP address \(an IPv4 or IPv6"):
        parse_dns(text)


# --- parse_app_arguments -----------------------------------------------------------------


def test_one_image_without_options() -> None:
    assert parse_app_arguments(["example.com/hello"]) == (AppOptions(image="example.com/hello"),)


def test_every_app_option() -> None:
    argv = [
        "example.com/hello:1.0,os=linux",
        "--name",
        "web",
        "--exec=/bin/sh",
        "--user",
        "1000",
        "--group=100",
        "--set-env",
        "A=1",
        "--set-env=B=2=3",
        "--working-dir",
        "/srv",
        "--mount",
        "volume=data,target=/data/",
        "--mount=volume=logs,target=/var/log",
        "--readonly-rootfs",
        "--",
        "-c",
        "echo hi",
        "--name",
        "--",
    ]
    assert parse_app_arguments(argv) == (
        AppOptions(
            image="example.com/hello:1.0,os=linux",
            name="web",
            exec="/bin/sh",
            args=("-c", "echo hi", "--name", "--"),
            user="1000",
            group="100",
            environment=(("A", "1"), ("B", "2=3")),
            working_dir="/srv",
            mounts=(("data", "/data"), ("logs", "/var/log")),
            readonly_rootfs=True,
        ),
    )


def test_groups_are_separated_by_three_dashes() -> None:
    argv = [
        "a.example/one",
        "--",
        "x",
        "---",
        "sha512-0123",
        "--readonly-rootfs=false",
        "---",
        "./c.aci",
        "--readonly-rootfs=true",
        "--",
    ]
    assert parse_app_arguments(argv) == (
        AppOptions(image="a.example/one", args=("x",)),
        AppOptions(image="sha512-0123", readonly_rootfs=False),
        AppOptions(image="./c.aci", readonly_rootfs=True, args=()),
    )


def test_a_value_starting_with_dashes_needs_the_equals_form() -> None:
    (app,) = parse_app_arguments(["img", "--exec=--weird", "--user", "-1"])
    assert (app.exec, app.user) == ("--weird", "-1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], r"^no image given \(IMAGE \[app options\] \[--- IMAGE \[app options\]\]\.\.\.\)$"),
        (
            ["--name", "x", "img"],
            r'^option "--name" comes before the first IMAGE: pod options go before the first '
            r"IMAGE, app options after their IMAGE",
        ),
        (["img", "---", "---", "b"], r"^empty app group: '---' must be followed by an IMAGE"),
        (["img", "---"], r"^empty app group: '---' must be followed by an IMAGE"),
        (["---", "img"], r"^empty app group: nothing before the first '---'"),
        (
            ["img", "---", "--name", "x", "b"],
            r"""^option "--name" comes before its IMAGE: '---' must be followed by an IMAGE""",
        ),
        (
            ["img", "--bogus"],
            r'^unknown app option "--bogus" \(app options: --name NAME, --exec CMD, --user USER, '
            r"--group GROUP, --set-env NAME=VALUE, --working-dir DIR, "
            r"--mount volume=NAME,target=PATH, --readonly-rootfs, -- ARGS\.\.\.\)$",
        ),
        (["img", "--bogus=1"], r'^unknown app option "--bogus"'),
        (["img", "-x"], r'^unknown app option "-x"'),
        (["img", "--volume", "v,kind=empty"], r'^unknown app option "--volume"'),
        (
            ["img", "--name"],
            r'^--name needs a value \(image "img"\) \(--name VALUE or --name=VALUE\)$',
        ),
        (["img", "--name", "---", "b"], r'^--name needs a value \(image "img"\)'),
        (["img", "--exec", "--user", "0"], r"^--exec needs a value"),
        (["img", "--exec", "--"], r"^--exec needs a value"),
        (["img", "--name="], r'^--name needs a non-empty value \(image "img"\)$'),
        (
            ["img", "other"],
            r'^unexpected word "other" after image "img" \(arguments for the app go after '
            r"'--'; separate apps with '---'\)$",
        ),
        (["img", "--name", "x", "y"], r'^unexpected word "y"'),
        (
            ["img", "--name", "x", "--name=y"],
            r'^--name given twice for image "img" \(give it once per app\)$',
        ),
        (["img", "--exec", "/a", "--exec", "/b"], r"^--exec given twice"),
        (["img", "--readonly-rootfs", "--readonly-rootfs"], r"^--readonly-rootfs given twice"),
        (
            ["img", "--readonly-rootfs=yes"],
            r'^invalid --readonly-rootfs "yes": not a boolean \(true or false\)$',
        ),
        (["img", "--name", "Web"], r'^invalid --name "Web": "Web" is not a valid AC Name'),
        (
            ["img", "--working-dir", "srv"],
            r'^invalid --working-dir "srv": not an absolute path',
        ),
        (["img", "--set-env", "1=x"], r'^invalid --set-env "1=x"'),
        (["img", "--set-env", "X"], r"""^invalid --set-env "X": no '='"""),
        (["img", "--mount", "volume=d"], r'^invalid --mount "volume=d": target is missing'),
    ],
)
def test_parse_app_arguments_rejects(argv: list[str], message: str) -> None:
    with pytest.raises(PodError, match=message):
        parse_app_arguments(argv)


def test_options_of_one_group_do_not_leak_into_the_next() -> None:
    apps = parse_app_arguments(["a", "--name", "x", "---", "b", "--name", "y"])
    assert [(app.image, app.name) for app in apps] == [("a", "x"), ("b", "y")]


# --- reify: names and images -------------------------------------------------------------


def test_reify_one_app_takes_the_image_as_it_is() -> None:
    image = make_image(environment=[{"name": "GREETING", "value": "hi"}])
    pod = reify([AppOptions(image="example.com/tools/hello")], [(ID_A, image)])
    assert pod == PodManifest(
        apps=(
            RuntimeApp(
                name="hello",  # type: ignore[arg-type]
                image=RuntimeImage(
                    id=ID_A,  # type: ignore[arg-type]
                    name="example.com/tools/hello",  # type: ignore[arg-type]
                    labels=Labels({"version": "1.0"}),
                ),
                app=image.app,
            ),
        )
    )
    assert str(pod.ac_version) == "0.8.11"
    assert pod.volumes == () and pod.annotations == Annotations()
    assert parse_pod_manifest(pod.dumps()) == pod


@pytest.mark.parametrize(
    ("image_name", "app_name"),
    [
        ("example.com/tools/hello", "hello"),
        ("hello", "hello"),
        ("example.com/hello_world.v2", "hello-world-v2"),
        ("example.com/a~b", "a-b"),
        ("coreos.com/ace-validator-main", "ace-validator-main"),
    ],
)
def test_default_app_name(image_name: str, app_name: str) -> None:
    assert default_app_name(image_name) == app_name
    pod = reify([AppOptions(image=image_name)], [(ID_A, make_image(image_name))])
    assert pod.apps[0].name == app_name


def test_name_option_names_the_app() -> None:
    pod = reify([AppOptions(image="hello", name="web")], [(ID_A, make_image())])
    assert pod.apps[0].name == "web"


def test_invalid_name_option_is_rejected() -> None:
    with pytest.raises(PodError, match=r'^invalid --name "Web": "Web" is not a valid AC Name'):
        reify([AppOptions(image="hello", name="Web")], [(ID_A, make_image())])


def test_two_apps_with_the_same_name_are_rejected() -> None:
    apps = [AppOptions(image="a.example/hello"), AppOptions(image="b.example/hello")]
    images = [(ID_A, make_image("a.example/hello")), (ID_B, make_image("b.example/hello"))]
    with pytest.raises(
        PodError,
        match=r'^two apps are named "hello" \(images "a.example/hello" and "b.example/hello"\) '
        r"\(give one of them --name\)$",
    ):
        reify(apps, images)
    apps[1] = dataclasses.replace(apps[1], name="hello-b")
    assert [a.name for a in reify(apps, images).apps] == ["hello", "hello-b"]


def test_the_same_image_twice_under_two_names() -> None:
    image = make_image()
    pod = reify(
        [AppOptions(image="hello", name="one"), AppOptions(image="hello", name="two")],
        [(ID_A, image), (ID_A, image)],
    )
    assert [(a.name, a.image.id) for a in pod.apps] == [("one", ID_A), ("two", ID_A)]


def test_invalid_image_id_is_rejected() -> None:
    with pytest.raises(PodError, match=r'^image "hello": "sha512-xyz" is not a valid image ID'):
        reify([AppOptions(image="hello")], [("sha512-xyz", make_image())])


def test_no_apps_and_mismatched_lengths() -> None:
    with pytest.raises(PodError, match=r"^a pod needs at least one app \(give an IMAGE\)$"):
        reify([], [])
    with pytest.raises(ValueError, match=r"^1 apps but 0 images$"):
        reify([AppOptions(image="hello")], [])


def test_apps_that_clash_as_a_pod_are_a_pod_error() -> None:
    image = make_image(ports=[{"name": "www", "protocol": "tcp", "port": 80}])
    with pytest.raises(
        PodError,
        match=r'^these apps cannot share a pod: apps\[1\]\.app\.ports\[0\]\.name: port "www" '
        r'is also declared by app "one"$',
    ):
        reify(
            [AppOptions(image="hello", name="one"), AppOptions(image="hello", name="two")],
            [(ID_A, image), (ID_A, image)],
        )


# --- reify: the app ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exec_", "args", "expected"),
    [
        (None, None, ("/bin/hello", "--greet")),
        ("/bin/sh", None, ("/bin/sh",)),
        ("/bin/sh", ("-c", "true"), ("/bin/sh", "-c", "true")),
        (None, ("--loud", "x"), ("/bin/hello", "--loud", "x")),
        (None, (), ("/bin/hello",)),
    ],
)
def test_exec_and_args_override(
    exec_: str | None, args: tuple[str, ...] | None, expected: tuple[str, ...]
) -> None:
    pod = reify([AppOptions(image="hello", exec=exec_, args=args)], [(ID_A, make_image())])
    assert the_app(pod).exec == expected


def test_user_group_and_working_dir_override_and_the_rest_is_kept() -> None:
    image = make_image(
        workingDirectory="/opt",
        eventHandlers=[{"name": "pre-start", "exec": ["/bin/prep"]}],
        ports=[{"name": "www", "protocol": "tcp", "port": 80}],
        isolators=[{"name": "resource/memory", "value": {"limit": "1G"}}],
        supplementaryGIDs=[5],
    )
    pod = reify(
        [AppOptions(image="hello", user="0", group="wheel", working_dir="/srv")],
        [(ID_A, image)],
    )
    assert image.app is not None
    assert the_app(pod) == dataclasses.replace(
        image.app, user="0", group="wheel", working_directory="/srv"
    )


def test_without_overrides_the_image_values_stay() -> None:
    image = make_image(workingDirectory="/opt")
    app = the_app(reify([AppOptions(image="hello")], [(ID_A, image)]))
    assert (app.user, app.group, app.working_directory) == ("1000", "100", "/opt")


def test_environment_layers_image_then_pod_then_app() -> None:
    image = make_image(environment=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    pod = reify(
        [
            AppOptions(
                image="hello", environment=(("C", "app"), ("A", "app"), ("D", "app"), ("D", "2"))
            )
        ],
        [(ID_A, image)],
        environment=[("B", "pod"), ("C", "pod")],
    )
    env = the_app(pod).environment
    assert list(env.items()) == [("A", "app"), ("B", "pod"), ("C", "app"), ("D", "2")]
    assert env == Environment({"A": "app", "B": "pod", "C": "app", "D": "2"})


def test_invalid_pod_environment_name_is_rejected() -> None:
    with pytest.raises(
        PodError, match=r'^invalid --set-env "1X=y": "1X" is not a valid environment variable name$'
    ):
        reify([AppOptions(image="hello")], [(ID_A, make_image())], environment=[("1X", "y")])


def test_invalid_app_environment_name_in_options_is_rejected() -> None:
    with pytest.raises(PodError, match=r'^invalid --set-env "1X=y": "1X" is not a valid'):
        reify([AppOptions(image="hello", environment=(("1X", "y"),))], [(ID_A, make_image())])


def test_relative_working_dir_in_options_is_rejected() -> None:
    with pytest.raises(
        PodError,
        match=r'^invalid options for app "hello": workingDirectory: "srv" is not an absolute path$',
    ):
        reify([AppOptions(image="hello", working_dir="srv")], [(ID_A, make_image())])


def test_image_without_app_needs_exec() -> None:
    with pytest.raises(
        PodError, match=r'^image "example.com/base" has no app to run \(give --exec\)$'
    ):
        reify([AppOptions(image="example.com/base")], [(ID_A, bare_image())])
    with pytest.raises(PodError, match="has no app to run"):
        reify([AppOptions(image="example.com/base", args=("x",))], [(ID_A, bare_image())])


def test_image_without_app_runs_the_exec_option_as_root_by_default() -> None:
    pod = reify(
        [
            AppOptions(
                image="example.com/base",
                exec="/bin/sh",
                args=("-c", "true"),
                environment=(("X", "1"),),
                working_dir="/tmp",
            )
        ],
        [(ID_A, bare_image())],
        environment=[("P", "2")],
    )
    assert pod.apps[0].name == "base"
    assert the_app(pod) == App(
        exec=("/bin/sh", "-c", "true"),
        user="0",
        group="0",
        working_directory="/tmp",
        environment=Environment({"P": "2", "X": "1"}),
    )
    pod = reify(
        [AppOptions(image="example.com/base", exec="/bin/true", user="nobody", group="nogroup")],
        [(ID_A, bare_image())],
    )
    assert the_app(pod) == App(exec=("/bin/true",), user="nobody", group="nogroup")


def test_image_app_without_exec_needs_exec() -> None:
    image = make_image(exec=[])
    with pytest.raises(
        PodError, match=r'^the app of image "example.com/tools/hello" has no exec \(give --exec\)$'
    ):
        reify([AppOptions(image="hello")], [(ID_A, image)])
    with pytest.raises(PodError, match="has no exec"):
        reify([AppOptions(image="hello", args=("x",))], [(ID_A, image)])
    pod = reify([AppOptions(image="hello", exec="/bin/hi")], [(ID_A, image)])
    assert the_app(pod).exec == ("/bin/hi",)
    assert (the_app(pod).user, the_app(pod).group) == ("1000", "100")


def test_readonly_rootfs() -> None:
    image = make_image()
    pod = reify(
        [AppOptions(image="hello", name="ro", readonly_rootfs=True), AppOptions(image="hello")],
        [(ID_A, image), (ID_B, image)],
    )
    assert [a.read_only_root_fs for a in pod.apps] == [True, False]
    assert pod.to_json()["apps"][0]["readOnlyRootFS"] is True


# --- reify: volumes and mounts -----------------------------------------------------------

DATA = Volume(name="data", kind="host", source="/srv/data")  # type: ignore[arg-type]
LOGS = Volume(name="logs", kind="empty")  # type: ignore[arg-type]


def mount(volume: str, path: str) -> Mount:
    return Mount(volume=volume, path=path)  # type: ignore[arg-type]


def test_mount_option_mounts_a_pod_volume() -> None:
    pod = reify(
        [AppOptions(image="hello", mounts=(("data", "/data"), ("logs", "/var/log")))],
        [(ID_A, make_image())],
        volumes=[DATA, LOGS],
    )
    assert pod.apps[0].mounts == (mount("data", "/data"), mount("logs", "/var/log"))
    assert pod.volumes == (DATA, LOGS)


def test_mount_of_a_volume_the_pod_lacks_is_rejected() -> None:
    with pytest.raises(
        PodError,
        match=r'^app "hello" mounts volume "data", which the pod does not have '
        r"\(add --volume data,kind=host,source=PATH or kind=empty\)$",
    ):
        reify([AppOptions(image="hello", mounts=(("data", "/data"),))], [(ID_A, make_image())])


def test_unused_pod_volumes_are_kept() -> None:
    pod = reify([AppOptions(image="hello")], [(ID_A, make_image())], volumes=[DATA])
    assert pod.volumes == (DATA,)
    assert pod.apps[0].mounts == ()


def test_duplicate_pod_volumes_are_rejected() -> None:
    with pytest.raises(PodError, match=r'^volume "data" given twice \(give each volume once\)$'):
        reify([AppOptions(image="hello")], [(ID_A, make_image())], volumes=[DATA, DATA])


def test_mount_point_uses_the_pod_volume_of_its_name() -> None:
    image = make_image(mountPoints=[{"name": "data", "path": "/var/lib/data"}])
    pod = reify([AppOptions(image="hello")], [(ID_A, image)], volumes=[DATA])
    assert pod.apps[0].mounts == (mount("data", "/var/lib/data"),)
    assert pod.volumes == (DATA,)


def test_unsatisfied_mount_points_imply_empty_volumes_shared_by_name() -> None:
    main = make_image(
        "coreos.com/ace-validator-main", mountPoints=[{"name": "database", "path": "/db"}]
    )
    sidekick = make_image(
        "coreos.com/ace-validator-sidekick",
        mountPoints=[
            {"name": "database", "path": "/db"},
            {"name": "cache", "path": "/cache", "readOnly": True},
        ],
    )
    pod = reify(
        [AppOptions(image="main"), AppOptions(image="sidekick")],
        [(ID_A, main), (ID_B, sidekick)],
        volumes=[DATA],
    )
    assert pod.volumes == (
        DATA,
        Volume(name="database", kind="empty"),  # type: ignore[arg-type]
        Volume(name="cache", kind="empty"),  # type: ignore[arg-type]
    )
    assert pod.apps[0].mounts == (mount("database", "/db"),)
    assert pod.apps[1].mounts == (mount("database", "/db"), mount("cache", "/cache"))
    assert parse_pod_manifest(pod.dumps()) == pod


def test_a_mount_option_at_a_mount_point_path_replaces_it() -> None:
    image = make_image(
        mountPoints=[{"name": "database", "path": "/db/"}, {"name": "logs", "path": "/logs"}]
    )
    pod = reify(
        [AppOptions(image="hello", mounts=(("data", "/db"),))],
        [(ID_A, image)],
        volumes=[DATA],
    )
    assert pod.apps[0].mounts == (mount("data", "/db"), mount("logs", "/logs"))
    # No implied "database" volume: nothing mounts it.
    assert [v.name for v in pod.volumes] == ["data", "logs"]


def test_mount_point_paths_are_normalised() -> None:
    image = make_image(mountPoints=[{"name": "work", "path": "//srv/./work/"}])
    pod = reify([AppOptions(image="hello")], [(ID_A, image)])
    assert pod.apps[0].mounts == (mount("work", "/srv/work"),)


def test_mount_targets_may_share_a_string_prefix() -> None:
    pod = reify(
        [AppOptions(image="hello", mounts=(("data", "/data"), ("logs", "/database")))],
        [(ID_A, make_image())],
        volumes=[DATA, LOGS],
    )
    assert [m.path for m in pod.apps[0].mounts] == ["/data", "/database"]


def test_the_same_volume_at_two_targets() -> None:
    pod = reify(
        [AppOptions(image="hello", mounts=(("data", "/a"), ("data", "/b")))],
        [(ID_A, make_image())],
        volumes=[DATA],
    )
    assert pod.apps[0].mounts == (mount("data", "/a"), mount("data", "/b"))


def test_two_mounts_at_one_target_are_rejected() -> None:
    with pytest.raises(
        PodError,
        match=r'^app "hello": volumes "data" and "logs" are both mounted at "/data" '
        r"\(give each mount its own target\)$",
    ):
        reify(
            [AppOptions(image="hello", mounts=(("data", "/data"), ("logs", "/data/")))],
            [(ID_A, make_image())],
            volumes=[DATA, LOGS],
        )


def test_a_second_mount_point_at_the_same_path_is_satisfied_by_the_first() -> None:
    image = make_image(mountPoints=[{"name": "a", "path": "/x"}, {"name": "b", "path": "/x"}])
    # The second mount point's path is already a target: it is satisfied by the first.
    pod = reify([AppOptions(image="hello")], [(ID_A, image)])
    assert pod.apps[0].mounts == (mount("a", "/x"),)


@pytest.mark.parametrize(
    ("mounts", "points", "message"),
    [
        (
            (("data", "/data"), ("logs", "/data/x")),
            [],
            r'^app "hello": "/data/x" \(volume "logs"\) is inside "/data" \(volume "data"\): '
            r"nested mount targets are not supported \(mount the volumes at separate paths\)$",
        ),
        (
            (("logs", "/data/x"), ("data", "/data")),
            [],
            r'"/data/x" \(volume "logs"\) is inside "/data" \(volume "data"\)',
        ),
        (
            (("data", "/data"),),
            [{"name": "sub", "path": "/data/sub"}],
            r'"/data/sub" \(volume "sub"\) is inside "/data" \(volume "data"\)',
        ),
    ],
)
def test_nested_mount_targets_are_rejected(
    mounts: tuple[tuple[str, str], ...], points: list[dict[str, str]], message: str
) -> None:
    image = make_image(mountPoints=points)
    with pytest.raises(PodError, match=message):
        reify([AppOptions(image="hello", mounts=mounts)], [(ID_A, image)], volumes=[DATA, LOGS])


def test_mount_at_root_is_rejected() -> None:
    with pytest.raises(
        PodError,
        match=r'^app "hello": volume "data" cannot be mounted at \'/\' '
        r"\(use --readonly-rootfs or a subdirectory\)$",
    ):
        reify(
            [AppOptions(image="hello", mounts=(("data", "/"),))],
            [(ID_A, make_image())],
            volumes=[DATA],
        )
    image = make_image(mountPoints=[{"name": "root", "path": "/"}])
    with pytest.raises(PodError, match=r'volume "root" cannot be mounted at \'/\''):
        reify([AppOptions(image="hello")], [(ID_A, image)])


@pytest.mark.parametrize(
    ("target", "message"),
    [("data", "is not an absolute path"), ("/a/../b", "contains a '..' component")],
)
def test_bad_targets_given_in_options_are_rejected(target: str, message: str) -> None:
    with pytest.raises(PodError, match=rf"^invalid --mount .*: target .*{message}"):
        reify(
            [AppOptions(image="hello", mounts=(("data", target),))],
            [(ID_A, make_image())],
            volumes=[DATA],
        )


def test_mount_targets_given_in_options_are_normalised() -> None:
    pod = reify(
        [AppOptions(image="hello", mounts=(("data", "//data/./x/"),))],
        [(ID_A, make_image())],
        volumes=[DATA],
    )
    assert pod.apps[0].mounts == (mount("data", "/data/x"),)


# --- reify: annotations ------------------------------------------------------------------


def test_pod_annotations_are_recorded_in_order() -> None:
    pod = reify(
        [AppOptions(image="hello")],
        [(ID_A, make_image())],
        annotations=[("example.com/owner", "me"), ("created", "2024-01-02T03:04:05Z")],
    )
    assert list(pod.annotations.items()) == [
        ("example.com/owner", "me"),
        ("created", "2024-01-02T03:04:05Z"),
    ]


def test_duplicate_pod_annotations_are_rejected() -> None:
    with pytest.raises(PodError, match=r'^annotation "owner" given twice \(give each name once\)$'):
        reify(
            [AppOptions(image="hello")],
            [(ID_A, make_image())],
            annotations=[("owner", "a"), ("owner", "b")],
        )


def test_invalid_pod_annotations_are_rejected() -> None:
    with pytest.raises(
        PodError, match=r'^invalid pod annotation: \[0\]\.value: "soon" is not an RFC 3339'
    ):
        reify(
            [AppOptions(image="hello")], [(ID_A, make_image())], annotations=[("created", "soon")]
        )
    with pytest.raises(PodError, match=r'^invalid pod annotation: \[0\]\.name: "Owner"'):
        reify([AppOptions(image="hello")], [(ID_A, make_image())], annotations=[("Owner", "x")])


# --- from the command line to a pod ------------------------------------------------------


def test_command_line_to_reified_pod() -> None:
    apps = parse_app_arguments(
        [
            "coreos.com/ace-validator-main",
            "---",
            "coreos.com/ace-validator-sidekick",
            "--set-env",
            "SIDE=1",
            "--mount",
            "volume=shared,target=/shared",
            "--",
            "extra",
        ]
    )
    main = make_image(
        "coreos.com/ace-validator-main",
        exec=["/ace-validator", "main"],
        mountPoints=[{"name": "database", "path": "/db"}],
    )
    sidekick = make_image(
        "coreos.com/ace-validator-sidekick",
        exec=["/ace-validator", "sidekick"],
        mountPoints=[{"name": "database", "path": "/db"}],
    )
    pod = reify(
        apps,
        [(ID_B, main), (ID_C, sidekick)],
        volumes=[parse_volume("shared,kind=empty,mode=0777")],
        environment=[parse_env("POD=1")],
        annotations=[parse_annotation("example.com/purpose=test")],
    )
    assert [a.name for a in pod.apps] == ["ace-validator-main", "ace-validator-sidekick"]
    assert the_app(pod, 0).exec == ("/ace-validator", "main")
    assert the_app(pod, 1).exec == ("/ace-validator", "extra")
    assert dict(the_app(pod, 1).environment) == {"POD": "1", "SIDE": "1"}
    assert [v.name for v in pod.volumes] == ["shared", "database"]
    assert pod.apps[1].mounts == (mount("shared", "/shared"), mount("database", "/db"))
    assert parse_pod_manifest(pod.dumps()) == pod


# --- complete: a pod manifest the user wrote ----------------------------------------------


def manifest_pod(*apps: dict[str, Any], volumes: tuple[dict[str, Any], ...] = ()) -> PodManifest:
    """A pod manifest of ``apps`` (each ``{name, image: {id}, app?, mounts?}``)."""
    return parse_pod_manifest(
        {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": apps, "volumes": volumes}
    )


def manifest_app(
    name: str = "manual",
    image_id: str = ID_A,
    *,
    mounts: tuple[dict[str, Any], ...] = (),
    **app: Any,
) -> dict[str, Any]:
    """A pod manifest app; it has an ``app`` section of its own only if ``app`` is given."""
    doc: dict[str, Any] = {"name": name, "image": {"id": image_id}, "mounts": list(mounts)}
    if app:
        doc["app"] = {"exec": ["/bin/true"], "user": "0", "group": "0", **app}
    return doc


WITH_DATA_POINT = make_image(mountPoints=[{"name": "data", "path": "/data"}])


def test_complete_adds_an_implied_volume_for_the_images_mount_point() -> None:
    pod = complete(manifest_pod(manifest_app()), {ID_A: WITH_DATA_POINT})
    assert pod.volumes == (Volume(name="data", kind="empty"),)  # type: ignore[arg-type]
    assert pod.apps[0].mounts == (mount("data", "/data"),)
    assert pod.apps[0].app is None  # the image's app stays the image's
    assert parse_pod_manifest(pod.dumps()) == pod


def test_complete_takes_the_mount_points_of_the_apps_own_app_over_the_images() -> None:
    own = manifest_app(mountPoints=[{"name": "cache", "path": "/cache"}])
    pod = complete(manifest_pod(own), {ID_A: WITH_DATA_POINT})
    assert [v.name for v in pod.volumes] == ["cache"]
    assert pod.apps[0].mounts == (mount("cache", "/cache"),)
    # No mount points at all: nothing to add, the manifest is returned as it is.
    bare = manifest_pod(manifest_app(exec=["/bin/true"]))
    assert complete(bare, {ID_A: WITH_DATA_POINT}) is bare


def test_complete_uses_the_pod_volume_of_the_mount_points_name() -> None:
    volumes = ({"name": "data", "kind": "host", "source": "/srv/data"},)
    pod = complete(manifest_pod(manifest_app(), volumes=volumes), {ID_A: WITH_DATA_POINT})
    assert pod.volumes == (DATA,)
    assert pod.apps[0].mounts == (mount("data", "/data"),)


def test_complete_shares_an_implied_volume_between_apps_and_keeps_their_mounts() -> None:
    pod = complete(
        manifest_pod(
            manifest_app("one", mounts=({"volume": "logs", "path": "/var/log"},)),
            manifest_app("two", ID_B),
            volumes=({"name": "logs", "kind": "empty"},),
        ),
        {ID_A: WITH_DATA_POINT, ID_B: WITH_DATA_POINT},
    )
    assert pod.volumes == (LOGS, Volume(name="data", kind="empty"))  # type: ignore[arg-type]
    assert pod.apps[0].mounts == (mount("logs", "/var/log"), mount("data", "/data"))
    assert pod.apps[1].mounts == (mount("data", "/data"),)


def test_complete_counts_a_mount_with_an_app_volume_as_mounted() -> None:
    own = {"volume": "mine", "path": "/data/", "appVolume": {"name": "mine", "kind": "empty"}}
    pod = complete(manifest_pod(manifest_app(mounts=(own,))), {ID_A: WITH_DATA_POINT})
    assert pod.volumes == ()
    (only,) = pod.apps[0].mounts
    assert (only.volume, only.path) == ("mine", "/data")
    assert only.app_volume == Volume(name="mine", kind="empty")  # type: ignore[arg-type]


def test_complete_normalises_targets_and_matches_mount_points_by_them() -> None:
    points = [{"name": "data", "path": "//data/."}, {"name": "work", "path": "srv/./work/"}]
    pod = complete(
        manifest_pod(
            manifest_app(mounts=({"volume": "logs", "path": "data/"},), mountPoints=points),
            volumes=({"name": "logs", "kind": "empty"},),
        ),
        {},
    )
    assert pod.apps[0].mounts == (mount("logs", "/data"), mount("work", "/srv/work"))
    assert [v.name for v in pod.volumes] == ["logs", "work"]


@pytest.mark.parametrize(
    ("mounts", "points", "message"),
    [
        pytest.param(
            ({"volume": "data", "path": "/data"}, {"volume": "logs", "path": "/data/x"}),
            [],
            r'^app "manual": "/data/x" \(volume "logs"\) is inside "/data" \(volume "data"\): '
            r"nested mount targets are not supported \(mount the volumes at separate paths\)$",
            id="nested",
        ),
        pytest.param(
            ({"volume": "logs", "path": "/data/x"},),
            [{"name": "data", "path": "/data"}],
            r'^app "manual": "/data/x" \(volume "logs"\) is inside "/data" \(volume "data"\): ',
            id="nested-in-a-mount-point",
        ),
        pytest.param(
            ({"volume": "data", "path": "/data"}, {"volume": "logs", "path": "//data/"}),
            [],
            r'^app "manual": volumes "data" and "logs" are both mounted at "/data" '
            r"\(give each mount its own target\)$",
            id="duplicate",
        ),
        pytest.param(
            ({"volume": "data", "path": "/."},),
            [],
            r'^app "manual": volume "data" cannot be mounted at \'/\' '
            r"\(use --readonly-rootfs or a subdirectory\)$",
            id="root",
        ),
        pytest.param(
            (),
            [{"name": "data", "path": "/"}],
            r'^app "manual": volume "data" cannot be mounted at \'/\'',
            id="root-mount-point",
        ),
        pytest.param(
            ({"volume": "data", "path": "/a/../etc"},),
            [],
            r'^app "manual": cannot mount volume "data": target "/a/\.\./etc" contains a '
            r"'\.\.' component \(an absolute path inside the app\)$",
            id="dot-dot",
        ),
    ],
)
def test_complete_refuses_bad_targets(
    mounts: tuple[dict[str, str], ...], points: list[dict[str, str]], message: str
) -> None:
    volumes = ({"name": "data", "kind": "empty"}, {"name": "logs", "kind": "empty"})
    pod = manifest_pod(manifest_app(mounts=mounts, mountPoints=points), volumes=volumes)
    with pytest.raises(PodError, match=message) as caught:
        complete(pod, {})
    assert "\n" not in str(caught.value)


def test_complete_refuses_a_mount_of_a_volume_the_pod_lacks() -> None:
    pod = manifest_pod(
        manifest_app(mounts=({"volume": "data", "path": "/data"},)),
        volumes=({"name": "data", "kind": "empty"},),
    )
    # PodManifest refuses such a mount when it is made; complete() does not rely on that.
    object.__setattr__(pod, "volumes", ())
    with pytest.raises(
        PodError,
        match=r'^app "manual" mounts volume "data", which the pod does not have '
        r"\(add it to the pod's volumes or give the mount an appVolume\)$",
    ):
        complete(pod, {ID_A: make_image()})


def test_complete_needs_the_image_of_an_app_without_an_app_of_its_own() -> None:
    with pytest.raises(ValueError, match="no image manifest for app manual"):
        complete(manifest_pod(manifest_app()), {ID_B: make_image()})


def test_reify_ends_with_complete() -> None:
    points = [{"name": "data", "path": "/data"}, {"name": "up", "path": "../up"}]
    image = make_image(mountPoints=points)
    pod = reify(
        [AppOptions(image="hello", mounts=(("logs", "/logs"),))],
        [(ID_A, image)],
        volumes=[LOGS],
    )
    # A mount point's '..' cannot climb above the app's root.
    assert pod.apps[0].mounts == (
        mount("logs", "/logs"),
        mount("data", "/data"),
        mount("up", "/up"),
    )
    assert complete(pod, {ID_A: image}) is pod

"""``jetpack discover``: actool's output, --json, errors, against real HTTPS on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jetpack.cli.discover import discover
from jetpack.cli.main import cli, run
from jetpack.discovery import host_labels
from tests.net import Repo, Served, Server, TestCA

Serve = Callable[..., Server]
Capsys = pytest.CaptureFixture[str]
Jp = Callable[..., int]

HOST = host_labels()
STORAGE = "https://storage.example.com"
FULL = f"{STORAGE}/{{os}}/{{arch}}/{{name}}-{{version}}.{{ext}}"
SHORT = f"{STORAGE}/{{name}}-{{version}}.{{ext}}"


def page(*tags: tuple[str, str]) -> Served:
    metas = "".join(f'<meta name="{n}" content="{c}">' for n, c in tags)
    return Served(f"<html><head>{metas}</head></html>".encode(), content_type="text/html")


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """Make sure ``jetpack discover`` exists, whether or not main.py registers it yet."""
    added = "discover" not in cli.commands
    if added:
        cli.add_command(discover)
    yield
    if added:
        del cli.commands["discover"]


@pytest.fixture
def conf(tmp_path: Path, test_ca: TestCA) -> Callable[..., Path]:
    def write(**fetch: object) -> Path:
        path = tmp_path / "jetpack.toml"
        fetch.setdefault("ca-file", str(test_ca.ca_file))
        fetch.setdefault("connect-timeout", 5)
        lines = [f"{k} = {json.dumps(v)}" for k, v in fetch.items() if v is not None]
        path.write_text("[fetch]\n" + "\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture
def jp(tmp_path: Path, conf: Callable[..., Path]) -> Jp:
    """``run`` with a private data directory and a config trusting the test CA."""
    config = conf()

    def call(*argv: str) -> int:
        return run(["--dir", str(tmp_path / "data"), "--config", str(config), *argv])

    return call


@pytest.fixture
def site(serve: Serve) -> tuple[Repo, Server]:
    repo = Repo(
        {
            "/app": page(
                ("ac-discovery", f"localhost {FULL}"),
                ("ac-discovery", f"localhost {SHORT}"),
                ("ac-discovery-pubkeys", "localhost https://localhost/keys/1.gpg"),
                ("ac-discovery-pubkeys", "localhost https://localhost/keys/2.gpg"),
            ),
            "/": page(("ac-discovery", f"localhost {SHORT}")),
        }
    )
    return repo, serve(repo.app())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prints_what_actool_prints(jp: Jp, site: tuple[Repo, Server], capsys: Capsys) -> None:
    _, server = site
    assert jp("discover", "--discovery-port", str(server.port), "localhost/app:1.0") == 0
    out = capsys.readouterr()
    full = f"{STORAGE}/{HOST['os']}/{HOST['arch']}/localhost/app-1.0"
    assert out.out == (
        f"ACI: {full}.aci, ASC: {full}.aci.asc\n"
        f"ACI: {STORAGE}/localhost/app-1.0.aci, ASC: {STORAGE}/localhost/app-1.0.aci.asc\n"
        "PublicKeys: https://localhost/keys/1.gpg,https://localhost/keys/2.gpg\n"
    )
    assert out.err == ""


def test_no_keys_line_without_keys(jp: Jp, site: tuple[Repo, Server], capsys: Capsys) -> None:
    _, server = site
    assert jp("discover", "--discovery-port", str(server.port), "localhost/other") == 0
    aci = f"{STORAGE}/localhost/other-latest.aci"
    assert capsys.readouterr().out == f"ACI: {aci}, ASC: {aci}.asc\n"


def test_json(jp: Jp, site: tuple[Repo, Server], capsys: Capsys) -> None:
    _, server = site
    port = str(server.port)
    assert jp("discover", "--json", "--discovery-port", port, "localhost/app", "localhost/x") == 0
    full = f"{STORAGE}/{HOST['os']}/{HOST['arch']}/localhost/app-latest"
    assert json.loads(capsys.readouterr().out) == [
        {
            "name": "localhost/app",
            "endpoints": [
                {"aci": f"{full}.aci", "asc": f"{full}.aci.asc"},
                {
                    "aci": f"{STORAGE}/localhost/app-latest.aci",
                    "asc": f"{STORAGE}/localhost/app-latest.aci.asc",
                },
            ],
            "keys": ["https://localhost/keys/1.gpg", "https://localhost/keys/2.gpg"],
        },
        {
            "name": "localhost/x",
            "endpoints": [
                {
                    "aci": f"{STORAGE}/localhost/x-latest.aci",
                    "asc": f"{STORAGE}/localhost/x-latest.aci.asc",
                }
            ],
            "keys": [],
        },
    ]


def test_port_from_the_config_and_the_flag_wins(
    tmp_path: Path, conf: Callable[..., Path], site: tuple[Repo, Server], capsys: Capsys
) -> None:
    _, server = site
    base = ["--dir", str(tmp_path / "data"), "--config"]
    good = str(conf(**{"discovery-port": server.port}))
    assert run([*base, good, "discover", "localhost/x"]) == 0
    assert "localhost/x-latest.aci" in capsys.readouterr().out
    dead = str(conf(**{"discovery-port": _closed_port()}))
    assert run([*base, dead, "discover", "--discovery-port", str(server.port), "localhost/x"]) == 0
    assert "localhost/x-latest.aci" in capsys.readouterr().out
    assert run([*base, dead, "discover", "localhost/x"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_nothing_found_is_one_line_exit_1(jp: Jp, serve: Serve, capsys: Capsys) -> None:
    server = serve(Repo({"/": page(("ac-discovery-pubkeys", "localhost https://k"))}).app())
    assert jp("discover", "--discovery-port", str(server.port), "localhost/app") == 1
    out = capsys.readouterr()
    assert out.out == ""
    base = f"https://localhost:{server.port}"
    app = f"localhost/app,os={HOST['os']},arch={HOST['arch']}"
    assert out.err == (
        f"jetpack: cannot discover {app}: no usable ac-discovery meta tags at "
        f"{base}/app?ac-discovery=1 (HTTP 404), {base}?ac-discovery=1 (0 endpoints, 1 key) "
        "(check the name, or fetch the image by URL or from a file)\n"
    )


def test_stops_at_the_first_name_without_endpoints(
    jp: Jp, site: tuple[Repo, Server], capsys: Capsys
) -> None:
    # actool's behaviour: what was found for earlier names is printed, then the error.
    # The site's tags are for the prefix "localhost", so "127.0.0.1/y" finds nothing.
    _, server = site
    argv = ["--discovery-port", str(server.port), "localhost/x", "127.0.0.1/y", "localhost/z"]
    assert jp("discover", *argv) == 1
    out = capsys.readouterr()
    aci = f"{STORAGE}/localhost/x-latest.aci"
    assert out.out == f"ACI: {aci}, ASC: {aci}.asc\n"
    assert out.err.startswith("jetpack: cannot discover 127.0.0.1/y,")
    assert "no tags whose prefix matches 127.0.0.1/y" in out.err
    assert out.err.count("\n") == 1


def test_bad_names_exit_1_before_any_request(
    jp: Jp, site: tuple[Repo, Server], capsys: Capsys
) -> None:
    repo, server = site
    assert jp("discover", "--discovery-port", str(server.port), "localhost/app", "Bad:1:2") == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: invalid image name 'Bad:1:2': a colon may appear only once")
    assert err.count("\n") == 1
    assert repo.log == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Missing argument 'NAME...'"),
        (["--discovery-port", "0", "a.com/b"], "0 is not in the range 1<=x<=65535"),
        (["--insecure-options=bogus", "a.com/b"], "unknown bogus"),
    ],
)
def test_usage_errors_exit_2(jp: Jp, capsys: Capsys, argv: list[str], message: str) -> None:
    assert jp("discover", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jetpack: ") and message in err
    assert err.count("\n") == 1


def test_plain_http_only_with_insecure_http(jp: Jp, serve: Serve, capsys: Capsys) -> None:
    server = serve(Repo({"/": page(("ac-discovery", f"localhost {SHORT}"))}).app(), tls=False)
    port = str(server.port)
    assert jp("discover", "--discovery-port", port, "localhost/app") == 1
    assert capsys.readouterr().err.startswith("jetpack: cannot discover localhost/app")
    assert jp("discover", "--insecure-options=http", "--discovery-port", port, "localhost/app") == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"ACI: {STORAGE}/localhost/app-latest.aci")
    assert "warning: plain http is allowed" in out.err


def test_insecure_tls(
    tmp_path: Path, conf: Callable[..., Path], serve: Serve, capsys: Capsys
) -> None:
    server = serve(Repo({"/app": page(("ac-discovery", f"localhost {SHORT}"))}).app())
    no_ca = str(conf(**{"ca-file": None}))
    argv = ["--dir", str(tmp_path / "d"), "--config", no_ca, "discover"]
    port = ["--discovery-port", str(server.port)]
    assert run([*argv, *port, "localhost/app"]) == 1
    assert "TLS verification failed" in capsys.readouterr().err
    assert run([*argv, "--insecure-options=tls", *port, "localhost/app"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ACI: ")
    assert "warning: TLS certificates are not verified" in out.err


def test_debug_shows_every_url_tried(
    tmp_path: Path, jp: Jp, site: tuple[Repo, Server], capsys: Capsys
) -> None:
    _, server = site
    config = str(tmp_path / "jetpack.toml")
    port = str(server.port)
    argv = ["--debug", "--config", config, "discover", "--discovery-port", port, "localhost/a/b"]
    assert run(argv) == 0
    err = capsys.readouterr().err.splitlines()
    base = f"https://localhost:{server.port}"
    assert err == [
        f"jetpack: discover localhost/a/b: {base}/a/b?ac-discovery=1: HTTP 404",
        f"jetpack: discover localhost/a/b: {base}/a?ac-discovery=1: HTTP 404",
        f"jetpack: discover localhost/a/b: {base}?ac-discovery=1: 1 endpoint, 0 keys",
    ]


def test_importing_the_command_is_cheap() -> None:
    code = (
        "import sys, jetpack.cli.discover; "
        "print([n for n in ('aiohttp', 'lxml', 'jetpack.schema') if n in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

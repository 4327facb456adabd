"""`jetpack trust` and `jetpack untrust`, with real keys and real HTTPS on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jetpack.cli.main import cli, run
from jetpack.cli.trust import trust, untrust
from jetpack.fetch.trust import TrustStore, format_fingerprint
from tests.net import Key, KeyMaker, Repo, Served, Server, TestCA

Capsys = pytest.CaptureFixture[str]


class FakeTTY(io.StringIO):
    """Standard input that claims to be a terminal, with the user's answers in it."""

    def isatty(self) -> bool:
        return True


class Jetpack:
    """``run`` with a private trust store and the test CA; ``config`` adds TOML lines."""

    def __init__(self, tmp_path: Path, ca: TestCA) -> None:
        self.tmp_path = tmp_path
        self.store = TrustStore(tmp_path / "local", tmp_path / "vendor")
        self.fetch_lines = [f'ca-file = "{ca.ca_file}"']

    def __call__(self, *argv: str) -> int:
        conf = self.tmp_path / "jetpack.toml"
        conf.write_text(
            "[fetch]\n"
            + "\n".join(self.fetch_lines)
            + f'\n[trust]\nlocal = "{self.store.local}"\nvendor = "{self.store.vendor}"\n'
        )
        return run(["--dir", str(self.tmp_path / "data"), "--config", str(conf), *argv])

    def trusted(self) -> list[tuple[str | None, str]]:
        return [(k.prefix, k.fingerprint) for k in self.store.list()]


@pytest.fixture
def jp(tmp_path: Path, test_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[Jetpack]:
    # The lead registers the commands in cli/main.py; until then (and harmlessly after), here.
    monkeypatch.setitem(cli.commands, "trust", trust)
    monkeypatch.setitem(cli.commands, "untrust", untrust)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal unless a test says so
    yield Jetpack(tmp_path, test_ca)


@pytest.fixture
def alice(gpg_keys: KeyMaker) -> Key:
    return gpg_keys.make("Alice <alice@example.com>")


@pytest.fixture
def bob(gpg_keys: KeyMaker) -> Key:
    return gpg_keys.make("Bob <bob@example.com>")


@pytest.fixture
def key_file(tmp_path: Path) -> Callable[[Key], str]:
    def write(key: Key) -> str:
        path = tmp_path / f"{key.fingerprint}.asc"
        path.write_bytes(key.public)
        return str(path)

    return write


# -- listing ----------------------------------------------------------------------------


def test_list_empty(jp: Jetpack, capsys: Capsys) -> None:
    assert jp("trust") == 0
    assert capsys.readouterr().out == "PREFIX  FINGERPRINT  USER ID\n"
    assert jp("trust", "--no-legend") == 0
    assert capsys.readouterr().out == ""
    assert jp("trust", "--format=json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_list_table_and_json(jp: Jetpack, alice: Key, bob: Key, capsys: Capsys) -> None:
    jp.store.add(alice.public, "example.com/app")
    jp.store.add(bob.public, None)
    assert jp("trust") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PREFIX", "FINGERPRINT", "USER", "ID"]
    assert lines[1].split() == ["*", bob.fingerprint, "Bob", "<bob@example.com>"]
    assert lines[2].split() == [
        "example.com/app",
        alice.fingerprint,
        "Alice",
        "<alice@example.com>",
    ]
    assert lines[1].index(bob.fingerprint) == lines[2].index(alice.fingerprint)  # aligned
    assert jp("trust", "--format=json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1] == {
        "prefix": "example.com/app",
        "fingerprint": alice.fingerprint,
        "uids": ["Alice <alice@example.com>"],
        "source": "local",
        "path": str(jp.store.local / "prefix.d/example.com/app" / alice.fingerprint),
    }
    assert rows[0]["prefix"] is None


# -- adding, with review ----------------------------------------------------------------


def test_review_yes(
    jp: Jetpack,
    alice: Key,
    key_file: Callable[[Key], str],
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTTY("y\n"))
    assert jp("trust", "--prefix", "example.com/app", key_file(alice)) == 0
    err = capsys.readouterr().err
    assert format_fingerprint(alice.fingerprint) in err
    assert "Alice <alice@example.com>" in err
    assert "Are you sure you want to trust this key? [y/N]" in err
    assert f"Added key {alice.fingerprint} for prefix example.com/app" in err
    assert jp.trusted() == [("example.com/app", alice.fingerprint)]


def test_review_default_is_no(
    jp: Jetpack,
    alice: Key,
    key_file: Callable[[Key], str],
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for answer in ("n\n", "\n"):
        monkeypatch.setattr(sys, "stdin", FakeTTY(answer))
        assert jp("trust", "--prefix", "example.com/app", key_file(alice)) == 1
        err = capsys.readouterr().err
        assert "Not trusting" in err
        assert "jetpack: no key was trusted: every key was declined" in err
    assert jp.trusted() == []


def test_review_each_key(
    jp: Jetpack,
    alice: Key,
    bob: Key,
    key_file: Callable[[Key], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTTY("n\ny\n"))
    assert jp("trust", "--root", key_file(alice), key_file(bob)) == 0
    assert jp.trusted() == [(None, bob.fingerprint)]


def test_not_a_terminal_says_which_flag(
    jp: Jetpack, alice: Key, key_file: Callable[[Key], str], capsys: Capsys
) -> None:
    assert jp("trust", "--prefix", "example.com/app", key_file(alice)) == 1
    err = capsys.readouterr().err
    assert "standard input is not a terminal" in err
    assert f"--fingerprint {alice.fingerprint}" in err
    assert "--skip-fingerprint-review" in err
    assert err.count("\n") == 1
    assert jp.trusted() == []


def test_skip_fingerprint_review(
    jp: Jetpack, alice: Key, key_file: Callable[[Key], str], capsys: Capsys
) -> None:
    assert jp("trust", "--skip-fingerprint-review", "--root", key_file(alice)) == 0
    assert "Added key" in capsys.readouterr().err
    assert jp.trusted() == [(None, alice.fingerprint)]


def test_fingerprint_match_needs_no_review(
    jp: Jetpack, alice: Key, key_file: Callable[[Key], str]
) -> None:
    spaced = format_fingerprint(alice.fingerprint)  # as people copy it from gpg's output
    assert jp("trust", "--prefix", "example.com/app", "--fingerprint", spaced, key_file(alice)) == 0
    assert jp.trusted() == [("example.com/app", alice.fingerprint)]


def test_fingerprint_mismatch_writes_nothing(
    jp: Jetpack, alice: Key, bob: Key, key_file: Callable[[Key], str], capsys: Capsys
) -> None:
    args = ["trust", "--prefix", "example.com/app", "--fingerprint", alice.fingerprint]
    assert jp(*args, key_file(alice), key_file(bob)) == 1
    err = capsys.readouterr().err
    assert f"its fingerprint is {bob.fingerprint}, not {alice.fingerprint}" in err
    assert jp.trusted() == []
    assert not jp.store.local.exists()
    assert (
        jp("trust", "--prefix", "example.com/app", "--fingerprint", "0" * 40, key_file(alice)) == 1
    )
    assert jp.trusted() == []
    assert jp("trust", "--root", "--fingerprint", "abc", key_file(alice)) == 1
    assert "a fingerprint is 40 hexadecimal digits" in capsys.readouterr().err


def test_bad_keys_and_prefixes(
    jp: Jetpack, alice: Key, key_file: Callable[[Key], str], tmp_path: Path, capsys: Capsys
) -> None:
    junk = tmp_path / "junk.asc"
    junk.write_text("not a key")
    assert jp("trust", "--root", "--skip-fingerprint-review", str(junk)) == 1
    assert f"cannot read key {junk}: it is not an OpenPGP public key" in capsys.readouterr().err
    assert jp("trust", "--root", "--skip-fingerprint-review", str(tmp_path / "missing")) == 1
    assert "No such file or directory" in capsys.readouterr().err
    assert jp("trust", "--prefix", "Example.com", "--skip-fingerprint-review", key_file(alice)) == 1
    assert "invalid prefix 'Example.com'" in capsys.readouterr().err
    assert jp.trusted() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prefix", "example.com/a", "--root", "k.asc"], "give --prefix or --root, not both"),
        (["k.asc"], "--prefix PREFIX"),
        (["--root"], "--root needs KEY-FILE-OR-URL"),
    ],
)
def test_usage(jp: Jetpack, capsys: Capsys, argv: list[str], message: str) -> None:
    assert jp("trust", *argv) == 2
    assert message in capsys.readouterr().err


# -- keys from URLs and from discovery --------------------------------------------------


def test_key_from_https_url(
    jp: Jetpack, alice: Key, serve: Callable[..., Server], capsys: Capsys
) -> None:
    repo = Repo({"/keys/alice.asc": Served(alice.public)})
    server = serve(repo.app())
    url = f"{server.url}/keys/alice.asc"
    assert jp("trust", "--prefix", "example.com/app", "--skip-fingerprint-review", url) == 0
    assert f"Key: {url}" in capsys.readouterr().err
    assert jp.trusted() == [("example.com/app", alice.fingerprint)]
    assert jp("trust", "--root", "--skip-fingerprint-review", f"{server.url}/missing") == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_key_over_http_needs_pubkey(
    jp: Jetpack, alice: Key, serve: Callable[..., Server], capsys: Capsys
) -> None:
    server = serve(Repo({"/alice.asc": Served(alice.public)}).app(), tls=False)
    url = f"{server.url}/alice.asc"
    for insecure in ("none", "http"):
        argv = ["trust", "--root", "--skip-fingerprint-review", f"--insecure-options={insecure}"]
        assert jp(*argv, url) == 1
        err = capsys.readouterr().err
        assert f"cannot fetch key {url}: keys are not fetched over plain http" in err
        assert "--insecure-options=pubkey" in err
    assert jp.trusted() == []
    argv = ["trust", "--root", "--skip-fingerprint-review", "--insecure-options=pubkey", url]
    assert jp(*argv) == 0
    assert "(--insecure-options=pubkey)" in capsys.readouterr().err
    assert jp.trusted() == [(None, alice.fingerprint)]


def test_untrusted_certificate(
    jp: Jetpack, alice: Key, serve: Callable[..., Server], capsys: Capsys
) -> None:
    server = serve(Repo({"/alice.asc": Served(alice.public)}).app())
    jp.fetch_lines = []  # no ca-file: the test CA is unknown
    url = f"{server.url}/alice.asc"
    assert jp("trust", "--root", "--skip-fingerprint-review", url) == 1
    assert "TLS verification failed" in capsys.readouterr().err
    argv = ["trust", "--root", "--skip-fingerprint-review", "--insecure-options=tls", url]
    assert jp(*argv) == 0
    assert "(--insecure-options=tls)" in capsys.readouterr().err


def _discovery_site(
    serve: Callable[..., Server], key: Key, *, with_keys: bool = True
) -> tuple[Server, Repo]:
    repo = Repo()
    server = serve(repo.app())
    tag = f'<meta name="ac-discovery-pubkeys" content="localhost/app {server.url}/pubkeys.asc">'
    page = f"<html><head>{tag if with_keys else ''}</head></html>".encode()
    repo.files["/app?ac-discovery=1"] = Served(page, content_type="text/html")
    repo.files["/pubkeys.asc"] = Served(key.public)
    return server, repo


def test_prefix_without_key_discovers_it(
    jp: Jetpack,
    alice: Key,
    serve: Callable[..., Server],
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, repo = _discovery_site(serve, alice)
    jp.fetch_lines.append(f"discovery-port = {server.port}")
    monkeypatch.setattr(sys, "stdin", FakeTTY("y\n"))
    assert jp("trust", "--prefix", "localhost/app") == 0
    err = capsys.readouterr().err
    assert f"Key: {server.url}/pubkeys.asc" in err
    assert jp.trusted() == [("localhost/app", alice.fingerprint)]
    assert repo.hits("/app?ac-discovery=1") == 1


def test_trust_keys_from_https_skips_review(
    jp: Jetpack, alice: Key, serve: Callable[..., Server]
) -> None:
    server, _ = _discovery_site(serve, alice)
    jp.fetch_lines.append(f"discovery-port = {server.port}")
    assert jp("trust", "--prefix", "localhost/app") == 1  # not a terminal, no flag
    assert jp("trust", "--prefix", "localhost/app", "--trust-keys-from-https") == 0
    assert jp.trusted() == [("localhost/app", alice.fingerprint)]


def test_discovery_without_keys(
    jp: Jetpack, alice: Key, serve: Callable[..., Server], capsys: Capsys
) -> None:
    server, _ = _discovery_site(serve, alice, with_keys=False)
    jp.fetch_lines.append(f"discovery-port = {server.port}")
    assert jp("trust", "--prefix", "localhost/app", "--skip-fingerprint-review") == 1
    err = capsys.readouterr().err
    assert "cannot discover keys for localhost/app: no ac-discovery-pubkeys" in err
    assert "jetpack trust --prefix localhost/app KEY-FILE-OR-URL" in err
    assert err.count("\n") == 1


# -- untrust ----------------------------------------------------------------------------


def test_untrust(jp: Jetpack, alice: Key, bob: Key, capsys: Capsys) -> None:
    local = jp.store.add(alice.public, "example.com/app").path
    vendor = jp.store.vendor / "root.d" / bob.fingerprint
    vendor.parent.mkdir(parents=True)
    vendor.write_bytes(bob.public)
    assert jp("untrust", alice.fingerprint.upper(), format_fingerprint(bob.fingerprint)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"removed {local}", f"masked {jp.store.local / 'root.d' / bob.fingerprint}"]
    assert jp.trusted() == []
    assert vendor.read_bytes() == bob.public
    assert jp("untrust", alice.fingerprint) == 1
    assert "no such trusted key" in capsys.readouterr().err
    assert jp("untrust", "nonsense") == 1
    assert jp("untrust") == 2


def test_cli_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, jetpack.cli.main, jetpack.cli.trust; "
        "heavy = [n for n in ('jetpack.schema', 'aiohttp', 'lxml', 'gnupg', 'jetpack.fetch.trust')"
        " if n in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

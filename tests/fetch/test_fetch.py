"""`jetpack fetch` end to end: real HTTPS repositories on 127.0.0.1, real GnuPG signatures."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jetpack.cli.main import run
from jetpack.config import Config, StorageConfig
from jetpack.discovery import host_labels
from jetpack.store import open_store
from jetpack.store.store import Store
from tests.fixtures import image_manifest
from tests.net import Key, KeyMaker, Repo, Served, Server, TestCA

MakeACI = Callable[..., Path]
Capsys = pytest.CaptureFixture[str]
ARCH = host_labels()["arch"]


@dataclass
class World:
    """A data directory, a config pointing at the test CA and trust dirs, and one repo."""

    tmp: Path
    repo: Repo
    server: Server
    config: Path
    key: Key

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def jp(self, *argv: str) -> int:
        return run(["--dir", str(self.data), "--config", str(self.config), *argv])

    def store(self) -> Store:
        return open_store(Config(data_dir=self.data, storage=StorageConfig(backend="copy")))

    def trust(self, prefix: str, key: Key | None = None) -> None:
        from jetpack.fetch.trust import TrustStore

        TrustStore(self.tmp / "trust", self.tmp / "vendor").add((key or self.key).public, prefix)

    def discovery_page(self, name: str, *, templates: list[str] | None = None) -> None:
        base = self.server.url
        tags = [
            f'<meta name="ac-discovery" content="{name} {t}">'
            for t in (templates or [f"{base}/images/{{name}}-{{version}}-{{os}}-{{arch}}.{{ext}}"])
        ]
        tags.append(f'<meta name="ac-discovery-pubkeys" content="{name} {base}/pubkeys.gpg">')
        path = "/" + name.split("/", 1)[1] + "?ac-discovery=1"
        page = "<html><head>" + "".join(tags) + "</head></html>"
        self.repo.files[path] = Served(page.encode(), "text/html")

    def publish(
        self,
        aci: Path,
        path: str,
        *,
        key: Key | None = None,
        signed: bool = True,
        **served: Any,
    ) -> bytes:
        body = aci.read_bytes()
        self.repo.files[path] = Served(body, **served)
        if signed:
            self.repo.files[path + ".asc"] = Served((key or self.key).sign(body), "text/plain")
        return body


@pytest.fixture
def world(
    tmp_path: Path, serve: Callable[..., Server], test_ca: TestCA, gpg_keys: KeyMaker
) -> World:
    repo = Repo()
    server = serve(repo.app())
    config = tmp_path / "jetpack.toml"
    config.write_text(
        f'[storage]\nbackend = "copy"\n'
        f'[fetch]\nca-file = "{test_ca.ca_file}"\ndiscovery-port = {server.port}\n'
        f'[trust]\nlocal = "{tmp_path / "trust"}"\nvendor = "{tmp_path / "vendor"}"\n'
    )
    return World(tmp_path, repo, server, config, gpg_keys.make("Publisher <pub@example.com>"))


def _app(
    make_aci: MakeACI, name: str = "localhost/app", version: str = "1.0.0", **fields: Any
) -> Path:
    return make_aci(image_manifest(name, version=version, **fields), {"bin/app": name.encode()})


def _aci_path(name: str, version: str = "1.0.0") -> str:
    return f"/images/{name}-{version}-linux-{ARCH}.aci"


def _fetch(world: World, capsys: Capsys, *argv: str) -> str:
    code = world.jp("fetch", "--quiet", *argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.strip()


def test_fetch_by_name_signed_and_trusted(world: World, make_aci: MakeACI, capsys: Capsys) -> None:
    world.discovery_page("localhost/app")
    world.publish(_app(make_aci), _aci_path("localhost/app"))
    world.trust("localhost/app")
    ident = _fetch(world, capsys, "localhost/app:1.0.0")
    with world.store() as store:
        record = store.get(ident)
        assert record is not None and record.name == "localhost/app"
        assert record.source.endswith(_aci_path("localhost/app"))
        assert list(store.tmp.iterdir()) == []


def test_latest_is_marked_when_no_version_is_asked(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.discovery_page("localhost/app")
    world.publish(
        _app(make_aci, version="2.0.0"), "/images/localhost/app-latest-linux-" + ARCH + ".aci"
    )
    world.trust("localhost/app")
    ident = _fetch(world, capsys, "localhost/app")
    with world.store() as store:
        assert store.get(ident).latest  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unsigned", "no signature at"),
        ("unknown-key", "jetpack trust --prefix localhost/app"),
        ("wrong-prefix", "jetpack trust --prefix localhost/app"),
        ("tampered", "the signature does not match the data"),
    ],
)
def test_untrusted_images_are_not_published(
    world: World, make_aci: MakeACI, gpg_keys: KeyMaker, capsys: Capsys, case: str, message: str
) -> None:
    world.discovery_page("localhost/app")
    aci = _app(make_aci)
    path = _aci_path("localhost/app")
    stranger = gpg_keys.make("Stranger <stranger@example.com>")
    if case == "unsigned":
        world.publish(aci, path, signed=False)
        world.trust("localhost/app")
    elif case == "unknown-key":
        world.publish(aci, path, key=stranger)
        world.trust("localhost/app")
    elif case == "wrong-prefix":
        world.publish(aci, path)
        world.trust("localhost/other")
    else:
        world.publish(aci, path)
        world.repo.files[path].body = _app(
            make_aci, version="1.0.0", annotations=[{"name": "authors", "value": "mallory"}]
        ).read_bytes()
        world.trust("localhost/app")
    assert world.jp("fetch", "--quiet", "localhost/app:1.0.0") == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: ") and err.count("\n") == 1
    assert message in err
    with world.store() as store:
        assert store.images() == []
        assert [p.name for p in store.tmp.iterdir()] == []


def test_insecure_image_skips_the_check_with_a_warning(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.discovery_page("localhost/app")
    world.publish(_app(make_aci), _aci_path("localhost/app"), signed=False)
    assert world.jp("fetch", "--quiet", "--insecure-options=image", "localhost/app:1.0.0") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("sha512-")
    assert "warning: signatures are not checked" in captured.err


@pytest.mark.parametrize(
    ("served_name", "served_version", "message"),
    [("localhost/other", "1.0.0", "its manifest names localhost/other"),
     ("localhost/app", "9.9.9", "its label version is '9.9.9', not '1.0.0'")],
)  # fmt: skip
def test_name_and_labels_must_match(
    world: World,
    make_aci: MakeACI,
    capsys: Capsys,
    served_name: str,
    served_version: str,
    message: str,
) -> None:
    world.discovery_page("localhost/app")
    world.publish(_app(make_aci, served_name, served_version), _aci_path("localhost/app"))
    world.trust("localhost")
    assert world.jp("fetch", "--quiet", "localhost/app:1.0.0") == 1
    assert message in capsys.readouterr().err
    with world.store() as store:
        assert store.images() == []


def test_every_endpoint_is_tried_in_order(world: World, make_aci: MakeACI, capsys: Capsys) -> None:
    base = world.server.url
    world.discovery_page(
        "localhost/app",
        templates=[
            f"{base}/missing/{{name}}.{{ext}}",
            f"{base}/mirror/{{name}}-{{version}}.{{ext}}",
        ],
    )
    world.publish(_app(make_aci), "/mirror/localhost/app-1.0.0.aci")
    world.trust("localhost/app")
    assert _fetch(world, capsys, "localhost/app:1.0.0").startswith("sha512-")
    assert world.repo.hits("/missing/localhost/app.aci") == 1


def test_dependencies_are_fetched_and_checked(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.trust("localhost")
    for name in ("localhost/base", "localhost/top"):
        world.discovery_page(name)
    base = _app(make_aci, "localhost/base")
    world.publish(base, _aci_path("localhost/base"))
    dep = {"imageName": "localhost/base", "labels": [{"name": "version", "value": "1.0.0"}]}
    world.publish(_app(make_aci, "localhost/top", dependencies=[dep]), _aci_path("localhost/top"))
    top = _fetch(world, capsys, "localhost/top:1.0.0")
    with world.store() as store:
        assert sorted(r.name for r in store.images()) == ["localhost/base", "localhost/top"]
        assert [r.name for r in store.chain(top)] == ["localhost/base", "localhost/top"]


def test_dependency_image_id_and_size_must_match(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.trust("localhost")
    for name in ("localhost/base", "localhost/top"):
        world.discovery_page(name)
    world.publish(_app(make_aci, "localhost/base"), _aci_path("localhost/base"))
    dep = {
        "imageName": "localhost/base",
        "imageID": "sha512-" + "0" * 128,
        "labels": [{"name": "version", "value": "1.0.0"}],
    }
    world.publish(_app(make_aci, "localhost/top", dependencies=[dep]), _aci_path("localhost/top"))
    assert world.jp("fetch", "--quiet", "localhost/top:1.0.0") == 1
    assert "its imageID is sha512-000000000000" in capsys.readouterr().err


def test_dependency_cycles_are_refused(world: World, make_aci: MakeACI, capsys: Capsys) -> None:
    world.trust("localhost")
    for name, other in (("localhost/a", "localhost/b"), ("localhost/b", "localhost/a")):
        world.discovery_page(name)
        dep = {"imageName": other, "labels": [{"name": "version", "value": "1.0.0"}]}
        world.publish(_app(make_aci, name, dependencies=[dep]), _aci_path(name))
    assert world.jp("fetch", "--quiet", "localhost/a:1.0.0") == 1
    assert "dependency cycle: localhost/a -> localhost/b -> localhost/a" in capsys.readouterr().err


def test_etag_revalidation_and_max_age(world: World, make_aci: MakeACI, capsys: Capsys) -> None:
    world.discovery_page("localhost/app")
    path = _aci_path("localhost/app")
    world.publish(_app(make_aci), path, etag='"v1"')
    world.trust("localhost/app")
    first = _fetch(world, capsys, "localhost/app:1.0.0")
    # new: the store has it, no request at all
    before = len(world.repo.log)
    assert _fetch(world, capsys, "localhost/app:1.0.0") == first
    assert len(world.repo.log) == before
    # update: revalidated with If-None-Match, answered 304, no body sent again
    assert _fetch(world, capsys, "--pull-policy=update", "localhost/app:1.0.0") == first
    last = [entry for entry in world.repo.log if entry[1] == path][-1]
    assert last[2].get("If-None-Match") == '"v1"'
    assert world.repo.hits(path) == 2
    # a fresh max-age: no request for the image at all, even with update
    world.repo.files[path].cache_control = "max-age=3600"
    assert (
        _fetch(world, capsys, "--pull-policy=update", "localhost/app:1.0.0") == first
    )  # 304 + max-age
    hits = world.repo.hits(path)
    assert _fetch(world, capsys, "--pull-policy=update", "localhost/app:1.0.0") == first
    assert world.repo.hits(path) == hits


def test_an_interrupted_download_resumes_with_range(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.discovery_page("localhost/app")
    path = _aci_path("localhost/app")
    aci = make_aci(image_manifest("localhost/app"), {"big": os.urandom(10 << 20)})
    body = world.publish(aci, path, etag='"v1"', drop_after=len(aci.read_bytes()) // 2)
    world.trust("localhost/app")
    ident = _fetch(world, capsys, "localhost/app:1.0.0")
    ranged = [e for e in world.repo.log if e[1] == path and "Range" in e[2]]
    assert ranged and ranged[0][2]["Range"].startswith("bytes=")
    assert int(ranged[0][2]["Range"][6:-1]) > 0
    with world.store() as store:
        assert store.blob_path(ident).read_bytes() == body
        assert store.verify() == []


def test_deferred_signature_is_fetched_after_the_image(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.discovery_page("localhost/app")
    path = _aci_path("localhost/app")
    world.publish(_app(make_aci), path)
    world.repo.files[path + ".asc"].deferred = 1
    world.trust("localhost/app")
    assert _fetch(world, capsys, "localhost/app:1.0.0").startswith("sha512-")
    assert world.repo.hits(path + ".asc") == 2


def test_two_concurrent_fetches_download_once(
    world: World, make_aci: MakeACI, jetpack_cmd: list[str]
) -> None:
    world.discovery_page("localhost/app")
    path = _aci_path("localhost/app")
    world.publish(make_aci(image_manifest("localhost/app"), {"f": os.urandom(8 << 20)}), path)
    world.trust("localhost/app")
    argv = [*jetpack_cmd, "--dir", str(world.data), "--config", str(world.config), "fetch", "-q",
            "localhost/app:1.0.0"]  # fmt: skip
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert outs[0][0] == outs[1][0]
    assert world.repo.hits(path) == 1


def test_plain_http_needs_the_insecure_option(
    world: World, make_aci: MakeACI, serve: Callable[..., Server], capsys: Capsys
) -> None:
    plain_repo = Repo()
    plain = serve(plain_repo.app(), tls=False)
    aci = _app(make_aci)
    plain_repo.files["/app.aci"] = Served(aci.read_bytes())
    plain_repo.files["/app.aci.asc"] = Served(world.key.sign(aci.read_bytes()))
    world.trust("localhost/app")
    url = f"{plain.url}/app.aci"
    assert world.jp("fetch", "-q", url) == 1
    assert "--insecure-options=http" in capsys.readouterr().err
    assert world.jp("fetch", "-q", "--insecure-options=http", url) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("sha512-") and "plain http is allowed" in captured.err


def test_fetch_https_url_and_file(
    world: World, make_aci: MakeACI, capsys: Capsys, tmp_path: Path
) -> None:
    aci = _app(make_aci)
    world.publish(aci, "/direct/app.aci")
    world.trust("localhost/app")
    ident = _fetch(world, capsys, f"{world.server.url}/direct/app.aci")
    # a file with its signature beside it, and with --signature
    signed = tmp_path / "copy.aci"
    signed.write_bytes(aci.read_bytes())
    (tmp_path / "copy.aci.asc").write_bytes(world.key.sign(aci.read_bytes()))
    assert _fetch(world, capsys, str(signed)) == ident
    elsewhere = tmp_path / "sig.asc"
    elsewhere.write_bytes(world.key.sign(aci.read_bytes()))
    (tmp_path / "copy.aci.asc").unlink()
    assert _fetch(world, capsys, "--signature", str(elsewhere), signed.as_uri()) == ident
    assert world.jp("fetch", "-q", str(signed)) == 1
    assert "copy.aci.asc does not exist" in capsys.readouterr().err


def test_pull_policy_never(world: World, capsys: Capsys) -> None:
    assert world.jp("fetch", "-q", "--pull-policy=never", "localhost/app:1.0.0") == 1
    assert "the pull policy is never" in capsys.readouterr().err


def test_discovery_failure_is_one_line(world: World, capsys: Capsys) -> None:
    assert world.jp("fetch", "-q", "localhost/nothing:1.0.0") == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: ") and err.count("\n") == 1
    assert "localhost/nothing" in err


def test_trust_keys_from_https(world: World, make_aci: MakeACI, capsys: Capsys) -> None:
    world.discovery_page("localhost/app")
    world.publish(_app(make_aci), _aci_path("localhost/app"))
    world.repo.files["/pubkeys.gpg"] = Served(world.key.public, "application/pgp-keys")
    assert world.jp("fetch", "-q", "localhost/app:1.0.0") == 1
    assert "run 'jetpack trust --prefix localhost/app'" in capsys.readouterr().err
    assert world.jp("fetch", "-q", "--trust-keys-from-https", "localhost/app:1.0.0") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("sha512-")
    assert f"trusting key {world.key.fingerprint} for localhost/app" in captured.err
    from jetpack.fetch.trust import TrustStore

    trusted = TrustStore(world.tmp / "trust", world.tmp / "vendor").keys_for("localhost/app")
    assert [k.fingerprint for k in trusted] == [world.key.fingerprint]


def test_progress_bar_on_a_terminal_only(
    world: World, make_aci: MakeACI, jetpack_cmd: list[str]
) -> None:
    import pty

    world.discovery_page("localhost/app")
    world.publish(
        make_aci(image_manifest("localhost/app"), {"f": os.urandom(4 << 20)}),
        _aci_path("localhost/app"),
    )
    world.trust("localhost/app")
    argv = [*jetpack_cmd, "--dir", str(world.data), "--config", str(world.config), "fetch"]
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [*argv, "localhost/app:1.0.0"], stderr=follower, stdout=subprocess.PIPE, timeout=60
    )
    os.close(follower)
    shown = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(leader, 65536):
            shown += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"app-1.0.0-linux" in shown  # the bar's label was drawn on the terminal
    # not a terminal, or --quiet: nothing but the ID
    piped = subprocess.run(
        [*argv, "--pull-policy=update", "localhost/app:1.0.0"], capture_output=True
    )
    assert piped.stderr == b""


@pytest.mark.parametrize(("directive", "status"), [("no-cache", 304), ("no-store", 200)])
def test_no_cache_and_no_store(
    world: World, make_aci: MakeACI, capsys: Capsys, directive: str, status: int
) -> None:
    world.discovery_page("localhost/app")
    path = _aci_path("localhost/app")
    world.publish(_app(make_aci), path, etag='"v1"', cache_control=f"{directive}, max-age=3600")
    world.trust("localhost/app")
    first = _fetch(world, capsys, "localhost/app:1.0.0")
    for _ in range(2):
        assert _fetch(world, capsys, "--pull-policy=update", "localhost/app:1.0.0") == first
    conditional = [e for e in world.repo.log if e[1] == path and "If-None-Match" in e[2]]
    # no-cache: always asked again (max-age ignored), with the validator; no-store: the
    # validator was never kept, so each update is a full download
    assert world.repo.hits(path) == 3
    assert len(conditional) == (2 if status == 304 else 0)


def test_a_fetch_the_store_answers_loads_no_network_code(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    import sys

    world.discovery_page("localhost/app")
    world.publish(_app(make_aci), _aci_path("localhost/app"))
    world.trust("localhost/app")
    ident = _fetch(world, capsys, "localhost/app:1.0.0")
    code = (
        "import sys; from jetpack.cli.main import run; "
        f"code = run(['--dir', {str(world.data)!r}, '--config', {str(world.config)!r}, "
        "'fetch', '-q', 'localhost/app:1.0.0']); "
        "print(code, [m for m in ('aiohttp', 'lxml') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [ident, "0 []"]


def test_colon_latest_is_the_image_marked_latest(
    world: World, make_aci: MakeACI, capsys: Capsys
) -> None:
    world.discovery_page("localhost/app")
    world.publish(
        _app(make_aci, version="2.0.0"), "/images/localhost/app-latest-linux-" + ARCH + ".aci"
    )
    world.trust("localhost/app")
    ident = _fetch(world, capsys, "localhost/app:latest")
    hits = len(world.repo.log)
    # the store answers ":latest" with the image marked latest: no request at all
    assert _fetch(world, capsys, "localhost/app:latest") == ident
    assert len(world.repo.log) == hits
    with world.store() as store:
        assert store.get(ident).latest  # type: ignore[union-attr]


def test_a_host_label_too_long_for_dns_is_one_line(world: World, capsys: Capsys) -> None:
    # The resolver's IDNA step raised UnicodeError, which escaped as an internal error.
    name = "a" * 70 + ".example/app"
    assert world.jp("fetch", "-q", name) == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: cannot discover") and err.count("\n") == 1
    assert "its host name is not valid" in err and "internal error" not in err

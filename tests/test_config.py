from __future__ import annotations

from pathlib import Path

import pytest

from jetpack.config import (
    DEFAULT_DATA_DIR,
    ACIConfig,
    Config,
    StorageConfig,
    load_config,
    parse_size,
)
from jetpack.errors import ConfigError


def test_defaults_when_the_default_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jetpack.config.DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    cfg = load_config(environ={})
    assert cfg == Config(data_dir=DEFAULT_DATA_DIR, config_file=None, aci=ACIConfig())


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration .*nope.toml: no such file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_file_values_and_precedence(tmp_path: Path) -> None:
    conf = tmp_path / "j.toml"
    conf.write_text(
        'data-dir = "/srv/jp"\n[aci]\nmax-ratio = 50\nmax-size = "2Gi"\nmax-manifest-size = 4096\n'
    )
    cfg = load_config(conf, environ={})
    assert cfg.data_dir == Path("/srv/jp")
    assert cfg.aci == ACIConfig(max_ratio=50.0, max_size=2 << 30, max_manifest_size=4096)
    assert cfg.config_file == conf
    # the environment beats the file, the flag beats both
    assert load_config(conf, environ={"JETPACK_DIR": "/env"}).data_dir == Path("/env")
    assert (
        load_config(conf, tmp_path / "flag", environ={"JETPACK_DIR": "/env"}).data_dir
        == tmp_path / "flag"
    )


def test_config_file_from_environment(tmp_path: Path) -> None:
    conf = tmp_path / "j.toml"
    conf.write_text('data-dir = "/from/env/file"\n')
    assert load_config(environ={"JETPACK_CONFIG": str(conf)}).data_dir == Path("/from/env/file")


def test_relative_data_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(data_dir=Path("rel"), environ={}).data_dir == tmp_path / "rel"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data-dir = 3\n", "data-dir: 3 is not a path"),
        ("storag = 1\n", "unknown key storag"),
        ("[aci]\nmax-ratio = 0\n", "aci.max-ratio: 0 is not a number"),
        ("[aci]\nmax-ratio = true\n", "aci.max-ratio"),
        ('[aci]\nmax-size = "lots"\n', "'lots' is not a size"),
        ("[aci]\nmax-size = -1\n", "size must be positive"),
        ("[aci]\nmaxsize = 1\n", "unknown key aci.maxsize"),
        ("aci = 1\n", r"\[aci\] must be a table"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_invalid_files(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(conf, environ={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), ("4096", 4096), ("2k", 2000), ("3Mi", 3 << 20), ("64Gi", 64 << 30), ("1T", 10**12)],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value, "x") == expected


@pytest.mark.parametrize("value", [0, "0", "1.5G", "G", "1Q", "", True, None, 2.5, "²", "١٢"])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(value, "x")


def test_storage_section(tmp_path: Path) -> None:
    conf = tmp_path / "j.toml"
    conf.write_text(
        '[storage]\nbackend = "zfs"\n[storage.zfs]\ndataset = "tank/jp"\nmountpoint = "/tank/jp"\n'
    )
    assert load_config(conf, environ={}).storage == StorageConfig(
        backend="zfs", zfs_dataset="tank/jp", zfs_mountpoint=Path("/tank/jp")
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[storage]\nbackend = "btrfs"\n',
            "storage.backend: 'btrfs' is not one of overlay, zfs, copy",
        ),
        ("[storage]\nzfs = 1\n", r"\[storage.zfs\] must be a table"),
        ('[storage.zfs]\ndataset = "/abs"\n', "storage.zfs.dataset: '/abs' is not a dataset name"),
        ('[storage.zfs]\nmountpoint = "rel"\n', "storage.zfs.mountpoint: 'rel' is not an absolute"),
        ('[storage.zfs]\npool = "x"\n', "unknown key storage.zfs.pool"),
        ("[storage]\nbackends = 1\n", "unknown key storage.backends"),
    ],
)
def test_storage_invalid(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(conf, environ={})


def test_fetch_and_trust_sections(tmp_path: Path) -> None:
    conf = tmp_path / "j.toml"
    conf.write_text(
        '[fetch]\nca-file = "/etc/ca.pem"\nconnect-timeout = 5\nread-timeout = 30.5\n'
        "discovery-port = 8443\n"
        '[[fetch.credentials]]\nhost = "Registry.Example.com"\ntype = "bearer"\ntoken = "t0k"\n'
        '[[fetch.credentials]]\nhost = "other.example.com"\ntype = "basic"\n'
        'user = "u"\npassword = "p"\n'
        '[trust]\nlocal = "/srv/keys"\nvendor = "/opt/keys"\n'
    )
    cfg = load_config(conf, environ={})
    assert cfg.fetch.ca_file == Path("/etc/ca.pem")
    assert (cfg.fetch.connect_timeout, cfg.fetch.read_timeout) == (5.0, 30.5)
    assert cfg.fetch.discovery_port == 8443
    bearer = cfg.fetch.credential("registry.example.com")
    assert bearer is not None and bearer.header() == "Bearer t0k"
    basic = cfg.fetch.credential("OTHER.example.com".lower())
    assert basic is not None and basic.header() == "Basic dTpw"
    assert cfg.fetch.credential("example.com") is None
    assert (cfg.trust.local, cfg.trust.vendor) == (Path("/srv/keys"), Path("/opt/keys"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fetch]\nca-file = 'rel.pem'\n", "fetch.ca-file: 'rel.pem' is not an absolute path"),
        ("[fetch]\nconnect-timeout = 0\n", "fetch.connect-timeout: 0 is not a number"),
        ("[fetch]\ndiscovery-port = 70000\n", "fetch.discovery-port: 70000 is not a number"),
        ("[fetch]\ncredentials = 1\n", "fetch.credentials must be an array of tables"),
        ("[[fetch.credentials]]\nhost = 'a.com'\ntype = 'magic'\n", "is not basic or bearer"),
        ("[[fetch.credentials]]\nhost = 'a.com'\ntype = 'bearer'\n", "type bearer needs a token"),
        (
            "[[fetch.credentials]]\nhost = 'a.com'\ntype = 'basic'\nuser = 'u'\n",
            "basic needs user and",
        ),
        (
            "[[fetch.credentials]]\nhost = 'a.com/x'\ntype = 'bearer'\ntoken = 't'\n",
            "not a host name",
        ),
        (
            "[[fetch.credentials]]\nhost = 'a.com'\ntype = 'bearer'\ntoken = 't'\n" * 2,
            "a host is listed twice",
        ),
        (
            "[[fetch.credentials]]\nhost = 'a.com'\ntype = 'bearer'\ntoken = 't'\nx = 1\n",
            "unknown key",
        ),
        ("[trust]\nlocal = 'keys'\n", "trust.local: 'keys' is not an absolute path"),
        ("[trust]\nextra = 1\n", "unknown key trust.extra"),
    ],
)
def test_fetch_and_trust_invalid(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(conf, environ={})


def test_serve_and_push_sections(tmp_path: Path) -> None:
    from jetpack.config import ServeUser

    conf = tmp_path / "j.toml"
    conf.write_text(
        '[serve]\nlisten = "[::1]:9443"\nroot = "/srv/images"\ntls-cert = "/etc/c.pem"\n'
        'tls-key = "/etc/k.pem"\npublic-url = "https://images.example.com/"\n'
        'signing-key = "/etc/s.asc"\ntrust = "/etc/st"\nmax-upload-size = "1Gi"\n'
        "allow-overwrite = true\nread-auth = true\nshutdown-timeout = 5\n"
        '[[serve.users]]\nname = "ci"\ntoken = "0123456789abcdef0"\n'
        'prefixes = ["example.com/app"]\n'
        '[[serve.users]]\nname = "ops"\npassword-hash = "scrypt$15$8$1$c2FsdA==$aGFzaA=="\n'
        'prefixes = ["*"]\n'
        '[push]\nserver = "https://images.example.com"\ntoken = "t"\n'
    )
    cfg = load_config(conf, environ={})
    serve = cfg.serve
    assert serve.listen == "[::1]:9443" and serve.root == Path("/srv/images")
    assert serve.public_url == "https://images.example.com"
    assert (serve.max_upload_size, serve.allow_overwrite, serve.read_auth) == (1 << 30, True, True)
    assert serve.shutdown_timeout == 5.0 and serve.trust == Path("/etc/st")
    assert serve.users[0] == ServeUser("ci", ("example.com/app",), token="0123456789abcdef0")
    assert serve.users[1].prefixes == ("*",) and serve.users[1].token is None
    assert "0123456789abcdef0" not in repr(serve)
    assert (cfg.push.server, cfg.push.token) == ("https://images.example.com", "t")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[serve]\nlisten = '8443'\n", "serve.listen: '8443' is not HOST:PORT"),
        ("[serve]\nlisten = '::1:8443'\n", "IPv6 address in brackets"),
        ("[serve]\nroot = 'rel'\n", "serve.root: 'rel' is not an absolute path"),
        ("[serve]\ntls-cert = '/c.pem'\n", "tls-cert and serve.tls-key go together"),
        ("[serve]\npublic-url = 'ftp://x'\n", "serve.public-url: 'ftp://x' is not an http"),
        ("[serve]\nmax-upload-size = 'big'\n", "'big' is not a size"),
        ("[serve]\nallow-overwrite = 'yes'\n", "serve.allow-overwrite: 'yes' is not true/false"),
        ("[serve]\nshutdown-timeout = -1\n", "serve.shutdown-timeout: -1 is not a number"),
        ("[serve]\nusers = 1\n", "serve.users must be an array"),
        ("[serve]\nlisn = 1\n", "unknown key serve.lisn"),
        ("[[serve.users]]\nname = 'a'\nprefixes = ['x']\n", "give a token .* or a password-hash"),
        ("[[serve.users]]\nname = 'a'\ntoken = 'short'\nprefixes = ['x']\n", "at least 16"),
        (
            "[[serve.users]]\nname = 'a'\npassword-hash = 'md5$x'\nprefixes = ['x']\n",
            "is not a scrypt",
        ),
        ("[[serve.users]]\nname = 'a'\ntoken = '0123456789abcdef'\n", "prefixes must be a non"),
        (
            "[[serve.users]]\nname = 'a'\ntoken = '0123456789abcdef'\nprefixes = ['Bad/']\n",
            "'Bad/' is not a name prefix",
        ),
        ("[[serve.users]]\nname = 'a:b'\ntoken = '0123456789abcdef'\nprefixes = ['x']\n", "no ':'"),
        (
            "[[serve.users]]\nname = 'a'\ntoken = '0123456789abcdef'\nprefixes = ['x']\n" * 2,
            "a name is listed twice",
        ),
        (
            "[[serve.users]]\nname = 'a'\ntoken = '0123456789abcdef'\nprefixes = ['x']\nz = 1\n",
            r"unknown key serve.users\[0\].z",
        ),
        ("[push]\nserver = 'example.com'\n", "push.server: 'example.com' is not an http"),
        ("[push]\ntoken = 3\n", "push.token must be a non-empty string"),
        ("[push]\nuser = 'x'\n", "unknown key push.user"),
        ("serve = 1\n", r"\[serve\] must be a table"),
    ],
)
def test_serve_and_push_invalid(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(conf, environ={})


# -- [metadata] ---------------------------------------------------------------------------------


def test_metadata_defaults(tmp_path: Path) -> None:
    from jetpack.config import DEFAULT_METADATA_LISTEN, MetadataConfig

    conf = tmp_path / "j.toml"
    conf.write_text('data-dir = "/srv/jp"\n')
    assert load_config(conf, environ={}).metadata == MetadataConfig()
    assert MetadataConfig() == MetadataConfig(listen="127.0.0.1:812", register=True)
    assert DEFAULT_METADATA_LISTEN == "127.0.0.1:812"
    conf.write_text("[metadata]\n")  # an empty table: the defaults too
    assert load_config(conf, environ={}).metadata == MetadataConfig()


@pytest.mark.parametrize(
    ("text", "listen", "register"),
    [
        ('listen = "127.0.0.1:0"\n', "127.0.0.1:0", True),
        ('listen = "0.0.0.0:18112"\nregister = false\n', "0.0.0.0:18112", False),
        ('listen = "[::1]:8080"\nregister = true\n', "[::1]:8080", True),
        ('listen = "[::]:65535"\n', "[::]:65535", True),
        ("register = false\n", "127.0.0.1:812", False),
    ],
)
def test_metadata_section(tmp_path: Path, text: str, listen: str, register: bool) -> None:
    conf = tmp_path / "j.toml"
    conf.write_text(f"[metadata]\n{text}")
    metadata = load_config(conf, environ={}).metadata
    assert (metadata.listen, metadata.register) == (listen, register)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen = 'localhost:18112'\n", r"metadata.listen: .*the host must be an IP address"),
        ("listen = 'metadata.example.com:80'\n", "the host must be an IP address"),
        ("listen = '18112'\n", "metadata.listen: '18112' is not HOST:PORT"),
        ("listen = '127.0.0.1'\n", "is not HOST:PORT"),
        ("listen = '127.0.0.1:'\n", "is not HOST:PORT"),
        ("listen = '127.0.0.1:65536'\n", "is not HOST:PORT"),
        ("listen = '127.0.0.1:-1'\n", "is not HOST:PORT"),
        ("listen = ':18112'\n", "is not HOST:PORT"),
        ("listen = '::1:18112'\n", "IPv6 address in brackets"),
        ("listen = '[::1]'\n", "is not HOST:PORT"),
        ("listen = '300.1.2.3:80'\n", "the host must be an IP address"),
        ("listen = 18112\n", "metadata.listen: 18112 is not HOST:PORT"),
        ("listen = ['127.0.0.1:1']\n", "metadata.listen"),
        ("register = 'yes'\n", "metadata.register: 'yes' is not true/false"),
        ("register = 1\n", "metadata.register: 1 is not true/false"),
        ("port = 18112\n", "unknown key metadata.port"),
        ("listen = '127.0.0.1:1'\nLISTEN = '127.0.0.1:2'\n", "unknown key metadata.LISTEN"),
    ],
)
def test_metadata_invalid(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(f"[metadata]\n{text}")
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(conf, environ={})
    assert str(conf) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_metadata_must_be_a_table(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('metadata = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=r"\[metadata\] must be a table"):
        load_config(conf, environ={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:18112", ("127.0.0.1", 18112)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:80", ("::1", 80)),
        ("[::]:1", ("::", 1)),
        ("[fd00::1]:18112", ("fd00::1", 18112)),
    ],
)
def test_parse_ip_listen(value: str, expected: tuple[str, int]) -> None:
    from jetpack.config import parse_ip_listen

    assert parse_ip_listen(value) == expected


@pytest.mark.parametrize(
    "value", ["localhost:80", "example.com:80", "[localhost]:80", "1.2.3:80", "127.0.0.1", ""]
)
def test_parse_ip_listen_rejects(value: str) -> None:
    import re

    from jetpack.config import parse_ip_listen

    with pytest.raises(ValueError, match=re.escape(repr(value))):
        parse_ip_listen(value)

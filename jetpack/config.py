"""One typed configuration, from a TOML file, the environment and flags.

Precedence, highest first: command-line flags, environment (``JETPACK_DIR``), the TOML file
(``--config`` or ``/etc/jetpack/jetpack.toml``), built-in defaults. A missing default file is
fine (a fresh host has none); a file named explicitly must exist. Unknown keys are errors, so
a typo never silently leaves a setting at its default.

The file, with every key this version knows::

    data-dir = "/var/lib/jetpack"

    [aci]
    max-ratio = 200          # reject archives that expand more than this many times
    max-size = "64Gi"        # ... or past this many uncompressed bytes
    max-manifest-size = "16Mi"

    [storage]
    backend = "overlay"      # overlay | zfs | copy; default: overlay as root where the
                             # kernel has it, else copy
    [storage.zfs]
    dataset = "tank/jetpack" # required for the zfs backend; `jetpack init` creates it
    mountpoint = "/var/lib/jetpack/zfs"   # default: <data-dir>/zfs

    [fetch]
    ca-file = "/etc/jetpack/ca.pem"   # extra CAs to trust (besides the system's, $SSL_CERT_FILE)
    connect-timeout = 10              # seconds
    read-timeout = 60                 # seconds without a byte
    discovery-port = 443              # where https://NAME?ac-discovery=1 is asked (as actool
                                      # discover --port); http uses 80 unless set
    [[fetch.credentials]]             # sent only over https, only to this host
    host = "registry.example.com"
    type = "bearer"                   # or "basic" with user = ..., password = ...
    token = "..."

    [trust]
    local = "/etc/jetpack/trustedkeys"        # root.d/ and prefix.d/<prefix>/
    vendor = "/usr/lib/jetpack/trustedkeys"   # read-only; an empty local file masks a key
"""

from __future__ import annotations

import base64
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetpack.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("/etc/jetpack/jetpack.toml")
DEFAULT_DATA_DIR = Path("/var/lib/jetpack")
ENV_DATA_DIR = "JETPACK_DIR"
ENV_CONFIG_FILE = "JETPACK_CONFIG"

_SIZE_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


@dataclass(frozen=True)
class ACIConfig:
    """Limits applied when reading or extracting an archive."""

    max_ratio: float = 200.0
    max_size: int = 64 << 30
    max_manifest_size: int = 16 << 20


BACKENDS = ("overlay", "zfs", "copy")


@dataclass(frozen=True)
class StorageConfig:
    """Where rendered trees live; ``backend`` None means "choose for this host"."""

    backend: str | None = None
    zfs_dataset: str | None = None
    zfs_mountpoint: Path | None = None


@dataclass(frozen=True)
class Credential:
    """Authorization for one host: ``basic`` (user, password) or ``bearer`` (token)."""

    host: str
    type: str
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def header(self) -> str:
        if self.type == "bearer":
            return f"Bearer {self.token}"
        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class FetchConfig:
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    discovery_port: int | None = None
    credentials: tuple[Credential, ...] = ()

    def credential(self, host: str) -> Credential | None:
        for cred in self.credentials:
            if cred.host == host.lower():
                return cred
        return None


DEFAULT_TRUST_LOCAL = Path("/etc/jetpack/trustedkeys")
DEFAULT_TRUST_VENDOR = Path("/usr/lib/jetpack/trustedkeys")


@dataclass(frozen=True)
class TrustConfig:
    local: Path = DEFAULT_TRUST_LOCAL
    vendor: Path = DEFAULT_TRUST_VENDOR


@dataclass(frozen=True)
class Config:
    """Everything a command may need to know about the host's setup."""

    data_dir: Path = DEFAULT_DATA_DIR
    config_file: Path | None = None
    aci: ACIConfig = field(default_factory=ACIConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)


def parse_size(value: object, where: str) -> int:
    """A byte count: an integer, or a string like ``"64Gi"``, ``"200M"``, ``"4096"``."""
    if isinstance(value, bool):
        raise ConfigError(where, f"expected a size, got {value!r}", 'write e.g. "64Gi" or 1024')
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(where, f"size must be positive, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text.rstrip("kMGTi")
        suffix = text[len(digits) :]
        if digits.isascii() and digits.isdigit() and suffix in _SIZE_SUFFIXES and int(digits) > 0:
            return int(digits) * _SIZE_SUFFIXES[suffix]
    raise ConfigError(
        where,
        f"{value!r} is not a size",
        'write a positive integer with an optional suffix: k M G T Ki Mi Gi Ti, e.g. "64Gi"',
    )


def _take(table: dict[str, Any], key: str) -> Any:
    return table.pop(key, None)


def _reject_unknown(table: Mapping[str, Any], section: str, source: Path) -> None:
    if table:
        names = ", ".join(sorted(f"{section}{k}" for k in table))
        raise ConfigError(
            f"invalid configuration {source}",
            f"unknown key {names}",
            "see the Configuration section of README.md",
        )


def _parse_aci(raw: object, source: Path) -> ACIConfig:
    if raw is None:
        return ACIConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}", "[aci] must be a table")
    table = dict(raw)
    defaults = ACIConfig()
    ratio = _take(table, "max-ratio")
    if ratio is None:
        max_ratio = defaults.max_ratio
    elif isinstance(ratio, int | float) and not isinstance(ratio, bool) and ratio >= 1:
        max_ratio = float(ratio)
    else:
        raise ConfigError(
            f"invalid configuration {source}", f"aci.max-ratio: {ratio!r} is not a number ≥ 1"
        )
    size = _take(table, "max-size")
    msize = _take(table, "max-manifest-size")
    _reject_unknown(table, "aci.", source)
    return ACIConfig(
        max_ratio=max_ratio,
        max_size=defaults.max_size if size is None else parse_size(size, f"{source}: aci.max-size"),
        max_manifest_size=(
            defaults.max_manifest_size
            if msize is None
            else parse_size(msize, f"{source}: aci.max-manifest-size")
        ),
    )


def _parse_storage(raw: object, source: Path) -> StorageConfig:
    if raw is None:
        return StorageConfig()
    where = f"invalid configuration {source}"
    if not isinstance(raw, dict):
        raise ConfigError(where, "[storage] must be a table")
    table = dict(raw)
    backend = _take(table, "backend")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(
            where, f"storage.backend: {backend!r} is not one of {', '.join(BACKENDS)}"
        )
    zfs = _take(table, "zfs")
    _reject_unknown(table, "storage.", source)
    if zfs is None:
        zfs = {}
    if not isinstance(zfs, dict):
        raise ConfigError(where, "[storage.zfs] must be a table")
    zfs = dict(zfs)
    dataset = _take(zfs, "dataset")
    mountpoint = _take(zfs, "mountpoint")
    _reject_unknown(zfs, "storage.zfs.", source)
    if dataset is not None and (
        not isinstance(dataset, str) or not dataset or dataset.startswith("/")
    ):
        raise ConfigError(
            where, f"storage.zfs.dataset: {dataset!r} is not a dataset name", 'e.g. "tank/jetpack"'
        )
    if mountpoint is not None and (
        not isinstance(mountpoint, str) or not mountpoint.startswith("/")
    ):
        raise ConfigError(where, f"storage.zfs.mountpoint: {mountpoint!r} is not an absolute path")
    return StorageConfig(
        backend=backend,
        zfs_dataset=dataset,
        zfs_mountpoint=Path(mountpoint) if mountpoint else None,
    )


def _number(value: object, where: str, source: Path, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"invalid configuration {source}",
            f"{where}: {value!r} is not a number from {low:g} to {high:g}",
        )
    return float(value)


def _path(value: object, where: str, source: Path) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(
            f"invalid configuration {source}", f"{where}: {value!r} is not an absolute path"
        )
    return Path(value)


def _parse_credential(raw: object, n: int, source: Path) -> Credential:
    where = f"fetch.credentials[{n}]"
    bad = f"invalid configuration {source}"
    if not isinstance(raw, dict):
        raise ConfigError(bad, f"{where} must be a table")
    table = dict(raw)
    host, kind = _take(table, "host"), _take(table, "type")
    user, password, token = _take(table, "user"), _take(table, "password"), _take(table, "token")
    _reject_unknown(table, f"{where}.", source)
    if not isinstance(host, str) or not host or "/" in host or ":" in host:
        raise ConfigError(bad, f"{where}.host: {host!r} is not a host name")
    if kind == "basic":
        if not isinstance(user, str) or not isinstance(password, str) or token is not None:
            raise ConfigError(
                bad, f"{where}: type basic needs user and password (strings), no token"
            )
    elif kind == "bearer":
        if not isinstance(token, str) or not token or user is not None or password is not None:
            raise ConfigError(
                bad, f"{where}: type bearer needs a token (string), no user or password"
            )
    else:
        raise ConfigError(bad, f"{where}.type: {kind!r} is not basic or bearer")
    return Credential(host=host.lower(), type=kind, user=user, password=password, token=token)


def _parse_fetch(raw: object, source: Path) -> FetchConfig:
    if raw is None:
        return FetchConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}", "[fetch] must be a table")
    table = dict(raw)
    defaults = FetchConfig()
    ca_file, connect, read = (
        _take(table, "ca-file"),
        _take(table, "connect-timeout"),
        _take(table, "read-timeout"),
    )
    port, creds = _take(table, "discovery-port"), _take(table, "credentials")
    _reject_unknown(table, "fetch.", source)
    if creds is not None and not isinstance(creds, list):
        raise ConfigError(
            f"invalid configuration {source}", "fetch.credentials must be an array of tables"
        )
    credentials = tuple(_parse_credential(c, n, source) for n, c in enumerate(creds or []))
    hosts = [c.host for c in credentials]
    if len(set(hosts)) != len(hosts):
        raise ConfigError(
            f"invalid configuration {source}", "fetch.credentials: a host is listed twice"
        )
    return FetchConfig(
        ca_file=None if ca_file is None else _path(ca_file, "fetch.ca-file", source),
        connect_timeout=defaults.connect_timeout
        if connect is None
        else _number(connect, "fetch.connect-timeout", source, low=0.1, high=3600),
        read_timeout=defaults.read_timeout
        if read is None
        else _number(read, "fetch.read-timeout", source, low=0.1, high=86400),
        discovery_port=None
        if port is None
        else int(_number(port, "fetch.discovery-port", source, low=1, high=65535)),
        credentials=credentials,
    )


def _parse_trust(raw: object, source: Path) -> TrustConfig:
    if raw is None:
        return TrustConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}", "[trust] must be a table")
    table = dict(raw)
    local, vendor = _take(table, "local"), _take(table, "vendor")
    _reject_unknown(table, "trust.", source)
    return TrustConfig(
        local=DEFAULT_TRUST_LOCAL if local is None else _path(local, "trust.local", source),
        vendor=DEFAULT_TRUST_VENDOR if vendor is None else _path(vendor, "trust.vendor", source),
    )


def load_config(
    config_file: Path | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration.

    Args:
        config_file: a file named on the command line; must exist. ``None`` means
            ``$JETPACK_CONFIG`` or, failing that, the default file if it exists.
        data_dir: ``--dir`` from the command line, overriding everything else.
        environ: the environment to read (``os.environ`` by default).

    Raises:
        ConfigError: the file is unreadable, not TOML, or has unknown keys or bad values.
    """
    env = os.environ if environ is None else environ
    explicit = config_file is not None or bool(env.get(ENV_CONFIG_FILE))
    path = config_file or Path(env.get(ENV_CONFIG_FILE) or DEFAULT_CONFIG_FILE)
    raw: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"cannot read configuration {path}", "no such file", "create it or drop --config"
            ) from None
    except OSError as err:
        raise ConfigError(f"cannot read configuration {path}", err.strerror or str(err)) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"invalid configuration {path}", f"not valid TOML: {err}") from err

    table = dict(raw)
    file_dir = _take(table, "data-dir")
    aci = _parse_aci(_take(table, "aci"), path)
    storage = _parse_storage(_take(table, "storage"), path)
    fetch = _parse_fetch(_take(table, "fetch"), path)
    trust = _parse_trust(_take(table, "trust"), path)
    _reject_unknown(table, "", path)
    if file_dir is not None and not isinstance(file_dir, str):
        raise ConfigError(f"invalid configuration {path}", f"data-dir: {file_dir!r} is not a path")

    chosen = data_dir or (Path(env[ENV_DATA_DIR]) if env.get(ENV_DATA_DIR) else None)
    if chosen is None:
        chosen = Path(file_dir) if file_dir else DEFAULT_DATA_DIR
    if not chosen.is_absolute():
        chosen = Path.cwd() / chosen
    return Config(
        data_dir=chosen,
        config_file=path if raw or explicit else None,
        aci=aci,
        storage=storage,
        fetch=fetch,
        trust=trust,
    )

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

    [serve]                           # jetpack serve (see jetpack/fetch/server/__init__.py)
    listen = "127.0.0.1:8443"         # HOST:PORT; [::1]:PORT for IPv6
    root = "/var/lib/jetpack/serve"   # the repository; default: <data-dir>/serve
    tls-cert = "/etc/jetpack/serve.crt"   # PEM chain; with tls-key, serve https
    tls-key = "/etc/jetpack/serve.key"
    public-url = "https://images.example.com"  # base URL put in discovery templates;
                                      # default: from listen (and TLS)
    signing-key = "/etc/jetpack/serve-signing.asc"  # armored, unprotected OpenPGP secret
                                      # key: signs unsigned uploads (and store images)
    trust = "/etc/jetpack/serve-trustedkeys"  # keys trusted to sign uploads (root.d/,
                                      # prefix.d/<prefix>/); default: <root>/trustedkeys
    max-upload-size = "4Gi"
    allow-overwrite = false           # may a push replace name/version/os/arch?
    read-auth = false                 # true: reads need a user's credential too
    shutdown-timeout = 60             # seconds SIGTERM waits for downloads in flight
    [[serve.users]]                   # who may push, and which names
    name = "ci"
    token = "..."                     # Authorization: Bearer ...; or instead:
    # password-hash = "scrypt$..."    # Basic name:password (jetpack serve --hash-password)
    prefixes = ["example.com/app"]    # whole path components; "*" means every name

    [metadata]                        # the metadata service (jetpack metadata-service)
    listen = "127.0.0.1:812"          # IP:PORT of its HTTP side; port 0: any free one (kept
                                      # across restarts while pods are registered)
    register = true                   # false: pods run without AC_METADATA_URL

    [push]                            # jetpack push defaults
    server = "https://images.example.com"
    token = "..."                     # or $JETPACK_PUSH_TOKEN, or --token
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jetpack.errors import ConfigError, ManifestError

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
        import base64  # only fetches with basic credentials: not on every command's path

        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class FetchConfig:
    """``[fetch]``: TLS trust, timeouts, the discovery port and per-host credentials."""

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
    """``[trust]``: the local and the vendor trusted-key directories."""

    local: Path = DEFAULT_TRUST_LOCAL
    vendor: Path = DEFAULT_TRUST_VENDOR


DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_METADATA_LISTEN = "127.0.0.1:812"  # below 1024: no unprivileged process can take it
DEFAULT_MAX_UPLOAD = 4 << 30


@dataclass(frozen=True)
class ServeUser:
    """Someone who may push (and, with ``read-auth``, read): a bearer token or a
    ``password-hash`` for basic authentication, and the name prefixes they may push to."""

    name: str
    prefixes: tuple[str, ...]
    token: str | None = field(default=None, repr=False)
    password_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServeConfig:
    """``[serve]``: the image server. ``None`` paths fall back to defaults at startup."""

    listen: str = DEFAULT_LISTEN
    root: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_url: str | None = None
    signing_key: Path | None = None
    trust: Path | None = None
    max_upload_size: int = DEFAULT_MAX_UPLOAD
    allow_overwrite: bool = False
    read_auth: bool = False
    shutdown_timeout: float = 60.0
    users: tuple[ServeUser, ...] = ()


@dataclass(frozen=True)
class MetadataConfig:
    """``[metadata]``: the per-host metadata service pods reach at ``AC_METADATA_URL``."""

    listen: str = DEFAULT_METADATA_LISTEN
    register: bool = True


@dataclass(frozen=True)
class PushConfig:
    """``[push]``: where ``jetpack push`` sends images, and with which token."""

    server: str | None = None
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    """Everything a command may need to know about the host's setup."""

    data_dir: Path = DEFAULT_DATA_DIR
    config_file: Path | None = None
    aci: ACIConfig = field(default_factory=ACIConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    push: PushConfig = field(default_factory=PushConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)


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


def _section(raw: object, name: str, source: Path) -> dict[str, Any] | None:
    """The ``[name]`` table as a dict to take keys from; None when the file has none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}", f"[{name}] must be a table")
    return dict(raw)


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
    table = _section(raw, "aci", source)
    if table is None:
        return ACIConfig()
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
    table = _section(raw, "storage", source)
    if table is None:
        return StorageConfig()
    where = f"invalid configuration {source}"
    backend = _take(table, "backend")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(
            where, f"storage.backend: {backend!r} is not one of {', '.join(BACKENDS)}"
        )
    zfs = _section(_take(table, "zfs"), "storage.zfs", source) or {}
    _reject_unknown(table, "storage.", source)
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
    table = _section(raw, "fetch", source)
    if table is None:
        return FetchConfig()
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
    table = _section(raw, "trust", source)
    if table is None:
        return TrustConfig()
    local, vendor = _take(table, "local"), _take(table, "vendor")
    _reject_unknown(table, "trust.", source)
    return TrustConfig(
        local=DEFAULT_TRUST_LOCAL if local is None else _path(local, "trust.local", source),
        vendor=DEFAULT_TRUST_VENDOR if vendor is None else _path(vendor, "trust.vendor", source),
    )


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); ValueError with the reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:8443")
    if not host:
        raise ValueError(f"{value!r} has no host")
    return host, int(port)


def _http_url(value: object, where: str, source: Path) -> str:
    if isinstance(value, str):
        parts = urlsplit(value)
        if (
            parts.scheme in ("http", "https")
            and parts.hostname
            and not parts.query
            and not parts.fragment
        ):
            return value.rstrip("/")
    raise ConfigError(
        f"invalid configuration {source}",
        f"{where}: {value!r} is not an http(s) URL",
        'e.g. "https://images.example.com"',
    )


def _flag(value: object, where: str, source: Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"invalid configuration {source}", f"{where}: {value!r} is not true/false"
        )
    return value


def _parse_user(raw: object, n: int, source: Path) -> ServeUser:
    where = f"serve.users[{n}]"
    bad = f"invalid configuration {source}"
    if not isinstance(raw, dict):
        raise ConfigError(bad, f"{where} must be a table")
    table = dict(raw)
    name, token = _take(table, "name"), _take(table, "token")
    phash, prefixes = _take(table, "password-hash"), _take(table, "prefixes")
    _reject_unknown(table, f"{where}.", source)
    if not isinstance(name, str) or not name or ":" in name or not name.isprintable():
        raise ConfigError(bad, f"{where}.name: {name!r} is not a user name (no ':')")
    if (token is None) == (phash is None):
        raise ConfigError(
            bad, f"{where}: give a token (bearer) or a password-hash (basic), exactly one"
        )
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ConfigError(
            bad,
            f"{where}.token must be a string of at least 16 characters",
            'e.g. python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
        )
    if phash is not None and (not isinstance(phash, str) or not phash.startswith("scrypt$")):
        raise ConfigError(
            bad,
            f"{where}.password-hash is not a scrypt$... hash",
            "make one with 'jetpack serve --hash-password'",
        )
    if not isinstance(prefixes, list) or not prefixes:
        raise ConfigError(bad, f"{where}.prefixes must be a non-empty list of name prefixes")
    from jetpack.schema.types import ACIdentifier

    checked: list[str] = []
    for prefix in prefixes:
        try:
            checked.append("*" if prefix == "*" else str(ACIdentifier(prefix)))
        except (ManifestError, TypeError):
            raise ConfigError(
                bad,
                f"{where}.prefixes: {prefix!r} is not a name prefix",
                'e.g. "example.com/app", or "*" for every name',
            ) from None
    return ServeUser(name=name, prefixes=tuple(checked), token=token, password_hash=phash)


def _parse_serve(raw: object, source: Path) -> ServeConfig:
    table = _section(raw, "serve", source)
    if table is None:
        return ServeConfig()
    bad = f"invalid configuration {source}"
    defaults = ServeConfig()
    listen = _take(table, "listen")
    root, cert, key = _take(table, "root"), _take(table, "tls-cert"), _take(table, "tls-key")
    public, signing, trust = (
        _take(table, "public-url"),
        _take(table, "signing-key"),
        _take(table, "trust"),
    )
    size, overwrite = _take(table, "max-upload-size"), _take(table, "allow-overwrite")
    read_auth, shutdown = _take(table, "read-auth"), _take(table, "shutdown-timeout")
    users = _take(table, "users")
    _reject_unknown(table, "serve.", source)
    if listen is not None:
        if not isinstance(listen, str):
            raise ConfigError(bad, f"serve.listen: {listen!r} is not HOST:PORT")
        try:
            parse_listen(listen)
        except ValueError as err:
            raise ConfigError(bad, f"serve.listen: {err}", 'e.g. "127.0.0.1:8443"') from None
    if (cert is None) != (key is None):
        raise ConfigError(bad, "serve.tls-cert and serve.tls-key go together: give both or none")
    if users is not None and not isinstance(users, list):
        raise ConfigError(bad, "serve.users must be an array of tables ([[serve.users]])")
    parsed = tuple(_parse_user(u, n, source) for n, u in enumerate(users or []))
    names = [u.name for u in parsed]
    tokens = [u.token for u in parsed if u.token is not None]
    if len(set(names)) != len(names):
        raise ConfigError(bad, "serve.users: a name is listed twice")
    if len(set(tokens)) != len(tokens):
        raise ConfigError(bad, "serve.users: two users have the same token")
    return ServeConfig(
        listen=defaults.listen if listen is None else listen,
        root=None if root is None else _path(root, "serve.root", source),
        tls_cert=None if cert is None else _path(cert, "serve.tls-cert", source),
        tls_key=None if key is None else _path(key, "serve.tls-key", source),
        public_url=None if public is None else _http_url(public, "serve.public-url", source),
        signing_key=None if signing is None else _path(signing, "serve.signing-key", source),
        trust=None if trust is None else _path(trust, "serve.trust", source),
        max_upload_size=defaults.max_upload_size
        if size is None
        else parse_size(size, f"{source}: serve.max-upload-size"),
        allow_overwrite=False
        if overwrite is None
        else _flag(overwrite, "serve.allow-overwrite", source),
        read_auth=False if read_auth is None else _flag(read_auth, "serve.read-auth", source),
        shutdown_timeout=defaults.shutdown_timeout
        if shutdown is None
        else _number(shutdown, "serve.shutdown-timeout", source, low=0, high=86400),
        users=parsed,
    )


def _parse_push(raw: object, source: Path) -> PushConfig:
    table = _section(raw, "push", source)
    if table is None:
        return PushConfig()
    bad = f"invalid configuration {source}"
    server, token = _take(table, "server"), _take(table, "token")
    _reject_unknown(table, "push.", source)
    if token is not None and (not isinstance(token, str) or not token):
        raise ConfigError(bad, "push.token must be a non-empty string")
    return PushConfig(
        server=None if server is None else _http_url(server, "push.server", source),
        token=token,
    )


def _parse_metadata(raw: object, source: Path) -> MetadataConfig:
    table = _section(raw, "metadata", source)
    if table is None:
        return MetadataConfig()
    listen, register = _take(table, "listen"), _take(table, "register")
    _reject_unknown(table, "metadata.", source)
    if listen is None:
        listen = DEFAULT_METADATA_LISTEN
    try:
        if not isinstance(listen, str):
            raise ValueError(f"{listen!r} is not HOST:PORT")
        parse_ip_listen(listen)
    except ValueError as err:
        raise ConfigError(f"invalid configuration {source}", f"metadata.listen: {err}") from err
    return MetadataConfig(
        listen=listen,
        register=True if register is None else _flag(register, "metadata.register", source),
    )


def parse_ip_listen(value: str) -> tuple[str, int]:
    """As :func:`parse_listen`, and the host must be an IP address (a pod cannot resolve
    names to reach its metadata service)."""
    import ipaddress

    host, port = parse_listen(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: the host must be an IP address, e.g. 127.0.0.1") from None
    return host, port


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
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"cannot read configuration {path}", "no such file", "create it or drop --config"
            ) from None
    except OSError as err:
        raise ConfigError(f"cannot read configuration {path}", err.strerror or str(err)) from err
    else:
        import tomllib  # 6 ms of start-up: only when there is a file to read

        try:
            raw = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"invalid configuration {path}", f"not valid TOML: {err}") from err

    table = dict(raw)
    file_dir = _take(table, "data-dir")
    aci = _parse_aci(_take(table, "aci"), path)
    storage = _parse_storage(_take(table, "storage"), path)
    fetch = _parse_fetch(_take(table, "fetch"), path)
    trust = _parse_trust(_take(table, "trust"), path)
    serve = _parse_serve(_take(table, "serve"), path)
    push = _parse_push(_take(table, "push"), path)
    metadata = _parse_metadata(_take(table, "metadata"), path)
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
        serve=serve,
        push=push,
        metadata=metadata,
    )

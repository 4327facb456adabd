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
"""

from __future__ import annotations

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
class Config:
    """Everything a command may need to know about the host's setup."""

    data_dir: Path = DEFAULT_DATA_DIR
    config_file: Path | None = None
    aci: ACIConfig = field(default_factory=ACIConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


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
    _reject_unknown(table, "", path)
    if file_dir is not None and not isinstance(file_dir, str):
        raise ConfigError(f"invalid configuration {path}", f"data-dir: {file_dir!r} is not a path")

    chosen = data_dir or (Path(env[ENV_DATA_DIR]) if env.get(ENV_DATA_DIR) else None)
    if chosen is None:
        chosen = Path(file_dir) if file_dir else DEFAULT_DATA_DIR
    if not chosen.is_absolute():
        chosen = Path.cwd() / chosen
    return Config(
        data_dir=chosen, config_file=path if raw or explicit else None, aci=aci, storage=storage
    )

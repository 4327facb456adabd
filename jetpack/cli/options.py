"""State and options shared by every command, defined once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from jetpack.config import Config, load_config

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """What the global options said; the configuration is loaded on first use."""

    data_dir: Path | None = None
    config_file: Path | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_file, self.data_dir)
        return self._config


pass_state = click.make_pass_decorator(CliState)

COMPRESSIONS = ("gzip", "bzip2", "xz", "none")


def compression_option(default: str | None, help_text: str) -> Callable[[F], F]:
    return click.option(
        "--compression",
        type=click.Choice(COMPRESSIONS),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def overwrite_option(f: F) -> F:
    return click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it already exists.")(f)

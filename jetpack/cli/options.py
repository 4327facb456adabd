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


def format_option(choices: tuple[str, ...]) -> Callable[[F], F]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"24h"``, ``"1h30m"``, ``"7d"`` or a bare number."""
    rest = text.strip()
    if rest.replace(".", "", 1).isdigit():
        return float(rest)
    total = 0.0
    number = ""
    for ch in rest:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in _DURATION_UNITS and number and number.count(".") <= 1:
            total += float(number) * _DURATION_UNITS[ch]
            number = ""
        else:
            raise click.BadParameter(f"{text!r} is not a duration (e.g. 30m, 24h, 1h30m, 7d)")
    if number or not rest:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 30m, 24h, 1h30m, 7d)")
    return total


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except click.BadParameter as err:
            self.fail(err.message, param, ctx)


def human_size(size: int) -> str:
    """``1.5 MiB`` and the like."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """``"5 minutes ago"`` and the like, for tables."""
    seconds = max(0.0, seconds)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


INSECURE_OPTIONS = ("none", "image", "tls", "http", "pubkey", "all")
_WARNINGS = {
    "image": "signatures are not checked (--insecure-options=image)",
    "tls": "TLS certificates are not verified (--insecure-options=tls)",
    "http": "plain http is allowed (--insecure-options=http)",
    "pubkey": "keys may be fetched over plain http (--insecure-options=pubkey)",
}


def insecure_options(value: str) -> frozenset[str]:
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    unknown = chosen - set(INSECURE_OPTIONS)
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(sorted(unknown))} (choose from {', '.join(INSECURE_OPTIONS)})",
            param_hint="--insecure-options",
        )
    if "all" in chosen:
        chosen = set(INSECURE_OPTIONS) - {"none", "all"}
    chosen.discard("none")
    return frozenset(chosen)


def warn_insecure(insecure: frozenset[str]) -> None:
    for option in sorted(insecure):
        click.echo(f"jetpack: warning: {_WARNINGS[option]}", err=True)


pull_policy_option = click.option(
    "--pull-policy",
    type=click.Choice(["new", "update", "never"]),
    default="new",
    show_default=True,
    help="new: the store if it has the image; update: ask the server again; never: store only.",
)

fetch_insecure_option = click.option(
    "--insecure-options",
    "insecure_options_text",
    default="none",
    metavar="none,image,tls,http,pubkey,all",
    help="Fetch checks to skip (each prints a warning).",
)

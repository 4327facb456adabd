"""Finding images by name: app strings and appc meta discovery.

``appstring`` parses what users type (``example.com/app:1.0,channel=beta``) into a name
and labels, with the host's ``os``/``arch`` in appc spelling as defaults.

``meta`` turns a name into download URLs: :func:`discover` walks the name's path up asking
``https://NAME?ac-discovery=1`` through the fetch layer's HTTP client, and the pure
:func:`parse_meta` / :func:`expand` read the ``ac-discovery`` and ``ac-discovery-pubkeys``
tags and render the templates. Importing this package pulls in neither aiohttp nor lxml,
nor ``meta`` itself until one of its names is used: the store resolves image names with
``appstring`` when a pod starts.
"""

from typing import TYPE_CHECKING

from jetpack.discovery.appstring import AppString, host_labels, parse_app_string

if TYPE_CHECKING:
    from jetpack.discovery.meta import (
        Attempt,
        Discovery,
        Endpoint,
        MetaTag,
        discover,
        discovery_error,
        expand,
        parse_meta,
    )

__all__ = [
    "AppString",
    "Attempt",
    "Discovery",
    "Endpoint",
    "MetaTag",
    "discover",
    "discovery_error",
    "expand",
    "host_labels",
    "parse_app_string",
    "parse_meta",
]

_META = frozenset(
    {
        "Attempt",
        "Discovery",
        "Endpoint",
        "MetaTag",
        "discover",
        "discovery_error",
        "expand",
        "parse_meta",
    }
)

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name not in _META:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from jetpack.discovery import meta

        value = getattr(meta, name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})

"""Finding images by name: app strings and appc meta discovery.

``appstring`` parses what users type (``example.com/app:1.0,channel=beta``) into a name
and labels, with the host's ``os``/``arch`` in appc spelling as defaults.

``meta`` turns a name into download URLs: :func:`discover` walks the name's path up asking
``https://NAME?ac-discovery=1`` through the fetch layer's HTTP client, and the pure
:func:`parse_meta` / :func:`expand` read the ``ac-discovery`` and ``ac-discovery-pubkeys``
tags and render the templates. Importing this package pulls in neither aiohttp nor lxml.
"""

from jetpack.discovery.appstring import AppString, host_labels, parse_app_string
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

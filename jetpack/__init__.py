"""Jetpack: an App Container (appc 0.8.11) runtime.

Layers, lowest first (a layer never imports a higher one):

- ``jetpack.schema``: appc types and manifests — parse, validate, serialise. Pure.
- ``jetpack.aci``: image archives — compression detection, image IDs, safe extraction,
  building and patching. Files only.
- ``jetpack.cli``: the ``jetpack`` command; parses, calls the layers above, prints.

``jetpack.errors`` holds the exception tree every layer raises from.
"""

__version__ = "0.1.0"
APPC_SPEC_VERSION = "0.8.11"

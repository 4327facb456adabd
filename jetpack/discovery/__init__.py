"""Finding images by name: app strings now; meta discovery joins with the fetch issue.

``appstring`` parses what users type (``example.com/app:1.0,channel=beta``) into a name
and labels, with the host's ``os``/``arch`` in appc spelling as defaults.
"""

from jetpack.discovery.appstring import AppString, host_labels, parse_app_string

__all__ = ["AppString", "host_labels", "parse_app_string"]

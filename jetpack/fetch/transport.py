"""What the HTTP client may do: built from ``[fetch]`` and ``--insecure-options``.

Apart from :mod:`jetpack.fetch.http` so that code which only *may* go to the network (a
fetch the store can answer) does not pay for importing aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jetpack.config import Credential, FetchConfig


@dataclass(frozen=True)
class Transport:
    """What the client may do; built from the configuration and ``--insecure-options``."""

    allow_http: bool = False
    verify_tls: bool = True
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    credentials: tuple[Credential, ...] = ()
    max_redirects: int = 10

    @classmethod
    def from_config(
        cls, config: FetchConfig, *, allow_http: bool = False, verify_tls: bool = True
    ) -> Transport:
        return cls(
            allow_http=allow_http,
            verify_tls=verify_tls,
            ca_file=config.ca_file,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            credentials=config.credentials,
        )

    def credential(self, url: str) -> Credential | None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return None
        for cred in self.credentials:
            if cred.host == parts.hostname.lower():
                return cred
        return None

"""Getting images over the network, verified: the HTTP client, the trust store, fetching.

- ``http``: the one HTTP(S) client (TLS policy, http permission, per-host credentials that
  never cross hosts, redirects, timeouts). aiohttp.
- ``trust``: trusted keys per name prefix (rkt's layout) and signature verification with
  gpg in a throw-away GNUPGHOME.
- ``fetcher``: IMAGE (name, URL or file) → discovery → download with cache, resume and
  single flight → verified import into the store, dependencies included.

Heavy imports (aiohttp, gnupg, lxml) live here and are imported only by the commands that
fetch, so the rest of Jetpack starts fast.
"""

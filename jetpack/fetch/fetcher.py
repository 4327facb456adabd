"""Fetching images into the store: by name (discovery), by URL, or from a file — verified.

Theory of operation
-------------------
``fetch(ref)`` sorts ``ref`` into a file, a URL or an app string. For a name, the pull
policy may answer from the store (``new``, ``never``); otherwise meta discovery gives the
endpoints, tried in document order until one works (a network failure or an HTTP error
moves on; a bad signature, a bad archive or a wrong name stops: those are not outages).

One URL is downloaded by one process at a time (a flock named after the URL): a second
``jetpack fetch`` of the same image waits, then finds it in the remote cache. The cache
keeps each URL's ETag and max-age: a fresh entry needs no request at all; a stale one is
revalidated with ``If-None-Match`` and a 304 only refreshes it.

The body streams through :class:`~jetpack.fetch.bridge.Bridge` into the store's one-pass
import (running in a worker thread) while it is written to a download file that becomes
the blob. The import calls back before publishing; the callback checks the signature (the
``.aci.asc``, fetched before the body or — when the server answered 202 — after it) with
the keys trusted for the name, and that the manifest's name and labels are what was asked
for. Nothing is published unless both hold. A broken connection leaves the download file:
the next attempt (three in one fetch, or a later ``jetpack fetch``) asks for the rest with
``Range`` and ``If-Range``, and re-reads the part it has from disk.

Dependencies are fetched the same way once their image is in, concurrently; a dependency's
``imageID`` and ``size`` must match; cycles are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast
from urllib.parse import unquote, urlsplit

from jetpack.aci import ACIInfo
from jetpack.discovery.appstring import AppString, host_labels, parse_app_string
from jetpack.errors import FetchError, StoreError, TrustError
from jetpack.fetch.bridge import Bridge
from jetpack.fetch.transport import Transport
from jetpack.fetch.trust import TrustStore, Verifier
from jetpack.schema import Dependency, ImageManifest
from jetpack.schema.types import short_id
from jetpack.store.locks import FileLock
from jetpack.store.store import ImageRecord, Store

if TYPE_CHECKING:
    import aiohttp

    from jetpack.fetch.http import HttpClient

log = logging.getLogger("jetpack.fetch")

ATTEMPTS = 3  # tries of one URL within one fetch when the connection breaks mid-body
DEFERRED_RETRIES = 10  # how often a 202 signature is asked for again, after the image
DEFERRED_DELAY = 0.5


class PullPolicy(enum.Enum):
    NEW = "new"  # use the store if it has a match, else fetch
    UPDATE = "update"  # revalidate with the server (no request while the cache is fresh)
    NEVER = "never"  # the store only


class ProgressTask(Protocol):
    def advance(self, n: int) -> None: ...
    def done(self) -> None: ...


class Progress(Protocol):
    """The CLI's progress display; the library only reports."""

    def start(self, label: str, total: int | None) -> ProgressTask: ...


class _NoTask:
    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


class NoProgress:
    def start(self, label: str, total: int | None) -> ProgressTask:
        return _NoTask()


@dataclass(frozen=True)
class FetchOptions:
    pull_policy: PullPolicy = PullPolicy.NEW
    verify_signatures: bool = True  # False with --insecure-options=image
    allow_http: bool = False
    keys_over_http: bool = False  # --insecure-options=pubkey
    discovery_port: int | None = None
    trust_keys_from_https: bool = False
    signature: Path | None = None  # --signature, for a single file or URL


@dataclass
class _Signature:
    url: str | None
    data: bytes | None = None
    deferred: bool = False


@dataclass
class Fetcher:
    """Fetches images into ``store``. Use ``async with``: it closes its HTTP client.

    The client (and aiohttp) is only loaded when the network is needed, so a fetch the
    store answers (``--pull-policy=new`` on an image already there) starts fast.
    """

    store: Store
    trust: TrustStore
    transport: Transport
    options: FetchOptions = field(default_factory=FetchOptions)
    progress: Progress = field(default_factory=NoProgress)
    warn: Callable[[str], None] = log.warning
    _client: HttpClient | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    async def http(self) -> HttpClient:
        """The open HTTP client, created on first use."""
        if self._client is None:
            from jetpack.fetch.http import HttpClient

            self._client = await HttpClient(self.transport).__aenter__()
        return self._client

    # -- entry points -----------------------------------------------------------------

    async def fetch(self, ref: str) -> ImageRecord:
        """Fetch ``ref`` (a file path, ``file://``/``http(s)://`` URL, or an app string)."""
        path = local_path(ref)
        if path is not None:
            record = await self.fetch_file(path)
        elif ref.startswith(("http://", "https://")):
            record = await self.fetch_url(ref, None, expect=None)
        else:
            record = await self.fetch_name(parse_app_string(ref))
        await self.fetch_dependencies(record, (record.name,))
        return record

    async def fetch_name(self, app: AppString) -> ImageRecord:
        """The image ``app`` names, from the store (per the pull policy) or discovered."""
        wanted = app.with_defaults(host_labels())
        policy = self.options.pull_policy
        # ":latest" asks for no particular version: in the store, the one marked latest.
        latest = app.label("version") in (None, "latest")
        asked = {k: v for k, v in app.labels if not (k == "version" and latest)}
        if policy in (PullPolicy.NEW, PullPolicy.NEVER):
            found = self.store.find(str(app.name), asked, defaults=host_labels())
            if found is not None:
                return found
            if policy is PullPolicy.NEVER:
                raise StoreError(
                    f"no image {app} in the store",
                    "the pull policy is never",
                    "fetch it with --pull-policy=new",
                )
        from jetpack.discovery.meta import discover, discovery_error

        found_at = await discover(
            wanted,
            await self.http(),
            port=self.options.discovery_port,
            allow_http=self.options.allow_http,
        )
        if not found_at.endpoints:
            raise discovery_error(wanted, found_at)
        if (
            self.options.verify_signatures
            and self.options.trust_keys_from_https
            and not self.trust.keys_for(str(app.name))
        ):
            await self._trust_discovered_keys(str(app.name), found_at.keys)
        failures: list[str] = []
        for endpoint in found_at.endpoints:
            try:
                record = await self.fetch_url(endpoint.aci, endpoint.asc, expect=wanted)
            except FetchError as err:
                failures.append(str(err))
                log.debug("endpoint %s failed: %s", endpoint.aci, err)
                continue
            if latest:
                self.store.mark_latest(record.id)
            return record
        raise FetchError(
            f"cannot fetch {app}",
            f"every endpoint failed: {'; '.join(failures)}",
        )

    async def _trust_discovered_keys(self, name: str, urls: Sequence[str]) -> None:
        """--trust-keys-from-https: trust, for ``name``, the keys its discovery names."""
        https = [url for url in urls if url.startswith("https://")]
        if not https or not self.transport.verify_tls:
            return  # only keys from a verified https server; the signature check then fails
        for url in https:
            got = await (await self.http()).fetch(url, limit=1 << 20)
            if got.status != 200:
                self.warn(f"cannot fetch key {url}: {got.status}")
                continue
            key = self.trust.add(got.body, name, what=f"the key at {url}")
            self.warn(f"trusting key {key.fingerprint} for {name} (from {url})")

    async def fetch_file(self, path: Path) -> ImageRecord:
        """Import a local ACI, checking ``FILE.asc`` (or ``--signature``)."""
        sig_path = self.options.signature or path.with_name(path.name + ".asc")
        signature = _Signature(url=None)
        if self.options.verify_signatures:
            try:
                signature.data = sig_path.read_bytes()
            except FileNotFoundError:
                raise TrustError(
                    f"cannot fetch {path}",
                    f"no signature: {sig_path} does not exist",
                    "give one with --signature, or --insecure-options=image to skip the check",
                ) from None
            except OSError as err:
                raise TrustError(
                    f"cannot read signature {sig_path}", err.strerror or str(err)
                ) from err
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below, after the error mapping
        except OSError as err:
            raise StoreError(f"cannot fetch {path}", err.strerror or str(err)) from err
        with src:
            check = self._checker(signature, None, str(path))
            result = await asyncio.to_thread(
                self.store.import_aci, src, source=path.resolve().as_uri(), verify=check
            )
        return result.image

    # -- one URL ----------------------------------------------------------------------

    async def fetch_url(
        self, url: str, asc_url: str | None, *, expect: AppString | None
    ) -> ImageRecord:
        """Download the ACI at ``url`` (signature at ``asc_url``, default ``url + .asc``)."""
        asc = self.options.signature if self.options.signature and expect is None else None
        signature = _Signature(url=asc_url or f"{url}.asc")
        if asc is not None:
            signature = _Signature(url=None, data=asc.read_bytes())
        key = hashlib.sha256(url.encode()).hexdigest()[:32]
        lock = FileLock(self.store.locks / f"download-{key}")
        await asyncio.to_thread(lock.acquire)
        try:
            remote = self.store.remote(url)
            if remote is not None:
                cached = self.store.get(remote.image_id)
                if cached is not None and (
                    self.options.pull_policy is not PullPolicy.UPDATE or remote.fresh()
                ):
                    log.debug("%s: from the cache (policy %s)", url, self.options.pull_policy.value)
                    return cached
            if self.options.pull_policy is PullPolicy.NEVER:
                raise StoreError(f"no image from {url} in the store", "the pull policy is never")
            part = self.store.download_path(key)
            for attempt in range(ATTEMPTS):
                try:
                    etag = remote.etag if remote is not None else None
                    return await self._download(url, key, signature, expect, etag)
                except _Retry as retry:
                    if attempt == ATTEMPTS - 1:
                        raise retry.error from None
                    log.debug("%s: %s; resuming", url, retry.error)
                except BaseException:
                    # Not an outage (a bad archive or signature, an HTTP error): a partial
                    # download would not help the next attempt.
                    part.unlink(missing_ok=True)
                    part.with_name(part.name + ".json").unlink(missing_ok=True)
                    raise
            raise AssertionError("unreachable")
        finally:
            lock.release()

    async def _download(
        self,
        url: str,
        key: str,
        signature: _Signature,
        expect: AppString | None,
        etag: str | None,
    ) -> ImageRecord:
        part = self.store.download_path(key)
        meta = part.with_name(part.name + ".json")
        have, validator = _partial(part, meta, url)
        headers: dict[str, str] = {}
        if have and validator:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = validator
        elif etag:
            headers["If-None-Match"] = etag
        from jetpack.fetch.http import describe_status

        async with (await self.http()).open(url, headers=headers) as response:
            if response.status == 304:
                remote = self.store.remote(url)
                assert remote is not None
                self.store.record_remote(
                    url,
                    remote.image_id,
                    etag=remote.etag,
                    max_age=_max_age(response.headers),
                    no_store=remote.no_store,
                    downloaded=False,
                )
                record = self.store.get(remote.image_id)
                assert record is not None
                return record
            if response.status not in (200, 206):
                raise FetchError(f"cannot fetch {url}", describe_status(response))
            resumed = response.status == 206
            if not resumed:
                have = 0
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            meta.write_text(json.dumps({"url": url, "validator": validator}))
            if self.options.verify_signatures and signature.data is None:
                await self._get_signature(signature, final=False)
            total = response.content_length
            task = self.progress.start(
                urlsplit(url).path.rsplit("/", 1)[-1] or url, (total + have) if total else None
            )
            if have:
                task.advance(have)
            try:
                record = await self._stream(url, response, part, have, signature, expect, task)
            finally:
                task.done()
        self.store.record_remote(
            url,
            record.id,
            etag=response.headers.get("ETag"),
            max_age=_max_age(response.headers),
            no_store=_no_store(response.headers),
            downloaded=True,
        )
        return record

    async def _stream(
        self,
        url: str,
        response: aiohttp.ClientResponse,
        part: Path,
        have: int,
        signature: _Signature,
        expect: AppString | None,
        task: ProgressTask,
    ) -> ImageRecord:
        import aiohttp

        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            prefix = stack.enter_context(open(part, "rb")) if have else None
            sink = stack.enter_context(open(part, "ab" if have else "wb"))
            # With the signature in hand and the name known, gpg checks it as the bytes
            # stream, on its own core, instead of in a second pass over the file.
            streaming: Verifier | None = None
            if self.options.verify_signatures and signature.data is not None and expect:
                streaming = stack.enter_context(
                    self.trust.verifier(str(expect.name), signature.data)
                )
            observers = [streaming] if streaming is not None else []
            bridge = Bridge(loop, sink, prefix=prefix, observers=observers, name=url)
            check = self._checker(signature, loop, url, expect, streaming)
            importing = asyncio.ensure_future(
                asyncio.to_thread(_import, self.store, bridge, part, url, check)
            )
            broken: BaseException | None = None
            try:
                async for chunk in response.content.iter_chunked(1 << 20):
                    await bridge.put(chunk)
                    task.advance(len(chunk))
                    if importing.done():
                        break  # the import failed early (a bad archive): stop downloading
            except (aiohttp.ClientError, TimeoutError) as err:
                broken = err
            except BrokenPipeError:
                pass
            bridge.close(_Broken(url, broken) if broken is not None else None)
            try:
                result = await importing
            except _Broken as err:
                raise _Retry(FetchError(f"cannot fetch {url}", str(err))) from err
            finally:
                bridge.abandon()
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        return result

    async def _get_signature(self, signature: _Signature, *, final: bool) -> None:
        """Fetch the signature; a 202 marks it deferred (asked again after the image)."""
        assert signature.url is not None
        url = signature.url
        if url.startswith("http://") and not self.options.allow_http:
            raise FetchError(
                f"cannot fetch {url}", "plain http is not allowed", "--insecure-options=http"
            )
        got = await (await self.http()).fetch(url, limit=1 << 20)
        if got.status == 202 and not final:
            signature.deferred = True
            return
        if got.status == 202:
            raise TrustError(
                f"cannot verify {url.removesuffix('.asc')}",
                f"the signature at {url} is still not ready (202)",
                "try again later",
            )
        if got.status != 200:
            raise TrustError(
                f"cannot verify {url.removesuffix('.asc')}",
                f"no signature at {url} ({got.status})",
                "ask the publisher to sign it, or --insecure-options=image to skip the check",
            )
        signature.data, signature.deferred = got.body, False

    def _checker(
        self,
        signature: _Signature,
        loop: asyncio.AbstractEventLoop | None,
        where: str,
        expect: AppString | None = None,
        streaming: Verifier | None = None,
    ) -> Callable[[Path, ACIInfo], None]:
        """The import's pre-publication check: name and labels, then the signature."""

        def check(blob: Path, info: ACIInfo) -> None:
            manifest = info.manifest
            if expect is not None:
                _check_identity(manifest, expect, where)
            if not self.options.verify_signatures:
                return
            if streaming is not None:
                streaming.finish()
                return
            if signature.data is None:
                assert loop is not None and signature.url is not None
                for n in range(DEFERRED_RETRIES):
                    future = asyncio.run_coroutine_threadsafe(
                        self._get_signature(signature, final=n == DEFERRED_RETRIES - 1), loop
                    )
                    future.result()
                    if signature.data is not None:
                        break
                    time.sleep(DEFERRED_DELAY)
            assert signature.data is not None
            name = str(expect.name) if expect is not None else str(manifest.name)
            self.trust.verify(name, blob, signature.data)

        return check

    # -- dependencies -----------------------------------------------------------------

    async def fetch_dependencies(self, record: ImageRecord, chain: tuple[str, ...]) -> None:
        deps = record.manifest.dependencies
        if deps:
            await asyncio.gather(*(self._dependency(record, dep, chain) for dep in deps))

    async def _dependency(
        self, parent: ImageRecord, dep: Dependency, chain: tuple[str, ...]
    ) -> None:
        name = str(dep.image_name)
        if name in chain:
            raise FetchError(
                f"cannot fetch the dependencies of {chain[0]}",
                f"dependency cycle: {' -> '.join((*chain, name))}",
            )
        record: ImageRecord | None = None
        if dep.image_id is not None:
            record = self.store.get(str(dep.image_id))
        if record is None:
            labels = tuple((k, v) for k, v in dep.labels.items()) if dep.labels else ()
            record = await self.fetch_name(AppString(dep.image_name, labels))
        if dep.image_id is not None and record.id != str(dep.image_id):
            raise FetchError(
                f"dependency {name} of {parent.name} does not match",
                f"its imageID is {short_id(str(dep.image_id))}, "
                f"the fetched image is {record.short_id}",
            )
        if dep.size is not None and record.compressed_size != dep.size:
            raise FetchError(
                f"dependency {name} of {parent.name} does not match",
                f"its size is {dep.size} bytes, the fetched image has {record.compressed_size}",
            )
        await self.fetch_dependencies(record, (*chain, name))


class _Broken(Exception):
    """The connection broke mid-body: raised in the import thread, retried by fetch_url."""

    def __init__(self, url: str, cause: BaseException) -> None:
        self.cause = cause
        why = str(cause) or type(cause).__name__
        super().__init__(f"the connection broke after part of the image: {why}")


class _Retry(Exception):
    """The attempt broke off; the download file is kept for the next one to resume."""

    def __init__(self, error: FetchError) -> None:
        super().__init__(str(error))
        self.error = error


def _import(
    store: Store, bridge: Bridge, part: Path, url: str, check: Callable[[Path, ACIInfo], None]
) -> ImageRecord:
    """Runs in the worker thread: the store's import, reading from the bridge."""
    try:
        src = cast(BinaryIO, bridge)  # it has the read() the importer uses
        return store.import_aci(src, source=url, blob=part, verify=check).image
    except BaseException:
        bridge.abandon()
        raise


def _check_identity(manifest: ImageManifest, expect: AppString, where: str) -> None:
    """The manifest must be the image asked for: same name, every requested label."""
    if str(manifest.name) != str(expect.name):
        raise FetchError(
            f"{where} is not {expect.name}",
            f"its manifest names {manifest.name}",
            "the server is misconfigured, or the image was swapped",
        )
    host = host_labels()
    for label, value in expect.labels:
        have = manifest.label(label)
        if label == "version" and value == "latest":
            continue
        if label in host and value == host[label] and have is None:
            continue  # an image without os/arch labels runs anywhere
        if have != value:
            raise FetchError(
                f"{where} is not {expect}",
                f"its label {label} is {have!r}, not {value!r}",
                "the server is misconfigured, or the image was swapped",
            )


def _partial(part: Path, meta: Path, url: str) -> tuple[int, str | None]:
    """How much of ``url`` is already downloaded, and the validator it was served with."""
    try:
        info = json.loads(meta.read_text())
        size = part.stat().st_size
    except (OSError, ValueError):
        return 0, None
    if info.get("url") != url or not info.get("validator"):
        return 0, None
    return size, str(info["validator"])


def _cache_directives(headers: Mapping[str, str]) -> dict[str, str]:
    value = headers.get("Cache-Control") or ""
    out: dict[str, str] = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            out[name.lower()] = arg.strip('"')
    return out


def _max_age(headers: Mapping[str, str]) -> int:
    directives = _cache_directives(headers)
    if "no-cache" in directives or "no-store" in directives:
        return 0
    try:
        return max(0, int(directives.get("max-age", "0")))
    except ValueError:
        return 0


def _no_store(headers: Mapping[str, str]) -> bool:
    return "no-store" in _cache_directives(headers)


def local_path(ref: str) -> Path | None:
    """The file ``ref`` names (a path or a ``file://`` URL), or None if it names no file."""
    if ref.startswith("file://"):
        parts = urlsplit(ref)
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"cannot fetch {ref}", "file:// URLs must name a local path")
        return Path(unquote(parts.path))
    if ref.startswith(("http://", "https://")):
        return None
    # A name (example.com/app:1.0) never ends in .aci; a missing file.aci should say so.
    path = Path(ref)
    if ref.endswith(".aci") or path.exists():
        return path
    return None

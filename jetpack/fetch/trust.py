"""Trusted signing keys per name prefix, and signature checks against them.

Layout (rkt's ``pkg/keystore``), the same under both roots::

    <root>/root.d/<fingerprint>                     trusted for every name
    <root>/prefix.d/<prefix path>/<fingerprint>     trusted for <prefix> and names below it

Files hold one ASCII-armored OpenPGP public key and are named by its lowercase 40-hex
fingerprint. Two roots: ``local`` (``trust.local``, ours to write) and ``vendor``
(``trust.vendor``, read-only: shipped by a distribution). An empty local file masks the
vendor key of the same fingerprint at the same place; a non-empty local file shadows it.

A prefix covers a name at whole path components only: ``example.com/foo`` covers
``example.com/foo`` and ``example.com/foo/bar``, never ``example.com/foobar``. The directory
layout gives that for free — the keys for a name are those of root.d and of each directory
on the name's path — so :meth:`TrustStore.keys_for` reads a handful of directories and never
runs gpg.

Every gpg run happens in a throw-away GNUPGHOME (a fresh temporary directory) holding only
the keys needed for that one job, with ``--no-autostart`` (no agent, no dirmngr); the trust
decision is this file's layout, not gpg's web of trust.
The user's own keyring and agent are never read or written. gpg's verdict comes from its
``--status-fd`` lines (parsed by python-gnupg), never from its human-readable messages.

Library code: nothing here prompts or prints. ``jetpack trust`` (``cli/trust.py``) shows
:meth:`TrustStore.inspect`'s :class:`KeyInfo` and asks before calling :meth:`TrustStore.add`.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from jetpack.config import TrustConfig
from jetpack.errors import ManifestError, TrustError

Source = Literal["local", "vendor"]

_FINGERPRINT = re.compile(r"[0-9a-f]{40}")
# Options for every gpg run: nothing from the user's setup and no helper daemons. gpg's
# ownertrust is ignored: being in the throw-away keyring is the trust decision, and a good
# signature is GOODSIG whatever gpg thinks of the key's certification. ("--trust-model
# always" would be the obvious spelling, but it makes gpg fail on an expired key's import.)
_GPG_OPTIONS = [
    "--no-options",
    "--no-autostart",
    "--no-auto-key-retrieve",
    "--no-permission-warning",
]
# OpenPGP public-key algorithm numbers (RFC 4880 9.1, RFC 6637, the EdDSA draft).
_ALGORITHMS = {
    "1": "rsa",
    "2": "rsa",
    "3": "rsa",
    "16": "elgamal",
    "17": "dsa",
    "18": "ecdh",
    "19": "ecdsa",
    "22": "eddsa",
}
_KEY_LIMIT = 1 << 20


@dataclass(frozen=True)
class KeyInfo:
    """What a key says about itself, for review before trusting it."""

    fingerprint: str  # lowercase, 40 hex digits
    uids: tuple[str, ...]
    created: datetime.datetime
    algorithm: str  # "ed25519", "rsa4096", ...
    expires: datetime.datetime | None = None
    revoked: bool = False

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires <= datetime.datetime.now(datetime.UTC)

    @property
    def spaced_fingerprint(self) -> str:
        """``8B86 DE38 ... 2190``, as gpg and rkt show it for reading aloud."""
        return format_fingerprint(self.fingerprint)


@dataclass(frozen=True)
class TrustedKey:
    """A key trusted for ``prefix`` (None: a root key, for every name).

    ``uids`` are filled in by :meth:`TrustStore.list` and :meth:`TrustStore.add`; the
    key :meth:`TrustStore.verify` returns carries the signer's primary user ID;
    :meth:`TrustStore.keys_for` leaves them empty (it runs no gpg).
    """

    prefix: str | None
    fingerprint: str
    source: Source
    path: Path
    uids: tuple[str, ...] = ()


def format_fingerprint(fingerprint: str) -> str:
    """``8B86 DE38 890D DB72 9186  7B02 5210 BD88 8818 2190``."""
    fp = fingerprint.upper()
    groups = [fp[i : i + 4] for i in range(0, len(fp), 4)]
    half = len(groups) // 2
    return " ".join(groups[:half]) + "  " + " ".join(groups[half:])


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as typed (any case, spaces, a ``0x``) → lowercase 40 hex digits.

    Raises:
        TrustError: it is not a full v4 fingerprint (short key IDs are not accepted: they
            are easy to collide).
    """
    fp = "".join(text.split()).lower()
    fp = fp.removeprefix("0x")
    if not _FINGERPRINT.fullmatch(fp):
        raise TrustError(
            f"invalid fingerprint {text!r}",
            "a fingerprint is 40 hexadecimal digits",
            "run 'jetpack trust' to list the trusted keys with their fingerprints",
        )
    return fp


def check_prefix(prefix: str | None) -> str | None:
    """``prefix`` as an AC Identifier (None stays None: root).

    Raises:
        TrustError: it is not a valid AC Identifier.
    """
    if prefix is None:
        return None
    from jetpack.schema.types import ACIdentifier

    try:
        return str(ACIdentifier(prefix))
    except ManifestError as err:
        raise TrustError(
            f"invalid prefix {prefix!r}",
            err.rule,
            "a prefix is an image name or its leading path components, e.g. example.com/app",
        ) from None


def check_usable(info: KeyInfo, what: str = "the key") -> None:
    """Refuse a revoked or expired key: it could verify nothing.

    Raises:
        TrustError: the key is revoked or expired.
    """
    if info.revoked or info.expired:
        state = "revoked" if info.revoked else "expired"
        raise TrustError(
            f"refusing {what} {info.fingerprint}",
            f"the key is {state}",
            "ask its owner for a current key",
        )


def _timestamp(value: str) -> datetime.datetime | None:
    if not value:
        return None
    if value.isdigit():
        return datetime.datetime.fromtimestamp(int(value), datetime.UTC)
    try:  # gpg prints ISO 8601 instead of seconds with some options
        return datetime.datetime.fromisoformat(value).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def _key_info(record: dict[str, Any]) -> KeyInfo:
    algo = _ALGORITHMS.get(str(record.get("algo")), f"algorithm {record.get('algo')}")
    curve = str(record.get("curve") or "")
    if curve:
        algorithm = curve
    elif algo in ("rsa", "dsa", "elgamal"):
        algorithm = f"{algo}{record.get('length', '')}"
    else:
        algorithm = algo
    created = _timestamp(str(record.get("date") or "")) or datetime.datetime.fromtimestamp(
        0, datetime.UTC
    )
    return KeyInfo(
        fingerprint=str(record["fingerprint"]).lower(),
        uids=tuple(str(u) for u in record.get("uids", ())),
        created=created,
        algorithm=algorithm,
        expires=_timestamp(str(record.get("expires") or "")),
        revoked=record.get("trust") == "r",
    )


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("[GNUPG:]")]
    return lines[-1].removeprefix("gpg: ").strip() if lines else "no output"


class _Scratch:
    """A throw-away GNUPGHOME and a python-gnupg handle on it; removed on exit."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.home = Path()
        self.gpg: Any = None  # gnupg.GPG; python-gnupg ships no type hints

    def __enter__(self) -> _Scratch:
        import gnupg  # type: ignore[import-untyped]  # python-gnupg ships no type hints

        self._tmp = tempfile.TemporaryDirectory(prefix="jetpack-gpg-")
        self.home = Path(self._tmp.name)
        # Nothing of the user's GnuPG setup may leak in: no agent, no GNUPGHOME.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GPG_", "GNUPG"))}
        env["GNUPGHOME"] = str(self.home)
        try:
            self.gpg = gnupg.GPG(gnupghome=str(self.home), options=_GPG_OPTIONS, env=env)
        except (OSError, ValueError) as err:
            self._tmp.cleanup()
            raise TrustError(
                "cannot run gpg", str(err), "install GnuPG 2 (the gpg command)"
            ) from err
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            # gpg may leave sockets or lock files behind; never fail a verdict over them.
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def scan(self, data: bytes, what: str) -> list[dict[str, Any]]:
        """The keys in ``data`` without importing them."""
        result = self.gpg.scan_keys_mem(data)
        records = [dict(r) for r in result]
        if not records:
            raise TrustError(
                f"cannot read {what}",
                "it is not an OpenPGP public key",
                "give an ASCII-armored public key, e.g. from 'gpg --export --armor FINGERPRINT'",
            )
        return records

    def one_public_key(self, data: bytes, what: str) -> KeyInfo:
        records = self.scan(data, what)
        if any(r.get("type") == "sec" for r in records):
            raise TrustError(
                f"refusing {what}",
                "it contains a secret key",
                "give only the public key, e.g. from 'gpg --export --armor FINGERPRINT'",
            )
        if len(records) != 1:
            fps = ", ".join(str(r.get("fingerprint", "?")).lower() for r in records)
            raise TrustError(
                f"refusing {what}",
                f"it holds {len(records)} keys ({fps}), not one",
                "give one key per file",
            )
        return _key_info(records[0])

    def import_keys(self, data: bytes) -> set[str]:
        result = self.gpg.import_keys(data)
        return {str(fp).lower() for fp in result.fingerprints}

    def export(self, fingerprint: str) -> bytes:
        armored = self.gpg.export_keys(fingerprint.upper(), armor=True)
        return str(armored).encode("ascii")

    def start_verify(self, signature: Path, data: Path | None) -> subprocess.Popen[bytes]:
        """``gpg --verify signature data`` (None: from stdin), status lines on stderr."""
        # Absolute, so a file name starting with "-" is never taken for an option.
        target = "-" if data is None else str(Path(data).absolute())
        argv = self.gpg.make_args(["--verify", str(signature), target], False)
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if data is None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.gpg.env,
        )

    def verdict(self, status: builtins.list[str]) -> Any:
        """gpg's status lines read into python-gnupg's ``Verify`` result."""
        import gnupg

        result = gnupg.Verify(self.gpg)
        for line in status:
            if line.startswith("[GNUPG:] "):
                keyword, _, value = line[9:].rstrip().partition(" ")
                result.handle_status(keyword, value)
        result.stderr = "".join(status)
        return result


class TrustStore:
    """The trusted keys under ``local`` (written) and ``vendor`` (only read).

    Raises (every method):
        TrustError: bad input, an unreadable or unwritable trust directory, a file whose
            key does not match its name, or a signature that does not verify.
    """

    def __init__(self, local: Path, vendor: Path) -> None:
        self.local = local
        self.vendor = vendor

    @classmethod
    def from_config(cls, config: TrustConfig) -> TrustStore:
        return cls(config.local, config.vendor)

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def _dir(root: Path, prefix: str | None) -> Path:
        return root / "root.d" if prefix is None else root.joinpath("prefix.d", *prefix.split("/"))

    @staticmethod
    def _files(directory: Path) -> dict[str, tuple[Path, int]]:
        """Fingerprint-named regular files directly in ``directory`` → (path, size)."""
        found: dict[str, tuple[Path, int]] = {}
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return found
        except OSError as err:
            raise TrustError(f"cannot read {directory}", err.strerror or str(err)) from err
        for entry in entries:
            if not _FINGERPRINT.fullmatch(entry.name):
                continue  # temporary files, READMEs, and prefix directories
            try:
                if entry.is_file():
                    found[entry.name] = (Path(entry.path), entry.stat().st_size)
            except OSError as err:
                raise TrustError(f"cannot read {entry.path}", err.strerror or str(err)) from err
        return found

    def _keys_at(self, prefix: str | None) -> builtins.list[TrustedKey]:
        """The effective keys of one place: local ones, plus vendor ones not masked."""
        local = self._files(self._dir(self.local, prefix))
        vendor = self._files(self._dir(self.vendor, prefix))
        keys = [
            TrustedKey(prefix, fp, "local", path)
            for fp, (path, size) in sorted(local.items())
            if size > 0
        ]
        keys += [
            TrustedKey(prefix, fp, "vendor", path)
            for fp, (path, size) in sorted(vendor.items())
            if size > 0 and fp not in local
        ]
        return keys

    def _prefixes(self) -> builtins.list[str]:
        """Every prefix that has a key file (or a mask) under either root."""
        found: set[str] = set()
        for root in (self.local, self.vendor):
            base = root / "prefix.d"
            for dirpath, _dirs, files in os.walk(base):
                if any(_FINGERPRINT.fullmatch(f) for f in files):
                    found.add(Path(dirpath).relative_to(base).as_posix())
        return sorted(p for p in found if p != ".")

    def keys_for(self, name: str) -> builtins.list[TrustedKey]:
        """The keys trusted for image ``name``: root keys and those of each covering prefix.

        Masking applies; a key trusted at several places appears once per place.
        """
        checked = check_prefix(name)
        assert checked is not None
        parts = checked.split("/")
        keys = self._keys_at(None)
        for n in range(1, len(parts) + 1):
            keys += self._keys_at("/".join(parts[:n]))
        return keys

    def _read_keys(self, keys: builtins.list[TrustedKey]) -> bytes:
        chunks: builtins.list[bytes] = []
        for key in keys:
            try:
                with open(key.path, "rb") as f:
                    chunks.append(f.read(_KEY_LIMIT + 1))
            except OSError as err:
                raise TrustError(f"cannot read {key.path}", err.strerror or str(err)) from err
            if len(chunks[-1]) > _KEY_LIMIT:
                raise TrustError(f"cannot read {key.path}", "it is too large to be a key")
        return b"\n".join(chunks)

    def _load(self, scratch: _Scratch, keys: builtins.list[TrustedKey]) -> None:
        """Import ``keys`` into the scratch keyring; each file must hold the key it names."""
        unique = list({k.fingerprint: k for k in keys}.values())
        imported = scratch.import_keys(self._read_keys(unique))
        for key in unique:
            if key.fingerprint not in imported:
                raise TrustError(
                    f"damaged trust store: {key.path}",
                    f"it does not hold the key {key.fingerprint} its name says",
                    "remove it, and trust the key again with 'jetpack trust'",
                )
        extra = imported - {k.fingerprint for k in unique}
        if extra:
            raise TrustError(
                "damaged trust store",
                f"a key file holds other keys too ({', '.join(sorted(extra))})",
                "run 'jetpack trust' to find it; remove it and trust the key again",
            )

    # -- review and changes --------------------------------------------------------------

    def inspect(self, armored: bytes, what: str = "the key") -> KeyInfo:
        """What ``armored`` (one public key) is, for review before :meth:`add`."""
        with _Scratch() as scratch:
            return scratch.one_public_key(armored, what)

    def add(self, armored: bytes, prefix: str | None, what: str = "the key") -> TrustedKey:
        """Trust the one public key in ``armored`` for ``prefix`` (None: for every name).

        The file written is gpg's armored export of the key (so a binary key, or armor with
        text around it, is stored clean), replacing any copy or mask at that place.
        """
        place = check_prefix(prefix)
        with _Scratch() as scratch:
            info = scratch.one_public_key(armored, what)
            check_usable(info, what)
            if scratch.import_keys(armored) != {info.fingerprint}:
                raise TrustError(f"refusing {what}", "gpg could not import it")
            exported = scratch.export(info.fingerprint)
        directory = self._dir(self.local, place)
        path = directory / info.fingerprint
        _write(path, exported, self.local)
        return TrustedKey(place, info.fingerprint, "local", path, info.uids)

    def remove(self, fingerprint: str) -> builtins.list[Path]:
        """Stop trusting a key everywhere: delete local copies, mask vendor ones.

        Returns:
            The local files deleted or written (empty masks), in place order.
        """
        fp = normalize_fingerprint(fingerprint)
        changed: builtins.list[Path] = []
        for place in [None, *self._prefixes()]:
            local = self._files(self._dir(self.local, place)).get(fp)
            vendor = self._files(self._dir(self.vendor, place)).get(fp)
            target = self._dir(self.local, place) / fp
            if vendor is not None and vendor[1] > 0:
                if local is None or local[1] > 0:
                    _write(target, b"", self.local)
                    changed.append(target)
            elif local is not None and local[1] > 0:
                try:
                    target.unlink()
                except OSError as err:
                    raise TrustError(f"cannot remove {target}", err.strerror or str(err)) from err
                _prune(target.parent, self.local)
                changed.append(target)
        if not changed:
            raise TrustError(
                f"cannot untrust {fp}",
                "no such trusted key",
                "run 'jetpack trust' to list the trusted keys",
            )
        return changed

    # -- verification --------------------------------------------------------------------

    def verify(self, name: str, data: Path, signature: bytes) -> TrustedKey:
        """Check a detached signature (armored or binary) of the file ``data``.

        gpg reads ``data`` itself (no copy); the scratch keyring holds only
        :meth:`keys_for` ``(name)``.

        Returns:
            The trusted key that made the signature, with the signer's user ID.

        Raises:
            TrustError: unsigned, not a signature, signed by a key not trusted for ``name``,
                a bad signature (altered data), an expired or revoked key.
        """
        with Verifier(self, name, signature, data=data) as check:
            return check.finish()

    def verifier(self, name: str, signature: bytes) -> Verifier:
        """A streaming :meth:`verify`: ``write`` the data as it arrives, then ``finish``.

        gpg hashes on its own core while the data is still downloading, so the check
        costs no extra pass over the file. Use it as a context manager.
        """
        return Verifier(self, name, signature)

    def _verdict(self, name: str, keys: builtins.list[TrustedKey], result: Any) -> TrustedKey:
        what = f"cannot verify {name}"
        trust_cmd = f"jetpack trust --prefix {name}"
        problems = {str(p.get("status")) for p in getattr(result, "problems", [])}
        signer = str(result.pubkey_fingerprint or result.fingerprint or result.key_id or "")
        signer = signer.lower()
        if result.valid and not result.key_status:
            for key in keys:
                if key.fingerprint == signer:
                    uid = str(result.username or "")
                    return replace(key, uids=(uid,) if uid else ())
        if result.key_status:  # EXPKEYSIG / REVKEYSIG: a key we trust, now unusable
            uid = f" ({result.username})" if result.username else ""
            raise TrustError(
                what,
                f"it is signed by {signer}{uid}, but the {result.key_status}",
                f"ask the publisher for a current key, then run '{trust_cmd}'",
            )
        if result.status == "signature bad":
            raise TrustError(
                what,
                "the signature does not match the data (the image was altered or damaged "
                "in transit, or the signature is for another file)",
                "fetch it again; if it keeps failing, tell the publisher",
            )
        if result.status == "signature expired":
            raise TrustError(what, "the signature has expired", "ask the publisher to re-sign")
        if "no public key" in problems:
            if not keys:
                raise TrustError(
                    what,
                    f"no key is trusted for {name} (the image is signed by key {signer})",
                    f"to trust the publisher's key, run '{trust_cmd}'",
                )
            elsewhere = self._trusted_at(signer)
            where = f"; it is trusted only for {', '.join(elsewhere)}" if elsewhere else ""
            raise TrustError(
                what,
                f"it is signed by key {signer}, which is not trusted for {name}{where}",
                f"if you trust that key for {name}, run '{trust_cmd}'",
            )
        if result.status in (None, "signature expected but not found") or not signer:
            raise TrustError(
                what,
                "the signature is damaged or is not an OpenPGP signature",
                "check the .asc file served with the image",
            )
        raise TrustError(what, f"gpg: {_last_line(str(result.stderr or ''))}")

    def _trusted_at(self, fingerprint: str) -> builtins.list[str]:
        """The prefixes (``*`` for root) where ``fingerprint`` is trusted; runs no gpg."""
        return [
            key.prefix or "*"
            for place in [None, *self._prefixes()]
            for key in self._keys_at(place)
            if key.fingerprint == fingerprint
        ]

    def list(self) -> builtins.list[TrustedKey]:
        """Every effective key: root keys first, then by prefix and fingerprint, with uids."""
        keys: builtins.list[TrustedKey] = []
        for place in [None, *self._prefixes()]:
            keys += self._keys_at(place)
        if not keys:
            return keys
        uids: dict[str, tuple[str, ...]] = {}
        with _Scratch() as scratch:
            self._load(scratch, keys)
            for record in scratch.gpg.list_keys():
                info = _key_info(dict(record))
                uids[info.fingerprint] = info.uids
        return [replace(k, uids=uids.get(k.fingerprint, ())) for k in keys]


class Verifier:
    """One signature check in progress: :meth:`TrustStore.verify` or :meth:`TrustStore.verifier`.

    Streaming use (the fetcher, while downloading)::

        with store.verifier(name, signature) as check:
            for chunk in body:
                check.write(chunk)
            signer = check.finish()     # raises TrustError

    ``write`` never raises for gpg's sake: if gpg stops reading (a garbage signature, an
    unknown signer) the rest is dropped and :meth:`finish` says why. Leaving the ``with``
    block without ``finish`` kills gpg and removes the scratch home.
    """

    def __init__(
        self, store: TrustStore, name: str, signature: bytes, *, data: Path | None = None
    ) -> None:
        self.store = store
        self.name = name
        self._signature = signature
        self._data = data
        self._scratch = _Scratch()
        self._keys: builtins.list[TrustedKey] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._status: builtins.list[str] = []
        self._reader: threading.Thread | None = None
        self._stdin_open = False

    def __enter__(self) -> Verifier:
        if not self._signature.strip():
            raise TrustError(
                f"cannot verify {self.name}",
                "the image is unsigned (its signature is empty)",
                "ask the publisher for a signed image, or pass --insecure-options=image "
                "to skip the check",
            )
        self._keys = self.store.keys_for(self.name)
        scratch = self._scratch.__enter__()
        try:
            sig_path = scratch.home / "signature"
            sig_path.write_bytes(self._signature)
            if self._keys:
                self.store._load(scratch, self._keys)
                data = self._data
            else:
                # No key to check with: ask gpg only who signed, over no data.
                data = Path(os.devnull)
            self._proc = scratch.start_verify(sig_path, data)
        except BaseException:
            self._scratch.__exit__(None, None, None)
            raise
        self._stdin_open = self._proc.stdin is not None
        self._reader = threading.Thread(target=self._read_status, daemon=True)
        self._reader.start()
        return self

    def _read_status(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._status.append(raw.decode("utf-8", "replace"))

    def write(self, chunk: bytes) -> None:
        """Feed the next bytes of the signed data."""
        if not self._stdin_open:
            return
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            self._stdin_open = False

    def finish(self) -> TrustedKey:
        """The end of the data: gpg's verdict (the signer), or a :class:`TrustError`."""
        assert self._proc is not None and self._reader is not None, "use Verifier in 'with'"
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self._proc.stdin.close()
            self._stdin_open = False
        self._proc.wait()
        self._reader.join()
        result = self._scratch.verdict(self._status)
        return self.store._verdict(self.name, self._keys, result)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc is not None:
                if self._proc.poll() is None:
                    self._proc.kill()
                    self._proc.wait()
                for stream in (self._proc.stdin, self._proc.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError, ValueError):
                            stream.close()
                if self._reader is not None:
                    self._reader.join()
        finally:
            self._scratch.__exit__(None, None, None)


def _mkdirs(directory: Path, root: Path) -> None:
    """Create ``directory`` and missing parents with mode 0755, whatever the umask."""
    missing: builtins.list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current == current.parent:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o755)
            path.chmod(0o755)
        except FileExistsError:
            continue
        except OSError as err:
            raise TrustError(
                f"cannot create {path}",
                err.strerror or str(err),
                f"run as root, or set trust.local in the configuration (now {root})",
            ) from err


def _write(path: Path, data: bytes, root: Path) -> None:
    """Write ``path`` atomically (temporary file, fsync, rename), mode 0644."""
    _mkdirs(path.parent, root)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except OSError as err:
        raise TrustError(
            f"cannot write {path}",
            err.strerror or str(err),
            f"run as root, or set trust.local in the configuration (now {root})",
        ) from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        Path(tmp).replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise TrustError(f"cannot write {path}", err.strerror or str(err)) from err


def _prune(directory: Path, root: Path) -> None:
    """Remove now-empty prefix directories up to (not including) ``root``/prefix.d."""
    stop = root / "prefix.d"
    current = directory
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent

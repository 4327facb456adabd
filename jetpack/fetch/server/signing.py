"""The server's own signing key: signs unsigned uploads and store images on request.

The key file (``serve.signing-key`` / ``--signing-key``) holds one ASCII-armored OpenPGP
secret key without a passphrase (the server runs unattended). It is imported into a
throw-away GNUPGHOME made at startup and removed at shutdown (its gpg-agent, which gpg
needs for secret-key operations, is stopped with ``gpgconf --kill``); nothing of the
operator's own GnuPG setup is read or written. A test signature at startup makes a
protected or unusable key fail then, not on the first push.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from jetpack.errors import TrustError
from jetpack.fetch.server.catalog import Key, etag_of


class Signer:
    """Signs files with the one secret key of ``key_file``. Call :meth:`close` when done."""

    def __init__(self, key_file: Path) -> None:
        import gnupg  # type: ignore[import-untyped]  # python-gnupg ships no type hints

        what = f"cannot use signing key {key_file}"
        try:
            armored = key_file.read_bytes()
        except OSError as err:
            raise TrustError(what, err.strerror or str(err)) from err
        self._home = Path(tempfile.mkdtemp(prefix="jetpack-sign-"))
        self._lock = threading.Lock()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GPG_", "GNUPG"))}
        env["GNUPGHOME"] = str(self._home)
        try:
            self._gpg: Any = gnupg.GPG(
                gnupghome=str(self._home), options=["--no-options", "--batch"], env=env
            )
            secret = [dict(r) for r in self._gpg.scan_keys_mem(armored) if r.get("type") == "sec"]
            if len(secret) != 1:
                raise TrustError(
                    what,
                    f"it holds {len(secret)} secret keys, not one",
                    "export one with 'gpg --export-secret-keys --armor FINGERPRINT'",
                )
            imported = self._gpg.import_keys(armored)
            self.fingerprint = str(secret[0]["fingerprint"]).lower()
            if self.fingerprint not in {str(f).lower() for f in imported.fingerprints}:
                raise TrustError(what, "gpg could not import it")
            uids = secret[0].get("uids") or [""]
            self.uid = str(uids[0])
            public = str(self._gpg.export_keys(self.fingerprint.upper(), armor=True)).encode()
            self.key = Key(self.fingerprint, public, self.uid, etag_of(public))
            self.sign_bytes(b"jetpack signing-key check\n")
        except BaseException:
            self.close()
            raise

    def _check(self, result: Any) -> bytes:
        if getattr(result, "status", None) != "signature created" or not str(result):
            last = (str(getattr(result, "stderr", "")).strip().splitlines() or ["no output"])[-1]
            raise TrustError(
                "cannot sign with the server's key",
                last.removeprefix("gpg: "),
                "the key must have no passphrase and be able to sign",
            )
        return str(result).encode()

    def sign_bytes(self, data: bytes) -> bytes:
        with self._lock:
            return self._check(
                self._gpg.sign(data, keyid=self.fingerprint.upper(), detach=True, binary=False)
            )

    def sign_file(self, path: Path) -> bytes:
        """A detached ASCII-armored signature of the file ``path``."""
        with self._lock, open(path, "rb") as f:
            return self._check(
                self._gpg.sign_file(f, keyid=self.fingerprint.upper(), detach=True, binary=False)
            )

    def close(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [gpgconf, "--homedir", str(self._home), "--kill", "all"],
                    capture_output=True,
                    timeout=10,
                )
        shutil.rmtree(self._home, ignore_errors=True)

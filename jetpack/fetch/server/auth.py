"""Who is asking, and which names they may push: ``[[serve.users]]``.

A user has a bearer ``token`` (``Authorization: Bearer <token>``) or a ``password-hash``
(``Authorization: Basic <name:password>``), and a list of name prefixes. A prefix covers
names at whole path components, as the trust store's do: ``example.com/app`` covers
``example.com/app`` and ``example.com/app/x``, never ``example.com/application``; ``*``
covers every name. Secrets are compared in constant time; a password hash is
``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>`` (``jetpack serve --hash-password``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from jetpack.config import ServeUser

_SCRYPT = (15, 8, 1)  # N = 2**15: ~50 ms, 32 MiB


def hash_password(password: str) -> str:
    log_n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << log_n, r=r, p=p, maxmem=1 << 26)
    b64 = base64.b64encode
    return f"scrypt${log_n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, log_n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=1 << int(log_n),
            r=int(r),
            p=int(p),
            maxmem=1 << 27,
            dklen=len(want),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)


def authenticate(header: str | None, users: Sequence[ServeUser]) -> ServeUser | None:
    """The user an ``Authorization`` header proves to be, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        given = value.encode()
        found = None
        for user in users:  # no early exit: the time taken says nothing about the tokens
            if user.token is not None and hmac.compare_digest(user.token.encode(), given):
                found = user
        return found
    if scheme.lower() == "basic" and value:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        for user in users:
            if user.name == name and user.password_hash is not None:
                return user if check_password(password, user.password_hash) else None
    return None


def covers(prefix: str, name: str) -> bool:
    """Whether ``prefix`` covers ``name`` at whole path components (``*``: everything)."""
    return prefix == "*" or name == prefix or name.startswith(prefix + "/")


def may_push(user: ServeUser, name: str) -> bool:
    return any(covers(p, name) for p in user.prefixes)

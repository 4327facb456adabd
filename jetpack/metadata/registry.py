"""Registrations: what the metadata service knows of each pod, and where it keeps it.

A registration is made once, when stage0 prepares a pod: the service draws the pod's token
(192 random bits, URL-safe) and HMAC key (512 bits), and keeps them with the reified pod
manifest and each app's image ID and image manifest (as the image has it). Every answer
the service gives is computed here, once, as bytes; a request only looks them up.

Each registration is a file, ``mds/pods/<uuid>.json`` (see :mod:`jetpack.metadata.paths`).
Registrations outlive the service: a restarted one reads them back, so running pods keep
their URL and their signatures keep verifying.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jetpack.metadata.paths import MetadataPaths, is_uuid

if TYPE_CHECKING:
    from typing import Protocol

    class _Mac(Protocol):  # hmac.HMAC, or the OpenSSL object it wraps
        def copy(self) -> _Mac: ...
        def update(self, msg: bytes, /) -> None: ...
        def digest(self) -> bytes: ...


TOKEN_BYTES = 24  # 192 bits; the spec asks for at least 128
KEY_BYTES = 64  # HMAC-SHA512's key: its output size


@dataclass(frozen=True)
class AppEntry:
    """One app of a registered pod, with its answers ready."""

    name: str
    image_id: str
    image_manifest: bytes
    annotations: bytes


@dataclass(frozen=True)
class Registration:
    """One registered pod, with its answers ready."""

    uuid: str
    token: str
    key: bytes
    manifest: bytes
    annotations: bytes
    apps: dict[str, AppEntry]
    created: str
    net: str = "host"  # the pod's network: not "host", the token works only from the pod

    @classmethod
    def new(
        cls,
        uuid: str,
        manifest: bytes,
        images: list[tuple[str, str, bytes]],
        created: str,
        net: str = "host",
    ) -> Registration:
        """A registration with a fresh token and key.

        Args:
            uuid: the pod's UUID.
            manifest: the reified pod manifest, JSON.
            images: ``(app name, image ID, image manifest bytes)`` of each app.
            created: when (RFC 3339, UTC).
            net: the pod's network mode (``host``, ``none``, ...).

        Raises:
            ValueError: the manifests are not JSON of the expected shape, or the apps do
                not match the pod manifest's.
        """
        import secrets  # here: hashlib's OpenSSL costs ~4 ms of every `jetpack run`

        return cls.from_json(
            {
                "uuid": uuid,
                "token": secrets.token_urlsafe(TOKEN_BYTES),
                "key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(),
                "created": created,
                "net": net,
                "manifest": manifest.decode(),
                "apps": [
                    {"name": name, "image_id": image_id, "image_manifest": data.decode()}
                    for name, image_id, data in images
                ],
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "token": self.token,
            "key": base64.b64encode(self.key).decode(),
            "created": self.created,
            "net": self.net,
            "manifest": self.manifest.decode(),
            "apps": [
                {
                    "name": app.name,
                    "image_id": app.image_id,
                    "image_manifest": app.image_manifest.decode(),
                }
                for app in self.apps.values()
            ],
        }

    @classmethod
    def from_json(cls, data: object) -> Registration:
        """Parse what :meth:`to_json` wrote, computing every answer.

        Raises:
            ValueError: anything missing or malformed.
        """
        if not isinstance(data, dict):
            raise ValueError("a registration must be a JSON object")
        uuid, token, key = data.get("uuid"), data.get("token"), data.get("key")
        created, manifest_text = data.get("created", ""), data.get("manifest")
        net = data.get("net", "host")
        if not isinstance(net, str) or not net.isascii() or not net.isidentifier():
            raise ValueError(f"bad network mode {net!r}")
        if not isinstance(uuid, str) or not is_uuid(uuid):
            raise ValueError(f"bad pod UUID {uuid!r}")
        if not isinstance(token, str) or len(token) < 22 or not _url_safe(token):
            raise ValueError("bad token")
        if not isinstance(key, str) or not isinstance(created, str):
            raise ValueError("bad key")
        key_bytes = base64.b64decode(key, validate=True)
        if len(key_bytes) < 16:
            raise ValueError("the HMAC key is too short")
        if not isinstance(manifest_text, str):
            raise ValueError("no pod manifest")
        manifest = json.loads(manifest_text)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("apps"), list):
            raise ValueError("the pod manifest is not a JSON object with apps")
        pod_apps: dict[str, dict[str, Any]] = {}
        for app in manifest["apps"]:
            if not isinstance(app, dict) or not isinstance(app.get("name"), str):
                raise ValueError("each app of the pod manifest needs a name")
            pod_apps[app["name"]] = app
        raw_apps = data.get("apps")
        if not isinstance(raw_apps, list):
            raise ValueError("no apps")
        apps: dict[str, AppEntry] = {}
        for raw in raw_apps:
            if not isinstance(raw, dict):
                raise ValueError("an app must be a JSON object")
            name, image_id = raw.get("name"), raw.get("image_id")
            image_text = raw.get("image_manifest")
            if not isinstance(name, str) or name not in pod_apps:
                raise ValueError(f"app {name!r} is not in the pod manifest")
            if not isinstance(image_id, str) or not isinstance(image_text, str):
                raise ValueError(f"app {name}: no image ID or manifest")
            image = json.loads(image_text)
            if not isinstance(image, dict):
                raise ValueError(f"app {name}: the image manifest is not a JSON object")
            merged = merge_annotations(
                _annotations(image.get("annotations")),
                _annotations(pod_apps[name].get("annotations")),
            )
            apps[name] = AppEntry(name, image_id, image_text.encode(), _dump(merged))
        if set(apps) != set(pod_apps):
            raise ValueError("the apps registered are not the pod manifest's")
        return cls(
            uuid=uuid,
            token=token,
            key=key_bytes,
            manifest=manifest_text.encode(),
            annotations=_dump(_annotations(manifest.get("annotations"))),
            apps=apps,
            created=created,
            net=net,
        )

    @cached_property
    def _keyed(self) -> _Mac:
        """HMAC-SHA512 with this pod's key, before any content: each signature copies it
        instead of hashing the key again (half the cost of a signature). It is OpenSSL's
        HMAC object that ``hmac.HMAC`` wraps, when the wrapper has one (CPython's, on
        every supported version): copying the wrapper costs a quarter of a signature."""
        import hmac

        keyed = hmac.new(self.key, digestmod="sha512")
        inner: _Mac | None = getattr(keyed, "_hmac", None)
        return keyed if inner is None else inner

    def _mac(self, content: bytes) -> bytes:
        keyed = self._keyed.copy()
        keyed.update(content)
        return keyed.digest()

    def sign(self, content: bytes) -> bytes:
        """The base64 HMAC-SHA512 of ``content`` under this pod's key."""
        return binascii.b2a_base64(self._mac(content), newline=False)  # = b64encode, less a call

    def verify(self, content: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (base64) is this pod's HMAC of ``content``."""
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            return False
        import hmac

        return hmac.compare_digest(self._mac(content), raw)


def merge_annotations(
    image: list[tuple[str, str]], pod_app: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """An app's annotations as the spec serves them: the image's, each replaced in place
    by the pod manifest's value of the same name, then the pod's new names appended."""
    merged = list(image)
    where = {name: i for i, (name, _value) in enumerate(merged)}
    for name, value in pod_app:
        if name in where:
            merged[where[name]] = (name, value)
        else:
            where[name] = len(merged)
            merged.append((name, value))
    return merged


def _annotations(raw: object) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("annotations must be a list")
    found = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("an annotation must be a JSON object")
        name, value = item.get("name"), item.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("an annotation needs a name and a value")
        found.append((name, value))
    return found


def _dump(annotations: list[tuple[str, str]]) -> bytes:
    return json.dumps([{"name": n, "value": v} for n, v in annotations]).encode()


def _url_safe(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


class Registry:
    """The registrations on disk: one 0600 file per pod, replaced atomically."""

    def __init__(self, paths: MetadataPaths) -> None:
        self.paths = paths

    def _file(self, uuid: str) -> Path:
        return self.paths.registration(uuid)

    def save(self, registration: Registration) -> None:
        path = self._file(registration.uuid)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(registration.to_json(), out)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self, uuid: str) -> bool:
        """Forget a pod; whether it was registered."""
        try:
            self._file(uuid).unlink()
        except (FileNotFoundError, ValueError):
            return False
        return True

    def load_all(self) -> tuple[list[Registration], list[str]]:
        """Every registration on disk, and a line for each file that cannot be read."""
        found: list[Registration] = []
        problems: list[str] = []
        try:
            entries = sorted(self.paths.pods.iterdir())
        except FileNotFoundError:
            return found, problems
        for path in entries:
            if path.name.startswith(".") or path.suffix != ".json":
                continue
            try:
                registration = Registration.from_json(json.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError) as err:
                problems.append(f"{path}: {err}")
                continue
            if f"{registration.uuid}.json" != path.name:
                problems.append(f"{path}: holds pod {registration.uuid}")
                continue
            found.append(registration)
        return found, problems

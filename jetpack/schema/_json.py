"""JSON plumbing shared by every schema module.

Theory of operation: a document is decoded (strictly: UTF-8, no duplicate keys, no NaN)
and *frozen* in one pass — objects become :class:`FrozenDict`, arrays become tuples —
so every value the typed layer keeps (``extra`` fields, opaque isolator values) is
immutable and hashable. The typed layer then reads objects through :class:`Fields`,
which type-checks each known key and hands back the rest as ``extra``.

Error paths are built from the inside out: a parser raises a :class:`ManifestError`
whose path is relative to the value it was given, and every caller that descends into
a child wraps the call in :func:`at`, which prepends the child's key. The top-level
error therefore names the full JSON path without any parser knowing where it sits.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypeAlias, TypeVar, Union

from jetpack.errors import ManifestError

K = TypeVar("K")
V = TypeVar("V")

# Deep enough for any real manifest; shallow enough that the recursive freeze can never
# hit Python's recursion limit on hostile input.
MAX_DEPTH: Final = 256


class FrozenDict(Mapping[K, V]):
    """An immutable, hashable, insertion-ordered mapping."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


JSONValue: TypeAlias = Union[
    str, int, float, bool, "FrozenDict[str, JSONValue]", "tuple[JSONValue, ...]", None
]
JSONObject: TypeAlias = "FrozenDict[str, JSONValue]"

EMPTY: Final[FrozenDict[str, Any]] = FrozenDict()


class _DuplicateKeys(dict[str, Any]):
    """A decoded JSON object that repeated a key; :func:`freeze` reports it with its path."""

    duplicate: str = ""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            dup = _DuplicateKeys(pairs)
            dup.duplicate = key
            return dup
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_@/-]+")


def key_path(key: str) -> str:
    """The path segment for an object key (quoted when it would be ambiguous)."""
    return key if _SIMPLE_KEY.fullmatch(key) else "[" + json.dumps(key, ensure_ascii=False) + "]"


@contextmanager
def at(segment: str) -> Iterator[None]:
    """Prepend ``segment`` (a key or ``[i]``) to the path of any ManifestError raised inside."""
    try:
        yield
    except ManifestError as err:
        raise err.prefixed(segment) from err.__cause__


def quote(value: object, limit: int = 80) -> str:
    """A JSON rendering of ``value`` for messages, shortened when long."""
    text = json.dumps(
        thaw(value) if isinstance(value, FrozenDict | tuple) else value, ensure_ascii=False
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_of(value: object) -> str:
    """The JSON type name of a frozen value, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, tuple | list):
        return "an array"
    return type(value).__name__


def freeze(value: object, depth: int = 0) -> JSONValue:
    """Check that ``value`` is plain JSON data and return its immutable form."""
    if depth > MAX_DEPTH:
        raise ManifestError("", f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError("", f"{value} is not a valid JSON number")
        return value
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, _DuplicateKeys):
        raise ManifestError(key_path(value.duplicate), f"duplicate key {quote(value.duplicate)}")
    if isinstance(value, Mapping):
        items: list[tuple[str, JSONValue]] = []
        for key, child in value.items():
            if not isinstance(key, str):
                raise ManifestError("", f"object key {key!r} is not a string")
            check_text(key)
            with at(key_path(key)):
                items.append((key, freeze(child, depth + 1)))
        return FrozenDict(items)
    if isinstance(value, list | tuple):
        frozen: list[JSONValue] = []
        for i, child in enumerate(value):
            with at(f"[{i}]"):
                frozen.append(freeze(child, depth + 1))
        return tuple(frozen)
    raise ManifestError("", f"a {type(value).__name__} is not a JSON value")


def check_text(text: str) -> str:
    """Reject strings that cannot be written back as UTF-8 (lone surrogates from ``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError("", "string contains an unpaired UTF-16 surrogate") from None
    return text


def thaw(value: JSONValue) -> Any:
    """The plain ``dict``/``list`` form of a frozen value, for ``json.dumps``."""
    if isinstance(value, FrozenDict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def load_document(data: bytes | bytearray | str | Mapping[str, Any]) -> JSONObject:
    """Decode and freeze a manifest; the top level must be an object."""
    raw: object
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ManifestError("", f"not valid UTF-8 (byte {err.start})") from None
    elif isinstance(data, str):
        text = data
    elif isinstance(data, Mapping):
        text = None
    else:
        raise ManifestError(
            "", f"expected JSON bytes, a str or a mapping, got {type(data).__name__}"
        )
    if text is None:
        raw = data
    else:
        try:
            raw = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
        except json.JSONDecodeError as err:
            raise ManifestError(
                "", f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}"
            ) from None
        except (ValueError, RecursionError) as err:
            # ValueError: NaN/Infinity, or an integer too long for int(); RecursionError:
            # absurd nesting that the C decoder refuses.
            raise ManifestError("", f"invalid JSON: {err}") from None
    doc = freeze(raw)
    if not isinstance(doc, FrozenDict):
        raise ManifestError("", f"the top level must be a JSON object, got {kind_of(doc)}")
    return doc


def dump_bytes(value: Any, *, pretty: bool) -> bytes:
    """Compact JSON, or 4-space indented like ``actool cat-manifest --pretty-print``."""
    if pretty:
        return json.dumps(value, indent=4, ensure_ascii=False).encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _Missing:
    pass


MISSING: Final = _Missing()


def case_hint(obj: JSONObject, key: str) -> str | None:
    """A hint when ``key`` is missing but present in another letter case (Go accepts that)."""
    for other in obj:
        if other.lower() == key.lower():
            return f'found "{other}": keys are case-sensitive, write "{key}"'
    return None


class Fields:
    """Reads the known keys of one JSON object and keeps the unknown ones as ``extra``.

    Keys match exactly: Go's decoder matches field names in any letter case, so it reads
    ``"ackind"`` as ``acKind``; the spec names the fields, so here ``"ackind"`` is just an
    unknown field (kept in ``extra``).

    JSON ``null`` for an optional key counts as absent: Go's encoder writes ``null`` for
    every empty slice without ``omitempty`` (a pod manifest's ``volumes``, ``ports``...),
    so rejecting it would reject manifests written by the reference tools.
    """

    def __init__(self, value: JSONValue, what: str = "an object") -> None:
        if not isinstance(value, FrozenDict):
            raise ManifestError("", f"expected {what}, got {kind_of(value)}")
        self.obj: JSONObject = value
        self._seen: set[str] = set()

    def raw(self, key: str) -> JSONValue | _Missing:
        self._seen.add(key)
        value = self.obj.get(key, MISSING)
        return MISSING if value is None else value

    def opt(self, key: str) -> JSONValue:
        """The value of an optional key, ``None`` when missing or null."""
        value = self.raw(key)
        return None if isinstance(value, _Missing) else value

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def required(self, key: str) -> JSONValue:
        self._seen.add(key)
        if key not in self.obj:
            raise ManifestError(key_path(key), "is required", case_hint(self.obj, key))
        value = self.obj[key]
        if value is None:
            raise ManifestError(key_path(key), "is required and cannot be null")
        return value

    def req_str(self, key: str) -> str:
        return expect_str(self.required(key), key_path(key))

    def opt_str(self, key: str) -> str | None:
        value = self.raw(key)
        return None if isinstance(value, _Missing) else expect_str(value, key_path(key))

    def opt_bool(self, key: str) -> bool | None:
        value = self.raw(key)
        if isinstance(value, _Missing):
            return None
        if not isinstance(value, bool):
            raise ManifestError(key_path(key), f"expected a boolean, got {kind_of(value)}")
        return value

    def req_int(self, key: str) -> int:
        return expect_int(self.required(key), key_path(key))

    def opt_int(self, key: str) -> int | None:
        value = self.raw(key)
        return None if isinstance(value, _Missing) else expect_int(value, key_path(key))

    def opt_list(self, key: str) -> tuple[JSONValue, ...]:
        value = self.raw(key)
        if isinstance(value, _Missing):
            return ()
        return expect_list(value, key_path(key))

    def opt_str_list(self, key: str) -> tuple[str, ...]:
        items = self.opt_list(key)
        return tuple(expect_str(item, f"{key_path(key)}[{i}]") for i, item in enumerate(items))

    def opt_str_map(self, key: str) -> FrozenDict[str, str]:
        value = self.raw(key)
        if isinstance(value, _Missing):
            return FrozenDict()
        with at(key_path(key)):
            return expect_str_map(value)

    def extra(self) -> JSONObject:
        """Every key not read so far, in document order."""
        return FrozenDict((k, v) for k, v in self.obj.items() if k not in self._seen)


def expect_str(value: JSONValue, path: str = "") -> str:
    if not isinstance(value, str):
        raise ManifestError(path, f"expected a string, got {kind_of(value)}")
    return value


def expect_int(value: JSONValue, path: str = "") -> int:
    # bool is an int subclass in Python but never a JSON integer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(path, f"expected an integer, got {kind_of(value)}")
    return value


def expect_list(value: JSONValue, path: str = "") -> tuple[JSONValue, ...]:
    if not isinstance(value, tuple):
        raise ManifestError(path, f"expected an array, got {kind_of(value)}")
    return value


def expect_str_map(value: JSONValue) -> FrozenDict[str, str]:
    if not isinstance(value, FrozenDict):
        raise ManifestError("", f"expected an object of strings, got {kind_of(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ManifestError(key_path(key), f"expected a string, got {kind_of(item)}")
    return FrozenDict((k, str(v)) for k, v in value.items())


def with_extra(out: dict[str, Any], extra: Mapping[str, JSONValue]) -> dict[str, Any]:
    """Append the unknown fields after the known ones, as they were read."""
    for key, value in extra.items():
        if key not in out:
            out[key] = thaw(value)
    return out

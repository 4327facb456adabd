"""Property: whatever the input, the parsers raise ManifestError or return a manifest."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetpack.errors import ManifestError
from jetpack.schema import parse_image_manifest, parse_manifest, parse_pod_manifest

from .conftest import FULL_IMAGE, FULL_POD

PARSERS = (parse_image_manifest, parse_pod_manifest, parse_manifest)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a nested value of ``value``."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += paths(child, (*prefix, i))
    return found


def replaced(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return doc


def check_all(data: Any) -> None:
    for parse in PARSERS:
        try:
            result = parse(data)
        except ManifestError:
            continue
        # Anything accepted must survive its own round trip.
        assert parse(result.dumps()) == result


@FAST
@given(json_values)
def test_arbitrary_json_only_raises_manifest_error(value: Any) -> None:
    check_all(json.dumps(value))
    if isinstance(value, dict):
        check_all(value)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_manifest_error(data: bytes) -> None:
    check_all(data)


@FAST
@given(st.sampled_from([FULL_IMAGE, FULL_POD]), st.data())
def test_mutated_manifests_only_raise_manifest_error(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(paths(doc)[1:]))
    mutated = replaced(doc, path, data.draw(json_values))
    check_all(mutated)
    check_all(json.dumps(mutated).encode())


@FAST
@given(st.sampled_from([FULL_IMAGE, FULL_POD]), st.data())
def test_deleted_fields_only_raise_manifest_error(doc: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from([p for p in paths(doc)[1:] if isinstance(p[-1], str)]))
    mutated = copy.deepcopy(doc)
    parent = mutated
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    check_all(mutated)

"""Package attributes loaded on first use (PEP 562), for the packages whose ``__init__``
would otherwise import modules a pod start does not need."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, submodules: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``submodules`` comes
    from ``package.<submodule>`` when first asked for, then stays in ``namespace``."""

    def __getattr__(name: str) -> Any:
        submodule = submodules.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f"{package}.{submodule}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *submodules})

    return __getattr__, __dir__

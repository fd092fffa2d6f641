"""Package re-exports that load their module on first use (PEP 562).

A package's ``__init__`` names what callers use; importing one light module of
the package (``hublink.link.outbox`` for ``hublink send``) must not load the
heavy ones beside it (``hublink.link.connection`` brings websockets), and
``hublink.config`` imports the message models, which an eager ``__init__`` would
turn into an import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that finds ``name`` in ``package.<exports[name]>``.

    Raises (from the returned function):
        AttributeError: ``name`` is not one of ``exports``.
    """

    def __getattr__(name: str) -> object:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__

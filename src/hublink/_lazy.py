"""Package re-exports that load their module on first use (PEP 562).

A package's ``__init__`` names what callers use; importing one light module of
the package (``hublink.link.outbox`` for ``hublink send``) must not load the
heavy ones beside it (``hublink.link.connection`` brings websockets), and
``hublink.config`` imports the message models, which an eager ``__init__`` would
turn into an import cycle.

Each package gives one table, module -> the names it exports, and re-imports
those names under ``if TYPE_CHECKING:`` as ``from .x import Name as Name`` (the
explicit re-export mypy's strict mode wants; the runtime never runs them)::

    __all__, __getattr__, __dir__ = lazy_exports(__name__, {"outbox": ["Outbox"]})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def lazy_exports(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` from one table.

    Args:
        package: the package's ``__name__``.
        modules: each submodule's name (``"outbox"``) -> the names it exports.

    Returns:
        ``__all__`` (sorted), a ``__getattr__`` that imports
        ``package.<module>`` when one of its names is first asked for, and a
        ``__dir__`` that lists those names before they are loaded.

    Raises (from the returned ``__getattr__``):
        AttributeError: the name is not one of the table's.
    """
    home = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        try:
            module = home[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return sorted(home), __getattr__, __dir__

"""Lazy package exports (PEP 562): a package lists what it offers and where it lives, and the module that
defines a name is imported on first use.

Why: ``recourse-sim --help`` and ``import recourse_sim`` should not pay for torch, Mesa (whose import calls
``inspect.stack``), scipy, pandas or matplotlib before anything needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` serving ``exports`` (name -> defining module)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # cache: the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*importlib.import_module(package).__dict__, *exports})

    return __getattr__, __dir__

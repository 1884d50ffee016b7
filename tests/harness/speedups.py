"""Both implementations of pgguard._speedups, for tests that run against each."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest

from pgguard._speedups import _pure
from pgguard.wire import framer


def _compiled() -> ModuleType | None:
    try:
        return importlib.import_module("pgguard._speedups._compiled")
    except ImportError:
        return None


COMPILED = _compiled()
# "compiled" is skipped, not dropped, when the extension is not built (PGGUARD_PURE
# builds, machines without a compiler): the pure run still happens.
IMPLS = [pytest.param(_pure, id="pure"),
         pytest.param(COMPILED, id="compiled",
                      marks=pytest.mark.skipif(COMPILED is None,
                                               reason="extension not built"))]


@contextmanager
def framer_using(impl: ModuleType) -> Iterator[None]:
    """pgguard.wire.framer walking buffers with *impl*'s functions meanwhile."""
    saved = framer._next_frame, framer._datarow_run_end
    framer._next_frame, framer._datarow_run_end = impl.next_frame, impl.datarow_run_end
    try:
        yield
    finally:
        framer._next_frame, framer._datarow_run_end = saved

"""What every benchmark starts: a throwaway PostgreSQL cluster with the application
database, an OpenBao server as identity provider, and cleanup of all of it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (str(ROOT), str(ROOT / "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

from harness.gateway import prepare_app_database  # noqa: E402
from harness.openbao import BaoServer  # noqa: E402
from harness.postgres import PgCluster, create_cluster  # noqa: E402


@dataclass
class Stack:
    pg: PgCluster
    bao: BaoServer
    workdir: Path
    # Anything with .stop() started by the benchmark, stopped before the servers.
    gateways: list[Any] = field(default_factory=list)


@contextmanager
def bench_stack(prefix: str) -> Iterator[Stack]:
    """Start PostgreSQL (with the app database) and OpenBao; stop and remove them after."""
    pg = create_cluster()
    workdir = Path(tempfile.mkdtemp(prefix=f"pgguard-bench-{prefix}-"))
    (workdir / "bao").mkdir()
    bao = BaoServer(str(workdir / "bao"))
    stack = Stack(pg, bao, workdir)
    try:
        prepare_app_database(pg)
        bao.start()
        yield stack
    finally:
        for gw in stack.gateways:
            gw.stop()
        bao.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(os.path.dirname(pg.datadir), ignore_errors=True)

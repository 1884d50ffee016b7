"""Fail the test run when it leaves ``pgguard-*`` entries in the temp dir.

The session gets a temp dir of its own (``TMPDIR`` and :data:`tempfile.tempdir`, so the
gateways, demos and PostgreSQL clusters the tests start as subprocesses use it too):
other test runs on the same machine create and remove their own ``pgguard-*`` folders at
the same time, and a plain before/after listing of ``/tmp`` would blame this run for
theirs. At the end of the session, after the session fixtures are torn down, every
``pgguard-*`` entry still in it is reported and the run fails; the dir is removed either
way, so a failing run does not fill the disk either.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

PREFIX = "pgguard-"
_state: dict[str, str | None] = {}


def _size_mb(path: str) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total / 1e6


def pytest_sessionstart(session: pytest.Session) -> None:
    outer = tempfile.gettempdir()
    private = tempfile.mkdtemp(prefix="pgguard-tests-", dir=outer)
    # The postgres account (the server's, when the tests run as root) must reach the
    # clusters' folders inside it.
    os.chmod(private, 0o755)
    _state.update(dir=private, tmpdir=os.environ.get("TMPDIR"), tempdir=tempfile.tempdir)
    os.environ["TMPDIR"] = private
    tempfile.tempdir = private


@pytest.hookimpl(trylast=True)  # after the runner's hook has torn the session fixtures down
def pytest_sessionfinish(session: pytest.Session) -> None:
    private = _state.get("dir")
    if not private:
        return
    if _state["tmpdir"] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = _state["tmpdir"]
    tempfile.tempdir = _state["tempdir"]
    left = sorted(n for n in os.listdir(private) if n.startswith(PREFIX))
    if left:
        report = ", ".join(f"{n} ({_size_mb(os.path.join(private, n)):.1f} MB)" for n in left)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the tests left {len(left)} temp entr{'y' if len(left) == 1 else 'ies'} " \
                  f"behind: {report}"
        if reporter is not None:
            reporter.write_line(f"LEFTOVERS: {message}", red=True)
        else:
            print(f"LEFTOVERS: {message}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(private, ignore_errors=True)

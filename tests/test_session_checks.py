"""The session checks: harness.leftovers (no pgguard-* temp entries left) and
harness.logcheck (every log record renders as JSON and as an event= line)."""

from __future__ import annotations

import os
import subprocess
import sys

HARNESS_PARENT = os.path.dirname(os.path.abspath(__file__))

LEAKS = """
import os, tempfile

def test_leaks():
    os.mkdir(os.path.join(tempfile.gettempdir(), "pgguard-leak"))
    open(os.path.join(tempfile.gettempdir(), "pgguard-leak", "f"), "wb").write(b"x" * 10)
"""

CLEAN = """
import os, shutil, tempfile

def test_cleans_up():
    path = tempfile.mkdtemp(prefix="pgguard-pg-")
    shutil.rmtree(path)
"""


def _run(tmp_path, source: str, plugin: str = "harness.leftovers"
         ) -> subprocess.CompletedProcess:
    (tmp_path / "test_it.py").write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HARNESS_PARENT, os.getcwd()]))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", plugin, "-q", "test_it.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_that_leaves_a_pgguard_dir_fails(tmp_path):
    res = _run(tmp_path, LEAKS)
    assert res.returncode == 1, res.stdout
    assert "1 passed" in res.stdout
    assert "LEFTOVERS" in res.stdout and "pgguard-leak" in res.stdout


def test_a_clean_run_passes(tmp_path):
    res = _run(tmp_path, CLEAN)
    assert res.returncode == 0, res.stdout
    assert "LEFTOVERS" not in res.stdout


LOGS_BROKEN = """
import logging

def test_logs():
    logging.getLogger("pgguard.x").info("event=ok a=%s", "fine")
    logging.getLogger("pgguard.x").info("plain words here")
    logging.getLogger("pgguard.x").info("event=bad n=%d", "not a number")
"""


def test_a_record_that_does_not_render_fails_the_run(tmp_path):
    res = _run(tmp_path, LOGS_BROKEN, "harness.logcheck")
    assert res.returncode == 1, res.stdout
    assert "LOG FORMAT: 1 of 3 records do not render" in res.stdout
    assert "without an event name (1 call sites)" in res.stdout


def test_records_that_render_pass(tmp_path):
    res = _run(tmp_path, LOGS_BROKEN.replace('"not a number"', "3"), "harness.logcheck")
    assert res.returncode == 0, res.stdout

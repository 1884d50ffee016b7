"""The session check in harness.leftovers fails a run that leaves pgguard-* temp entries."""

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


def _run(tmp_path, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_it.py").write_text(source)
    env = dict(os.environ, PYTHONPATH=HARNESS_PARENT)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "harness.leftovers", "-q", "test_it.py"],
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

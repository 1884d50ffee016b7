"""``pgguard demo`` as a subprocess: start it, read its banner, stop it (bounded waits).
Shared by test_demo and test_demo_write_config."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


@dataclass
class RunningDemo:
    proc: subprocess.Popen
    out: str
    dsn: str
    token: str
    bob_token: str
    dba_token: str
    approvals_dsn: str
    workdir: str
    pg_port: int
    bao_url: str
    config_path: str


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def _token_after(out: str, who: str) -> str:
    match = re.search(rf"^  {who} \(.*\n\s+(\S+)$", out, re.M)
    assert match, f"no token for {who} in:\n{out}"
    return match.group(1)


def start_demo(*args: str) -> RunningDemo:
    """Start ``pgguard demo --port 0`` and parse its banner (bounded wait)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgguard", "demo", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    out = ""
    try:
        while "pgguard audit replay" not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"demo printed no banner in {START_TIMEOUT_S:.0f} s:\n{out}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                proc.wait(timeout=STOP_TIMEOUT_S)
                raise AssertionError(f"demo exited ({proc.returncode}) before its banner:\n"
                                     f"{out}\n{proc.stderr.read()}")
            out += line
        dsn = re.search(r"^DSN: (\S+)$", out, re.M).group(1)
        psql = re.search(r'^  PGPASSWORD=(\S+) psql "(\S+)"$', out, re.M)
        approvals = re.search(r'PGPASSWORD=(\S+) pgguard approvals --gateway "(\S+)"', out)
        return RunningDemo(
            proc=proc, out=out, dsn=dsn, token=psql.group(1),
            bob_token=_token_after(out, "bob"), dba_token=approvals.group(1),
            approvals_dsn=approvals.group(2),
            workdir=re.search(r"^  work dir\s+(\S+)$", out, re.M).group(1),
            pg_port=int(re.search(r"^  PostgreSQL\s+127\.0\.0\.1:(\d+)", out, re.M).group(1)),
            bao_url=re.search(r"^  OpenBao\s+(\S+)", out, re.M).group(1),
            config_path=re.search(r"audit replay --config (\S+) SESSION", out).group(1))
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, then (after 20 s) SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise

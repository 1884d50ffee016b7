"""Reading what a recording gateway wrote (segments, records, `pgguard audit`) and the
recorded gateway's config: shared by test_recording_e2e and test_session_encodings."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import tomli_w

from harness.gateway import ThreadGateway

REPO = Path(__file__).resolve().parents[2]
KEY = b"recording-e2e-test-key-0123456789"
MAX_ROWS = 20


# --- helpers ---------------------------------------------------------------------------

def segments(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".pgglog"))


def read_segment(path: Path) -> list[tuple[int, int, dict[str, Any]]]:
    """(start offset, end offset, record) of each record of one segment file."""
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    out = []
    pos = 0
    for rec in unpacker:
        end = unpacker.tell()
        out.append((pos, end, rec))
        pos = end
    return out


def all_records(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """(segment file name, record) of every record under *directory*, in log order."""
    out = []
    for path in segments(directory):
        out += [(path.name, rec) for _, _, rec in read_segment(path)]
    return out


def session_records(directory: Path, sid: str) -> list[dict[str, Any]]:
    return [rec for _, rec in all_records(directory) if rec["session"] == sid]


def audit_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgguard", "audit", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    with open(path, "wb") as f:
        tomli_w.dump(cfg, f)
    return path


def recorded_config(make_config, tmp: Path, **recording: Any) -> dict[str, Any]:
    key = tmp / "audit.key"
    key.write_bytes(KEY + b"\n")
    rec = {"dir": str(tmp / "rec"), "key_file": str(key), "max_rows": MAX_ROWS}
    rec.update(recording)
    cfg = make_config(recording=rec)
    # A second connection to the same database, to tell sessions apart by connection.
    other = copy.deepcopy(cfg["connections"][0])
    other["name"] = "otherdb"
    cfg["connections"].append(other)
    return cfg


# --- one recorded gateway run shared by the log-reading tests -------------------------

class Run:
    """What the scripted sessions did, to compare the log with."""

    def __init__(self, directory: Path, config_path: Path):
        self.dir = directory
        self.config_path = config_path
        self.sids: dict[str, str] = {}
        self.marks: dict[str, float] = {}


def wait_sessions_ended(gw: ThreadGateway, timeout: float = 10) -> None:
    """Sessions end asynchronously after the client leaves: wait for their last record."""
    deadline = time.monotonic() + timeout
    while gw.run_sync(lambda: len(gw.gateway.all_sessions)) and time.monotonic() < deadline:
        time.sleep(0.02)


def _session_id(gw: ThreadGateway, user: str) -> str:
    def find() -> str:
        (s,) = [s for s in gw.gateway.all_sessions if s.user == user]
        return s.session_id
    return gw.run_sync(find)

"""What session recording costs: throughput through pgguard with recording on vs off.

One run starts a throwaway PostgreSQL cluster and an OpenBao dev server (the IdP that signs
the OIDC token), initialises pgbench's tables (scale 1), and runs ``pgguard serve`` as a
subprocess (log level warning, static credentials) once per mode:

* ``off``: no ``[recording]`` section, the baseline;
* ``on (fsync=batch)``: the default (records enqueued before the result that completes them
  reaches the client, written within the writer's gathering delay of a few milliseconds,
  fsync every ``fsync_interval_s``);
* ``on (fsync=always)``: every batch fsynced before the client gets the result.

For each mode it measures

* pgbench select-only TPS: ``pgbench -n -S -M extended -c 4 -T 5`` through the gateway;
* a 10,000-row SELECT with psycopg (text format, 3 columns), rows/s over ``--reps``
  repetitions,

and prints a table with the ratios to ``off``, and the gateway process's CPU time per
pgbench transaction (steadier than TPS on a shared or small machine, where the gateway,
PostgreSQL and pgbench compete for the same CPUs). One run per mode (no averaging across
runs): expect noise.

    python benchmarks/bench_recording.py [--seconds 5] [--clients 4] [--reps 20]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import tomli_w
from common import ROOT, bench_stack
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER, base_config, free_port

BIG_SELECT = "SELECT g, 'row ' || g, g * 1.5 FROM generate_series(1, 10000) g"


class Served:
    """``pgguard serve`` in a subprocess with a quiet log (the benchmark times the gateway,
    not its debug logging)."""

    def __init__(self, cfg: dict[str, Any], workdir: Path):
        cfg["listen"]["port"] = self.port = free_port()
        self.path = workdir / "pgguard.toml"
        with open(self.path, "wb") as f:
            tomli_w.dump(cfg, f)
        self.log = open(workdir / "pgguard.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgguard", "serve", "--config", str(self.path),
             "--log-level", "warning"], stdout=self.log, stderr=self.log,
            stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgguard serve exited, see {workdir / 'pgguard.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pgguard serve did not listen within 30 s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pgbench_tps(port: int, jwt: str, seconds: int, clients: int) -> tuple[float, int]:
    """Select-only TPS of pgbench through the gateway (excluding connection setup), and
    the number of transactions."""
    env = dict(os.environ, PGPASSWORD=jwt, PGCONNECT_TIMEOUT="10")
    res = subprocess.run(
        ["pgbench", "-n", "-S", "-M", "extended", "-c", str(clients), "-j", str(clients),
         "-T", str(seconds), "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "appdb"],
        capture_output=True, text=True, env=env, timeout=seconds + 60,
        stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"pgbench failed: {res.stderr}")
    m = re.search(r"tps = ([\d.]+) \((?:without initial connection time|excluding)", res.stdout)
    if m is None:
        m = re.search(r"tps = ([\d.]+)", res.stdout)
    n = re.search(r"number of transactions actually processed: (\d+)", res.stdout)
    assert m is not None and n is not None, res.stdout
    return float(m.group(1)), int(n.group(1))


def big_select_rows_per_s(port: int, jwt: str, reps: int) -> float:
    """Rows/s of a 10,000-row SELECT fetched with psycopg through the gateway."""
    dsn = f"host=127.0.0.1 port={port} dbname=appdb user=bench sslmode=disable"
    with psycopg.connect(dsn, password=jwt, autocommit=True) as conn:
        assert len(conn.execute(BIG_SELECT).fetchall()) == 10000  # warm-up
        started = time.perf_counter()
        for _ in range(reps):
            conn.execute(BIG_SELECT).fetchall()
        elapsed = time.perf_counter() - started
    return 10000 * reps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="pgbench -T")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c")
    parser.add_argument("--reps", type=int, default=20, help="10,000-row SELECTs per mode")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with bench_stack("recording") as st:
        pg, bao, workdir = st.pg, st.bao, st.workdir
        env = dict(os.environ, PGPASSWORD=APP_PASSWORD)
        subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", pg.host, "-p", str(pg.port),
                        "-U", APP_USER, APP_DB], check=True, capture_output=True, env=env,
                       timeout=120, stdin=subprocess.DEVNULL)
        jwt = bao.issue_token("bench", ["owners"], ttl="30m")
        key = workdir / "audit.key"
        key.write_bytes(os.urandom(32).hex().encode())

        modes: list[tuple[str, dict[str, Any] | None]] = [
            ("off", None),
            ("on (fsync=batch)", {"fsync": "batch"}),
            ("on (fsync=always)", {"fsync": "always"}),
        ]
        results = []
        for i, (name, recording) in enumerate(modes):
            sections: dict[str, Any] = {}
            if recording is not None:
                sections["recording"] = dict(recording, dir=str(workdir / f"rec{i}"),
                                             key_file=str(key))
            cfg = base_config(pg, bao.identity_config(), **sections)
            run_dir = workdir / f"run{i}"
            run_dir.mkdir()
            served = Served(cfg, run_dir)
            try:
                cpu0 = cpu_seconds(served.proc.pid)
                tps, txns = pgbench_tps(served.port, jwt, args.seconds, args.clients)
                cpu_per_txn = (cpu_seconds(served.proc.pid) - cpu0) / txns * 1e6
                rows = big_select_rows_per_s(served.port, jwt, args.reps)
            finally:
                served.stop()
            results.append((name, tps, cpu_per_txn, rows))

        base_tps, base_rows = results[0][1], results[0][3]
        print(f"recording cost, one run per mode: pgbench -S -M extended -c {args.clients} "
              f"-T {args.seconds}; 10,000-row SELECT x {args.reps} (psycopg, text); "
              f"{os.cpu_count()} CPUs")
        print(f"{'recording':<20}{'pgbench TPS':>13}{'ratio':>8}{'gw CPU us/txn':>15}"
              f"{'rows/s':>12}{'ratio':>8}")
        for name, tps, cpu, rows in results:
            print(f"{name:<20}{tps:>13.0f}{tps / base_tps:>8.2f}{cpu:>15.0f}{rows:>12.0f}"
                  f"{rows / base_rows:>8.2f}")


if __name__ == "__main__":
    main()

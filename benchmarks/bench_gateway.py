"""Throughput of pgguard next to direct PostgreSQL and pgbouncer, in one run.

    python benchmarks/bench_gateway.py [--seconds 5] [--variants core,policy,...]

Starts a throwaway PostgreSQL cluster, an OpenBao IdP (for the token), pgbouncer (the
Debian package, transaction pooling) and `pgguard serve` as a subprocess, then runs:

- pgbench select-only (-S), -M simple and -M extended, with 1 and 8 clients;
- a 10,000-row SELECT fetched with psycopg (rows/s).

Every figure is also given as a ratio to direct PostgreSQL. Variants of pgguard (each a
separate gateway process): `nopolicy` (statement control switched off, benchmarks only),
`core` (every statement classified and allowed; nothing to mask or record), `masking`
(one masked column, plus detectors), `recording` (session recording on, fsync=batch).
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import time

import psycopg
from common import bench_stack
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER, ProcessGateway, base_config, free_port

HERE = os.path.dirname(os.path.abspath(__file__))

ROWS_SQL = "SELECT g, md5(g::text) AS h, g * 2 AS d, now() AS t FROM generate_series(1, 10000) g"


def pgbench(pg, host, port, user, password, mode, clients, seconds) -> float:
    env = dict(os.environ, PGPASSWORD=password)
    res = subprocess.run(
        [os.path.join(pg.bindir, "pgbench"), "-n", "-S", "-M", mode, "-c", str(clients),
         "-j", str(min(clients, 2)), "-T", str(seconds), "-h", host, "-p", str(port),
         "-U", user, APP_DB if port == pg.port else "appdb"],
        capture_output=True, text=True, env=env, timeout=seconds + 60,
        stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"pgbench failed: {res.stderr[-500:]}")
    m = re.search(r"tps = ([0-9.]+)", res.stdout)
    return float(m.group(1)) if m else 0.0


def rows_per_second(dsn: str, password: str, seconds: float) -> float:
    with psycopg.connect(dsn, password=password) as conn:
        conn.execute(ROWS_SQL).fetchall()  # warm up caches on every hop
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            n += len(conn.execute(ROWS_SQL).fetchall())
        return n / (time.perf_counter() - started)


def start_pgbouncer(pg, workdir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    d = os.path.join(workdir, "pgbouncer")
    os.makedirs(d)
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write(f'"{APP_USER}" "{APP_PASSWORD}"\n')
    with open(os.path.join(d, "pgbouncer.ini"), "w") as f:
        f.write(f"""[databases]
{APP_DB} = host={pg.host} port={pg.port} dbname={APP_DB}
appdb = host={pg.host} port={pg.port} dbname={APP_DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = scram-sha-256
auth_file = {d}/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
logfile = {d}/pgbouncer.log
pidfile = {d}/pgbouncer.pid
unix_socket_dir =
""")
    kwargs = {}
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for root, _dirs, files in os.walk(d):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid}
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    proc = subprocess.Popen([binary, os.path.join(d, "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=APP_USER, dbname=APP_DB,
                                 password=APP_PASSWORD, connect_timeout=2):
                return proc, port
        except psycopg.OperationalError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("pgbouncer did not start")


def variant_config(name: str, pg, bao, workdir: str) -> dict:
    cfg = base_config(pg, bao.identity_config())
    cfg["connections"][0]["grants"] = [{"groups": ["bench"], "read": "allow", "write": "allow",
                                        "ddl": "allow", "unknown": "allow"}]
    if name == "masking":
        key = os.path.join(workdir, "mask.key")
        with open(key, "w") as f:
            f.write("bench-mask-key")
        cfg["masking"] = {"hash_key_file": key,
                          "rules": [{"columns": ["*.pgbench_accounts.filler"],
                                     "strategy": "redact"}]}
    if name == "recording":
        key = os.path.join(workdir, "audit.key")
        with open(key, "w") as f:
            f.write("bench-audit-key")
        cfg["recording"] = {"dir": os.path.join(workdir, "sessions"), "key_file": key,
                            "fsync": "batch"}
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--variants", default="nopolicy,core",
                    help="comma-separated pgguard variants: nopolicy,core,masking,recording")
    args = ap.parse_args()
    secs = max(1, int(args.seconds))
    with bench_stack("gateway") as st:
        pg, bao, workdir, gateways = st.pg, st.bao, str(st.workdir), st.gateways
        env = dict(os.environ, PGPASSWORD=APP_PASSWORD)
        subprocess.run([os.path.join(pg.bindir, "pgbench"), "-i", "-s", "10", "-q", "-h",
                        pg.host, "-p", str(pg.port), "-U", APP_USER, APP_DB], env=env,
                       check=True, capture_output=True, timeout=300)
        token = bao.issue_token("bench", ["bench"], ttl="2h")
        bouncer, bport = start_pgbouncer(pg, workdir)
        gateways.append(_Stoppable(bouncer))
        targets = [("direct", pg.host, pg.port, APP_USER, APP_PASSWORD),
                   ("pgbouncer", "127.0.0.1", bport, APP_USER, APP_PASSWORD)]
        for name in [v for v in args.variants.split(",") if v]:
            vdir = os.path.join(workdir, name)
            os.makedirs(vdir)
            gw = ProcessGateway(variant_config(name, pg, bao, vdir), vdir)
            gw.command = [sys.executable, os.path.join(HERE, "serve_variant.py"),
                          "--config", gw.path] + (["--no-policy"] if name == "nopolicy" else [])
            gw.start()
            gateways.append(gw)
            targets.append((f"pgguard-{name}", "127.0.0.1", gw.port, "bench", token))

        results: dict[str, dict[str, float]] = {}
        for label, host, port, user, password in targets:
            r = results.setdefault(label, {})
            for mode in ("simple", "extended"):
                for clients in (1, 8):
                    r[f"{mode} c={clients}"] = pgbench(pg, host, port, user, password, mode,
                                                       clients, secs)
            db = APP_DB if label in ("direct", "pgbouncer") else "appdb"
            dsn = f"host={host} port={port} user={user} dbname={db} sslmode=disable"
            r["10k rows/s"] = rows_per_second(dsn, password, secs)

        cols = list(next(iter(results.values())).keys())
        print(f"\npgbench -S TPS and 10,000-row SELECT rows/s ({secs} s each); "
              "(ratio to direct)")
        print(f"{'target':<20}" + "".join(f"{c:>22}" for c in cols))
        base = results["direct"]
        for label, r in results.items():
            cells = "".join(f"{r[c]:>12.0f} ({r[c] / base[c]:.2f})".rjust(22) for c in cols)
            print(f"{label:<20}{cells}")
        return 0


class _Stoppable:
    """A subprocess with the .stop() the benchmark stack calls at the end."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


if __name__ == "__main__":
    sys.exit(main())

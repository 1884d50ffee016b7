"""Throughput of pgguard next to direct PostgreSQL and pgbouncer, in one interleaved run.

    python benchmarks/bench_gateway.py [--seconds 3] [--rounds 3] [--variants core,full]
        [--workloads simple,extended,rows] [--clients 1,8] [--storm 50] [--no-write]
        [--profile DIR]

Starts a throwaway PostgreSQL cluster (pgbench scale 10), an OpenBao IdP (for the token),
pgbouncer (the Debian package, transaction pooling; `apt-get install pgbouncer`) and one
`pgguard serve` subprocess per variant, then, for every round, runs each workload at each
client count against every target, the targets' order rotated each round so none is always
measured first on this noisy machine:

- ``simple``, ``extended``: pgbench select-only (``-S -M simple|extended``), TPS;
- ``rows``: pgbench running ``SELECT * FROM pgbench_accounts LIMIT 10000`` (C client), TPS;
- a storm of ``--storm`` concurrent connects (psycopg, one thread each): median and p99.

Each cell is the median over rounds, as a ratio to direct PostgreSQL, with the proxy's CPU
per transaction (utime + stime of the proxy process from /proc over the run, divided by the
transactions pgbench completed). The table goes to docs/benchmarks.md between the
``bench_gateway`` markers unless --no-write. With --profile, each pgguard variant is then
sampled by py-spy under each workload at the largest client count and the top frames are
printed (self time and inclusive), the collapsed stacks kept in DIR.

Variants of pgguard (each a separate gateway process): ``nopolicy`` (statement control
switched off, benchmarks only), ``core`` (every statement classified and allowed; nothing
to mask or record), ``full`` (statement control, a masking rule, all detectors and
recording with ``fsync = "batch"``, as a real deployment runs; nothing in pgbench's results
is masked), ``full-gate`` (full with the detectors' byte gate switched to the compiled
twin, the switch proposed for masking/detectors.py), ``masked`` (full plus one masked
column of pgbench_accounts).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import math
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psycopg
from common import ROOT, bench_stack
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER, ProcessGateway, base_config, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- bench_gateway:begin -->", "<!-- bench_gateway:end -->"
ROWS_SQL = "SELECT * FROM pgbench_accounts LIMIT 10000;\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_LINE = re.compile(r":\d+\)$")
IDLE_WORKER = "WorkerThread._work (trio/_core/_thread_cache.py:211)"
WORKLOADS = {"simple": "select-only simple", "extended": "select-only extended",
             "rows": "10,000-row SELECT"}


@dataclass
class Target:
    label: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    pid: int | None = None          # the proxy process whose CPU is counted
    # (workload, clients) -> [(tps, cpu seconds per transaction or None), ...] over rounds
    runs: dict[tuple[str, int], list[tuple[float, float | None]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    storm: list[float] = field(default_factory=list)


def proc_cpu(pid: int | None) -> float | None:
    """utime + stime of *pid* (all its threads) in seconds, None without a pid."""
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pgbench(pg, t: Target, workload: str, clients: int, seconds: int, script: str
            ) -> tuple[float, int]:
    """(TPS, transactions) of one pgbench run against *t*."""
    env = dict(os.environ, PGPASSWORD=t.password)
    how = ["-f", script, "-M", "simple"] if workload == "rows" else ["-S", "-M", workload]
    res = subprocess.run(
        [os.path.join(pg.bindir, "pgbench"), "-n", *how, "-c", str(clients),
         "-j", str(min(clients, 2)), "-T", str(seconds), "-h", t.host, "-p", str(t.port),
         "-U", t.user, t.dbname],
        capture_output=True, text=True, env=env, timeout=seconds + 120,
        stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"pgbench against {t.label} failed: {res.stderr[-500:]}")
    tps = re.search(r"tps = ([0-9.]+)", res.stdout)
    n = re.search(r"actually processed: (\d+)", res.stdout)
    return (float(tps.group(1)) if tps else 0.0), (int(n.group(1)) if n else 0)


def run_once(pg, t: Target, workload: str, clients: int, seconds: int, script: str) -> None:
    before = proc_cpu(t.pid)
    tps, n = pgbench(pg, t, workload, clients, seconds, script)
    after = proc_cpu(t.pid)
    cpu = None if before is None or after is None or not n else (after - before) / n
    t.runs[(workload, clients)].append((tps, cpu))


def storm(t: Target, n: int) -> list[float]:
    """Seconds each of *n* concurrent connects took until the connection was ready."""
    dsn = (f"host={t.host} port={t.port} user={t.user} dbname={t.dbname} sslmode=disable "
           "connect_timeout=30")

    def one() -> float:
        started = time.perf_counter()
        conn = psycopg.connect(dsn, password=t.password)
        elapsed = time.perf_counter() - started
        conn.close()
        return elapsed

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: one(), range(n)))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


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
    if name in ("masking", "full", "full-gate", "masked"):
        key = os.path.join(workdir, "mask.key")
        with open(key, "w") as f:
            f.write("bench-mask-key")
        # full: a rule on a table pgbench does not read, so results are scanned by every
        # detector and nothing is masked; masked: one pgbench_accounts column too.
        column = "*.pgbench_accounts.filler" if name in ("masking", "masked") \
            else "*.accounts.owner"
        rules = [{"columns": [column], "strategy": "redact"}]
        cfg["masking"] = {"hash_key_file": key, "rules": rules}
    if name in ("recording", "full", "full-gate", "masked"):
        key = os.path.join(workdir, "audit.key")
        with open(key, "w") as f:
            f.write("bench-audit-key")
        cfg["recording"] = {"dir": os.path.join(workdir, "sessions"), "key_file": key,
                            "fsync": "batch"}
    return cfg


def cell(t: Target, base: Target, key: tuple[str, int]) -> str:
    runs = t.runs.get(key)
    if not runs:
        return "–"
    tps = statistics.median(r[0] for r in runs)
    ratio = tps / statistics.median(r[0] for r in base.runs[key])
    cpus = [r[1] for r in runs if r[1] is not None]
    if not cpus:
        return f"{tps:.0f} ({ratio:.2f})"
    cpu = statistics.median(cpus) * 1e6
    unit = f"{cpu / 1000:.1f} ms" if cpu >= 1000 else f"{cpu:.0f} µs"
    return f"{tps:.0f} ({ratio:.2f}, {unit})"


def table(targets: list[Target], keys: list[tuple[str, int]], storm_n: int,
          rounds: int, seconds: int) -> str:
    base = targets[0]
    head = ["target"] + [f"{WORKLOADS[w]} c={c}" for w, c in keys]
    if storm_n:
        head.append(f"{storm_n}-connect storm median / p99")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in targets:
        row = [t.label] + [cell(t, base, k) for k in keys]
        if storm_n:
            s = sorted(t.storm)
            row.append(f"{statistics.median(s) * 1e3:.1f} / {percentile(s, 0.99) * 1e3:.1f} ms"
                       if s else "–")
        lines.append("| " + " | ".join(row) + " |")
    note = (f"TPS, median of {rounds} interleaved rounds of {seconds} s each; in brackets "
            "the ratio to direct PostgreSQL and the proxy's CPU per transaction (/proc "
            "utime+stime of the proxy process / transactions). pgbench scale 10.")
    return note + "\n\n" + "\n".join(lines) + "\n"


def write_doc(text: str) -> None:
    with open(DOC) as f:
        doc = f.read()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## Latest `bench_gateway.py` run\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(doc)


def summarize_profile(path: str, top: int = 15) -> str:
    """Top frames by self time and inclusive time from py-spy's collapsed (raw) stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            if IDLE_WORKER in frames[-1]:
                continue      # trio's idle thread-cache workers, waiting on their lock
            total += n
            # By function (file, no line number): a loop's lines add up to one figure.
            funcs = [_LINE.sub(")", fr) for fr in frames]
            own[funcs[-1]] += n
            for fr in set(funcs):
                incl[fr] += n
    if not total:
        return "  (no samples)\n"
    out = [f"  {total} samples (idle trio worker threads left out); self:"]
    out += [f"  {n * 100 / total:5.1f}%  {fr}" for fr, n in own.most_common(top)]
    out.append("  inclusive:")
    out += [f"  {n * 100 / total:5.1f}%  {fr}" for fr, n in incl.most_common(top + 10)]
    return "\n".join(out) + "\n"


def profile(pg, targets: list[Target], workloads: list[str], clients: int, seconds: int,
            script: str, outdir: str) -> None:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(outdir, exist_ok=True)
    for t in targets:
        if not t.label.startswith("pgguard"):
            continue
        for w in workloads:
            path = os.path.join(outdir, f"{t.label}-{w}-c{clients}.txt")
            spy_proc = subprocess.Popen(
                [spy, "record", "--format", "raw", "--rate", "200", "-o", path,
                 "--pid", str(t.pid), "--duration", str(seconds + 1)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            pgbench(pg, t, w, clients, seconds, script)
            spy_proc.wait(seconds + 60)
            print(f"\npy-spy, {t.label}, {WORKLOADS[w]} c={clients} ({path}):")
            print(summarize_profile(path), end="")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=3, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="core,full",
                    help="comma-separated pgguard variants: nopolicy,core,full,full-gate,"
                         "masked,masking,recording")
    ap.add_argument("--workloads", default="simple,extended,rows")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--storm", type=int, default=50, help="concurrent connects (0: none)")
    ap.add_argument("--no-pgbouncer", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs alone")
    ap.add_argument("--profile", metavar="DIR", help="py-spy each variant afterwards")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run each variant from this source tree (e.g. `git archive` "
                         "of main), labelled 'before', for before/after ratios in one run")
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    clients = [int(c) for c in args.clients.split(",") if c]
    keys = [(w, c) for w in workloads for c in clients]
    with bench_stack("gateway") as st:
        pg, bao, workdir, gateways = st.pg, st.bao, str(st.workdir), st.gateways
        env = dict(os.environ, PGPASSWORD=APP_PASSWORD)
        subprocess.run([os.path.join(pg.bindir, "pgbench"), "-i", "-s", "10", "-q", "-h",
                        pg.host, "-p", str(pg.port), "-U", APP_USER, APP_DB], env=env,
                       check=True, capture_output=True, timeout=300)
        script = os.path.join(workdir, "rows.sql")
        with open(script, "w") as f:
            f.write(ROWS_SQL)
        os.chmod(workdir, 0o755)
        token = bao.issue_token("bench", ["bench"], ttl="2h")
        targets = [Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD, APP_DB)]
        if not args.no_pgbouncer:
            bouncer, bport = start_pgbouncer(pg, workdir)
            gateways.append(_Stoppable(bouncer))
            targets.append(Target("pgbouncer", "127.0.0.1", bport, APP_USER, APP_PASSWORD,
                                  APP_DB, bouncer.pid))
        runs = [(name, None) for name in args.variants.split(",") if name]
        if args.baseline:
            runs = [r for name, _ in runs
                    for r in ((name, args.baseline), (name, None))
                    if r[1] is None or name != "full-gate"]
        for name, root in runs:
            label = f"pgguard {name}" + (" (before)" if root else "")
            vdir = os.path.join(workdir, label.replace(" ", "_").replace("(", "").replace(")", ""))
            os.makedirs(vdir)
            gw = ProcessGateway(variant_config(name, pg, bao, vdir), vdir)
            gw.command = [sys.executable, os.path.join(HERE, "serve_variant.py"),
                          "--config", gw.path] + (["--no-policy"] if name == "nopolicy" else [])
            if name == "full-gate":
                gw.command.append("--byte-gate")
            if root:
                gw.command += ["--root", root]
            gw.start()
            gateways.append(gw)
            assert gw.proc is not None
            targets.append(Target(label, "127.0.0.1", gw.port, "bench", token, "appdb",
                                  gw.proc.pid))
        for t in targets:        # warm every hop (catalogs, caches, pgbouncer's pool)
            for w in workloads:
                pgbench(pg, t, w, max(clients), 1, script)
        secs = max(1, args.seconds)
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for w, c in keys:
                for t in order:
                    run_once(pg, t, w, c, secs, script)
            if args.storm:
                for t in order:
                    t.storm.extend(storm(t, args.storm))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        text = table(targets, keys, args.storm, args.rounds, secs)
        print("\n" + text)
        if not args.no_write:
            write_doc(text)
            print(f"written to {DOC}")
        if args.profile:
            profile(pg, targets, workloads, max(clients), secs, script, args.profile)
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

"""Run psycopg 3's own test suite directly and through an allow-all gateway; compare.

Issue 11 asks that the two runs differ only by tests that need a database password login.
This starts a throwaway PostgreSQL and OpenBao (``benchmarks/common.bench_stack``), a gateway whose grant
allows every category, and runs psycopg's ``tests/`` twice with pytest, once with a DSN to
PostgreSQL (as the role the gateway logs in as) and once with a DSN to the gateway (an
OpenBao token as the password). It prints both counts and the tests whose outcome differs.

    python benchmarks/psycopg_suite.py --psycopg-src DIR --python VENV/bin/python [-k EXPR]
        [FILES ...]

``DIR`` holds psycopg's ``tests/`` folder (a checkout of the release that ``VENV`` has
installed, or a close one); ``VENV`` has psycopg, pytest, anyio and pproxy. Files are
relative to ``DIR`` (default: ``tests``). Not part of the suite: it takes many minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from common import bench_stack
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER, ThreadGateway, base_config

GROUP = "everything"
USER = "psy"


def _outcomes(junit: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            out[name] = "failed"
        elif "skipped" in kinds:
            out[name] = "skipped"
        else:
            out[name] = "passed"
    return out


def _run(python: str, src: str, dsn: str, files: list[str], extra: list[str],
         junit: str) -> dict[str, str]:
    env = dict(os.environ, PSYCOPG_TEST_DSN=dsn)
    env.pop("PYTHONPATH", None)
    # psycopg's conftest uses pytest's cache (a segfault marker): a throwaway one, then.
    cmd = [python, "-m", "pytest", *files, "-p", "no:randomly",
           "-o", f"cache_dir={junit}.cache", "-q", "--tb=line", "--timeout=120",
           f"--junitxml={junit}", *extra]
    with open(f"{junit}.log", "wb") as log:
        subprocess.run(cmd, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=False)
    if not os.path.exists(junit):
        sys.exit(Path(f"{junit}.log").read_text()[-3000:])
    return _outcomes(junit)


def _count(outcomes: dict[str, str]) -> str:
    values = list(outcomes.values())
    return ", ".join(f"{values.count(k)} {k}" for k in ("passed", "failed", "skipped"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psycopg-src", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--only", choices=["direct", "gateway"],
                        help="run one side; the other's outcomes come from --save")
    parser.add_argument("--save", help="a folder for each run's outcomes (JSON)")
    parser.add_argument("files", nargs="*", default=["tests"])
    args, extra = parser.parse_known_args()
    results: dict[str, dict[str, str]] = {}
    with bench_stack("psycopg-suite") as st:
        pg, bao, tmp = st.pg, st.bao, str(st.workdir)
        cfg = base_config(pg, bao.identity_config())
        cfg["connections"][0]["grants"] = [{
            "groups": [GROUP], "read": "allow", "write": "allow", "ddl": "allow",
            "privileged": "allow", "txn": "allow", "unknown": "allow"}]
        gw = ThreadGateway(cfg).start()
        st.gateways.append(gw)
        token = bao.issue_token(USER, [GROUP], ttl="4h")
        runs = {
            "direct": (f"host={pg.host} port={pg.port} dbname={APP_DB} "
                       f"user={APP_USER} password={APP_PASSWORD} sslmode=disable"),
            "gateway": gw.dsn(USER) + f" password={token}",
        }
        for name, dsn in runs.items():
            if args.only and name != args.only:
                continue
            junit = os.path.join(tmp, f"{name}.xml")
            results[name] = _run(args.python, args.psycopg_src, dsn, args.files, extra, junit)
            print(f"{name}: {_count(results[name])}", flush=True)
            if args.save:
                Path(args.save, f"{name}.json").write_text(json.dumps(results[name]))
    for name in ("direct", "gateway"):
        saved = Path(args.save or ".", f"{name}.json")
        if name not in results and args.save and saved.exists():
            results[name] = json.loads(saved.read_text())
            print(f"{name} (saved): {_count(results[name])}")
    if len(results) == 2:
        direct, through = results["direct"], results["gateway"]
        for test in sorted(set(direct) | set(through)):
            if direct.get(test) != through.get(test):
                print(f"  {test}: direct {direct.get(test)}, gateway {through.get(test)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

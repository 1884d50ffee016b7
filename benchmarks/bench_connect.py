"""Connect time through pgguard with Vault credentials, next to a direct PostgreSQL connect.

One run starts a throwaway PostgreSQL cluster and an OpenBao dev server (the IdP that signs
the OIDC token and the database secrets engine), then times ``psycopg.connect()`` until the
connection is ready, for:

* ``direct``: straight to PostgreSQL (SCRAM), the floor;
* ``pgguard static``: token check + upstream login with a static password (no Vault);
* ``pgguard vault session``: token check + a new Vault lease (a new PostgreSQL role) +
  upstream login, the lease revoked after each disconnect;
* ``pgguard vault user``: the same with ``reuse = "user"``: the lease of the user's first
  session is reused, so a connect costs token check + upstream login.

    python benchmarks/bench_connect.py [--n 100] [--warmup 5]

Each client closes its connection before the next connect (the revocation after a
``session`` disconnect runs in the gateway meanwhile, as it would in production).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import time
from collections.abc import Callable

import psycopg
from common import bench_stack
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER, ThreadGateway, base_config

ROLE_SQL = ("CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            "VALID UNTIL '{{expiration}}' IN ROLE app_owner;")
POLICY = """
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def measure(connect: Callable[[], psycopg.Connection], n: int, warmup: int) -> list[float]:
    """Seconds per ``connect()`` (ready for queries), *n* times after *warmup* rounds."""
    times = []
    for i in range(warmup + n):
        started = time.perf_counter()
        conn = connect()
        elapsed = time.perf_counter() - started
        conn.close()
        if i >= warmup:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="timed connects per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed connects first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the table only

    with bench_stack("connect") as st:
        pg, bao, workdir, gateways = st.pg, st.bao, str(st.workdir), st.gateways
        bao.enable_database_secrets(pg, roles={"rw": ROLE_SQL}, default_ttl="10m",
                                    max_ttl="1h")
        client = bao.client()
        client.sys.create_or_update_policy("pgguard-bench", POLICY)
        token_file = os.path.join(workdir, "vault-token")
        with open(token_file, "w") as f:
            f.write(client.auth.token.create(policies=["pgguard-bench"],
                                             ttl="1h")["auth"]["client_token"])
        jwt = bao.issue_token("bench", ["engineers"], ttl="30m")

        def gateway(vault: dict | None) -> ThreadGateway:
            sections: dict = {}
            if vault is not None:
                static = base_config(pg, bao.identity_config())["connections"][0]
                sections["vault"] = dict(vault, url=bao.url, token_file=token_file)
                sections["connections"] = [{
                    "name": "appdb", "host": static["host"], "port": static["port"],
                    "dbname": APP_DB, "sslmode": "disable",
                    "grants": [{"groups": ["engineers"], "vault_role": "rw"}]}]
            gw = ThreadGateway(base_config(pg, bao.identity_config(), **sections)).start()
            gateways.append(gw)
            return gw

        def via(gw: ThreadGateway) -> Callable[[], psycopg.Connection]:
            return lambda: psycopg.connect(gw.dsn("bench"), password=jwt)

        modes: list[tuple[str, Callable[[], psycopg.Connection]]] = [
            ("direct PostgreSQL", lambda: psycopg.connect(
                pg.dsn(APP_DB, user=APP_USER, password=APP_PASSWORD))),
            ("pgguard static", via(gateway(None))),
            ("pgguard vault session", via(gateway({"reuse": "session"}))),
            ("pgguard vault user", via(gateway({"reuse": "user", "reuse_ttl_s": 600}))),
        ]
        rows = []
        for name, connect in modes:
            times = sorted(measure(connect, args.n, args.warmup))
            rows.append((name, len(times), statistics.median(times) * 1e3,
                         percentile(times, 0.99) * 1e3))
        print(f"connect time, {args.n} connects per mode after {args.warmup} warm-up "
              f"(psycopg, loopback, no TLS)")
        print(f"{'mode':<24}{'n':>6}{'median ms':>12}{'p99 ms':>10}")
        for name, count, median, p99 in rows:
            print(f"{name:<24}{count:>6}{median:>12.2f}{p99:>10.2f}")


if __name__ == "__main__":
    main()

"""Rows/s of a 10,000-row SELECT through pgguard with masking, next to direct PostgreSQL.

One run starts a throwaway PostgreSQL cluster and an OpenBao dev server (the IdP), loads a
10-column table (int, 6 text, varchar, float8, timestamptz; one text column holds an
e-mail address) and times ``SELECT * FROM bench_rows`` fetched whole by psycopg 3 (text
format, simple protocol) for:

* ``direct PostgreSQL``: the floor;
* ``pgguard, masking off``: no ``[masking]`` section: the raw byte path;
* ``masking on, 0 masked``: rules that name no column of the table, detectors off: the
  masker follows the protocol but forwards DataRows raw;
* ``1 masked``: the e-mail column (``partial``);
* ``all masked``: every column (``redact``; non-text columns become NULL);
* ``detectors on``: no column masked, every text value scanned by all detectors.

    python benchmarks/bench_masking_e2e.py [--n 7] [--rows 10000]

Each mode runs the query ``--n`` times after one warm-up on one connection; the table
shows the median.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import psycopg
from common import bench_stack
from harness.gateway import APP_DB, APP_PASSWORD, APP_USER, ThreadGateway, base_config

from pgguard.config import DETECTORS  # noqa: E402
from pgguard.net.masker import attach_masking  # noqa: E402

TABLE_SQL = """
DROP TABLE IF EXISTS bench_rows;
CREATE TABLE bench_rows (id int, name text, email text, city text, street text, note text,
                         code text, label varchar(40), score float8, ts timestamptz);
INSERT INTO bench_rows
SELECT g, 'name ' || g, 'user' || g || '@example.com', 'city ' || (g % 100),
       g || ' Main Street', 'a note about nothing in particular ' || g, md5(g::text),
       'label-' || g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, {rows}) g;
ALTER TABLE bench_rows OWNER TO app_owner;
ANALYZE bench_rows;
"""

NOTHING = {"columns": ["nowhere.nothing"], "strategy": "redact"}
MODES: list[tuple[str, dict | None]] = [
    ("pgguard, masking off", None),
    ("masking on, 0 masked", {"rules": [NOTHING], "detectors": []}),
    ("masking on, 1 masked", {"rules": [{"columns": ["bench_rows.email"],
                                         "strategy": "partial", "keep": 4}],
                              "detectors": []}),
    ("masking on, all masked", {"rules": [{"columns": ["bench_rows.*"],
                                           "strategy": "redact"}], "detectors": []}),
    ("detectors on, 0 masked", {"rules": [NOTHING], "detectors": list(DETECTORS)}),
]


def rows_per_s(conn: psycopg.Connection, n: int, expected: int) -> float:
    """Median rows/s of ``SELECT * FROM bench_rows`` fetched whole, after one warm-up."""
    times = []
    for i in range(n + 1):
        started = time.perf_counter()
        rows = conn.execute("SELECT * FROM bench_rows").fetchall()
        elapsed = time.perf_counter() - started
        assert len(rows) == expected
        if i:
            times.append(elapsed)
    return expected / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=7, help="timed runs per mode")
    parser.add_argument("--rows", type=int, default=10000, help="rows in the table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the table only

    with bench_stack("masking") as st:
        pg, bao, gateways = st.pg, st.bao, st.gateways
        pg.psql(TABLE_SQL.format(rows=args.rows), dbname=APP_DB)
        jwt = bao.issue_token("bench", ["analysts"], ttl="30m")
        results: list[tuple[str, float]] = []
        with psycopg.connect(pg.dsn(APP_DB, user=APP_USER, password=APP_PASSWORD)) as conn:
            results.append(("direct PostgreSQL", rows_per_s(conn, args.n, args.rows)))
        for name, masking in MODES:
            sections = {} if masking is None else {"masking": masking}
            gw = ThreadGateway(base_config(pg, bao.identity_config(), **sections),
                               attach=attach_masking).start()
            gateways.append(gw)
            with psycopg.connect(gw.dsn("bench"), password=jwt) as conn:
                sample = conn.execute("SELECT * FROM bench_rows WHERE id = 1").fetchone()
                results.append((name, rows_per_s(conn, args.n, args.rows)))
            logging.getLogger(__name__).debug("sample %s", sample)
            gw.stop()
        direct = results[0][1]
        off = results[1][1]
        print(f"SELECT * FROM bench_rows: {args.rows} rows x 10 columns, psycopg 3 text "
              f"format, median of {args.n} (loopback, no TLS)")
        print(f"{'mode':<26}{'rows/s':>12}{'vs direct':>11}{'vs off':>9}")
        for name, rate in results:
            print(f"{name:<26}{rate:>12,.0f}{rate / direct:>11.2f}{rate / off:>9.2f}")


if __name__ == "__main__":
    main()

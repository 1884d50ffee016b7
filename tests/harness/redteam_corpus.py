"""The masking red team's corpus of queries: how each is sent and what must come of it
(run by harness.redteam.run_case in test_masking_e2e and test_recording_e2e)."""

from __future__ import annotations

from typing import Any

# --- the red-team corpus ----------------------------------------------------------------
#
# (mode, sql, params, expect): mode says how the client sends it; expect is "ok" (must
# succeed for the masked user and, as the exempt user, show clear values), "ok-" (must
# succeed; carries no clear value even unmasked), "err" (must fail), "any".

Q, P, BIN, PREP, COPY, SS, SCRIPT, PIPE = "q", "p", "bin", "prep", "copy", "ss", "script", "pipe"

CASES: list[tuple[str, Any, tuple | None, str]] = [
    # plain columns, aliases, casts
    (Q, "SELECT * FROM users", None, "ok"),
    (Q, "SELECT ssn FROM users", None, "ok"),
    (Q, "SELECT ssn AS x FROM users", None, "ok"),
    (Q, 'SELECT u.ssn AS "tax id", u.email e FROM users u', None, "ok"),
    (Q, "SELECT ssn::varchar(20) FROM users", None, "ok"),
    (Q, "SELECT CAST(card_number AS text) FROM users", None, "ok"),
    (Q, "SELECT ssn COLLATE \"C\" FROM users", None, "ok"),
    (Q, "TABLE users", None, "ok"),
    (Q, "SELECT * FROM users TABLESAMPLE SYSTEM (100)", None, "ok"),
    (Q, "SELECT ssn FROM users LIMIT 1 OFFSET 3", None, "ok"),
    (Q, "SELECT * FROM users WHERE email = 'alice.anderson@example.com'", None, "ok"),
    (Q, "SELECT id, ssn FROM users WHERE ssn LIKE '4%'", None, "ok"),
    # expressions and functions
    (Q, "SELECT ssn || '' FROM users", None, "ok"),
    (Q, "SELECT upper(email) FROM users", None, "ok"),
    (Q, "SELECT lower(email), initcap(name) FROM users", None, "ok"),
    (Q, "SELECT 'ssn: ' || ssn FROM users", None, "ok"),
    (Q, "SELECT concat(name, ' ', ssn) FROM users", None, "ok"),
    (Q, "SELECT concat_ws(',', email, phone) FROM users", None, "ok"),
    (Q, "SELECT substr(ssn, 1, 20) FROM users", None, "ok"),
    (Q, "SELECT substring(card_number from 1 for 30) FROM users", None, "ok"),
    (Q, "SELECT left(email, 100), right(ssn, 11) FROM users", None, "ok"),
    (Q, "SELECT replace(ssn, '-', '') FROM users", None, "ok"),
    (Q, "SELECT reverse(ssn) FROM users", None, "ok"),
    (Q, "SELECT format('%s/%s', ssn, email) FROM users", None, "ok"),
    (Q, "SELECT format('%I', ssn) FROM users", None, "ok"),
    (Q, "SELECT encode(ssn::bytea, 'hex') FROM users", None, "ok"),
    (Q, "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM users", None, "ok"),
    (Q, "SELECT md5(ssn), length(ssn), pg_typeof(ssn) FROM users", None, "ok-"),
    (Q, "SELECT CASE WHEN id > 0 THEN ssn END FROM users", None, "ok"),
    (Q, "SELECT coalesce(card_number, ssn) FROM users", None, "ok"),
    (Q, "SELECT nullif(ssn, 'x') FROM users", None, "ok"),
    (Q, "SELECT greatest(ssn, email) FROM users", None, "ok"),
    (Q, "SELECT regexp_replace(email, '@', ' at ') FROM users", None, "any"),
    (Q, "SELECT overlay(ssn placing '' from 1 for 0) FROM users", None, "ok"),
    (Q, "SELECT quote_literal(ssn), quote_ident(email) FROM users", None, "ok"),
    (Q, "SELECT to_char(id, '999') || ssn FROM users", None, "ok"),
    (Q, "SELECT translate(ssn, '-', '') FROM users", None, "ok"),
    (Q, "SELECT xmlelement(name x, ssn) FROM users", None, "ok"),
    (Q, "SELECT array[ssn, email] FROM users", None, "ok"),
    (Q, "SELECT row(ssn, email) FROM users", None, "ok"),
    # set-returning functions over masked data: the client counts the rows, so refused
    (Q, "SELECT unnest(array[ssn, email]) FROM users", None, "err"),
    # subqueries, CTEs, set operations
    (Q, "SELECT (SELECT ssn FROM users WHERE id = 1)", None, "ok"),
    (Q, "SELECT id, (SELECT email FROM users u2 WHERE u2.id = u.id) FROM users u", None, "ok"),
    (Q, "SELECT * FROM (SELECT ssn, email FROM users) s", None, "ok"),
    (Q, "SELECT x FROM (SELECT ssn FROM users) s(x)", None, "ok"),
    (Q, "SELECT ARRAY(SELECT ssn FROM users)", None, "ok"),
    (Q, "SELECT id FROM users WHERE ssn IN (SELECT ssn FROM users)", None, "ok-"),
    (Q, "VALUES ((SELECT ssn FROM users LIMIT 1))", None, "ok"),
    (Q, "WITH t AS (SELECT ssn FROM users) SELECT * FROM t", None, "ok"),
    (Q, "WITH t(a) AS (SELECT email FROM users) SELECT upper(a) FROM t", None, "ok"),
    (Q, "WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM users WHERE id = 1 UNION ALL "
        "SELECT n + 1, s FROM r WHERE n < 3) SELECT * FROM r", None, "ok"),
    (Q, "WITH a AS (SELECT id, phone FROM users), b AS (SELECT * FROM a) SELECT * FROM b",
     None, "ok"),
    (Q, "SELECT ssn FROM users UNION SELECT email FROM users", None, "ok"),
    (Q, "SELECT ssn FROM users UNION ALL SELECT 'x'", None, "ok"),
    (Q, "SELECT 'x' UNION ALL SELECT ssn FROM users", None, "ok"),
    (Q, "SELECT email FROM users INTERSECT SELECT email FROM email_aliases", None, "ok"),
    (Q, "SELECT email FROM users EXCEPT SELECT 'nobody'", None, "ok"),
    (Q, "SELECT email FROM email_aliases", None, "ok"),
    # views
    (Q, "SELECT * FROM user_contacts", None, "ok"),
    (Q, "SELECT email_lower FROM user_contacts", None, "ok"),
    (Q, "SELECT * FROM user_ssn", None, "ok"),
    (Q, "SELECT tax_number || '' FROM user_ssn", None, "ok"),
    (Q, "SELECT * FROM user_emails", None, "ok"),
    (Q, "SELECT c FROM user_contacts c", None, "ok"),
    # whole rows, JSON, aggregates
    (Q, "SELECT u FROM users u", None, "ok"),
    (Q, "SELECT u::text FROM users u", None, "ok"),
    (Q, "SELECT (u.*)::text FROM users u", None, "ok"),
    (Q, "SELECT (u).ssn FROM users u", None, "ok"),
    (Q, "SELECT row_to_json(u) FROM users u", None, "ok"),
    (Q, "SELECT to_jsonb(u) FROM users u", None, "ok"),
    (Q, "SELECT to_json(u.*) FROM users u", None, "ok"),
    (Q, "SELECT json_build_object('s', ssn) FROM users", None, "ok"),
    (Q, "SELECT jsonb_build_array(email, phone) FROM users", None, "ok"),
    (Q, "SELECT string_agg(ssn, ',') FROM users", None, "ok"),
    (Q, "SELECT array_agg(email) FROM users", None, "ok"),
    (Q, "SELECT json_agg(card_number) FROM users", None, "ok"),
    (Q, "SELECT jsonb_agg(u) FROM users u", None, "ok"),
    (Q, "SELECT json_object_agg(id, ssn) FROM users", None, "ok"),
    (Q, "SELECT min(ssn), max(email) FROM users", None, "ok"),
    (Q, "SELECT array_to_string(array_agg(phone), ';') FROM users", None, "ok"),
    (Q, "SELECT (array_agg(ssn))[1] FROM users", None, "ok"),
    (Q, "SELECT email, count(*) FROM users GROUP BY email", None, "ok"),
    (Q, "SELECT DISTINCT ssn FROM users", None, "ok"),
    (Q, "SELECT ssn FROM users ORDER BY ssn", None, "ok"),
    (Q, "SELECT row_number() OVER (ORDER BY id), ssn FROM users", None, "ok"),
    (Q, "SELECT lag(ssn) OVER (ORDER BY id) FROM users", None, "ok"),
    # the JSON column
    (Q, "SELECT profile FROM users", None, "ok"),
    (Q, "SELECT profile->>'address' FROM users", None, "ok"),
    (Q, "SELECT profile->'contacts' FROM users", None, "ok"),
    (Q, "SELECT jsonb_pretty(profile) FROM users", None, "ok"),
    (Q, "SELECT jsonb_extract_path(profile, 'contacts') FROM users", None, "ok"),
    (Q, "SELECT jsonb_path_query(profile, '$.contacts[*].value') FROM users", None, "err"),
    (Q, "SELECT c->>'value' FROM users, LATERAL jsonb_array_elements(profile->'contacts') c",
     None, "err"),
    (Q, "SELECT c.value FROM users u CROSS JOIN LATERAL "
        "jsonb_array_elements(u.profile->'contacts') AS c", None, "err"),
    (Q, "SELECT e.key, e.value FROM users u, LATERAL jsonb_each_text(u.profile) e", None,
     "err"),
    (Q, "SELECT * FROM ROWS FROM (jsonb_array_elements((SELECT profile->'contacts' "
        "FROM users WHERE id = 1)))", None, "err"),
    (Q, "SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM users", None, "ok"),
    (Q, "SELECT u.id, count(g) FROM users u, LATERAL generate_series(1, ascii(u.email)) g "
        "GROUP BY 1", None, "any"),
    (Q, "SELECT id FROM users LIMIT (SELECT ascii(ssn) FROM users WHERE id = 1)", None,
     "any"),
    (Q, "SELECT (jsonb_populate_record(null::users, to_jsonb(u))).ssn FROM users u", None,
     "ok"),
    # t.*, joins, LATERAL
    (Q, "SELECT t.* FROM users t", None, "ok"),
    (Q, "SELECT t.*, n.* FROM users t JOIN notes n ON n.user_id = t.id", None, "ok"),
    (Q, "SELECT x.s FROM users u, LATERAL (SELECT u.ssn AS s) x", None, "ok"),
    (Q, "SELECT * FROM users u JOIN accounts_ext a ON a.user_id = u.id", None, "ok"),
    (Q, "SELECT a.label, u.email FROM accounts_ext a LEFT JOIN users u USING (id)", None,
     "ok"),
    (Q, "SELECT * FROM users NATURAL JOIN accounts_ext", None, "ok"),
    # free text with PII in a column no rule names: the detectors
    (Q, "SELECT * FROM notes", None, "ok"),
    (Q, "SELECT upper(body) FROM notes", None, "ok"),
    (Q, "SELECT n.body, u.email FROM notes n JOIN users u ON u.id = n.user_id", None, "ok"),
    # opaque functions and notices
    (Q, "SELECT get_ssn(1)", None, "ok"),
    (Q, "SELECT get_ssn(id) FROM users", None, "ok"),
    # a user function given a masked column may store it: refused
    (Q, "SELECT shout(ssn) FROM users WHERE id = 1", None, "err"),
    (Q, "SELECT shout(email) FROM users", None, "err"),
    # casts that fail echo the value in the error
    (Q, "SELECT ssn::int FROM users", None, "err"),
    (Q, "SELECT email::int FROM users", None, "err"),
    (Q, "SELECT card_number::numeric FROM users", None, "err"),
    (Q, "SELECT ssn::date FROM users", None, "err"),
    (Q, "SELECT (ssn || 'x')::jsonb FROM users", None, "any"),
    (Q, "SELECT ('\"' || ssn)::jsonb FROM users", None, "err"),
    (Q, "SELECT profile->>'address' || '}' FROM users WHERE (profile->>'address')::int > 0",
     None, "err"),
    (Q, "SELECT to_number(ssn, 'x') FROM users", None, "any"),
    # several statements in one Query
    (Q, "SELECT 1; SELECT ssn FROM users; SELECT email FROM users", None, "ok"),
    (Q, "EXPLAIN (VERBOSE) SELECT ssn FROM users", None, "ok-"),
    # extended protocol with parameters
    (P, "SELECT ssn FROM users WHERE id = %s", (1,), "ok"),
    (P, "SELECT email, %s::text FROM users", ("x",), "ok"),
    (P, "SELECT * FROM users WHERE id > %s", (0,), "ok"),
    (P, "SELECT format('%%s', ssn) FROM users WHERE id = %s", (2,), "ok"),
    (P, "SELECT row_to_json(u) FROM users u WHERE id = %s", (3,), "ok"),
    (P, "SELECT ssn::int FROM users WHERE id = %s", (1,), "err"),
    (P, "SELECT body FROM notes WHERE user_id = %s", (1,), "ok"),
    # binary format
    (BIN, "SELECT * FROM users", None, "ok"),
    (BIN, "SELECT ssn, email, card_number, phone, profile FROM users", None, "ok"),
    (BIN, "SELECT u FROM users u", None, "ok"),
    (BIN, "SELECT array_agg(ssn) FROM users", None, "ok"),
    (BIN, "SELECT to_jsonb(u) FROM users u", None, "ok"),
    (BIN, "SELECT body FROM notes", None, "ok"),
    # prepared statements executed many times (protocol level)
    (PREP, "SELECT ssn, email FROM users WHERE id = %s", (4,), "ok"),
    (PREP, "SELECT * FROM user_contacts WHERE id > %s", (0,), "ok"),
    # SQL PREPARE / EXECUTE
    (SCRIPT, ["PREPARE s1 AS SELECT ssn, email FROM users", "EXECUTE s1", "EXECUTE s1",
              "DEALLOCATE s1"], None, "ok"),
    (SCRIPT, ["PREPARE s2(int) AS SELECT row_to_json(u) FROM users u WHERE id = $1",
              "EXECUTE s2(3)", "DEALLOCATE s2"], None, "ok"),
    # SQL cursors fetched in pieces, text and binary
    (SCRIPT, ["BEGIN", "DECLARE c1 CURSOR FOR SELECT ssn, email FROM users",
              "FETCH 3 FROM c1", "FETCH 5 FROM c1", "MOVE 2 IN c1", "FETCH ALL FROM c1",
              "CLOSE c1", "COMMIT"], None, "ok"),
    (SCRIPT, ["BEGIN", "DECLARE c2 BINARY CURSOR FOR SELECT ssn, profile FROM users",
              "FETCH 4 FROM c2", "FETCH ALL FROM c2", "COMMIT"], None, "ok"),
    (SCRIPT, ["BEGIN", "DECLARE c3 CURSOR FOR SELECT u FROM users u", "FETCH 2 FROM c3",
              "FETCH NEXT FROM c3", "FETCH ALL FROM c3", "COMMIT"], None, "ok"),
    # server-side cursors through psycopg (extended protocol, fetched in pieces)
    (SS, "SELECT * FROM users", None, "ok"),
    (SS, "SELECT ssn, body FROM users JOIN notes ON notes.user_id = users.id", None, "ok"),
    # COPY TO STDOUT
    (COPY, "COPY users TO STDOUT", None, "ok"),
    (COPY, "COPY users (ssn, email) TO STDOUT WITH (FORMAT csv, HEADER)", None, "ok"),
    (COPY, "COPY (SELECT * FROM users) TO STDOUT WITH (FORMAT binary)", None, "ok"),
    (COPY, "COPY (SELECT row_to_json(u) FROM users u) TO STDOUT", None, "ok"),
    (COPY, "COPY notes TO STDOUT (FORMAT csv)", None, "ok"),
    (COPY, "COPY (SELECT ssn, phone FROM users) TO STDOUT WITH (DELIMITER '|')", None, "ok"),
    (COPY, "COPY (SELECT * FROM user_contacts) TO STDOUT (FORMAT csv, FORCE_QUOTE *)", None,
     "ok"),
    # pipeline mode
    (PIPE, ["SELECT ssn FROM users WHERE id = %s", "SELECT email FROM users",
            "SELECT row_to_json(u) FROM users u", "SELECT phone FROM users"], (1,), "ok"),
    (PIPE, ["SELECT ssn FROM users WHERE id = %s", "SELECT email::int FROM users",
            "SELECT row_to_json(u) FROM users u"], (1,), "err"),
]

"""The lineage corpus: query shapes against the catalog of pgguard/demo_data/pii_schema.sql and
the masking each column must get (or R: refused). Run by test_masking_lineage; its texts feed
test_literal_cache."""

from __future__ import annotations

R = "REFUSE"
USERS = [None, "null", "hash", "partial", "partial", "redact", "redact", None]

CASES = [
    ("SELECT id, email, ssn FROM users", [None, "hash", "partial"]),
    ("SELECT u.email AS e FROM users u", ["hash"]),
    ("SELECT users.email FROM public.users", ["hash"]),
    ("SELECT ssn::text FROM users", ["redact"]),
    ("SELECT CAST(ssn AS varchar(20)) FROM users", ["redact"]),
    ("SELECT lower(email) FROM users", ["redact"]),
    ("SELECT upper(name) FROM users", ["null"]),
    ("SELECT ssn || '' FROM users", ["redact"]),
    ("SELECT CASE WHEN ssn LIKE '1%' THEN 'a' ELSE 'b' END FROM users", ["redact"]),
    ("SELECT coalesce(phone, 'x'), nullif(ssn, '') FROM users", ["redact", "redact"]),
    ("SELECT greatest(ssn, card_number) FROM users", ["redact"]),
    ("SELECT (SELECT ssn FROM users LIMIT 1)", ["partial"]),
    ("SELECT ARRAY(SELECT ssn FROM users)", ["redact"]),
    ("SELECT s FROM (SELECT ssn AS s FROM users) sub", ["partial"]),
    ("SELECT sub.x FROM (SELECT ssn FROM users) sub(x)", ["partial"]),
    ("WITH x AS (SELECT email FROM users) SELECT * FROM x", ["hash"]),
    ("WITH x(e) AS (SELECT email FROM users), y AS (SELECT e FROM x) SELECT e FROM y",
     ["hash"]),
    ("WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM users UNION ALL "
     "SELECT n + 1, e || 'x' FROM r WHERE n < 3) SELECT * FROM r", [None, "redact"]),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
     "SELECT n FROM r", [None]),
    ("SELECT email FROM users UNION SELECT email FROM users", ["hash"]),
    ("SELECT ssn FROM users UNION ALL SELECT card_number FROM users", ["partial"]),
    ("SELECT email FROM users UNION SELECT ssn FROM users", ["redact"]),
    ("SELECT id FROM users UNION SELECT 1", [None]),
    ("SELECT ssn FROM users INTERSECT SELECT ssn FROM users", ["partial"]),
    ("SELECT body FROM notes EXCEPT SELECT ssn FROM users", [None]),
    # a set-returning function over masked data: the client counts its rows
    ("SELECT e.value FROM users u, LATERAL jsonb_array_elements(u.profile->'contacts') e", R),
    ("SELECT e FROM users, jsonb_array_elements_text(profile->'x') AS e", R),
    ("SELECT * FROM users u, LATERAL jsonb_array_elements(u.profile->'contacts') "
     "WITH ORDINALITY e(v, n)", R),
    ("SELECT * FROM jsonb_each((SELECT profile FROM users LIMIT 1))", R),
    ("SELECT * FROM users u, LATERAL jsonb_array_elements(u.created_at::text::jsonb) "
     "WITH ORDINALITY e(v, n)", USERS + [None, None]),
    ("SELECT * FROM jsonb_each((SELECT to_jsonb(n) FROM notes n LIMIT 1))", [None, None]),
    ("SELECT x FROM users u CROSS JOIN LATERAL (SELECT u.ssn AS x) s", ["partial"]),
    ("SELECT x.email FROM users JOIN LATERAL (SELECT users.email) x ON true", ["hash"]),
    ("SELECT * FROM user_contacts", [None, "null", "hash", "redact", "redact"]),
    ("SELECT c.email_lower FROM user_contacts c", ["redact"]),
    ("SELECT * FROM contact_names", [None, "redact"]),
    ("SELECT * FROM user_emails", [None, "hash"]),
    ("SELECT * FROM users", USERS),
    ("TABLE users", USERS),
    ("SELECT u.* FROM users u JOIN notes n ON n.user_id = u.id", USERS),
    ("SELECT n.*, u.ssn FROM users u JOIN notes n ON n.user_id = u.id",
     [None, None, None, "partial"]),
    ("SELECT * FROM users JOIN notes USING (id)", USERS + [None, None]),
    ("SELECT * FROM users NATURAL JOIN notes", USERS + [None, None]),
    ("SELECT j.email FROM (users JOIN notes USING (id)) AS j", ["hash"]),
    ("SELECT (u).* FROM users u", USERS),
    ("SELECT (u).email FROM users u", ["hash"]),
    ("SELECT u FROM users u", ["null"]),
    ("SELECT row_to_json(u) FROM users u", ["null"]),
    ("SELECT to_jsonb(u.*) FROM users u", ["null"]),
    ("SELECT u::text FROM users u", ["null"]),
    ("SELECT row_to_json(n) FROM notes n", [None]),
    ("SELECT string_agg(email, ',') FROM users", ["redact"]),
    ("SELECT array_agg(ssn ORDER BY id) FROM users", ["redact"]),
    ("SELECT json_agg(u) FROM users u", ["null"]),
    ("SELECT jsonb_agg(json_build_object('e', email)) FROM users", ["redact"]),
    ("SELECT count(ssn), count(*) FROM users", [None, None]),
    ("SELECT format('%s', ssn), encode(convert_to(ssn, 'UTF8'), 'base64'), "
     "substr(ssn, 1, 3) FROM users", ["redact", "redact", "redact"]),
    ("SELECT ssn = '1', ssn IS NULL FROM users", ["redact", "redact"]),
    ("SELECT get_ssn(1)", ["redact"]),
    ("SELECT * FROM get_ssn(1)", None),
    ("SELECT relname FROM pg_class", [None]),
    ("SELECT most_common_vals::text FROM pg_stats", ["redact"]),
    ("SELECT query FROM pg_stat_activity", ["redact"]),
    ("SELECT query_to_xml('select ssn from users', true, true, '')", ["redact"]),
    ("SELECT t.a FROM (VALUES (1, 'x')) t(a, b)", [None]),
    ("SELECT (SELECT n.body FROM notes n WHERE n.user_id = u.id LIMIT 1) FROM users u",
     [None]),
    ("SELECT a.email FROM users a, users b WHERE a.id = b.id", ["hash"]),
    ("SELECT email FROM users, notes", ["hash"]),
    ("SELECT EXISTS (SELECT 1 FROM users WHERE ssn LIKE '1%')", [None]),
    ("SELECT id IN (SELECT length(ssn) FROM users) FROM users", ["redact"]),
    ("SELECT jt.* FROM users, JSON_TABLE(profile, '$.contacts[*]' "
     "COLUMNS (v text PATH '$.value')) jt", R),
    ("SELECT jt.* FROM notes, JSON_TABLE(to_jsonb(notes), '$' "
     "COLUMNS (v text PATH '$.body')) jt", [None]),
    ("UPDATE users SET created_at = now() WHERE id = 1 RETURNING id, ssn", [None, "partial"]),
    ("DELETE FROM notes WHERE id = 1 RETURNING body", [None]),
    ("INSERT INTO notes (user_id, body) VALUES (1, 'x') RETURNING *", [None, None, None]),
    ("UPDATE users u SET created_at = now() FROM notes n WHERE n.user_id = u.id "
     "RETURNING n.body, u.email", [None, "hash"]),
    ("WITH d AS (DELETE FROM notes WHERE id = 0 RETURNING user_id) "
     "SELECT u.ssn FROM users u JOIN d ON d.user_id = u.id", ["partial"]),
    ("COPY (SELECT ssn FROM users) TO STDOUT", ["partial"]),
    ("COPY users TO STDOUT", USERS),
    ("COPY users (email, id) TO STDOUT WITH (FORMAT csv)", ["hash", None]),
    ("EXPLAIN SELECT ssn FROM users", [None]),
    ("SHOW search_path", [None]),
    ("SELECT * FROM no_such_table", None),
    ("INSERT INTO audit_copy SELECT id, email, ssn FROM users", R),
    ("INSERT INTO audit_copy (id, email) SELECT id, email FROM users", []),
    ("UPDATE notes SET body = (SELECT ssn FROM users WHERE id = 1)", R),
    ("CREATE TABLE t2 AS SELECT ssn FROM users", R),
    ("SELECT ssn INTO t3 FROM users", R),
    ("CREATE MATERIALIZED VIEW mv AS SELECT ssn FROM users", []),
    ("SELECT pg_notify('c', ssn) FROM users", R),
    ("SELECT set_config('my.x', ssn, false) FROM users", R),
    ("COPY (SELECT ssn FROM users) TO '/tmp/x'", R),
    # settings are configuration: clear unless fed by masked or untraceable values
    ("SELECT current_setting('jit')", [None]),
    ("SELECT pg_catalog.current_setting('my.x', true), current_setting('search_path')",
     [None, None]),
    ("SELECT current_setting(id::text, true) FROM users", [None]),
    ("SELECT current_setting(name) FROM users", ["null"]),
    ("SELECT current_setting(ssn, true) FROM users", ["redact"]),
    ("SELECT current_setting(shout('x'))", ["redact"]),
    ("SELECT set_config('search_path', current_setting('search_path'), false)", [None]),
    ("SELECT set_config('my.x', shout('a'), false)", R),
    ("EXPLAIN ANALYZE CREATE TABLE t4 AS SELECT ssn FROM users", R),
    # issue 11 class 4: positions the walk did not follow
    ("SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM users", ["redact"]),
    ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY email DESC) FROM users", ["redact"]),
    ("SELECT rank('x') WITHIN GROUP (ORDER BY ssn) FROM users", ["redact"]),
    ("SELECT string_agg(id::text, ',' ORDER BY ssn) FROM users", [None]),
    ("SELECT count(*) OVER (ORDER BY id ROWS BETWEEN ascii(ssn) PRECEDING AND CURRENT ROW) "
     "FROM users", ["redact"]),
    ("SELECT id, count(*) OVER w FROM users "
     "WINDOW w AS (ORDER BY id ROWS BETWEEN ascii(ssn) PRECEDING AND CURRENT ROW)",
     ["redact", "redact"]),
    ("SELECT x.v FROM users u, XMLTABLE('/r' PASSING '<r/>' COLUMNS v text PATH 'n' "
     "DEFAULT u.ssn) x", R),
    ("SELECT x.v FROM users u, XMLTABLE('/r' PASSING xmlelement(name r, u.ssn) "
     "COLUMNS v text PATH '.') x", R),
    ("SELECT x.v FROM notes n, XMLTABLE('/r' PASSING xmlelement(name r, n.body) "
     "COLUMNS v text PATH '.', o FOR ORDINALITY) x", [None]),
    ("UPDATE notes SET (user_id, body) = (SELECT id, ssn FROM users LIMIT 1)", R),
    ("UPDATE notes n SET (user_id, body) = (u.id, u.ssn) FROM users u WHERE u.id = n.id", R),
    ("UPDATE notes SET (user_id, body) = (SELECT id, 'x' FROM users LIMIT 1)", []),
    ("UPDATE notes n SET (body, user_id) = (n.body, u.id) FROM users u", []),
    ("INSERT INTO notes (id, user_id, body) VALUES (1, 1, 'x') ON CONFLICT (id) DO UPDATE "
     "SET (user_id, body) = (SELECT id, ssn FROM users LIMIT 1)", R),
    ("MERGE INTO notes n USING users u ON u.id = n.id WHEN MATCHED THEN "
     "UPDATE SET (user_id, body) = (u.id, u.email)", R),
    ("WITH RECURSIVE t(id, e) AS (SELECT id, email FROM users UNION ALL "
     "SELECT id + 1, e FROM t WHERE id < 3) SEARCH DEPTH FIRST BY e SET ord "
     "SELECT id, ord FROM t", [None, "redact"]),
    ("WITH RECURSIVE t(id, e) AS (SELECT id, email FROM users UNION ALL "
     "SELECT id + 1, e FROM t WHERE id < 3) CYCLE e SET is_cycle USING path "
     "SELECT path, is_cycle FROM t", ["redact", "redact"]),
    # issue 11 class 5: masked data shaping how many rows come back
    ("SELECT u.id, count(g) FROM users u, LATERAL generate_series(1, ascii(u.ssn)) g "
     "GROUP BY 1", R),
    ("SELECT (SELECT count(*) FROM generate_series(1, ascii(u.name))) FROM users u", R),
    ("SELECT generate_series(1, ascii(ssn)) FROM users", R),
    ("SELECT unnest(string_to_array(ssn, '-')) FROM users", R),
    ("SELECT (SELECT count(*) FROM (SELECT 1 FROM notes LIMIT ascii(u.ssn)) s) FROM users u",
     R),
    ("SELECT 1 FROM notes OFFSET (SELECT ascii(ssn) FROM users LIMIT 1)", R),
    ("SELECT 1 FROM notes FETCH FIRST (SELECT length(email) FROM users LIMIT 1) ROWS ONLY", R),
    ("SELECT * FROM notes TABLESAMPLE BERNOULLI ((SELECT ascii(ssn) FROM users LIMIT 1))", R),
    ("SELECT * FROM notes TABLESAMPLE BERNOULLI (50) REPEATABLE ((SELECT ascii(ssn) FROM "
     "users LIMIT 1))", R),
    ("SELECT * FROM notes LIMIT (SELECT count(*) FROM users WHERE ssn LIKE '1%')",
     [None, None, None]),
    ("SELECT * FROM notes LIMIT shout('x')::int", R),
    ("SELECT * FROM generate_series(1, 3) WITH ORDINALITY", [None, None]),
    ("SELECT id FROM users ORDER BY id LIMIT 5 OFFSET 2", [None]),
    ("SELECT count(*) FROM users", [None]),
    ("EXPLAIN ANALYZE SELECT ssn FROM users", R),
    ("EXPLAIN (ANALYZE false, ANALYZE) SELECT 1 FROM users WHERE ssn LIKE '1%'", R),
    ("EXPLAIN (ANALYZE true, ANALYZE off) SELECT ssn FROM users", [None]),
    ("EXPLAIN ANALYZE SELECT id FROM users", [None]),
    ("EXPLAIN ANALYZE SELECT shout('x')", R),
    ("EXPLAIN ANALYZE EXECUTE p", R),
    ("EXPLAIN EXECUTE p", [None]),
    ("UPDATE users SET created_at = now() WHERE id = 1 "
     "RETURNING WITH (OLD AS o, NEW AS n) o.ssn, n.id", ["partial", None]),
    # EXECUTE's arguments can land anywhere in the prepared statement
    ("EXECUTE p((SELECT ssn FROM users LIMIT 1))", R),
    ("EXECUTE p(shout('x'))", R),
    ("EXECUTE p(1, 'x')", []),
]

"""SQL text as PostgreSQL parses it: one parse per statement text, shared by policy
classification and the masking planner (:mod:`.parse`), and the parse-tree node helpers
both walks use (:mod:`.nodes`). The only package that imports pglast's parser.

Nothing is re-exported here: ``pgguard.sql.parse`` stays the module (its function is
``pgguard.sql.parse.parse``).
"""

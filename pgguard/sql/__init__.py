"""SQL text as PostgreSQL parses it: one parse per statement text, shared by policy
classification and the masking planner (:mod:`.parse`), and the parse-tree node helpers
both walks use (:mod:`.nodes`). The only package that imports pglast's parser."""

from .parse import MAX_CACHED_TEXT, Parsed, Statement, cache_clear, cache_info, parse

__all__ = ["MAX_CACHED_TEXT", "Parsed", "Statement", "cache_clear", "cache_info", "parse"]

"""The terminal prompt's display and argument handling (the pty tests are in _e2e)."""

from __future__ import annotations

import argparse

import pytest

from pgguard.admin.prompt import (
    Style,
    UsageError,
    add_cli,
    admin_dsn,
    highlight_sql,
    read_token,
    render_request,
    sanitize,
    use_colour,
)

REQ = {"id": "7", "status": "pending", "created_at": "2024-05-01 12:00:00+00:00",
       "user": "agent-bob", "groups": "engineers, oncall", "connection": "appdb",
       "category": "ddl", "kind": "AlterTableStmt", "reason": "ddl = review",
       "sql": "alter table accounts add column note text default 'x'",
       "params": '["a@b.c", null]'}


def test_render_plain():
    text = render_request(REQ, Style(False))
    assert "\x1b" not in text
    for part in ("request 7", "agent-bob", "engineers, oncall", "appdb",
                 "ddl (AlterTableStmt)", "ddl = review", "$1 = 'a@b.c', $2 = NULL"):
        assert part in text
    # Pretty-printed by pglast: keywords upper case, type names normalised.
    assert "ALTER TABLE accounts ADD COLUMN note text DEFAULT 'x'" in text


def test_render_colour_highlights_keywords():
    text = render_request(REQ, Style(True))
    assert "\x1b[1;34mALTER\x1b[0m" in text
    assert "\x1b[32m'x'\x1b[0m" in text


def test_unparseable_sql_is_shown_as_sent():
    text = render_request(dict(REQ, sql="ALTER TABLE (((", params=None), Style(False))
    assert "ALTER TABLE (((" in text and "not parseable" in text
    assert "parameters" not in text


@pytest.mark.parametrize(("raw", "shown"), [
    ("a\x1b[2Jb", "a\\x1b[2Jb"),           # clear screen
    ("x\rhidden", "x\\x0dhidden"),          # carriage return overwrites the line
    ("abc\u202edcb", "abc\\u202edcb"),      # right-to-left override (Trojan Source)
    ("a\u200bb", "a\\u200bb"),              # zero-width space
    ("line\nnext\ttab", "line\nnext\ttab"),  # kept
    ("\x9b31m", "\\x9b31m"),                # C1 CSI
])
def test_sanitize(raw, shown):
    assert sanitize(raw) == shown


def test_terminal_escapes_in_sql_and_fields_are_neutralised():
    evil = dict(REQ, user="bob\x1b[2K", sql="DROP TABLE x; SELECT '\x1b[1A\x1b[2Kharmless'")
    for style in (Style(False), Style(True)):
        text = render_request(evil, style)
        assert "\x1b[2K" not in text and "\x1b[1A" not in text
        assert "\\x1b[2K" in text or "\\x1b" in text
        assert ("DROP TABLE x" in text) if not style.enabled else ("DROP" in text)


def test_highlight_plain_is_sanitized_text():
    assert highlight_sql("select 1 -- \x1b]0;t\x07", Style(False)) == \
        "select 1 -- \\x1b]0;t\\x07"


class FakeTty:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_use_colour():
    assert use_colour(FakeTty(True), {})
    assert not use_colour(FakeTty(False), {})
    assert not use_colour(FakeTty(True), {"NO_COLOR": ""})
    assert not use_colour(FakeTty(True), {"TERM": "dumb"})


def test_read_token(tmp_path):
    f = tmp_path / "tok"
    f.write_text("  eyJ.token.sig\n")
    assert read_token(str(f), {}) == "eyJ.token.sig"
    assert read_token(None, {"PGPASSWORD": "eyJ.env"}) == "eyJ.env"
    with pytest.raises(UsageError, match="PGPASSWORD"):
        read_token(None, {})
    with pytest.raises(UsageError, match="cannot read"):
        read_token(str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        read_token(str(tmp_path / "empty"), {})


def test_admin_dsn():
    assert "dbname=pgguard" in admin_dsn("postgresql://alice@gw:6432")
    assert "dbname=pgguard" in admin_dsn("postgresql://alice@gw:6432/pgguard")
    assert "dbname=pgguard" in admin_dsn("host=gw user=alice")
    with pytest.raises(UsageError, match="admin console"):
        admin_dsn("postgresql://alice@gw:6432/appdb")
    with pytest.raises(UsageError, match="PGPASSWORD"):
        admin_dsn("postgresql://alice:secret@gw:6432/pgguard")
    with pytest.raises(UsageError, match="bad --gateway"):
        admin_dsn("host=gw port")


def test_cli_registration():
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["approvals", "--gateway", "postgresql://a@gw/pgguard",
                              "--watch", "--interval", "0.5"])
    assert args.watch and args.interval == 0.5 and args.token_file is None
    with pytest.raises(SystemExit):
        parser.parse_args(["approvals", "--gateway", "x", "--interval", "0"])

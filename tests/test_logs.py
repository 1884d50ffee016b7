"""Log lines in text and JSON: event first, logfmt quoting, old-style messages, redaction."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys

import pytest

from pgguard.logs import log_event, parse_message, quote, setup


@pytest.fixture
def capture():
    """Install pgguard's handler on a buffer; put the root logger back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()

    def install(fmt: str) -> io.StringIO:
        setup("debug", fmt, stream=buf)
        return buf

    yield install
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


log = logging.getLogger("pgguard.test")


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


@pytest.mark.parametrize("value, out", [
    ("plain", "plain"), ("two words", '"two words"'), ('say "hi"', '"say \\"hi\\""'),
    ("a=b", '"a=b"'), ("", '""'), ("line\nbreak", '"line\\nbreak"'), (None, '""'),
    (True, "true"), (3, "3"), (("a", "b"), "a,b"), ("back\\slash", '"back\\\\slash"'),
])
def test_logfmt_quoting(value, out):
    assert quote(value) == out


def test_text_line_starts_with_event_and_quotes_values(capture):
    buf = capture("text")
    log_event(log, "session_end", session="s1", reason="client closed", bytes_in=10)
    (line,) = lines(buf)
    assert line.startswith("event=session_end ts=")
    assert " level=info logger=pgguard.test " in line
    assert line.endswith('session=s1 reason="client closed" bytes_in=10')


def test_json_line_has_the_same_fields(capture):
    buf = capture("json")
    log_event(log, "session_end", session="s1", reason="client closed", bytes_in=10,
              groups=("a", "b"))
    obj = json.loads(lines(buf)[0])
    assert obj["event"] == "session_end" and obj["level"] == "info"
    assert obj["reason"] == "client closed" and obj["bytes_in"] == 10
    assert obj["groups"] == ["a", "b"] and obj["ts"].endswith("Z")


OLD_STYLE = [
    (("event=session_end session=%s user=%s reason=%r bytes_in=%d", "s1", "bob",
      "client closed", 5),
     "session_end", {"session": "s1", "user": "bob", "reason": "client closed",
                     "bytes_in": "5"}),
    # %s of a message with spaces: the bare words belong to the value before them
    (("event=cancel_failed connection=%s error=%s", "appdb", "connection reset by peer"),
     "cancel_failed", {"connection": "appdb", "error": "connection reset by peer"}),
    (("event=x reason=%r", 'it\'s "quoted" = yes'), "x", {"reason": 'it\'s "quoted" = yes'}),
    (("masking.refused reason=%s", "no_plan"), "masking.refused", {"reason": "no_plan"}),
    (("jwks_refresh",), "jwks_refresh", {}),
    (("listening on port 5",), "log", {"msg": "listening on port 5"}),
]


@pytest.mark.parametrize("args, event, fields", OLD_STYLE)
def test_existing_format_string_call_sites_parse(args, event, fields):
    rec = logging.LogRecord("pgguard.x", logging.INFO, __file__, 1, args[0], args[1:], None)
    assert parse_message(rec.getMessage()) == (event, fields)


@pytest.mark.parametrize("args, event, fields", OLD_STYLE)
def test_existing_call_sites_render_in_both_formats(capture, args, event, fields):
    buf = capture("json")
    log.info(*args)
    obj = json.loads(lines(buf)[0])
    assert obj["event"] == event
    assert {k: obj[k] for k in fields} == fields
    buf.truncate(0)
    buf.seek(0)
    setup("debug", "text", stream=buf)
    log.info(*args)
    (line,) = lines(buf)
    assert line.startswith(f"event={event} ")
    for k, v in fields.items():
        assert f" {k}={quote(v)}" in line


def test_secrets_are_redacted_in_both_kinds_of_call(capture):
    buf = capture("text")
    log_event(log, "login", user="bob", password="hunter2", token="eyJabc",
              lease_secret="s3", vault_token="hvs.x", token_file="/run/t")
    log.info("event=login user=%s password=%s secret=%r", "bob", "hunter2", "s3")
    text = buf.getvalue()
    for secret in ("hunter2", "eyJabc", "s3", "hvs.x"):
        assert secret not in text
    assert "password=[redacted]" in text and "token_file=/run/t" in text


def test_exception_stays_on_one_line(capture):
    buf = capture("text")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("event=session_crash session=%s", "s9")
    (line,) = lines(buf)
    assert line.startswith("event=session_crash ") and "ValueError: boom" in line
    buf = capture("json")
    buf.truncate(0)
    buf.seek(0)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("event=session_crash session=%s", "s9")
    assert "ValueError: boom" in json.loads(lines(buf)[0])["exc"]


def test_a_field_never_shadows_the_event(capture):
    buf = capture("json")
    log_event(log, "x", level=logging.WARNING, ts="forged", logger="forged")
    obj = json.loads(lines(buf)[0])
    assert obj["event"] == "x" and obj["level"] == "warning" and obj["ts"] != "forged"
    assert obj["field.ts"] == "forged"


def test_unknown_format_refused():
    with pytest.raises(ValueError, match="json"):
        setup("info", "xml")


def test_cli_log_format_json(tmp_path):
    """``pgguard serve --log-format json`` writes JSON lines from the first event on."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[listen]\nport = 0\nallow_plaintext = true\n'
                   '[identity]\nissuer = "https://idp.example"\n'
                   'jwks_url = "https://idp.example/jwks"\n')
    proc = subprocess.Popen([sys.executable, "-m", "pgguard", "serve", "--config", str(cfg),
                             "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(json.loads(line))
            if seen[-1]["event"] == "listening":
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    seen += [json.loads(line) for line in rest.splitlines()]
    events = [obj["event"] for obj in seen]
    assert "listening" in events and "shutdown" in events
    assert proc.returncode == 0

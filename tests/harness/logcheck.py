"""Every log record the suite produces must render as one JSON object and one text line.

A handler on the ``pgguard`` logger formats each record with :mod:`pgguard.logs`' JSON
and text formatters for the whole session; a record that does not give one parseable JSON
object, or a text line that does not start with ``event=``, fails the run. Records whose
message is free text (rendered as ``event=log``) are listed at the end, without failing:
they are call sites still to convert.
"""

from __future__ import annotations

import json
import logging

import pytest

from pgguard.logs import JsonFormatter, TextFormatter


class _Check(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.json, self.text = JsonFormatter(), TextFormatter()
        self.broken: list[str] = []
        self.free_text: set[str] = set()
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        try:
            obj = json.loads(self.json.format(record))
            line = self.text.format(record)
        except Exception as exc:  # the point: anything the formatters raise is a bug
            self.broken.append(f"{record.name}: {record.msg!r}: {type(exc).__name__}: {exc}")
            return
        if not isinstance(obj, dict) or "\n" in line or not line.startswith("event="):
            self.broken.append(f"{record.name}: {record.msg!r}: {line[:120]!r}")
        elif obj["event"] == "log":
            self.free_text.add(f"{record.name}: {str(record.msg)[:60]!r}")


_handler = _Check()
_saved: dict[str, int] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    logger = logging.getLogger("pgguard")
    _saved["level"] = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # info is where the session events are
    logger.addHandler(_handler)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    logger = logging.getLogger("pgguard")
    logger.removeHandler(_handler)
    logger.setLevel(_saved.get("level", logging.NOTSET))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter is not None else print
    if _handler.free_text:
        say(f"log records without an event name ({len(_handler.free_text)} call sites): "
            + "; ".join(sorted(_handler.free_text)[:10]))
    if _handler.broken:
        say(f"LOG FORMAT: {len(_handler.broken)} of {_handler.seen} records do not render: "
            + "; ".join(_handler.broken[:5]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""What a client's startup packet may ask of PostgreSQL: the parameters passed on, and
the settings inside ``options`` read as PostgreSQL reads them.

Pure: the session (``net.session``) calls these before it logs in upstream.
"""

from __future__ import annotations

from ..errors import EncodingRefused, PolicyDenied
from ..wire import encodings

# Startup parameters a client may pass through to PostgreSQL. Anything that changes who
# the session runs as is refused; unknown ones are dropped (a GUC set at startup would
# escape statement control).
FORWARDED_PARAMS = frozenset({
    "application_name", "client_encoding", "DateStyle", "datestyle", "TimeZone", "timezone",
    "IntervalStyle", "intervalstyle", "extra_float_digits", "search_path",
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
    "standard_conforming_strings", "bytea_output", "default_transaction_isolation",
    "default_transaction_read_only", "client_min_messages", "geqo", "lc_messages",
    "lc_monetary", "lc_numeric", "lc_time", "xmlbinary", "xmloption", "jit", "work_mem",
    "enable_seqscan", "options",
})
REFUSED_PARAMS = frozenset({"role", "session_authorization", "replication"})


def split_options(options: str) -> list[str]:
    """The words of an ``options`` startup parameter as PostgreSQL's ``pg_split_opts``
    splits them: at unescaped whitespace, a backslash taking the next character
    literally (``-c search_path=a\\ b`` is two words, the second ``search_path=a b``)."""
    words: list[str] = []
    word: list[str] = []
    escaped = started = False
    for ch in options:
        if ch in " \t\n\r\v\f" and not escaped:
            if started:
                words.append("".join(word))
                word, started = [], False
            continue
        started = True
        if not escaped and ch == "\\":
            escaped = True
        else:
            escaped = False
            word.append(ch)
    if started:
        words.append("".join(word))
    return words


def option_settings(options: str) -> list[tuple[str, str]]:
    """The ``(name, value)`` settings of an ``options`` startup parameter, read as
    PostgreSQL's ``process_postgres_switches`` reads them (``-c name=value``,
    ``-cname=value``, ``--name=value``; a ``-`` in a name is ``_``).

    Raises:
        PolicyDenied: a word that is not such a setting (any other switch), or a setting
            of a parameter that is not forwarded.
    """
    words = split_options(options)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-c" and i + 1 < len(words):
            setting = words[i + 1]
            i += 2
        elif w.startswith("-c") and len(w) > 2:
            setting = w[2:]
            i += 1
        elif w.startswith("--") and len(w) > 2:
            setting = w[2:]
            i += 1
        else:
            raise PolicyDenied(f"startup option {w!r} is not allowed")
        name, eq, value = setting.partition("=")
        name = name.replace("-", "_")
        if not eq or name not in FORWARDED_PARAMS or name == "options":
            raise PolicyDenied(f"startup setting {name!r} is not allowed")
        out.append((name, value))
    return out


def _check_options(options: str) -> str:
    """Allow only ``-c name=value`` of forwarded parameters inside ``options``."""
    option_settings(options)
    return options


def check_startup_encoding(params: dict[str, str]) -> None:
    """Refuse a startup packet that asks for a client_encoding pgguard cannot read
    statements in (``encodings.refusal``: not ASCII-safe, not decodable, unknown), given
    as the ``client_encoding`` parameter (PGCLIENTENCODING arrives so) or in ``options``.
    PostgreSQL applies them all, ``options`` first: any one refused refuses the login.

    Raises:
        EncodingRefused: FATAL 0A000.
    """
    values = [v for k, v in params.items() if k.lower() == "client_encoding"]
    if "options" in params:
        values += [v for k, v in option_settings(params["options"])
                   if k.lower() == "client_encoding"]
    for value in values:
        why = encodings.refusal(value)
        if why is not None:
            raise EncodingRefused(f"pgguard: {why}")

"""What classification returns: one :class:`StatementInfo` per statement and the
:class:`Classification` of a whole query string (frozen, shared by the caches)."""

from __future__ import annotations

from dataclasses import dataclass

from .lists import SEVERITY

__all__ = ["ANY_SETTING", "GUARDED_SETTINGS", "UNKNOWN_EXECUTE_WITH_PARAMS", "Classification", "StatementInfo",
           "make_classification"]

#: The refusal of ``EXECUTE name(args)`` while *name* is not a known SQL-level PREPARE:
#: a statement prepared with Parse may be ``set_config('client_encoding', $1, …)``.
UNKNOWN_EXECUTE_WITH_PARAMS = ("EXECUTE with parameters of a prepared statement pgguard "
                               "does not know: it may set client_encoding")


#: The settings the guardrails hold (docs/guardrails.md): their changes are noted on the
#: statement, whatever its category.
GUARDED_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only",
                              "statement_timeout", "idle_in_transaction_session_timeout"})
#: The name noted for a set_config() whose setting name pgguard cannot read.
ANY_SETTING = "*"


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """One statement of a query string, classified.

    ``category`` is the most severe of ``categories`` (all the categories the statement
    touches: ``CREATE TABLE t AS SELECT nextval('s')`` is ``ddl`` and ``write``).
    ``Policy.decide`` applies the strictest action over all of ``categories``.
    ``executes`` names the SQL-level prepared statement an ``EXECUTE`` runs;
    ``prepares`` names the one a ``PREPARE`` defines (its body is this statement's
    classification). ``deallocates`` is the name a ``DEALLOCATE`` drops, ``"*"`` for
    ``DEALLOCATE ALL`` / ``DISCARD ALL``. ``reasons`` pairs each category with why.
    ``refusal`` says why no grant may run the statement at all (it would make the gateway
    and PostgreSQL read later statements differently: ``SET client_encoding TO SJIS``);
    ``Policy.decide`` denies it whatever the grants. ``encoding_params`` are the numbers
    of the parameters (``$n``, 1-based) whose Bind values set client_encoding
    (``set_config('client_encoding', $1, false)``, as psycopg sends it): the session must
    refuse the execution when ``pgguard.wire.encodings.refusal(value)`` is not None.
    """

    category: str
    kind: str
    reason: str
    text: str
    categories: frozenset[str] = frozenset()
    executes: str | None = None
    prepares: str | None = None
    deallocates: str | None = None
    reasons: tuple[tuple[str, str], ...] = ()
    refusal: str | None = None
    encoding_params: tuple[int, ...] = ()
    #: Changes of the settings guardrails hold (``GUARDED_SETTINGS``): the setting and its
    #: new value's parts as text (None for a part pgguard cannot read), or None for a
    #: change back to the reset value (RESET, DEFAULT). ``BEGIN … READ WRITE`` is a change
    #: of ``transaction_read_only``; ``"*"`` is a set_config() whose name is unreadable.
    settings: tuple[tuple[str, tuple[str | None, ...] | None], ...] = ()
    #: The cursor a ``DECLARE`` defines or a ``FETCH`` reads (result limits count the rows
    #: of all FETCHes of one cursor together).
    cursor: str | None = None
    #: Runs no user code and changes no setting (``policy.inert``): it cannot change
    #: client_encoding, so a pipeline's later non-ASCII text needs no Sync before it.
    inert: bool = False


@dataclass(frozen=True, slots=True)
class Classification:
    """Every statement of a query string, and the worst category among them."""

    statements: tuple[StatementInfo, ...]
    category: str
    categories: frozenset[str] = frozenset()
    has_execute: bool = False

    @property
    def kind(self) -> str:
        """The kind of the first statement of the worst category ("" when empty)."""
        for st in self.statements:
            if st.category == self.category:
                return st.kind
        return ""


def make_classification(statements: tuple[StatementInfo, ...]) -> Classification:
    """The classification of these statements: the union of their categories, the worst
    of them ("txn" when there are none) and whether any runs EXECUTE."""
    cats: set[str] = set()
    for st in statements:
        cats |= st.categories
    worst = max(cats, key=SEVERITY.__getitem__) if cats else "txn"
    return Classification(
        statements=statements,
        category=worst,
        categories=frozenset(cats),
        has_execute=any(st.executes is not None for st in statements),
    )

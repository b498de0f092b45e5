"""The backends table: which class serves a URL, and what a missing driver says."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from listener.cli import main
from listener.errors import ConfigError
from listener.store.backends import backend_for


@pytest.fixture
def without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a machine where the `postgres` extra was not installed.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "listener.store.postgres", raising=False)


def test_each_scheme_has_its_class() -> None:
    assert backend_for("sqlite:///x.db").store_class().__name__ == "SQLiteStore"
    assert backend_for("postgresql://u@h/db").store_class().__name__ == "PostgresStore"
    with pytest.raises(ValueError, match="unsupported store URL scheme"):
        backend_for("mysql://u@h/db")


@pytest.mark.usefixtures("without_psycopg")
def test_a_missing_driver_names_the_extra_to_install() -> None:
    with pytest.raises(ConfigError, match=r"psycopg .* 'postgres' extra") as caught:
        backend_for("postgresql://u:pw@h/db").store_class()
    assert "pw" not in str(caught.value)


@pytest.mark.usefixtures("without_psycopg")
def test_the_command_line_says_which_extra_is_missing() -> None:
    result = CliRunner().invoke(
        main, ["runs"], env={"LISTENER_STORE": "postgresql://postgres@127.0.0.1:1/test"}
    )
    assert result.exit_code != 0
    assert "pip install 'listener[postgres]'" in result.output
    assert "Traceback" not in result.output

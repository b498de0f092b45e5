"""Commands reach the store: a missing one is not created, an unreachable one exits 3."""

from __future__ import annotations

from pathlib import Path

from cli.support import PRUNE, invoke, store_url, write_config


def test_a_missing_store_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    for command in (["runs"], ["events"], ["dead-letters"], ["replay", "1"], PRUNE):
        result = invoke("--config", str(config), *command)
        assert result.exit_code == 3, command
        assert "no store at" in result.stderr
    assert not (tmp_path / "listener.db").exists()  # reading never creates one


def test_an_unreachable_store_exits_3(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = write_config(tmp_path, f'[listener]\nstore = "sqlite:///{tmp_path}/a-file/l.db"\n')
    result = invoke("--config", str(config), "track", "p", "a", "r", "failed")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: store unavailable:")

"""The README's Metaflow section, run as shown: serve the example, submit its flow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port
from test_readme import block_after, run_bash

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "metaflow"

pytestmark = pytest.mark.usefixtures("metaflow_home")


def test_the_metaflow_example_learns_the_end_by_the_exit_hook(tmp_path: Path) -> None:
    port = free_port()
    copy = tmp_path / "examples" / "metaflow"
    shutil.copytree(EXAMPLE, copy)
    config = copy / "listener.toml"
    config.write_text(config.read_text().replace("8000", str(port)))
    commands = block_after("Serve `examples/metaflow/listener.toml`", "sh")
    activate = ". .venv/bin/activate\n"
    assert commands.startswith(activate)
    serve_line = "listener --config examples/metaflow/listener.toml serve &\n"
    assert serve_line in commands
    wait = (
        f"for i in $(seq 1 100); do curl -fs http://127.0.0.1:{port}/healthz >/dev/null"
        " && break; sleep 0.1; done\n"
    )
    script = commands.replace(
        serve_line,
        f"{serve_line[:-3]} > serve.log 2>&1 &\necho $! > serve.pid\n{wait}",
    )
    script = f". {Path(sys.executable).parent / 'activate'}\n{script[len(activate) :]}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("LISTENER_")}
    try:
        done = run_bash(script, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        event = json.loads(done.stdout)
        assert (event["status"], event["origin"]) == ("succeeded", "webhook")
        assert event["result"]["output"]["total"] == 10
        log = tmp_path / "serve.log"
        line = f"flow {event['run_id']} succeeded: total=10 (learned by webhook)"
        for _ in range(200):
            if line in log.read_text():
                break
            time.sleep(0.05)
        assert line in log.read_text()
    finally:
        pid_file = tmp_path / "serve.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)

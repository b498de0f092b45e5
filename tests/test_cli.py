from __future__ import annotations

import subprocess
import sys

from listener import __version__


def test_version_from_the_installed_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "listener", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == f"listener, version {__version__}"

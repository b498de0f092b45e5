"""The `listener` command: serve webhooks, poll, submit and inspect runs, manage keys.

Configuration comes from `--config`, else `$LISTENER_CONFIG`, else `./listener.toml` when
it exists, else the defaults (see `listener.config`). Every command that prints data
prints a table for people, or JSON with `--json`.

Exit codes: 0 ok; 1 the operation failed (a run that did not succeed under `--wait`, a
platform error, a delivery answered with an error); 2 usage or configuration error;
3 store unavailable; 4 not found; 124 timed out; 130 interrupted. Errors are one line on
stderr; `--debug` adds the traceback.

One module per group of commands; `root` holds the top-level group and the shared
options, `exits` the mapping of exceptions onto exit codes, `output` the tables and JSON.
A new command is written in its module and attached to `main` below.
"""

from __future__ import annotations

from listener.cli import (
    calls,
    control,
    demo,
    fake_platform,
    health,
    keys,
    prune,
    recovery,
    runs,
    send_test,
    serve,
    webhooks,
)
from listener.cli.root import main, version
from listener.cli.serve import create_app
from listener.errors import CommandError

__all__ = ["CommandError", "create_app", "main"]

for _command in (
    serve.serve,
    serve.poll,
    control.submit,
    control.cancel,
    control.track,
    runs.runs,
    runs.events,
    health.health,
    calls.dead_letters,
    calls.replay,
    recovery.backfill,
    recovery.unroutable,
    prune.prune,
    webhooks.webhooks,
    send_test.send_test,
    keys.keys,
    demo.demo,
    fake_platform.fake_platform,
    version,
):
    main.add_command(_command)

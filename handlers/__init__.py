"""Ready handler plugins. Load one with its module path, e.g. `handlers.save`.

- `handlers.log`: log every run transition.
- `handlers.save`: write each succeeded run's result as JSON into a directory.
- `handlers.forward`: re-sign each transition (Standard Webhooks) and POST it on.
- `handlers.command`: run a command with the event as JSON on stdin.

Each module has a `handlers` router and a `configure(settings)` function; settings not
given there come from `LISTENER_HANDLER_<PLUGIN>_<KEY>` environment variables.
"""

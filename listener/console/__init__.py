"""The operator console: the listener's runs, their timelines, deliveries, handler calls
and dead letters in the browser, with replays and reprocessing for an admin.

Served under `/ui` by `listener serve` when `[console]` names a token; see `app` for the
pages, `auth` for sessions and CSRF, `queries` for what the pages ask and show.
"""

from listener.console.settings import ConsoleSettings

__all__ = ["ConsoleSettings"]

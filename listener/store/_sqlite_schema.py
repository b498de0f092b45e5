"""The SQLite schema: its migrations, in order."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

# Ordered schema scripts: entry i takes a database from version i to version i + 1.
# Times are REAL seconds since the epoch (UTC); JSON is TEXT.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            application TEXT NOT NULL,
            status TEXT NOT NULL,
            submitted_at REAL NOT NULL,
            last_event_at REAL,
            grace_seconds REAL NOT NULL,
            deadline REAL,
            next_poll_at REAL,
            poll_attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires_at REAL,
            callback TEXT NOT NULL DEFAULT '{}',
            metadata TEXT NOT NULL DEFAULT '{}',
            registered INTEGER NOT NULL DEFAULT 1,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX runs_by_submitted ON runs (submitted_at, run_id)",
        "CREATE INDEX runs_by_next_poll ON runs (next_poll_at) WHERE next_poll_at IS NOT NULL",
        "CREATE INDEX runs_by_deadline ON runs (deadline) WHERE deadline IS NOT NULL",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id TEXT NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            application TEXT NOT NULL,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            occurred_at REAL NOT NULL,
            received_at REAL NOT NULL,
            origin TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_received ON events (received_at, id)",
        "CREATE INDEX events_by_run ON events (run_id, received_at, id)",
        """CREATE TABLE transitions (
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, status)
        ) WITHOUT ROWID""",
        """CREATE TABLE handler_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            handler TEXT NOT NULL,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            lease_owner TEXT,
            lease_expires_at REAL,
            replays INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX calls_due ON handler_calls (next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX calls_leased ON handler_calls (lease_expires_at) WHERE state = 'running'",
        "CREATE INDEX calls_by_run_handler ON handler_calls (run_id, handler, id)",
        "CREATE INDEX calls_by_state ON handler_calls (state, id)",
        """CREATE TABLE unroutable (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            delivery_id TEXT UNIQUE,
            reason TEXT NOT NULL,
            body BLOB NOT NULL,
            headers TEXT NOT NULL,
            received_at REAL NOT NULL
        )""",
    ),
    # Status calls made for a run over its life (poll_attempts restarts with each news).
    ("ALTER TABLE runs ADD COLUMN status_calls INTEGER NOT NULL DEFAULT 0",),
    # Request budgets shared by every process on the store (`listener.budget`), and run
    # ends by time, for the health report (`listener.health`).
    (
        """CREATE TABLE rate_budgets (
            name TEXT PRIMARY KEY,
            tokens REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX transitions_by_created ON transitions (created_at)",
    ),
    # The function called once when the run ends, with its context (`listener.run_end`).
    (
        "ALTER TABLE runs ADD COLUMN on_end TEXT",
        "ALTER TABLE runs ADD COLUMN on_end_context TEXT NOT NULL DEFAULT '{}'",
    ),
    # Each provider's webhook state shared by every process (`listener.watching`), so a
    # degraded episode is told once, not once per process.
    (
        """CREATE TABLE webhook_episodes (
            provider TEXT PRIMARY KEY,
            degraded INTEGER NOT NULL,
            since REAL,
            updated_at REAL NOT NULL
        )""",
    ),
    # Operator actions taken in the console (`Store.record_audit`).
    (
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_by_at ON audit (at, id)",
    ),
    # Indexes the hot queries walk in their own order, so each reads about as many rows as
    # it returns however large the tables grow: open runs by when they are due (the
    # poller's claim), expired leases in claim order, done calls by age (retention), open
    # runs newest first (the streams' listing).
    (
        "DROP INDEX runs_by_next_poll",
        "DROP INDEX runs_by_deadline",
        "CREATE INDEX runs_due ON runs ((CASE WHEN next_poll_at IS NULL THEN deadline"
        " WHEN deadline IS NULL OR next_poll_at <= deadline THEN next_poll_at ELSE deadline END),"
        " run_id) WHERE status IN ('queued', 'running')",
        "DROP INDEX calls_leased",
        "CREATE INDEX calls_leased ON handler_calls (lease_expires_at, id) WHERE state = 'running'",
        "CREATE INDEX calls_done ON handler_calls (updated_at, id) WHERE state = 'done'",
        "CREATE INDEX runs_open ON runs (submitted_at, run_id)"
        " WHERE status IN ('queued', 'running')",
    ),
    # When a run was reported overdue, so that each run is reported once by any process.
    ("ALTER TABLE runs ADD COLUMN overdue_noticed_at REAL",),
    # When a handler call's last attempt was claimed: how long it took, for the console.
    ("ALTER TABLE handler_calls ADD COLUMN started_at REAL",),
)

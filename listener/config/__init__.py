"""Configuration: one TOML file, `LISTENER_*` environment overrides, secret references.

Every section is optional; with no file at all the listener runs on the defaults (a SQLite
`listener.db` in the working directory, no webhook sources, poll-only submissions)::

    [listener]
    store = "sqlite:///listener.db"          # or postgresql://user@host/db
    public_url = "https://hooks.example.com" # where platforms reach this service
    callback_secret = "env:LISTENER_CALLBACK_SECRET"
    max_body_bytes = 1048576
    metrics_token = "env:LISTENER_METRICS_TOKEN"  # GET /metrics asks for it; unset: open
    plugins = ["handlers.log", "my_handlers:router", "./handlers_dir"]
    entry_points = false
    retention_days = 30                      # prune what is finished and older; 0: keep

    [server]            host, port, workers, log_level, log_format, max_header_bytes, read_timeout,
                        keep_alive_timeout, limit_concurrency
    [sources.<name>]    provider (default <name>), scheme, secrets, tolerance, options
    [providers.<name>]  kind (default <name>) and that kind's constructor settings
    [dispatch]          concurrency, handler_timeout, max_attempts, backoff_base,
                        backoff_cap, sweep_interval, shutdown_timeout, lease_margin
    [poller]            enabled, interval, grace, first_poll, deadline, schedule_interval,
                        schedule_factor, schedule_cap, schedule_jitter, rate_limit,
                        batch_size, lease, learn_durations, learn_window,
                        learn_min_samples, learn_silent_min_samples,
                        learn_start_quantile, learn_silent_quantile, learn_trust_share,
                        learn_trusted_factor, learn_refresh, overdue_factor,
                        overdue_minimum, cancel_at_deadline
    [streams]           enabled (auto, on, off), max_streams, interval, reconnects,
                        backoff, backoff_cap
    [health]            enabled, window, threshold, recover_share, min_ends, interval: when
                        `serve` tells notice handlers that webhooks are degraded
    [webhooks]          ensure (off, start, degraded), endpoint_prefix, description: whether
                        `serve` checks and repairs the account webhook endpoints
    [console]           read_token, admin_token (as env:/file: references), refresh,
                        page_size, session_hours: the operator console under /ui, served
                        only when a token is set
    [handlers.<plugin>] settings for the plugin module's `configure(mapping)`; <plugin> is
                        a ready plugin's short name (`save` for `handlers.save`) or a
                        module path

Environment overrides, applied over the file: `LISTENER_<KEY>` sets a scalar key of
`[listener]` (`LISTENER_STORE`, `LISTENER_PUBLIC_URL`, `LISTENER_CALLBACK_SECRET`,
`LISTENER_MAX_BODY_BYTES`, `LISTENER_METRICS_TOKEN`, `LISTENER_ENTRY_POINTS`,
`LISTENER_RETENTION_DAYS`) and
`LISTENER_<SECTION>_<KEY>` a key of `[server]`, `[dispatch]`, `[poller]`, `[streams]`,
`[health]` or `[webhooks]`
(`LISTENER_SERVER_PORT`, `LISTENER_POLLER_GRACE`, ...). The text is read as the key's
type: numbers as written, booleans as true/false/yes/no/on/off/1/0, and an empty value or
`none` clears a key that may be absent (`deadline`, `public_url`, `callback_secret`). An
unknown key under one of those section prefixes is an error, like an unknown key in the
file.

Secret references: any string value in the file (or in an override) written
`env:NAME` is replaced by that environment variable and `file:PATH` by that file's
content less one trailing newline (a relative PATH is relative to the config file). A
missing reference is an error naming the key; secret values never appear in errors or in
`repr(config)`.

Relative plugin paths (`./dir`, `mod.py`) are relative to the config file too; a
relative SQLite path in `store` stays relative to the working directory, as URLs are.
"""

from listener.config.building import (
    build_handlers,
    build_listener,
    build_provider,
    build_sources,
    configure_handlers,
)
from listener.config.loading import find_config, handler_module, load_config
from listener.config.reading import resolve_reference
from listener.config.schema import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    DEFAULT_STORE_URL,
    LOG_FORMATS,
    LOG_LEVELS,
    SCHEMES,
    SIGNED_SCHEMES,
    Config,
    ProviderConfig,
    ServerConfig,
    SourceConfig,
)
from listener.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_STORE_URL",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SCHEMES",
    "SIGNED_SCHEMES",
    "Config",
    "ConfigError",
    "ProviderConfig",
    "ServerConfig",
    "SourceConfig",
    "build_handlers",
    "build_listener",
    "build_provider",
    "build_sources",
    "configure_handlers",
    "find_config",
    "handler_module",
    "load_config",
    "resolve_reference",
]

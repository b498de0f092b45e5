"""What a configuration holds: the result classes, the keys each section accepts and how
each is checked."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from listener.console.settings import MIN_TOKEN_LENGTH, ConsoleSettings
from listener.dispatch import DispatchSettings
from listener.endpoint_keeper import ENSURE_MODES, WebhookSettings
from listener.notices import NoticeSettings
from listener.poller import PollSettings
from listener.receiver import ReceiverSettings
from listener.redaction import redact_url
from listener.signatures import SCHEME_NAMES
from listener.store.backends import EXAMPLES as STORE_URL_EXAMPLES
from listener.store.backends import check_store_url
from listener.streaming import StreamSettings

CONFIG_ENV: Final = "LISTENER_CONFIG"
DEFAULT_CONFIG_NAME: Final = "listener.toml"
DEFAULT_STORE_URL: Final = "sqlite:///listener.db"
# "none": per-run callback URLs carry their own token instead of a signature.
SIGNED_SCHEMES: Final = SCHEME_NAMES
SCHEMES: Final = tuple(sorted((*SCHEME_NAMES, "none")))
LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS: Final = ("text", "json")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DAY: Final = 86400.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`[server]`: where and how the HTTP service listens, and its connection limits.

    `max_header_bytes` bounds a request's line and headers (431 above it); `read_timeout`
    is the time a connection has, from being opened or from the first byte of its next
    request, to send that whole request (408, or a silent close if it sent nothing);
    `keep_alive_timeout` how long an idle connection stays open after a response;
    `limit_concurrency` the connections and requests at once before new requests get 503.
    `log_format` "json" writes each log line, access lines included, as one JSON object.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    log_format: str = "text"
    max_header_bytes: int = 65536
    read_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    limit_concurrency: int = 1000


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """`[sources.<name>]`: `scheme` "none" makes an unsigned per-run callback source."""

    name: str
    provider: str
    scheme: str
    secrets: tuple[str, ...] = ()
    tolerance: int = 300
    options: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"SourceConfig(name={self.name!r}, provider={self.provider!r}, "
            f"scheme={self.scheme!r}, secrets=<{len(self.secrets)} hidden>, "
            f"tolerance={self.tolerance})"
        )


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """`[providers.<name>]`: `settings` are the provider constructor's keywords."""

    name: str
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Any setting may be a credential (api_key, headers): show only which are set.
        return (
            f"ProviderConfig(name={self.name!r}, kind={self.kind!r}, "
            f"settings=<{', '.join(sorted(self.settings)) or 'none'}>)"
        )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; `path` is the file it came from (None: defaults only).

    `dispatch`, `poller`, `receiver` and `health` are the components' own settings
    objects, built from `[dispatch]`, `[poller]`, the receiver's keys of `[listener]`
    (`max_body_bytes`) and `[health]`; a key left out keeps that class's default.
    """

    path: Path | None = None
    store: str = DEFAULT_STORE_URL
    public_url: str | None = None
    callback_secret: str | None = None
    plugins: tuple[str, ...] = ()
    entry_points: bool = False
    # Days after which what is finished is pruned; 0 keeps everything.
    retention_days: float = 0.0
    server: ServerConfig = field(default_factory=ServerConfig)
    sources: tuple[SourceConfig, ...] = ()
    providers: tuple[ProviderConfig, ...] = ()
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    poller: PollSettings = field(default_factory=PollSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    health: NoticeSettings = field(default_factory=NoticeSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    handlers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Warnings about the file (secrets written inline), shown by the command line.
    notices: tuple[str, ...] = field(default=(), compare=False)

    @property
    def label(self) -> str:
        """How messages name where this configuration came from."""
        return str(self.path) if self.path is not None else "configuration"

    def __repr__(self) -> str:
        handlers = {
            name: f"<{', '.join(sorted(s)) or 'none'}>" for name, s in self.handlers.items()
        }
        return (
            f"Config(path={self.path!r}, store={redact_url(self.store)!r}, "
            f"public_url={self.public_url and redact_url(self.public_url)!r}, "
            f"callback_secret={'<hidden>' if self.callback_secret else None}, "
            f"plugins={self.plugins!r}, "
            f"entry_points={self.entry_points}, retention_days={self.retention_days:g}, "
            f"server={self.server!r}, "
            f"sources={self.sources!r}, providers={self.providers!r}, "
            f"dispatch={self.dispatch!r}, poller={self.poller!r}, streams={self.streams!r}, "
            f"receiver={self.receiver!r}, health={self.health!r}, "
            f"webhooks={self.webhooks!r}, console={self.console!r}, "
            f"handlers={handlers!r})"
        )


_Kind = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True, slots=True)
class _Key:
    kind: _Kind
    expected: str
    check: Callable[[Any], bool] = lambda value: True
    optional: bool = False  # may be cleared by an empty override
    secret: bool = False  # never echoed in a message


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: bool(value >= low)


def _above(low: float) -> Callable[[Any], bool]:
    return lambda value: bool(value > low)


def _is_store_url(value: str) -> bool:
    try:
        check_store_url(value)
    except ValueError:
        return False
    return True


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_SECONDS_MIN0 = "a number of seconds >= 0"
_SECONDS_POSITIVE = "a number of seconds > 0"
_WHOLE_POSITIVE = "a whole number >= 1"

_LISTENER_KEYS: Final[Mapping[str, _Key]] = {
    "store": _Key(
        "str",
        f"a store URL ({STORE_URL_EXAMPLES})",
        _is_store_url,
        secret=True,
    ),
    "public_url": _Key("str", "an http:// or https:// URL", _is_http_url, optional=True),
    "callback_secret": _Key("str", "a non-empty string", bool, optional=True, secret=True),
    "max_body_bytes": _Key("int", "a whole number of bytes >= 1", _at_least(1)),
    "metrics_token": _Key("str", "a non-empty string", bool, optional=True, secret=True),
    "entry_points": _Key("bool", "true or false"),
    # Under a day, a delivery retried after its event was pruned would be taken as new.
    "retention_days": _Key(
        "float",
        "a number of days >= 1, or 0 to keep everything",
        lambda days: days == 0 or days >= 1,
    ),
}
_LISTENER_ALL_KEYS: Final = (*_LISTENER_KEYS, "plugins")
# Keys of [listener] that are the receiver's settings (`ReceiverSettings` fields).
_RECEIVER_KEYS: Final[tuple[str, ...]] = ("max_body_bytes", "metrics_token")
# Keys of [listener] holding a secret that belongs in a reference (the store URL may carry
# no password at all, so it is not warned about).
_INLINE_WARNED: Final = ("callback_secret", "metrics_token")

_SERVER_KEYS: Final[Mapping[str, _Key]] = {
    "host": _Key("str", "a host name or address", bool),
    "port": _Key("int", "a port number from 0 to 65535", lambda port: 0 <= port <= 65535),
    "workers": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "log_level": _Key("str", f"one of {', '.join(LOG_LEVELS)}", lambda level: level in LOG_LEVELS),
    "log_format": _Key("str", f"one of {', '.join(LOG_FORMATS)}", lambda fmt: fmt in LOG_FORMATS),
    # Below about a kilobyte ordinary request heads would be refused.
    "max_header_bytes": _Key("int", "a whole number of bytes >= 1024", _at_least(1024)),
    "read_timeout": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "keep_alive_timeout": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "limit_concurrency": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
}

# [dispatch] keys are `DispatchSettings` fields and [poller] keys `PollSettings` fields,
# or `schedule_<field>` of its `PollSchedule`; a key left out keeps that class's default.
_DISPATCH_KEYS: Final[Mapping[str, _Key]] = {
    "concurrency": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "handler_timeout": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "max_attempts": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "backoff_base": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "backoff_cap": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "sweep_interval": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "shutdown_timeout": _Key("float", _SECONDS_MIN0, _at_least(0)),
    "lease_margin": _Key("float", _SECONDS_MIN0, _at_least(0)),
}

_POLLER_KEYS: Final[Mapping[str, _Key]] = {
    "enabled": _Key("bool", "true or false"),
    "interval": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "grace": _Key("float", _SECONDS_MIN0, _at_least(0)),
    "first_poll": _Key("float", _SECONDS_MIN0, _at_least(0)),
    "deadline": _Key("float", _SECONDS_POSITIVE, _above(0), optional=True),
    "schedule_interval": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "schedule_factor": _Key("float", "a number >= 1", _at_least(1)),
    "schedule_cap": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "schedule_jitter": _Key("float", "a number >= 0 and < 1", lambda jitter: 0 <= jitter < 1),
    "rate_limit": _Key("float", "a number of calls a second > 0", _above(0)),
    "batch_size": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "lease": _Key("float", _SECONDS_POSITIVE, _above(0)),
    # `learn_<field>` of its `LearnSettings`; `learn_durations = false` turns learning off.
    "learn_durations": _Key("bool", "true or false"),
    "learn_window": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "learn_min_samples": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "learn_silent_min_samples": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "learn_start_quantile": _Key(
        "float", "a number >= 0 and < 0.5", lambda quantile: 0 <= quantile < 0.5
    ),
    "learn_silent_quantile": _Key(
        "float", "a number >= 0 and < 0.5", lambda quantile: 0 <= quantile < 0.5
    ),
    "learn_trust_share": _Key("float", "a number from 0 to 1", lambda share: 0 <= share <= 1),
    "learn_trusted_factor": _Key("float", "a number >= 1", _at_least(1)),
    "learn_refresh": _Key("float", _SECONDS_POSITIVE, _above(0)),
    # `overdue_<field>` of its `OverdueSettings`: when a run gets a `run_overdue` notice.
    "cancel_at_deadline": _Key("bool", "true or false"),
    "overdue_factor": _Key("float", "a number >= 1", _at_least(1)),
    "overdue_minimum": _Key("float", _SECONDS_MIN0, _at_least(0)),
}

# [streams] keys are `StreamSettings` fields.
_STREAMS_KEYS: Final[Mapping[str, _Key]] = {
    "enabled": _Key("str", "one of auto, on, off", lambda mode: mode in ("auto", "on", "off")),
    "max_streams": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "interval": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "reconnects": _Key("int", "a whole number >= 0", _at_least(0)),
    "backoff": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "backoff_cap": _Key("float", _SECONDS_POSITIVE, _above(0)),
}

# [health] keys are `NoticeSettings` fields: when webhooks count as degraded.
_SHARE = "a share above 0 and at most 1"
_HEALTH_KEYS: Final[Mapping[str, _Key]] = {
    "enabled": _Key("bool", "true or false"),
    "window": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "threshold": _Key("float", _SHARE, lambda share: 0 < share <= 1),
    "recover_share": _Key("float", _SHARE, lambda share: 0 < share <= 1),
    "min_ends": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "interval": _Key("float", _SECONDS_POSITIVE, _above(0)),
}

# [webhooks] keys are `WebhookSettings` fields: the account endpoints `serve` keeps right.
_WEBHOOKS_KEYS: Final[Mapping[str, _Key]] = {
    "ensure": _Key("str", f"one of {', '.join(ENSURE_MODES)}", lambda mode: mode in ENSURE_MODES),
    "endpoint_prefix": _Key("str", "a non-empty string", bool),
    "description": _Key("str", "a string"),
}

# [console] keys are `ConsoleSettings` fields; the tokens belong in references. It takes no
# LISTENER_CONSOLE_* overrides: that prefix is left free for the tokens' own variables.
_TOKEN = f"a string of at least {MIN_TOKEN_LENGTH} characters"
_CONSOLE_KEYS: Final[Mapping[str, _Key]] = {
    "read_token": _Key(
        "str", _TOKEN, lambda t: len(t) >= MIN_TOKEN_LENGTH, optional=True, secret=True
    ),
    "admin_token": _Key(
        "str", _TOKEN, lambda t: len(t) >= MIN_TOKEN_LENGTH, optional=True, secret=True
    ),
    "refresh": _Key("float", _SECONDS_POSITIVE, _above(0)),
    "page_size": _Key("int", "a whole number from 1 to 500", lambda n: 1 <= n <= 500),
    "session_hours": _Key("float", "a number of hours > 0", _above(0)),
}
_CONSOLE_TOKENS: Final = ("read_token", "admin_token")

_SECTIONS: Final = (
    "listener",
    "server",
    "sources",
    "providers",
    "dispatch",
    "poller",
    "streams",
    "health",
    "webhooks",
    "console",
    "handlers",
)
_SOURCE_KEYS: Final = ("provider", "scheme", "secrets", "tolerance", "options")
_SIGNER_KEYS: Final = ("scheme", "secrets", "tolerance")
# Environment override prefixes: LISTENER_<PREFIX>_<KEY>.
_ENV_SECTIONS: Final[Mapping[str, tuple[str, Mapping[str, _Key]]]] = {
    "SERVER": ("server", _SERVER_KEYS),
    "DISPATCH": ("dispatch", _DISPATCH_KEYS),
    "POLLER": ("poller", _POLLER_KEYS),
    "STREAMS": ("streams", _STREAMS_KEYS),
    "HEALTH": ("health", _HEALTH_KEYS),
    "WEBHOOKS": ("webhooks", _WEBHOOKS_KEYS),
}

"""Configuration: one TOML file, `LISTENER_*` environment overrides, secret references.

Every section is optional; with no file at all the listener runs on the defaults (a SQLite
`listener.db` in the working directory, no webhook sources, poll-only submissions)::

    [listener]
    store = "sqlite:///listener.db"          # or postgresql://user@host/db
    public_url = "https://hooks.example.com" # where platforms reach this service
    callback_secret = "env:LISTENER_CALLBACK_SECRET"
    max_body_bytes = 1048576
    plugins = ["handlers.log", "my_handlers:router", "./handlers_dir"]
    entry_points = false
    retention_days = 30                      # prune what is finished and older; 0: keep

    [server]            host, port, workers, log_level
    [sources.<name>]    provider (default <name>), scheme, secrets, tolerance, options
    [providers.<name>]  kind (default <name>) and that kind's constructor settings
    [dispatch]          concurrency, handler_timeout, max_attempts, backoff_base,
                        backoff_cap, sweep_interval, shutdown_timeout, lease_margin
    [poller]            enabled, interval, grace, first_poll, deadline, schedule_interval,
                        schedule_factor, schedule_cap, schedule_jitter, rate_limit,
                        batch_size, lease
    [handlers.<plugin>] settings for the plugin module's `configure(mapping)`; <plugin> is
                        a ready plugin's short name (`save` for `handlers.save`) or a
                        module path

Environment overrides, applied over the file: `LISTENER_<KEY>` sets a scalar key of
`[listener]` (`LISTENER_STORE`, `LISTENER_PUBLIC_URL`, `LISTENER_CALLBACK_SECRET`,
`LISTENER_MAX_BODY_BYTES`, `LISTENER_ENTRY_POINTS`, `LISTENER_RETENTION_DAYS`) and
`LISTENER_<SECTION>_<KEY>` a key of `[server]`, `[dispatch]` or `[poller]`
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

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import os
import pkgutil
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

from listener.dispatch import DispatchSettings
from listener.errors import ConfigError
from listener.poller import PollSchedule, PollSettings
from listener.providers.kinds import provider_kind, provider_kinds
from listener.receiver import ReceiverSettings
from listener.redaction import redact_url
from listener.signatures import SCHEME_NAMES
from listener.store.backends import EXAMPLES as STORE_URL_EXAMPLES
from listener.store.backends import check_store_url

if TYPE_CHECKING:
    from listener.app import Listener
    from listener.providers.base import Provider
    from listener.signatures import SignatureScheme
    from listener.sources import Source

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "Config",
    "ConfigError",
    "ProviderConfig",
    "ServerConfig",
    "SourceConfig",
    "build_listener",
    "build_provider",
    "find_config",
    "load_config",
    "resolve_reference",
]

CONFIG_ENV: Final = "LISTENER_CONFIG"
DEFAULT_CONFIG_NAME: Final = "listener.toml"
DEFAULT_STORE_URL: Final = "sqlite:///listener.db"
# "none": per-run callback URLs carry their own token instead of a signature.
SIGNED_SCHEMES: Final = SCHEME_NAMES
SCHEMES: Final = tuple(sorted((*SCHEME_NAMES, "none")))
LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DAY: Final = 86400.0


# --- the result -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"


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

    `dispatch`, `poller` and `receiver` are the components' own settings objects, built
    from `[dispatch]`, `[poller]` and the receiver's keys of `[listener]`
    (`max_body_bytes`); a key left out keeps that class's default.
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
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    handlers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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
            f"dispatch={self.dispatch!r}, poller={self.poller!r}, "
            f"receiver={self.receiver!r}, handlers={handlers!r})"
        )


# --- scalar keys ----------------------------------------------------------------------------

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
_RECEIVER_KEYS: Final = ("max_body_bytes",)

_SERVER_KEYS: Final[Mapping[str, _Key]] = {
    "host": _Key("str", "a host name or address", bool),
    "port": _Key("int", "a port number from 0 to 65535", lambda port: 0 <= port <= 65535),
    "workers": _Key("int", _WHOLE_POSITIVE, _at_least(1)),
    "log_level": _Key("str", f"one of {', '.join(LOG_LEVELS)}", lambda level: level in LOG_LEVELS),
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
}

_SECTIONS: Final = ("listener", "server", "sources", "providers", "dispatch", "poller", "handlers")
_SOURCE_KEYS: Final = ("provider", "scheme", "secrets", "tolerance", "options")
_SIGNER_KEYS: Final = ("scheme", "secrets", "tolerance")
# Environment override prefixes: LISTENER_<PREFIX>_<KEY>.
_ENV_SECTIONS: Final[Mapping[str, tuple[str, Mapping[str, _Key]]]] = {
    "SERVER": ("server", _SERVER_KEYS),
    "DISPATCH": ("dispatch", _DISPATCH_KEYS),
    "POLLER": ("poller", _POLLER_KEYS),
}


# --- reading values -------------------------------------------------------------------------


class _Reader:
    """Turns raw values into checked ones; knows where they came from for messages."""

    def __init__(self, label: str, base_dir: Path | None, env: Mapping[str, str]) -> None:
        self.label = label
        self.base_dir = base_dir
        self.env = env

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {key}: {message}")

    def reference(self, key: str, value: str) -> str:
        return resolve_reference(
            value, key=key, env=self.env, base_dir=self.base_dir, label=self.label
        )

    def deep(self, key: str, value: Any) -> Any:
        """`value` with every `env:`/`file:` string inside it resolved."""
        if isinstance(value, str):
            return self.reference(key, value)
        if isinstance(value, list):
            return [self.deep(f"{key}[{index}]", item) for index, item in enumerate(value)]
        if isinstance(value, dict):
            return {name: self.deep(f"{key}.{name}", item) for name, item in value.items()}
        return value

    def table(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_shown(value)}")
        return value

    def check_keys(self, section: str, table: Mapping[str, Any], known: Iterable[str]) -> None:
        known = list(known)
        for name in table:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(
                    f"{section}.{name}",
                    f"unknown key{hint}; known keys: {', '.join(known) or 'none'}",
                )

    def scalar(self, key: str, value: Any, spec: _Key) -> Any:
        """A file value: typed by TOML, or a reference whose text is read as the type."""
        if isinstance(value, str) and _is_reference(value):
            text = self.reference(key, value)
            if spec.kind == "str":
                return _checked(self, key, text, text, spec)
            return _from_text(self, key, text, spec)
        return _checked(self, key, _typed(value, spec), value, spec)


def _is_reference(value: str) -> bool:
    return value.startswith(("env:", "file:"))


def resolve_reference(
    value: str,
    *,
    key: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    label: str | None = None,
) -> str:
    """`value` itself, or what an `env:NAME` / `file:PATH` reference points at.

    Errors name `key` (and `label`, the file) and the reference, never a secret value.
    """
    environ = os.environ if env is None else env
    where = f"{label}: {key}" if label else key
    if value.startswith("env:"):
        name = value[len("env:") :]
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError(f"{where}: env: reference needs a variable name, as in env:NAME")
        if name not in environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        if not environ[name]:
            raise ConfigError(f"{where}: environment variable {name} is empty")
        return environ[name]
    if value.startswith("file:"):
        raw = value[len("file:") :]
        if not raw:
            raise ConfigError(f"{where}: file: reference needs a path, as in file:/run/secret")
        path = Path(raw).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ConfigError(f"{where}: cannot read file {path} ({reason})") from None
        # One trailing newline is what editors and `echo` add; anything else is content.
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            raise ConfigError(f"{where}: file {path} is empty")
        return text
    return value


def _shown(value: Any) -> str:
    """A value as a message shows it: TOML-like, short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Redacted before it is cut short, so no part of a password is shown.
        text = json.dumps(redact_url(value) if "://" in value else value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


class _Invalid:
    """Marks a value of the wrong type (None is a legitimate optional value)."""


_INVALID: Final = _Invalid()


def _typed(value: Any, spec: _Key) -> Any:
    if spec.kind == "bool":
        return value if isinstance(value, bool) else _INVALID
    if isinstance(value, bool):
        return _INVALID
    if spec.kind == "int":
        return value if isinstance(value, int) else _INVALID
    if spec.kind == "float":
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return _INVALID
    return value if isinstance(value, str) else _INVALID


def _checked(reader: _Reader, key: str, value: Any, raw: Any, spec: _Key) -> Any:
    if isinstance(value, _Invalid) or (value is not None and not spec.check(value)):
        got = "" if spec.secret else f", got {_shown(raw)}"
        raise reader.error(key, f"expected {spec.expected}{got}")
    return value


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _from_text(reader: _Reader, key: str, text: str, spec: _Key) -> Any:
    """An environment (or referenced) value read as the key's type."""
    stripped = text.strip()
    if spec.optional and stripped.lower() in ("", "none"):
        return None
    value: Any = _INVALID
    if spec.kind == "str":
        value = text
    elif spec.kind == "bool":
        if stripped.lower() in _TRUE:
            value = True
        elif stripped.lower() in _FALSE:
            value = False
    else:
        value = _number(stripped, integer=spec.kind == "int")
    return _checked(reader, key, value, text, spec)


def _number(text: str, *, integer: bool) -> int | float | _Invalid:
    try:
        number = int(text) if integer else float(text)
    except ValueError:
        return _INVALID
    return number if math.isfinite(number) else _INVALID


# --- loading --------------------------------------------------------------------------------


def find_config(explicit: str | Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: `explicit`, else `$LISTENER_CONFIG`, else `./listener.toml`
    when it exists, else None (the defaults)."""
    environ = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_config(path: str | Path | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read, resolve and check the configuration at `path` (None: defaults) with `env`'s
    `LISTENER_*` overrides and references. Raises `ConfigError`."""
    document: dict[str, Any] = {}
    file_path = Path(path) if path is not None else None
    label = str(file_path) if file_path is not None else "configuration"
    if file_path is not None:
        document = _read_toml(file_path)
    base_dir = file_path.resolve().parent if file_path is not None else None
    reader = _Reader(label, base_dir, env)
    _check_sections(reader, document)

    listener = reader.table("listener", document.get("listener", {}))
    reader.check_keys("listener", listener, _LISTENER_ALL_KEYS)
    top = _scalars(reader, "listener", listener, _LISTENER_KEYS)
    top.update(_env_overrides(reader, env, "listener", _LISTENER_KEYS, _listener_env_names()))
    plugins = _plugins(reader, listener.get("plugins", []))

    sections: dict[str, dict[str, Any]] = {}
    for prefix, (name, keys) in _ENV_SECTIONS.items():
        table = reader.table(name, document.get(name, {}))
        reader.check_keys(name, table, keys)
        values = _scalars(reader, name, table, keys)
        values.update(_section_env(reader, env, prefix, name, keys))
        sections[name] = values

    providers = _providers(reader, reader.table("providers", document.get("providers", {})))
    sources = _sources(
        reader,
        reader.table("sources", document.get("sources", {})),
        callback_secret=top.get("callback_secret"),
        providers=providers,
    )
    handlers = _handler_settings(
        reader, reader.table("handlers", document.get("handlers", {})), plugins
    )
    receiver = {key: top.pop(key) for key in _RECEIVER_KEYS if key in top}
    return Config(
        path=file_path,
        plugins=plugins,
        server=ServerConfig(**sections["server"]),
        sources=sources,
        providers=providers,
        dispatch=_dispatch_settings(reader, sections["dispatch"]),
        poller=_poll_settings(reader, sections["poller"]),
        receiver=_settings(reader, "listener", ReceiverSettings, receiver),
        handlers=MappingProxyType(handlers),
        **top,
    )


def _dispatch_settings(reader: _Reader, values: Mapping[str, Any]) -> DispatchSettings:
    defaults = DispatchSettings()
    base = values.get("backoff_base", defaults.backoff_base)
    if values.get("backoff_cap", defaults.backoff_cap) < base:
        raise reader.error(
            "dispatch.backoff_cap", f"expected a number >= dispatch.backoff_base ({base:g})"
        )
    return _settings(reader, "dispatch", DispatchSettings, values)


def _poll_settings(reader: _Reader, values: Mapping[str, Any]) -> PollSettings:
    rest = dict(values)
    schedule = {
        key.removeprefix("schedule_"): rest.pop(key)
        for key in list(rest)
        if key.startswith("schedule_")
    }
    rest["schedule"] = _settings(reader, "poller", PollSchedule, schedule)
    return _settings(reader, "poller", PollSettings, rest)


_T = TypeVar("_T")


def _settings(
    reader: _Reader, section: str, cls: Callable[..., _T], values: Mapping[str, Any]
) -> _T:
    """`cls(**values)`: the keys were checked one by one, so this can only fail on how
    they combine; say so with the section."""
    try:
        return cls(**values)
    except ValueError as exc:
        raise reader.error(section, str(exc)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the file ({reason})") from None


def _check_sections(reader: _Reader, document: Mapping[str, Any]) -> None:
    for name in document:
        if name not in _SECTIONS:
            close = difflib.get_close_matches(name, _SECTIONS, n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise ConfigError(
                f"{reader.label}: {name}: unknown section{hint}; "
                f"known sections: {', '.join(_SECTIONS)}"
            )


def _scalars(
    reader: _Reader, section: str, table: Mapping[str, Any], keys: Mapping[str, _Key]
) -> dict[str, Any]:
    return {
        name: reader.scalar(f"{section}.{name}", value, keys[name])
        for name, value in table.items()
        if name in keys
    }


def _listener_env_names() -> dict[str, str]:
    return {f"LISTENER_{key.upper()}": key for key in _LISTENER_KEYS}


def _env_overrides(
    reader: _Reader,
    env: Mapping[str, str],
    section: str,
    keys: Mapping[str, _Key],
    names: Mapping[str, str],
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, key in names.items():
        if variable in env:
            values[key] = _env_value(reader, variable, f"{section}.{key}", env[variable], keys[key])
    return values


def _section_env(
    reader: _Reader,
    env: Mapping[str, str],
    prefix: str,
    section: str,
    keys: Mapping[str, _Key],
) -> dict[str, Any]:
    start = f"LISTENER_{prefix}_"
    values: dict[str, Any] = {}
    for variable, text in env.items():
        if not variable.startswith(start):
            continue
        key = variable[len(start) :].lower()
        if key not in keys:
            known = ", ".join(start + name.upper() for name in keys)
            raise ConfigError(
                f"environment variable {variable}: no such key in [{section}]; known: {known}"
            )
        values[key] = _env_value(reader, variable, f"{section}.{key}", text, keys[key])
    return values


def _env_value(reader: _Reader, variable: str, key: str, text: str, spec: _Key) -> Any:
    env_reader = _Reader(f"environment variable {variable}", reader.base_dir, reader.env)
    if _is_reference(text):
        text = env_reader.reference(key, text)
    return _from_text(env_reader, key, text, spec)


def _plugins(reader: _Reader, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise reader.error(
            "listener.plugins", f"expected a list of plugin names, got {_shown(value)}"
        )
    plugins: list[str] = []
    for index, item in enumerate(value):
        key = f"listener.plugins[{index}]"
        if not isinstance(item, str) or not item.strip():
            raise reader.error(
                key, f"expected a module, module:attribute or path, got {_shown(item)}"
            )
        plugins.append(_plugin_path(reader, item))
    return tuple(plugins)


def _plugin_path(reader: _Reader, spec: str) -> str:
    looks_like_path = spec.endswith(".py") or "/" in spec or "\\" in spec
    if not looks_like_path or reader.base_dir is None:
        return spec
    path = Path(spec).expanduser()
    return str(path if path.is_absolute() else reader.base_dir / path)


# --- sources, providers, handlers -----------------------------------------------------------


def _sources(
    reader: _Reader,
    table: Mapping[str, Any],
    *,
    callback_secret: str | None,
    providers: tuple[ProviderConfig, ...],
) -> tuple[SourceConfig, ...]:
    configured = {provider.name: provider.kind for provider in providers}
    return tuple(
        _source(reader, name, body, callback_secret=callback_secret, providers=configured)
        for name, body in table.items()
    )


def _source(
    reader: _Reader,
    name: str,
    body: Any,
    *,
    callback_secret: str | None,
    providers: Mapping[str, str],
) -> SourceConfig:
    key = f"sources.{name}"
    body = reader.table(key, body)
    reader.check_keys(key, body, _SOURCE_KEYS)
    _check_source_name(reader, key, name)
    provider = reader.scalar(
        f"{key}.provider", body.get("provider", name), _Key("str", "a provider name", bool)
    )
    _check_source_provider(reader, f"{key}.provider", provider, providers)
    if "scheme" not in body:
        raise reader.error(f"{key}.scheme", f"missing; expected one of {', '.join(SCHEMES)}")
    scheme = reader.scalar(
        f"{key}.scheme",
        body["scheme"],
        _Key("str", f"one of {', '.join(SCHEMES)}", lambda scheme: scheme in SCHEMES),
    )
    tolerance = reader.scalar(
        f"{key}.tolerance",
        body.get("tolerance", 300),
        _Key("int", "a whole number of seconds >= 0", _at_least(0)),
    )
    options = reader.deep(f"{key}.options", reader.table(f"{key}.options", body.get("options", {})))
    if scheme == "none":
        if "secrets" in body:
            raise reader.error(
                f"{key}.secrets",
                'a source with scheme "none" takes no secrets; its callback URLs are '
                "signed with listener.callback_secret",
            )
        if not callback_secret:
            raise reader.error(
                f"{key}.scheme",
                '"none" (unsigned per-run callbacks) needs listener.callback_secret',
            )
        return SourceConfig(name, provider, scheme, (), tolerance, MappingProxyType(options))
    secrets = _secret_list(reader, f"{key}.secrets", body.get("secrets"))
    _check_scheme(reader, f"{key}.secrets", scheme, secrets, tolerance)
    return SourceConfig(name, provider, scheme, secrets, tolerance, MappingProxyType(options))


def _check_source_name(reader: _Reader, key: str, name: str) -> None:
    from listener.sources import Source

    try:
        # A given parser skips the provider lookup: only the name is checked here.
        Source(name=name, provider="-", parser=_unused_parser)
    except ValueError as exc:
        raise reader.error(key, str(exc)) from None


def _unused_parser(payload: Any, *, delivery_id: str) -> Any:
    raise NotImplementedError


def _check_source_provider(
    reader: _Reader, key: str, provider: str, providers: Mapping[str, str]
) -> None:
    kind = provider_kinds().get(providers.get(provider, ""))
    if kind is not None and kind.parse_event is None:
        return  # its payload parser is registered when the provider is built
    from listener.providers import parser_for

    try:
        parser_for(provider)
    except ValueError as exc:
        raise reader.error(key, str(exc)) from None


def _secret_list(reader: _Reader, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        raise reader.error(key, 'missing; expected a list of secrets, e.g. ["env:NAME"]')
    if not isinstance(value, list) or not value:
        raise reader.error(key, 'expected a non-empty list of secrets, e.g. ["env:NAME"]')
    secrets: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            # The item may be a secret written in the wrong form: say what it is, not what.
            raise reader.error(f"{key}[{index}]", "expected a non-empty string")
        secrets.append(reader.reference(f"{key}[{index}]", item))
    return tuple(secrets)


def _check_scheme(
    reader: _Reader, key: str, scheme: str, secrets: tuple[str, ...], tolerance: int
) -> None:
    from listener.signatures import scheme_from_name

    try:
        scheme_from_name(scheme, list(secrets), tolerance)
    except (ValueError, TypeError) as exc:
        # The signature module's messages name a secret by position, never by value.
        raise reader.error(key, str(exc)) from None


def _providers(reader: _Reader, table: Mapping[str, Any]) -> tuple[ProviderConfig, ...]:
    return tuple(_provider(reader, name, body) for name, body in table.items())


def _provider(reader: _Reader, name: str, body: Any) -> ProviderConfig:
    key = f"providers.{name}"
    body = dict(reader.table(key, body))
    known = provider_kinds()
    kind = reader.scalar(
        f"{key}.kind",
        body.pop("kind", name),
        _Key("str", f"one of {', '.join(sorted(known))}", lambda kind: kind in known),
    )
    required, accepted = provider_kind(kind).parameters()
    reader.check_keys(key, body, ["kind", *accepted])
    for parameter in required:
        if parameter not in body:
            raise reader.error(f"{key}.{parameter}", f"missing; a {kind} provider needs it")
    settings = reader.deep(key, body)
    if "signer" in settings:
        _check_signer(reader, f"{key}.signer", settings["signer"])
    return ProviderConfig(name, kind, MappingProxyType(settings))


def _check_signer(reader: _Reader, key: str, value: Any) -> None:
    """`signer = {scheme = "...", secrets = [...]}`: a scheme the provider signs with."""
    table = reader.table(key, value)
    reader.check_keys(key, table, _SIGNER_KEYS)
    scheme = reader.scalar(
        f"{key}.scheme",
        table.get("scheme", "standard-webhooks"),
        _Key("str", f"one of {', '.join(SIGNED_SCHEMES)}", lambda s: s in SIGNED_SCHEMES),
    )
    tolerance = reader.scalar(
        f"{key}.tolerance",
        table.get("tolerance", 300),
        _Key("int", "a whole number of seconds >= 0", _at_least(0)),
    )
    secrets = _secret_list(reader, f"{key}.secrets", table.get("secrets"))
    _check_scheme(reader, f"{key}.secrets", scheme, secrets, tolerance)


def _ready_plugins() -> frozenset[str]:
    """Short names of the plugins shipped in the `handlers` package (`log`, `save`, ...)."""
    import handlers

    return frozenset(
        module.name
        for module in pkgutil.iter_modules(handlers.__path__)
        if not module.ispkg and not module.name.startswith("_")
    )


def handler_module(plugin: str) -> str:
    """The module a `[handlers.<plugin>]` table configures."""
    return f"handlers.{plugin}" if plugin in _ready_plugins() else plugin


def _handler_settings(
    reader: _Reader, table: Mapping[str, Any], plugins: tuple[str, ...]
) -> dict[str, Mapping[str, Any]]:
    loaded = {spec.partition(":")[0] for spec in plugins}
    result: dict[str, Mapping[str, Any]] = {}
    for plugin, body in table.items():
        key = f"handlers.{plugin}"
        settings = reader.deep(key, reader.table(key, body))
        module = handler_module(plugin)
        if module not in loaded:
            raise reader.error(
                key, f"settings for {module}, which listener.plugins does not load; add {module!r}"
            )
        result[plugin] = MappingProxyType(settings)
    return result


# --- building -------------------------------------------------------------------------------


def build_provider(config: Config, name: str) -> Provider:
    """The provider of table `[providers.<name>]`; `ConfigError` when it cannot be built."""
    for provider in config.providers:
        if provider.name == name:
            return _build_provider(config, provider)
    known = ", ".join(provider.name for provider in config.providers) or "none"
    raise ConfigError(f"{config.label}: providers.{name}: not configured; configured: {known}")


def _build_provider(config: Config, provider: ProviderConfig) -> Provider:
    from listener.providers import provider_from_config

    settings = dict(provider.settings)
    settings["kind"] = provider.kind
    if isinstance(settings.get("signer"), Mapping):
        settings["signer"] = _signer(settings["signer"])
    try:
        return provider_from_config(provider.name, settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.label}: providers.{provider.name}: {exc}") from None


def _signer(table: Mapping[str, Any]) -> SignatureScheme:
    from listener.signatures import scheme_from_name

    return scheme_from_name(
        str(table.get("scheme", "standard-webhooks")),
        list(table["secrets"]),
        int(table.get("tolerance", 300)),
    )


def _build_source(config: Config, source: SourceConfig) -> Source:
    from listener.signatures import scheme_from_name
    from listener.sources import Source

    scheme = (
        None
        if source.scheme == "none"
        else scheme_from_name(source.scheme, list(source.secrets), source.tolerance)
    )
    try:
        return Source(
            name=source.name, provider=source.provider, scheme=scheme, options=source.options
        )
    except ValueError as exc:
        raise ConfigError(f"{config.label}: sources.{source.name}: {exc}") from None


def configure_handlers(config: Config) -> None:
    """Hand each `[handlers.<plugin>]` table to that plugin module's `configure()`."""
    for plugin, settings in config.handlers.items():
        key = f"{config.label}: handlers.{plugin}"
        module_name = handler_module(plugin)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"{key}: cannot import {module_name} ({exc})") from None
        configure = getattr(module, "configure", None)
        if not callable(configure):
            raise ConfigError(f"{key}: {module_name} has no configure(mapping) function")
        try:
            configure(dict(settings))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{key}: {module_name} rejected its settings ({exc})") from None


def build_listener(
    config: Config,
    *,
    dispatch: bool | None = None,
    poll: bool | None = None,
    retention: bool = True,
) -> Listener:
    """A `Listener` as `config` describes it (not started).

    `dispatch=False` records handler calls without running them (another process does);
    `dispatch` and `poll` override `config.dispatch.enabled` and `[poller] enabled`;
    `retention=False` leaves out the background pruning of `retention_days` (for
    short-lived commands).
    """
    from listener.app import Listener
    from listener.registry import PluginError

    providers = [_build_provider(config, provider) for provider in config.providers]
    names = [provider.name for provider in providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"{config.label}: providers: two tables make a provider named {name!r}; "
                "keep one per platform"
            )
    sources = [_build_source(config, source) for source in config.sources]
    configure_handlers(config)
    dispatch_settings = config.dispatch
    if dispatch is not None:
        dispatch_settings = dataclasses.replace(dispatch_settings, enabled=dispatch)
    poll_settings = config.poller
    if poll is not None:
        poll_settings = dataclasses.replace(poll_settings, enabled=poll)
    try:
        return Listener(
            store_url=config.store,
            sources=sources,
            plugins=config.plugins,
            entry_points=config.entry_points,
            providers=providers,
            callback_secret=config.callback_secret,
            public_url=config.public_url,
            dispatch=dispatch_settings,
            poll=poll_settings,
            receiver=config.receiver,
            retention=config.retention_days * _DAY if retention else None,
        )
    except PluginError as exc:
        raise ConfigError(f"{config.label}: listener.plugins: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{config.label}: {exc}") from None

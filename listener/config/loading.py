"""Loading a configuration file into a checked `Config`."""

from __future__ import annotations

import os
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from listener.config.reading import (
    _check_sections,
    _env_overrides,
    _is_reference,
    _listener_env_names,
    _read_toml,
    _Reader,
    _scalars,
    _section_env,
    _settings,
    _shown,
)
from listener.config.schema import (
    _CONSOLE_KEYS,
    _CONSOLE_TOKENS,
    _ENV_SECTIONS,
    _INLINE_WARNED,
    _LISTENER_ALL_KEYS,
    _LISTENER_KEYS,
    _RECEIVER_KEYS,
    _SIGNER_KEYS,
    _SOURCE_KEYS,
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    SCHEMES,
    SIGNED_SCHEMES,
    Config,
    ProviderConfig,
    ServerConfig,
    SourceConfig,
    _at_least,
    _Key,
)
from listener.console.settings import ConsoleSettings
from listener.dispatch import DispatchSettings
from listener.endpoint_keeper import WebhookSettings
from listener.notices import NoticeSettings
from listener.overdue import OverdueSettings
from listener.poller import PollSchedule, PollSettings
from listener.providers.kinds import provider_kind, provider_kinds
from listener.receiver import ReceiverSettings
from listener.run_durations import LearnSettings
from listener.streaming import StreamSettings


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


def load_config(
    path: str | Path | None, env: Mapping[str, str] = os.environ, *, secrets: bool = True
) -> Config:
    """Read, resolve and check the configuration at `path` (None: defaults) with `env`'s
    `LISTENER_*` overrides and references. Raises `ConfigError`.

    `secrets=False` is for commands that only read the store: a reference that cannot be
    resolved (a webhook secret's variable unset in this terminal) is kept as written and
    signature secrets are not checked; the store URL is resolved as always. Such a
    configuration must not be used to verify, sign or call a platform."""
    document: dict[str, Any] = {}
    file_path = Path(path) if path is not None else None
    label = str(file_path) if file_path is not None else "configuration"
    if file_path is not None:
        document = _read_toml(file_path)
    base_dir = file_path.resolve().parent if file_path is not None else None
    reader = _Reader(label, base_dir, env, secrets=secrets)
    _check_sections(reader, document)

    listener = reader.table("listener", document.get("listener", {}))
    reader.check_keys("listener", listener, _LISTENER_ALL_KEYS)
    top = _scalars(reader, "listener", listener, _LISTENER_KEYS)
    for name in _INLINE_WARNED:
        value = listener.get(name)
        if isinstance(value, str) and value and not _is_reference(value):
            reader.inline_secret(f"listener.{name}")
    top.update(_env_overrides(reader, env, "listener", _LISTENER_KEYS, _listener_env_names()))
    plugins = _plugins(reader, listener.get("plugins", []))

    sections: dict[str, dict[str, Any]] = {}
    for prefix, (name, keys) in _ENV_SECTIONS.items():
        table = reader.table(name, document.get(name, {}))
        reader.check_keys(name, table, keys)
        values = _scalars(reader, name, table, keys)
        values.update(_section_env(reader, env, prefix, name, keys))
        sections[name] = values
    console = reader.table("console", document.get("console", {}))
    reader.check_keys("console", console, _CONSOLE_KEYS)
    sections["console"] = _scalars(reader, "console", console, _CONSOLE_KEYS)
    for key in _CONSOLE_TOKENS:
        value = console.get(key)
        if isinstance(value, str) and value and not _is_reference(value):
            reader.inline_secret(f"console.{key}")

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
        streams=_settings(reader, "streams", StreamSettings, sections["streams"]),
        receiver=_settings(reader, "listener", ReceiverSettings, receiver),
        health=_settings(reader, "health", NoticeSettings, sections["health"]),
        webhooks=_settings(reader, "webhooks", WebhookSettings, sections["webhooks"]),
        console=_settings(reader, "console", ConsoleSettings, sections["console"]),
        handlers=MappingProxyType(handlers),
        notices=tuple(reader.notices),
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
    learning = rest.pop("learn_durations", True)
    learn = {
        key.removeprefix("learn_"): rest.pop(key) for key in list(rest) if key.startswith("learn_")
    }
    rest["learn"] = _settings(reader, "poller", LearnSettings, learn) if learning else None
    overdue = {
        key.removeprefix("overdue_"): rest.pop(key)
        for key in list(rest)
        if key.startswith("overdue_")
    }
    rest["overdue"] = _settings(reader, "poller", OverdueSettings, overdue)
    return _settings(reader, "poller", PollSettings, rest)


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
        if not _is_reference(item):
            reader.inline_secret(f"{key}[{index}]")
        secrets.append(reader.reference(f"{key}[{index}]", item))
    return tuple(secrets)


def _check_scheme(
    reader: _Reader, key: str, scheme: str, secrets: tuple[str, ...], tolerance: int
) -> None:
    if not reader.secrets:
        return  # the secrets may be unresolved references; nothing here verifies
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

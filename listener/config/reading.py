"""Reading values: secret references, typed scalars, TOML, `LISTENER_*` overrides."""

from __future__ import annotations

import difflib
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from listener.config.schema import _ENV_NAME, _LISTENER_KEYS, _SECTIONS, _Key
from listener.errors import ConfigError
from listener.redaction import redact_url


class _Reader:
    """Turns raw values into checked ones; knows where they came from for messages."""

    def __init__(
        self,
        label: str,
        base_dir: Path | None,
        env: Mapping[str, str],
        *,
        secrets: bool = True,
    ) -> None:
        self.label = label
        self.base_dir = base_dir
        self.env = env
        # False: a reference that cannot be resolved is kept as written, except the store
        # URL's, for commands that only read the store and never verify or sign.
        self.secrets = secrets
        # Warnings about the file that do not stop it loading, for the caller to show.
        self.notices: list[str] = []

    def inline_secret(self, key: str) -> None:
        self.notices.append(
            f"{self.label}: {key}: a secret written inline in the file; keep it in an "
            "env:NAME or file:PATH reference, so the file can be shared and versioned"
        )

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {key}: {message}")

    def reference(self, key: str, value: str) -> str:
        try:
            return resolve_reference(
                value, key=key, env=self.env, base_dir=self.base_dir, label=self.label
            )
        except ConfigError:
            if self.secrets or key == "listener.store":
                raise
            return value

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
    env_reader = _Reader(
        f"environment variable {variable}", reader.base_dir, reader.env, secrets=reader.secrets
    )
    if _is_reference(text):
        text = env_reader.reference(key, text)
    return _from_text(env_reader, key, text, spec)

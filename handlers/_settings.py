"""Settings for the ready handler plugins: `configure(mapping)` first, then environment.

Each plugin reads `LISTENER_HANDLER_<PLUGIN>_<KEY>` (for example
`LISTENER_HANDLER_SAVE_DIR`) unless `configure()` gave the key. Keys are
case-insensitive. Values are read at call time, so configuring after import works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["Settings"]


class Settings:
    def __init__(self, plugin: str) -> None:
        self.prefix = f"LISTENER_HANDLER_{plugin.upper()}_"
        self._values: dict[str, Any] = {}

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Replace what an earlier `configure` set; environment variables still fill gaps."""
        self._values = {key.lower(): value for key, value in settings.items()}

    def get(self, key: str, default: Any = None) -> Any:
        key = key.lower()
        if key in self._values:
            return self._values[key]
        return os.environ.get(self.prefix + key.upper(), default)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, default)
        return None if value is None else str(value)

    def require(self, key: str) -> str:
        value = self.text(key)
        if not value:
            raise RuntimeError(f"set {self.prefix}{key.upper()} or configure({key!r}=...)")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.prefix}{key.upper()} must be a number") from None

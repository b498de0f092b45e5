"""The one exception tree: every error the listener raises on purpose is a `ListenerError`.

Each class says what it maps to, so no caller maps errors one by one: `http_status` is what
the receiver answers when the error ends a request, `exit_code` what a `listener` command
exits with, and `describe()` the one line the command prints. Imports nothing of the
project, so every module can raise from it; the modules that raise an error re-export it
where it was always found (`listener.store.StoreUnavailable`, `listener.signatures.BadSignature`).

    ListenerError
    ├── ConfigError               a configuration problem                   exit 2
    ├── CommandError              an expected failure of a command          exit as given
    ├── SignatureError            a delivery failed verification            401
    │   ├── MissingHeader         a header the scheme needs is absent       400
    │   ├── MalformedHeader       a header cannot be parsed                 400
    │   ├── BadSignature          no signature matches a configured key     401
    │   ├── TimestampTooOld       signed longer ago than the tolerance      401
    │   └── TimestampTooNew       signed further ahead than the tolerance   401
    ├── BodyTooLarge              a delivery over the size limit            413
    ├── PayloadNotUnderstood      verified, but names no run or status      202 (kept)
    ├── UnknownStatus             a platform status word with no mapping    (a ValueError)
    ├── StoreError                a store failure                           503, exit 3
    │   ├── StoreUnavailable      cannot reach or commit now; retry later   503, exit 3
    │   └── SchemaTooNew          the database is a newer listener's        exit 3
    ├── ProviderError             a platform call failed after retries      502, exit 1
    │   └── StreamIdle            an answered run stream went quiet too long
    ├── RunNotFound               the store knows no such run               404, exit 4
    ├── WaitTimeout               a run did not finish in time              504, exit 124
    ├── UnknownHandler            a stored call names no registered handler
    ├── DuplicateHandler          two handlers share one name               exit 2
    ├── PluginError               a handler plugin could not be loaded      exit 2
    ├── RecoveryError             a bulk recovery asked for what cannot be  exit 2
    └── HandlerFailed             a ready handler's work failed; retried unless not retryable
        ├── CommandFailed         (handlers.command) a non-zero exit
        └── ForwardError          (handlers.forward) a non-2xx answer

Errors that are also a standard kind keep that base too (`RunNotFound` is a `LookupError`,
`WaitTimeout` a `TimeoutError`), so code written against the standard kinds still works.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "BadSignature",
    "BodyTooLarge",
    "CommandError",
    "ConfigError",
    "DuplicateHandler",
    "HandlerFailed",
    "ListenerError",
    "MalformedHeader",
    "MissingHeader",
    "PayloadNotUnderstood",
    "PluginError",
    "ProviderError",
    "RecoveryError",
    "RunNotFound",
    "SchemaTooNew",
    "SignatureError",
    "StoreError",
    "StoreUnavailable",
    "StreamIdle",
    "TimestampTooNew",
    "TimestampTooOld",
    "UnknownHandler",
    "UnknownStatus",
    "WaitTimeout",
]

# Exit codes of the `listener` command: 0 ok; 1 the operation failed (a run that did not
# succeed under `--wait`, a platform error, a delivery answered with an error); 2 usage or
# configuration error; 3 store unavailable; 4 not found; 124 timed out; 130 interrupted.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class ListenerError(Exception):
    """The root of every error the listener raises on purpose."""

    http_status: int = 500
    exit_code: int = EXIT_FAILED
    # What kind of failure this is, in the command's one-line message: "error: {summary}: ...".
    summary: ClassVar[str | None] = None

    def describe(self) -> str:
        """The one line a command prints when this error ends it."""
        if self.summary:
            return f"error: {self.summary}: {self}"
        return f"error: {self}"


class ConfigError(ListenerError):
    """A configuration problem. The message names the file (or variable) and the key, says
    what was expected, and never holds a secret value."""

    exit_code = EXIT_USAGE

    def describe(self) -> str:
        return str(self)


class CommandError(ListenerError):
    """An expected failure of a command: its message is shown as is, `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = code

    @property
    def code(self) -> int:
        return self.exit_code

    def describe(self) -> str:
        return str(self)


# --- verifying a delivery ----------------------------------------------------------------


class SignatureError(ListenerError):
    """A delivery failed verification. ``http_status`` and ``reason`` suit a response/metric.

    Messages may name the header concerned but never hold a secret or a received signature.
    """

    http_status = 401
    reason: ClassVar[str] = "signature_error"

    def __init__(self, message: str, *, header: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.header = header

    @property
    def status_code(self) -> int:
        """The HTTP status to answer: `http_status`, under the name responses use."""
        return self.http_status


class MissingHeader(SignatureError):
    """A header the scheme needs is absent."""

    http_status = 400
    reason = "missing_header"


class MalformedHeader(SignatureError):
    """A header is present but cannot be parsed."""

    http_status = 400
    reason = "malformed_header"


class BadSignature(SignatureError):
    """No signature in the request matches any configured key."""

    http_status = 401
    reason = "bad_signature"


class TimestampTooOld(SignatureError):
    """Authentic, but signed longer ago than the tolerance allows (a replay or a slow clock)."""

    http_status = 401
    reason = "timestamp_too_old"


class TimestampTooNew(SignatureError):
    """Authentic, but signed further in the future than the tolerance allows (clock skew)."""

    http_status = 401
    reason = "timestamp_too_new"


class BodyTooLarge(ListenerError):
    """A delivery's body is over the receiver's size limit."""

    http_status = 413


class PayloadNotUnderstood(ListenerError, ValueError):
    """A verified payload that names no run or status we can read; kept as unroutable."""

    # Accepted, so the sender stops retrying what will never parse; the body is kept.
    http_status = 202


class UnknownStatus(ListenerError, ValueError):
    """A platform reported a status word this listener has no mapping for."""

    def __init__(self, platform: str, word: object) -> None:
        self.platform = platform
        self.word = word
        super().__init__(f"unknown {platform} run status {word!r}")


# --- the store ---------------------------------------------------------------------------


class StoreError(ListenerError):
    """Base class for store failures."""

    http_status = 503
    exit_code = EXIT_STORE
    summary = "store unavailable"


class StoreUnavailable(StoreError):
    """The store cannot be reached or cannot commit right now; callers should retry later.

    The receiver answers 503 for it, so the sender retries the delivery.
    """


class SchemaTooNew(StoreError):
    """The database was created by a newer listener than this one."""


# --- platforms and runs ------------------------------------------------------------------


class ProviderError(ListenerError):
    """A platform call failed after its retries (or could not be retried safely).

    ``status_code`` is the platform's HTTP answer, when there was one; ``http_status`` is
    what the listener answers its own caller (502: the platform behind it failed).
    """

    http_status = 502
    summary = "the platform call failed"

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        # Seconds the platform asked us to wait (429/503 `Retry-After`), when it said.
        self.retry_after = retry_after


class StreamIdle(ProviderError):
    """A run stream the platform answered sent nothing for its idle limit.

    A quiet run and a dead connection look the same from here: the follower resumes
    the stream at once rather than counting a failure, since a run may rightly say
    nothing for longer than any limit.
    """


class RunNotFound(ListenerError, LookupError):
    """The store knows no run with that id."""

    http_status = 404
    exit_code = EXIT_NOT_FOUND


class WaitTimeout(ListenerError, TimeoutError):
    """The run did not finish within the time given to `wait`."""

    http_status = 504
    exit_code = EXIT_TIMEOUT


# --- handlers ----------------------------------------------------------------------------


class UnknownHandler(ListenerError, LookupError):
    """A stored call names a handler that is not registered in this process."""


class DuplicateHandler(ListenerError, ValueError):
    """Two handlers share one name; the store could not tell their calls apart."""

    exit_code = EXIT_USAGE


class PluginError(ListenerError):
    """A handler plugin could not be loaded. The message names the plugin."""

    exit_code = EXIT_USAGE

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"handler plugin {plugin!r}: {message}")
        self.plugin = plugin


class RecoveryError(ListenerError, ValueError):
    """A bulk recovery (`listener.recovery`) asked for what cannot be: an unknown handler,
    a state other than dead or done, a time window that is not one."""

    exit_code = EXIT_USAGE


class HandlerFailed(ListenerError, RuntimeError):
    """A ready handler's work failed (a command, a forward); the dispatcher retries it,
    unless `retryable` is False: then trying again cannot help (the input itself cannot
    be handled) and the call goes straight to the dead letters."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

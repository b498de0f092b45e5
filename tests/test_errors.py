"""The one exception tree: every public error is a ListenerError that carries its mapping."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import handlers.command
import handlers.forward
import listener
import listener.client
import listener.config
import listener.dispatch
import listener.events
import listener.providers
import listener.receiver
import listener.registry
import listener.signatures
import listener.store
from listener import errors
from listener.cli.exits import classify

ERROR_NAMES = [
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
EXIT_NAMES = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
]


def test_the_public_names_are_pinned() -> None:
    assert sorted(errors.__all__) == sorted(EXIT_NAMES + ERROR_NAMES)


def test_the_root_is_exported_by_the_package() -> None:
    assert listener.ListenerError is errors.ListenerError
    assert "ListenerError" in listener.__all__


def test_every_error_is_a_listener_error_and_drawn_in_the_tree() -> None:
    tree = errors.__doc__ or ""
    for name in ERROR_NAMES:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ListenerError), name
        assert f" {name}" in tree, name
    for cls in (handlers.command.CommandFailed, handlers.forward.ForwardError):
        assert issubclass(cls, errors.HandlerFailed)
        assert f" {cls.__name__} " in tree


def test_no_other_public_exception_class_is_defined_in_the_package() -> None:
    # Private control-flow exceptions (a finished request, a failed job) are not errors.
    for info in pkgutil.walk_packages(listener.__path__, "listener."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            defined_here = inspect.isclass(value) and value.__module__ == info.name
            if defined_here and issubclass(value, Exception) and not name.startswith("_"):
                assert info.name == "listener.errors", f"{info.name}.{name}"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (listener.signatures, "BadSignature"),
        (listener.signatures, "SignatureError"),
        (listener.store, "StoreUnavailable"),
        (listener.store, "SchemaTooNew"),
        (listener.providers, "ProviderError"),
        (listener.providers, "PayloadNotUnderstood"),
        (listener.client, "RunNotFound"),
        (listener.client, "WaitTimeout"),
        (listener.config, "ConfigError"),
        (listener.registry, "PluginError"),
        (listener.dispatch, "UnknownHandler"),
        (listener.events, "UnknownStatus"),
    ],
)
def test_errors_are_still_found_where_they_always_were(module: object, name: str) -> None:
    assert getattr(module, name) is getattr(errors, name)


def test_standard_kinds_are_kept() -> None:
    assert issubclass(errors.RunNotFound, LookupError)
    assert issubclass(errors.UnknownHandler, LookupError)
    assert issubclass(errors.WaitTimeout, TimeoutError)
    assert issubclass(errors.PayloadNotUnderstood, ValueError)
    assert issubclass(errors.UnknownStatus, ValueError)
    assert issubclass(errors.DuplicateHandler, ValueError)
    assert issubclass(errors.HandlerFailed, RuntimeError)


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (errors.ConfigError("port: expected an integer"), 2, "port: expected an integer"),
        (errors.CommandError("error: no such run", 4), 4, "error: no such run"),
        (errors.StoreUnavailable("refused"), 3, "error: store unavailable: refused"),
        (errors.SchemaTooNew("version 9"), 3, "error: store unavailable: version 9"),
        (errors.RunNotFound("no run 'r'"), 4, "error: no run 'r'"),
        (errors.WaitTimeout("run 'r' did not finish"), 124, "error: run 'r' did not finish"),
        (errors.ProviderError("GET /x: 500"), 1, "error: the platform call failed: GET /x: 500"),
        (errors.PluginError("x", "no such file"), 2, "error: handler plugin 'x': no such file"),
        (errors.RecoveryError("unknown handler 'h'"), 2, "error: unknown handler 'h'"),
        (errors.BadSignature("no match"), 1, "error: no match"),
        (KeyError("k"), 1, "error: KeyError: 'k'"),
    ],
)  # fmt: skip
def test_the_command_maps_an_error_by_its_own_attributes(
    error: Exception, code: int, line: str
) -> None:
    assert classify(error) == (code, line)


def test_the_receiver_statuses_are_on_the_errors() -> None:
    statuses: dict[type[errors.ListenerError], int] = {
        errors.MissingHeader: 400,
        errors.MalformedHeader: 400,
        errors.BadSignature: 401,
        errors.TimestampTooOld: 401,
        errors.TimestampTooNew: 401,
        errors.BodyTooLarge: 413,
        errors.StoreUnavailable: 503,
        errors.PayloadNotUnderstood: 202,
    }
    for cls, status in statuses.items():
        assert cls.http_status == status, cls
    # Responses name it `status_code`; the alias must agree.
    assert errors.MissingHeader("m").status_code == 400
    # A platform's own answer stays on ProviderError beside the listener's.
    failed = errors.ProviderError("m", status_code=429, retry_after=3.0)
    assert (failed.status_code, failed.http_status, failed.retry_after) == (429, 502, 3.0)

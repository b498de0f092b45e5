from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import handlers.save
from listener.app import Listener
from listener.config import (
    Config,
    ConfigError,
    ServerConfig,
    build_listener,
    build_provider,
    find_config,
    load_config,
    resolve_reference,
)
from listener.config import schema as config_schema
from listener.dispatch import DispatchSettings
from listener.endpoint_keeper import WebhookSettings
from listener.events import RunStatus
from listener.overdue import OverdueSettings
from listener.poller import PollSchedule, PollSettings
from listener.providers.http import HttpProvider
from listener.providers.local import LocalProvider
from listener.providers.nextmv import NextmvProvider
from listener.receiver import DEFAULT_MAX_BODY_BYTES, ReceiverSettings
from listener.run_durations import LearnSettings
from listener.signatures import generate_hmac_secret
from listener.store import DEFAULT_STORE_URL
from listener.streaming import StreamSettings

HMAC = generate_hmac_secret()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "listener.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return str(caught.value)


@pytest.fixture(autouse=True)
def _reset_save_plugin() -> Iterator[None]:
    # Plugin settings live in the module; later tests must not inherit them.
    yield
    handlers.save.configure({})


# --- defaults -------------------------------------------------------------------------------


def test_no_file_gives_the_defaults() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.store == "sqlite:///listener.db"
    assert config.public_url is None
    assert config.sources == ()
    assert config.providers == ()
    assert config.server == ServerConfig("127.0.0.1", 8000, 1, "info")
    assert config.poller.enabled is True


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(path, env={}) == Config(path=path)


def test_defaults_are_the_settings_classes_defaults() -> None:
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(Listener).parameters.items()
    }
    config = Config()
    assert config.dispatch == DispatchSettings() == defaults["dispatch"]
    assert config.poller == PollSettings() == defaults["poll"]
    assert config.poller.schedule == PollSchedule()
    assert config.receiver == ReceiverSettings() == defaults["receiver"]
    assert config.receiver.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert config.retention_days == 0
    assert defaults["retention"] is None  # both: keep everything
    assert config.store == DEFAULT_STORE_URL


def test_every_settings_key_is_a_field_of_its_settings_class() -> None:
    """The key tables name fields; the numbers come from the classes alone."""
    dispatch = {field.name for field in dataclasses.fields(DispatchSettings)}
    poller = {field.name for field in dataclasses.fields(PollSettings)}
    poller -= {"schedule", "learn", "overdue"}
    schedule = {f"schedule_{field.name}" for field in dataclasses.fields(PollSchedule)}
    learn = {f"learn_{field.name}" for field in dataclasses.fields(LearnSettings)}
    learn |= {f"overdue_{field.name}" for field in dataclasses.fields(OverdueSettings)}
    receiver = {field.name for field in dataclasses.fields(ReceiverSettings)}
    assert set(config_schema._DISPATCH_KEYS) <= dispatch
    assert set(config_schema._POLLER_KEYS) == poller | schedule | learn | {"learn_durations"}
    assert set(config_schema._RECEIVER_KEYS) <= receiver & set(config_schema._LISTENER_KEYS)
    # Each key given alone lands on its field; the others keep the class defaults.
    assert load_config(None, env={"LISTENER_DISPATCH_CONCURRENCY": "2"}).dispatch == (
        DispatchSettings(concurrency=2)
    )
    assert load_config(None, env={"LISTENER_POLLER_SCHEDULE_CAP": "9"}).poller == (
        PollSettings(schedule=PollSchedule(cap=9.0))
    )
    assert load_config(None, env={"LISTENER_MAX_BODY_BYTES": "10"}).receiver == (
        ReceiverSettings(max_body_bytes=10)
    )


# --- every section ----------------------------------------------------------------------------

FULL = """
[listener]
store = "sqlite:///data/listener.db"
public_url = "https://hooks.example.com/listener"
callback_secret = "env:CALLBACK"
max_body_bytes = 2048
plugins = ["handlers.log", "handlers.save", "./more_handlers"]
entry_points = true
retention_days = 45.5

[server]
host = "10.0.0.5"
port = 9000
workers = 3
log_level = "debug"
max_header_bytes = 16384
read_timeout = 2.5
keep_alive_timeout = 3
limit_concurrency = 50

[sources.nextmv]
scheme = "nextmv"
secrets = ["env:NEXTMV_WEBHOOK_SECRET", "env:OLD_SECRET"]
tolerance = 120

[sources.flows]
provider = "workflow"
scheme = "none"

[providers.nextmv]
api_key = "env:NEXTMV_API_KEY"
base_url = "http://127.0.0.1:1"
instance_id = "latest"

[providers.engine]
kind = "workflow"
api_key = "env:ENGINE_KEY"
base_url = "http://127.0.0.1:2"

[dispatch]
concurrency = 4
handler_timeout = 5
max_attempts = 3
backoff_base = 0.5
backoff_cap = 30
sweep_interval = 2
shutdown_timeout = 0
lease_margin = 5

[poller]
enabled = false
interval = 0.5
grace = 0
first_poll = 1.5
deadline = 3600
schedule_interval = 1
schedule_factor = 1.5
schedule_cap = 30
schedule_jitter = 0
rate_limit = 2
batch_size = 10
learn_min_samples = 50
learn_start_quantile = 0.05
overdue_factor = 4
cancel_at_deadline = true

[handlers.save]
dir = "results"
"""

FULL_ENV = {
    "CALLBACK": "callback-secret-value",
    "NEXTMV_WEBHOOK_SECRET": "nextmv-secret-new-text",
    "OLD_SECRET": "nextmv-secret-old-text",
    "NEXTMV_API_KEY": "nextmv-api-key-value",
    "ENGINE_KEY": "engine-key-value",
}


def test_every_section_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env=FULL_ENV)
    assert config.store == "sqlite:///data/listener.db"
    assert config.public_url == "https://hooks.example.com/listener"
    assert config.callback_secret == "callback-secret-value"
    assert config.receiver == ReceiverSettings(max_body_bytes=2048)
    # A relative plugin path is relative to the config file; module names stay as written.
    assert config.plugins == ("handlers.log", "handlers.save", str(tmp_path / "more_handlers"))
    assert config.entry_points is True
    assert config.retention_days == 45.5
    assert config.server == ServerConfig(
        "10.0.0.5",
        9000,
        3,
        "debug",
        max_header_bytes=16384,
        read_timeout=2.5,
        keep_alive_timeout=3.0,
        limit_concurrency=50,
    )

    nextmv, flows = config.sources
    assert (nextmv.name, nextmv.provider, nextmv.scheme, nextmv.tolerance) == (
        "nextmv",
        "nextmv",
        "nextmv",
        120,
    )
    assert nextmv.secrets == ("nextmv-secret-new-text", "nextmv-secret-old-text")
    assert (flows.provider, flows.scheme, flows.secrets) == ("workflow", "none", ())

    nextmv_provider, engine = config.providers
    assert nextmv_provider.kind == "nextmv"
    assert dict(nextmv_provider.settings) == {
        "api_key": "nextmv-api-key-value",
        "base_url": "http://127.0.0.1:1",
        "instance_id": "latest",
    }
    assert engine.kind == "workflow"
    assert engine.settings["api_key"] == "engine-key-value"

    assert config.dispatch == DispatchSettings(
        concurrency=4,
        handler_timeout=5.0,
        max_attempts=3,
        backoff_base=0.5,
        backoff_cap=30.0,
        sweep_interval=2.0,
        shutdown_timeout=0.0,
        lease_margin=5.0,
    )
    assert config.poller == PollSettings(
        enabled=False,
        interval=0.5,
        grace=0.0,
        first_poll=1.5,
        deadline=3600.0,
        schedule=PollSchedule(interval=1.0, factor=1.5, cap=30.0, jitter=0.0),
        rate_limit=2.0,
        batch_size=10,
        learn=LearnSettings(min_samples=50, start_quantile=0.05),
        overdue=OverdueSettings(factor=4.0),
        cancel_at_deadline=True,
    )
    assert dict(config.handlers["save"]) == {"dir": "results"}


def test_a_source_provider_defaults_to_the_table_name(tmp_path: Path) -> None:
    path = write(tmp_path, '[sources.local]\nscheme = "standard-webhooks"\nsecrets = ["env:S"]\n')
    (source,) = load_config(path, env={"S": HMAC}).sources
    assert source.provider == "local"


# --- environment overrides --------------------------------------------------------------------


def test_environment_overrides_single_values(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n[poller]\ngrace = 10\ndeadline = 60\n")
    config = load_config(
        path,
        env={
            "LISTENER_STORE": "sqlite:///other.db",
            "LISTENER_PUBLIC_URL": "https://example.org",
            "LISTENER_CALLBACK_SECRET": "from-env",
            "LISTENER_MAX_BODY_BYTES": "4096",
            "LISTENER_ENTRY_POINTS": "yes",
            "LISTENER_SERVER_PORT": "9100",
            "LISTENER_SERVER_HOST": "::1",
            "LISTENER_SERVER_READ_TIMEOUT": "0.5",
            "LISTENER_SERVER_MAX_HEADER_BYTES": "8192",
            "LISTENER_DISPATCH_MAX_ATTEMPTS": "9",
            "LISTENER_DISPATCH_HANDLER_TIMEOUT": "2.5",
            "LISTENER_DISPATCH_LEASE_MARGIN": "0",
            "LISTENER_RETENTION_DAYS": "7",
            "LISTENER_POLLER_GRACE": "0",
            "LISTENER_POLLER_ENABLED": "false",
            "LISTENER_POLLER_DEADLINE": "",
        },
    )
    assert config.store == "sqlite:///other.db"
    assert config.public_url == "https://example.org"
    assert config.callback_secret == "from-env"
    assert config.receiver.max_body_bytes == 4096
    assert config.entry_points is True
    assert config.server.port == 9100
    assert config.server.host == "::1"
    assert config.server.read_timeout == 0.5
    assert config.server.max_header_bytes == 8192
    assert config.dispatch.max_attempts == 9
    assert config.dispatch.handler_timeout == 2.5
    assert config.dispatch.lease_margin == 0.0
    assert config.retention_days == 7.0
    assert config.poller.grace == 0.0
    assert config.poller.enabled is False
    assert config.poller.deadline is None  # an empty value clears an optional key


def test_environment_overrides_work_without_a_file() -> None:
    config = load_config(
        None, env={"LISTENER_POLLER_DEADLINE": "none", "LISTENER_SERVER_PORT": "1"}
    )
    assert config.poller.deadline is None
    assert config.server.port == 1


def test_unrelated_listener_variables_are_ignored() -> None:
    env = {
        "LISTENER_CONFIG": "/nowhere.toml",
        "LISTENER_HANDLER_SAVE_DIR": "out",
        "LISTENER_TEST_POSTGRES_URL": "postgresql://x@y/z",
        "LISTENER_RUN_ID": "run-1",
    }
    assert load_config(None, env=env) == Config()


def test_a_bad_override_names_the_variable_and_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"LISTENER_POLLER_GRACE": "soon"})
    assert str(caught.value) == (
        "environment variable LISTENER_POLLER_GRACE: poller.grace: expected a number of "
        'seconds >= 0, got "soon"'
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LISTENER_SERVER_PORT", "80.5", "expected a port number"),
        ("LISTENER_SERVER_KEEP_ALIVE_TIMEOUT", "soon", "expected a number of seconds > 0"),
        ("LISTENER_SERVER_LIMIT_CONCURRENCY", "many", "expected a whole number >= 1"),
        ("LISTENER_POLLER_ENABLED", "maybe", "expected true or false"),
        ("LISTENER_DISPATCH_CONCURRENCY", "0", "expected a whole number >= 1"),
        ("LISTENER_POLLER_SCHEDULE_JITTER", "nan", "expected a number >= 0 and < 1"),
        ("LISTENER_PUBLIC_URL", "hooks.example.com", "expected an http:// or https:// URL"),
    ],
)
def test_overrides_are_typed_by_the_key(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, env={variable: value})


def test_an_unknown_override_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"LISTENER_POLLER_GRAEC": "5"})
    message = str(caught.value)
    assert "LISTENER_POLLER_GRAEC" in message
    assert "LISTENER_POLLER_GRACE" in message  # the known keys are listed


def test_an_override_may_be_a_reference(tmp_path: Path) -> None:
    secret_file = tmp_path / "callback"
    secret_file.write_text("from-a-file\n")
    config = load_config(
        None,
        env={
            "LISTENER_CALLBACK_SECRET": f"file:{secret_file}",
            "LISTENER_SERVER_PORT": "env:PORT",
            "PORT": "8123",
        },
    )
    assert config.callback_secret == "from-a-file"
    assert config.server.port == 8123


# --- references -------------------------------------------------------------------------------


def test_env_and_file_references_are_resolved(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "nextmv").write_text("file-secret-text\n\n")
    (tmp_path / "store-url").write_text("sqlite:///from-file.db\n")
    path = write(
        tmp_path,
        """
        [listener]
        store = "file:store-url"
        plugins = ["handlers.save"]
        [server]
        port = "env:PORT"
        [sources.nextmv]
        scheme = "nextmv"
        secrets = ["file:secrets/nextmv", "env:SECOND"]
        [providers.nextmv]
        api_key = "env:KEY"
        [handlers.save]
        dir = "env:SAVE_DIR"
        """.replace("        ", ""),
    )
    config = load_config(
        path,
        env={"PORT": "8080", "SECOND": "second-secret-text", "KEY": "api", "SAVE_DIR": "/tmp/out"},
    )
    assert config.store == "sqlite:///from-file.db"
    assert config.server.port == 8080  # a reference's text is read as the key's type
    # Exactly one trailing newline is stripped; the rest is content.
    assert config.sources[0].secrets == ("file-secret-text\n", "second-secret-text")
    assert config.providers[0].settings["api_key"] == "api"
    assert config.handlers["save"]["dir"] == "/tmp/out"


def test_a_plain_value_is_not_a_reference() -> None:
    assert resolve_reference("whsec_abc", key="k", env={}) == "whsec_abc"
    assert resolve_reference("https://env:8080", key="k", env={}) == "https://env:8080"


@pytest.mark.parametrize(
    ("secrets", "env", "message"),
    [
        (
            '["env:NEXTMV_WEBHOOK_SECRET"]',
            {},
            "sources.nextmv.secrets[0]: environment variable NEXTMV_WEBHOOK_SECRET is not set",
        ),
        (
            '["env:EMPTY"]',
            {"EMPTY": ""},
            "sources.nextmv.secrets[0]: environment variable EMPTY is empty",
        ),
        ('["ok", "env:"]', {}, "sources.nextmv.secrets[1]: env: reference needs a variable name"),
        ('["file:missing"]', {}, "sources.nextmv.secrets[0]: cannot read file"),
        ('["file:"]', {}, "sources.nextmv.secrets[0]: file: reference needs a path"),
    ],
)
def test_a_missing_reference_names_the_key(
    tmp_path: Path, secrets: str, env: dict[str, str], message: str
) -> None:
    text = f'[sources.nextmv]\nscheme = "nextmv"\nsecrets = {secrets}\n'
    assert error_of(tmp_path, text, env).startswith(f"{tmp_path / 'listener.toml'}: {message}")


def test_an_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    message = error_of(tmp_path, '[listener]\ncallback_secret = "file:empty"\n')
    assert "listener.callback_secret: file" in message
    assert "is empty" in message


# --- validation -------------------------------------------------------------------------------


def test_an_error_names_the_file_the_key_and_what_was_expected(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[poller]\ngrace = "soon"\n')
    assert message == (
        f'{tmp_path / "listener.toml"}: poller.grace: expected a number of seconds >= 0, got "soon"'
    )


def test_a_relative_path_is_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[poller]\ngrace = -1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("listener.toml", env={})
    assert str(caught.value) == (
        "listener.toml: poller.grace: expected a number of seconds >= 0, got -1"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[server]\nport = 70000",
            "server.port: expected a port number from 0 to 65535, got 70000",
        ),
        ('[server]\nport = "80"', 'server.port: expected a port number from 0 to 65535, got "80"'),
        ('[server]\nlog_level = "loud"', "server.log_level: expected one of critical, error"),
        ("[server]\nworkers = 0", "server.workers: expected a whole number >= 1, got 0"),
        (
            "[server]\nmax_header_bytes = 100",
            "server.max_header_bytes: expected a whole number of bytes >= 1024, got 100",
        ),
        (
            '[server]\nmax_header_bytes = "64k"',
            'server.max_header_bytes: expected a whole number of bytes >= 1024, got "64k"',
        ),
        ("[server]\nread_timeout = 0", "server.read_timeout: expected a number of seconds > 0"),
        (
            "[server]\nkeep_alive_timeout = -1",
            "server.keep_alive_timeout: expected a number of seconds > 0, got -1",
        ),
        (
            "[server]\nlimit_concurrency = 0",
            "server.limit_concurrency: expected a whole number >= 1, got 0",
        ),
        ("[dispatch]\nconcurrency = 1.5", "dispatch.concurrency: expected a whole number >= 1"),
        ("[dispatch]\nhandler_timeout = 0", "dispatch.handler_timeout: expected a number of"),
        (
            "[dispatch]\nbackoff_base = 10\nbackoff_cap = 5",
            "dispatch.backoff_cap: expected a number >= dispatch.backoff_base (10)",
        ),
        ("[poller]\nenabled = 1", "poller.enabled: expected true or false, got 1"),
        ("[poller]\nschedule_jitter = 1", "poller.schedule_jitter: expected a number >= 0 and < 1"),
        ("[poller]\nschedule_factor = 0.5", "poller.schedule_factor: expected a number >= 1"),
        ("[poller]\nlearn_trust_share = 2", "poller.learn_trust_share: expected a number from 0"),
        ("[poller]\ndeadline = 0", "poller.deadline: expected a number of seconds > 0, got 0"),
        (
            "[poller]\nbatch_size = true",
            "poller.batch_size: expected a whole number >= 1, got true",
        ),
        (
            '[listener]\npublic_url = "hooks.example.com"',
            'listener.public_url: expected an http:// or https:// URL, got "hooks.example.com"',
        ),
        ('[listener]\nstore = "mysql://db"', "listener.store: expected a store URL"),
        ('[listener]\nstore = "sqlite:/x.db"', "listener.store: expected a store URL"),
        ("[listener]\nmax_body_bytes = 0", "listener.max_body_bytes: expected a whole number"),
        (
            "[listener]\nretention_days = 0.5",
            "listener.retention_days: expected a number of days >= 1, or 0 to keep everything, "
            "got 0.5",
        ),
        (
            "[listener]\nretention_days = -30",
            "listener.retention_days: expected a number of days >= 1, or 0 to keep everything",
        ),
        ('[listener]\nretention_days = "30d"', "listener.retention_days: expected a number of"),
        ("[listener]\nretention_days = nan", "listener.retention_days: expected a number of"),
        (
            "[dispatch]\nlease_margin = -1",
            "dispatch.lease_margin: expected a number of seconds >= 0, got -1",
        ),
        ('[dispatch]\nlease_margin = "30s"', "dispatch.lease_margin: expected a number of"),
        ('[listener]\nplugins = "handlers.log"', "listener.plugins: expected a list"),
        ('[listener]\nplugins = ["ok", 3]', "listener.plugins[1]: expected a module"),
        ("poller = 3", "poller: expected a table, got 3"),
        ("[sources.nextmv]\nsecrets = []", "sources.nextmv.scheme: missing; expected one of"),
        (
            '[sources.nextmv]\nscheme = "md5"\nsecrets = ["x"]',
            "sources.nextmv.scheme: expected one of github, nextmv, none, standard-webhooks, "
            'stripe, got "md5"',
        ),
        ('[sources.nextmv]\nscheme = "nextmv"', "sources.nextmv.secrets: missing"),
        ('[sources.nextmv]\nscheme = "nextmv"\nsecrets = []', "expected a non-empty list"),
        ('[sources.nextmv]\nscheme = "nextmv"\nsecrets = [1]', "secrets[0]: expected a non-empty"),
        (
            '[sources.nextmv]\nscheme = "nextmv"\nsecrets = ["x"]\ntolerance = -1',
            "sources.nextmv.tolerance: expected a whole number of seconds >= 0, got -1",
        ),
        (
            '[sources."bad name"]\nprovider = "nextmv"\nscheme = "nextmv"\nsecrets = ["x"]',
            "sources.bad name: source name 'bad name' must be",
        ),
        (
            '[sources.acme]\nscheme = "nextmv"\nsecrets = ["x"]',
            "sources.acme.provider: unknown provider 'acme'; known:",
        ),
        (
            '[sources.cb]\nprovider = "workflow"\nscheme = "none"',
            'sources.cb.scheme: "none" (unsigned per-run callbacks) needs listener.callback_secret',
        ),
        (
            '[listener]\ncallback_secret = "c"\n[sources.cb]\nprovider = "workflow"\n'
            'scheme = "none"\nsecrets = ["x"]',
            'sources.cb.secrets: a source with scheme "none" takes no secrets',
        ),
        (
            '[providers.acme]\napi_key = "k"',
            "providers.acme.kind: expected one of http, local, metaflow, nextmv, noxus, workflow, "
            'got "acme"',
        ),
        ("[providers.nextmv]\nbase_url = 'http://x'", "providers.nextmv.api_key: missing"),
        (
            '[providers.engine]\nkind = "workflow"\napi_key = "k"',
            "providers.engine.base_url: missing; a workflow provider needs it",
        ),
        (
            '[providers.loc]\nkind = "local"\nsigner = {scheme = "md5", secrets = ["x"]}',
            "providers.loc.signer.scheme: expected one of github, nextmv, standard-webhooks",
        ),
        (
            "[handlers.save]\ndir = 'out'",
            "handlers.save: settings for handlers.save, which listener.plugins does not load",
        ),
    ],
)
def test_invalid_values_are_reported(tmp_path: Path, text: str, message: str) -> None:
    error = error_of(tmp_path, text + "\n")
    assert error.startswith(f"{tmp_path / 'listener.toml'}: ")
    assert message in error


def test_a_signature_secret_in_the_wrong_form_is_reported_without_its_value(
    tmp_path: Path,
) -> None:
    text = '[sources.local]\nscheme = "standard-webhooks"\nsecrets = ["not*base64*secret"]\n'
    message = error_of(tmp_path, text)
    assert "sources.local.secrets: StandardWebhooks secret #1 is not valid base64" in message
    assert "not*base64*secret" not in message


def test_a_file_that_is_not_toml_is_reported(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[poller\n")
    assert message.startswith(f"{tmp_path / 'listener.toml'}: not valid TOML:")


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(tmp_path / "nope.toml", env={})


# --- unknown keys -----------------------------------------------------------------------------


def test_an_unknown_section_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[pollers]\ngrace = 1\n")
    assert "pollers: unknown section (did you mean [poller]?)" in message
    assert "known sections: listener, server, sources" in message


def test_an_unknown_key_is_an_error_listing_the_known_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[poller]\ngrase = 1\n")
    assert "poller.grase: unknown key (did you mean 'grace'?)" in message
    assert "known keys: enabled, interval, grace, first_poll, deadline" in message


@pytest.mark.parametrize(
    ("text", "key", "known"),
    [
        ("[listener]\nplugin = []", "listener.plugin", "plugins"),
        ("[server]\nthreads = 2", "server.threads", "workers"),
        ("[dispatch]\nretries = 2", "dispatch.retries", "max_attempts"),
        ('[sources.n]\nscheme = "nextmv"\nsecret = ["x"]', "sources.n.secret", "secrets"),
        ('[providers.nextmv]\napi_key = "k"\napikey = "k"', "providers.nextmv.apikey", "api_key"),
        (
            '[providers.l]\nkind = "local"\nsigner = {secret = "x"}',
            "providers.l.signer.secret",
            "secrets",
        ),
    ],
)
def test_unknown_keys_in_every_table_are_errors(
    tmp_path: Path, text: str, key: str, known: str
) -> None:
    message = error_of(tmp_path, text + "\n")
    assert f"{key}: unknown key" in message
    assert known in message.split("known keys:")[1]


def test_provider_objects_cannot_be_set_from_a_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[providers.nextmv]\napi_key = "k"\nhttp_transport = "x"\n')
    assert "providers.nextmv.http_transport: unknown key" in message


# --- secrets stay hidden ----------------------------------------------------------------------


def test_repr_shows_no_secret(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        FULL.replace(
            'store = "sqlite:///data/listener.db"',
            'store = "postgresql://app:store-password@db.example.com/listener"',
        ),
    )
    config = load_config(path, env=FULL_ENV)
    for text in (repr(config), str(config), repr(config.sources), repr(config.providers)):
        for secret in [*FULL_ENV.values(), "store-password"]:
            assert secret not in text
    assert "postgresql://app:***@db.example.com/listener" in repr(config)
    assert "secrets=<2 hidden>" in repr(config)
    assert "settings=<api_key, base_url, instance_id>" in repr(config)


def test_errors_about_secret_keys_do_not_echo_them(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[listener]\nstore = "mysql://u:hunter2@db/x"\n')
    assert "hunter2" not in message
    message = error_of(tmp_path, "[listener]\ncallback_secret = 12345\n")
    assert "12345" not in message
    assert "listener.callback_secret: expected a non-empty string" in message


# --- finding the file -------------------------------------------------------------------------


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None, env={}) is None
    write(tmp_path, "")
    assert find_config(None, env={}) == Path("listener.toml")
    assert find_config(None, env={"LISTENER_CONFIG": "/etc/l.toml"}) == Path("/etc/l.toml")
    assert find_config("given.toml", env={"LISTENER_CONFIG": "/etc/l.toml"}) == Path("given.toml")


# --- building the listener --------------------------------------------------------------------


async def test_build_listener_makes_a_working_listener(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[listener]
store = "sqlite:///{tmp_path}/store/listener.db"
public_url = "https://hooks.example.com"
callback_secret = "env:CALLBACK"
plugins = ["handlers.log", "handlers.save"]

[sources.nextmv]
scheme = "nextmv"
secrets = ["env:NEXTMV_WEBHOOK_SECRET"]

[sources.flows]
provider = "workflow"
scheme = "none"

[providers.nextmv]
api_key = "env:NEXTMV_API_KEY"
base_url = "http://127.0.0.1:9"

[providers.local]
targets = {{echo = ["cat"]}}
signer = {{secrets = ["env:LOCAL_SIGNING"]}}

[dispatch]
concurrency = 3
max_attempts = 2

[poller]
grace = 12
first_poll = 4
deadline = 600
schedule_interval = 0.5
schedule_cap = 9
rate_limit = 3
batch_size = 7
lease = 20

[handlers.save]
dir = "{tmp_path}/results"
""",
    )
    (tmp_path / "store").mkdir()
    env = {**FULL_ENV, "LOCAL_SIGNING": HMAC}
    listener = build_listener(load_config(path, env=env))
    assert sorted(listener.sources) == ["flows", "nextmv"]
    assert listener.sources["flows"].uses_token
    assert isinstance(listener.providers["nextmv"], NextmvProvider)
    assert isinstance(listener.providers["local"], LocalProvider)
    assert listener.callback_secret == "callback-secret-value"
    assert listener.public_url == "https://hooks.example.com"
    assert listener.dispatch.concurrency == 3
    assert listener.dispatch.max_attempts == 2
    assert listener.poll.schedule == PollSchedule(interval=0.5, factor=2.0, cap=9.0, jitter=0.2)
    assert listener.poll.rate_limit == 3
    assert listener.poll.batch_size == 7
    assert listener.poll.lease == 20
    assert listener.client.grace == 12
    assert listener.client.first_poll == 4
    assert listener.client.deadline == 600
    assert listener.handlers.names() == ["handlers.log.log_transition", "handlers.save.save_result"]
    # The plugin's settings went to its configure().
    assert handlers.save.settings.get("dir") == f"{tmp_path}/results"

    await listener.start()
    try:
        assert (tmp_path / "store" / "listener.db").exists()
        result = await listener.track("nextmv", "routing", "run-1", RunStatus.SUCCEEDED)
        assert result.transition is not None
        assert len(result.call_ids) == len(listener.handlers)
    finally:
        await listener.stop()
        for provider in listener.providers.values():
            await provider.aclose()


async def test_build_listener_from_the_defaults_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    listener = build_listener(load_config(None, env={}))
    assert listener.sources == {}
    assert listener.poll.enabled is True
    async with listener:
        assert listener.started
    assert (tmp_path / "listener.db").exists()


def test_build_listener_options_override_the_file(tmp_path: Path) -> None:
    config = Config(
        store=f"sqlite:///{tmp_path}/l.db",
        dispatch=DispatchSettings(enabled=False, concurrency=3),
        poller=PollSettings(enabled=False, grace=5.0),
    )
    listener = build_listener(config)
    assert listener.poll == config.poller
    assert listener.dispatch == config.dispatch
    listener = build_listener(config, dispatch=True, poll=True)
    # Only `enabled` is overridden; the rest of each section stays as configured.
    assert listener.poll == PollSettings(enabled=True, grace=5.0)
    assert listener.dispatch == DispatchSettings(enabled=True, concurrency=3)


async def test_retention_and_lease_margin_reach_the_started_listener(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[listener]
store = "sqlite:///{tmp_path}/listener.db"
retention_days = 1.5

[dispatch]
handler_timeout = 7
lease_margin = 12.5
""",
    )
    listener = build_listener(load_config(path, env={}))
    assert listener.retention == 1.5 * 86400
    assert listener.dispatch.lease_margin == 12.5
    async with listener:
        assert listener.pruner is not None
        assert listener.pruner.running
        assert listener.pruner.older_than == 1.5 * 86400
        assert listener.dispatcher is not None
        assert listener.dispatcher.settings.lease_margin == 12.5
    assert listener.pruner is None


@pytest.mark.parametrize("days", ["0", None])
async def test_retention_is_off_at_0_or_absent(tmp_path: Path, days: str | None) -> None:
    text = f'[listener]\nstore = "sqlite:///{tmp_path}/listener.db"\n'
    if days is not None:
        text += f"retention_days = {days}\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.retention_days == 0
    listener = build_listener(config)
    assert listener.retention is None
    async with listener:
        assert listener.pruner is None


def test_retention_can_be_left_out_of_a_built_listener(tmp_path: Path) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/l.db", retention_days=30)
    assert build_listener(config).retention == 30 * 86400
    assert build_listener(config, retention=False).retention is None


def test_an_invalid_retention_override_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"LISTENER_RETENTION_DAYS": "0.25"})
    assert str(caught.value) == (
        "environment variable LISTENER_RETENTION_DAYS: listener.retention_days: expected a "
        'number of days >= 1, or 0 to keep everything, got "0.25"'
    )


def test_an_http_provider_can_feed_a_source(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[providers.acme]
kind = "http"
base_url = "http://127.0.0.1:9"
submit_path = "runs"
status_path = "runs/{run_id}"
headers = {Authorization = "env:ACME_AUTH"}

[sources.acme]
scheme = "github"
secrets = ["env:ACME_SECRET"]
""",
    )
    config = load_config(path, env={"ACME_AUTH": "Bearer t", "ACME_SECRET": "acme-secret-text"})
    listener = build_listener(config)
    assert isinstance(listener.providers["acme"], HttpProvider)
    assert listener.sources["acme"].provider == "acme"


def test_build_provider_by_table_name(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.nextmv]\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n')
    config = load_config(path, env={})
    assert isinstance(build_provider(config, "nextmv"), NextmvProvider)
    with pytest.raises(ConfigError, match=r"providers\.other: not configured; configured: nextmv"):
        build_provider(config, "other")


def test_a_provider_that_cannot_be_built_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.nextmv]\napi_key = ""\n')
    config = load_config(path, env={})
    with pytest.raises(ConfigError, match=r"providers\.nextmv: NextmvProvider needs an API key"):
        build_listener(config)


def test_two_tables_for_one_platform_are_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.nextmv]\napi_key = "a"\n[providers.prod]\nkind = "nextmv"\napi_key = "b"\n',
    )
    with pytest.raises(ConfigError, match="two tables make a provider named 'nextmv'"):
        build_listener(load_config(path, env={}))


def test_a_broken_plugin_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[listener]\nplugins = ["no_such_module_here"]\n')
    with pytest.raises(ConfigError) as caught:
        build_listener(load_config(path, env={}))
    assert str(caught.value).startswith(f"{path}: listener.plugins: handler plugin")


def test_settings_for_a_user_plugin_go_to_its_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_hooks.py").write_text(
        "from listener import Handlers\n"
        "handlers = Handlers()\n"
        "SEEN = {}\n"
        "def configure(settings):\n"
        "    SEEN.update(settings)\n"
        "@handlers.on_any\n"
        "async def note(event):\n"
        "    pass\n"
    )
    (tmp_path / "bare_hooks.py").write_text(
        "from listener import Handlers\nhandlers = Handlers()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(
        tmp_path,
        '[listener]\nplugins = ["my_hooks:handlers"]\n[handlers.my_hooks]\ncolour = "env:C"\n',
    )
    build_listener(load_config(path, env={"C": "blue"}))
    assert sys.modules["my_hooks"].SEEN == {"colour": "blue"}

    path = write(tmp_path, '[listener]\nplugins = ["bare_hooks"]\n[handlers.bare_hooks]\nx = 1\n')
    with pytest.raises(ConfigError, match=r"handlers\.bare_hooks: bare_hooks has no configure"):
        build_listener(load_config(path, env={}))


def test_plugin_settings_a_plugin_rejects_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "picky_hooks.py").write_text(
        "from listener import Handlers\n"
        "handlers = Handlers()\n"
        "def configure(settings):\n"
        "    raise ValueError('colour must be red')\n"
    )
    path = write(
        tmp_path, '[listener]\nplugins = ["picky_hooks"]\n[handlers.picky_hooks]\ncolour = 1\n'
    )
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError, match="picky_hooks rejected its settings"):
            build_listener(load_config(path, env={}))
    finally:
        sys.path.remove(str(tmp_path))


def test_a_referenced_value_is_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, '[listener]\nstore = "env:DATABASE_URL"\n')
    assert load_config(path, env={"DATABASE_URL": "postgresql://u@db/x"}).store == (
        "postgresql://u@db/x"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"DATABASE_URL": "mysql://u:hunter2@db/x"})
    assert "listener.store: expected a store URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_metrics_token_from_the_environment_is_the_receivers_and_never_shown(
    tmp_path: Path,
) -> None:
    config = load_config(None, env={"LISTENER_METRICS_TOKEN": "tok-abc"})
    assert config.receiver.metrics_token == "tok-abc"
    assert "tok-abc" not in repr(config)
    path = write(tmp_path, '[listener]\nmetrics_token = ""\n')
    with pytest.raises(ConfigError, match=r"listener\.metrics_token: expected a non-empty"):
        load_config(path, env={})


def test_secrets_written_inline_load_with_a_warning_that_does_not_show_them(
    tmp_path: Path,
) -> None:
    inline = "an-inline-webhook-secret"
    path = write(
        tmp_path,
        '[listener]\ncallback_secret = "inline-callback-secret"\n'
        f'[sources.nextmv]\nscheme = "nextmv"\nsecrets = ["{inline}", "env:OTHER"]\n',
    )
    config = load_config(path, env={"OTHER": "a-referenced-secret"})
    assert config.sources[0].secrets == (inline, "a-referenced-secret")
    assert [notice.split(": ")[1] for notice in config.notices] == [
        "listener.callback_secret",
        "sources.nextmv.secrets[0]",
    ]
    assert all("written inline" in notice for notice in config.notices)
    assert not any(inline in n or "inline-callback" in n for n in config.notices)
    referenced = write(tmp_path, '[sources.nextmv]\nscheme = "nextmv"\nsecrets = ["env:OTHER"]\n')
    assert load_config(referenced, env={"OTHER": "a-referenced-secret"}).notices == ()


def test_streams_are_configured_in_their_own_section(tmp_path: Path) -> None:
    keys = {field.name for field in dataclasses.fields(StreamSettings)}
    assert set(config_schema._STREAMS_KEYS) == keys
    path = write(tmp_path, '[streams]\nenabled = "on"\nmax_streams = 3\n')
    config = load_config(path, env={"LISTENER_STREAMS_RECONNECTS": "0"})
    assert config.streams == StreamSettings(enabled="on", max_streams=3, reconnects=0)
    assert build_listener(config).streams == config.streams
    assert "expected one of auto, on, off" in error_of(tmp_path, '[streams]\nenabled = "yes"\n')


def test_webhooks_section_and_its_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[webhooks]\nensure = "degraded"\nendpoint_prefix = "prod"\n')
    config = load_config(path, env={})
    assert config.webhooks == WebhookSettings(ensure="degraded", endpoint_prefix="prod")
    assert build_listener(config).webhooks == config.webhooks
    overridden = load_config(path, env={"LISTENER_WEBHOOKS_ENSURE": "start"})
    assert overridden.webhooks.ensure == "start"
    assert load_config(None, env={}).webhooks.ensure == "off"
    assert "webhooks.ensure: expected one of off, start, degraded" in error_of(
        tmp_path, '[webhooks]\nensure = "always"\n'
    )


def test_learning_durations_can_be_turned_off(tmp_path: Path) -> None:
    assert load_config(None).poller.learn == LearnSettings()
    off = load_config(write(tmp_path, "[poller]\nlearn_durations = false\nlearn_window = 5\n"))
    assert off.poller.learn is None
    env = {"LISTENER_POLLER_LEARN_REFRESH": "5"}
    assert load_config(None, env=env).poller.learn == LearnSettings(refresh=5.0)


def test_console_tokens_come_from_references_and_are_never_shown(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[console]\nread_token = "env:READ_T"\nadmin_token = "env:ADMIN_T"\nrefresh = 2\n',
    )
    read, admin = "r" * 20, "a" * 20
    config = load_config(path, env={"READ_T": read, "ADMIN_T": admin})
    assert config.console.read_token == read
    assert config.console.admin_token == admin
    assert config.console.refresh == 2
    assert config.console.enabled
    assert read not in repr(config)
    assert admin not in repr(config)
    assert config.notices == ()
    from listener.cli.serve import service_app

    assert "/ui" in [getattr(route, "path", "") for route in service_app(config).routes]


def test_console_tokens_are_checked_and_inline_ones_warned_about(tmp_path: Path) -> None:
    short = write(tmp_path, '[console]\nadmin_token = "env:T"\n')
    with pytest.raises(
        ConfigError, match=r"console\.admin_token: expected a string of at least 16"
    ):
        load_config(short, env={"T": "short"})
    inline = write(tmp_path, '[console]\nread_token = "an-inline-console-token"\n')
    config = load_config(inline, env={})
    assert [notice.split(": ")[1] for notice in config.notices] == ["console.read_token"]
    assert "an-inline-console-token" not in " ".join(config.notices)
    # LISTENER_CONSOLE_* is no override prefix: the tokens' own variables may use it.
    assert not load_config(None, env={"LISTENER_CONSOLE_TOKEN": "x" * 16}).console.enabled
    unknown = write(tmp_path, '[console]\nread_tokn = "env:T"\n')
    with pytest.raises(ConfigError, match="read_tokn"):
        load_config(unknown, env={"T": "t" * 16})

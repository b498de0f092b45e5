from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import event

from listener import Handlers, Listener, PluginError, RunEvent
from listener.registry import DuplicateHandler, load_entry_points, load_plugin


async def noop(event: RunEvent) -> None:
    pass


def sync_noop(event: RunEvent) -> None:
    pass


# -- registration and matching -----------------------------------------------------------


def test_on_filters_by_status_provider_and_application() -> None:
    handlers = Handlers()
    handlers.add(noop, "succeeded", "failed", name="ends")
    handlers.add(noop, "succeeded", provider="nextmv", name="nextmv-only")
    handlers.add(noop, application=["routing", "packing"], name="apps")
    handlers.add(noop, name="everything")

    assert handlers.match(event(status="succeeded")) == ["ends", "apps", "everything"]
    assert handlers.match(event(status="running", application="other")) == ["everything"]
    assert handlers.match(event(status="succeeded", provider="nextmv", application="x")) == [
        "ends",
        "nextmv-only",
        "everything",
    ]


def test_decorators_return_the_function_and_use_module_qualname() -> None:
    handlers = Handlers()

    @handlers.on("succeeded")
    async def first(event: RunEvent) -> None: ...

    @handlers.on_any
    def second(event: RunEvent) -> None: ...

    @handlers.on_any(provider="local", name="third")
    def third(event: RunEvent) -> None: ...

    assert callable(first)
    assert callable(second)
    assert callable(third)
    names = handlers.names()
    assert (
        names[0]
        == f"{__name__}.test_decorators_return_the_function_and_use_module_qualname.<locals>.first"
    )
    assert names[2] == "third"
    assert handlers.get(names[0]) is not None
    assert handlers.get(names[0]).is_async  # type: ignore[union-attr]
    assert not handlers.get(names[1]).is_async  # type: ignore[union-attr]
    assert names[1] in handlers
    assert "nope" not in handlers
    assert 3 not in handlers


def test_callable_objects_with_async_call_are_async() -> None:
    class Obj:
        async def __call__(self, event: RunEvent) -> None: ...

    handlers = Handlers()
    handler = handlers.add(Obj(), name="obj")
    assert handler.is_async


def test_duplicate_names_are_an_error() -> None:
    handlers = Handlers()
    handlers.add(noop)
    with pytest.raises(DuplicateHandler, match="noop"):
        handlers.add(noop)
    handlers.add(noop, name="another")


def test_unknown_status_fails_at_decoration() -> None:
    handlers = Handlers()
    with pytest.raises(ValueError, match="unknown run status 'done'"):
        handlers.on("done")


@pytest.mark.parametrize("bad", [{"provider": ""}, {"application": []}, {"timeout": 0}])
def test_bad_filters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Handlers().add(noop, **bad)  # type: ignore[arg-type]


def test_not_callable_is_refused() -> None:
    with pytest.raises(TypeError):
        Handlers().add("nope")  # type: ignore[arg-type]


def test_include_sees_later_registrations_and_rejects_clashes() -> None:
    root, child, other = Handlers(), Handlers(), Handlers()
    root.include(child)
    child.add(noop, name="late")
    assert root.names() == ["late"]
    root.include(child)  # the same router twice is a no-op
    assert len(root) == 1
    other.add(noop, name="late")
    with pytest.raises(DuplicateHandler):
        root.include(other)
    with pytest.raises(ValueError, match="cycle"):
        child.include(root)
    with pytest.raises(ValueError, match="cycle"):
        root.include(root)


def test_check_catches_a_clash_registered_after_include() -> None:
    root, first, second = Handlers(), Handlers(), Handlers()
    root.include(first)
    root.include(second)
    first.add(noop, name="same")
    second.add(sync_noop, name="same")
    with pytest.raises(DuplicateHandler):
        root.check()


def test_listener_offers_decorators_and_include() -> None:
    listener = Listener(store_url="sqlite://:memory:")
    router = Handlers()
    router.add(noop, "failed", name="from-router")
    listener.include(router)

    @listener.on("succeeded", name="direct")
    async def direct(event: RunEvent) -> None: ...

    @listener.on_any
    async def anything(event: RunEvent) -> None: ...

    assert listener.handlers.match(event(status="succeeded")) == [
        "direct",
        f"{__name__}.test_listener_offers_decorators_and_include.<locals>.anything",
    ]
    assert "from-router" in listener.handlers.names()


# -- plugins -----------------------------------------------------------------------------


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


PLUGIN = """
from listener import Handlers

handlers = Handlers()
extra = Handlers()

@handlers.on("succeeded")
async def {name}(event):
    pass

@extra.on("failed")
def {name}_failed(event):
    pass
"""


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("plug_", "listener_plugins."))]:
        del sys.modules[name]


def test_module_plugin_loads_every_router(plugin_path: Path) -> None:
    write(plugin_path / "plug_mod.py", PLUGIN.format(name="one"))
    routers = load_plugin("plug_mod")
    assert [r.names() for r in routers] == [["plug_mod.one"], ["plug_mod.one_failed"]]


def test_module_attribute_plugin(plugin_path: Path) -> None:
    write(plugin_path / "plug_attr.py", PLUGIN.format(name="two"))
    [router] = load_plugin("plug_attr:extra")
    assert router.names() == ["plug_attr.two_failed"]


def test_package_attribute_path(plugin_path: Path) -> None:
    write(plugin_path / "plug_pkg" / "__init__.py", "")
    write(plugin_path / "plug_pkg" / "inner.py", PLUGIN.format(name="x"))
    write(
        plugin_path / "plug_pkg" / "holder.py",
        "from types import SimpleNamespace\nfrom plug_pkg import inner\n"
        "ns = SimpleNamespace(router=inner.handlers)\n",
    )
    [router] = load_plugin("plug_pkg.holder:ns.router")
    assert router.names() == ["plug_pkg.inner.x"]


def test_directory_plugin_loads_each_module_with_stable_names(plugin_path: Path) -> None:
    directory = plugin_path / "dir"
    write(directory / "b.py", PLUGIN.format(name="bee"))
    write(directory / "a.py", PLUGIN.format(name="ay"))
    write(directory / "_private.py", "raise RuntimeError('not loaded')")
    write(directory / "notes.txt", "ignored")
    routers = load_plugin(str(directory))
    names = [name for router in routers for name in router.names()]
    assert names == ["a.ay", "a.ay_failed", "b.bee", "b.bee_failed"]
    # Loading again (a second Listener in the same process) reuses the modules.
    again = [name for router in load_plugin(str(directory)) for name in router.names()]
    assert again == names


def test_file_plugin_handlers_still_answer_to_their_earlier_names(plugin_path: Path) -> None:
    """Calls stored before handler names were readable named the loaded module
    (`listener_plugins.{stem}_{digest}.{function}`); they must still find their handler."""
    file = write(plugin_path / "report.py", PLUGIN.format(name="notify"))
    [first, _] = load_plugin(str(file))
    [module] = [m for m in sys.modules if m.startswith("listener_plugins.report_")]
    handler = first.get("report.notify")
    assert handler is not None
    assert first.get(f"{module}.notify") is handler
    assert first.names() == ["report.notify"]


def test_file_plugin(plugin_path: Path) -> None:
    file = write(plugin_path / "single.py", PLUGIN.format(name="solo"))
    routers = load_plugin(str(file))
    assert len(routers) == 2


@pytest.mark.parametrize(
    ("spec", "files", "message"),
    [
        ("plug_missing_mod", {}, "import failed: ModuleNotFoundError"),
        ("plug_broken", {"plug_broken.py": "import nowhere_to_be_found\n"}, "import failed"),
        ("plug_empty", {"plug_empty.py": "x = 1\n"}, "defines no Handlers router"),
        ("plug_attr2:nope", {"plug_attr2.py": "x = 1\n"}, "has no 'nope'"),
        ("plug_attr3:x", {"plug_attr3.py": "x = 1\n"}, "is a int, not Handlers"),
        (":x", {}, "expected module"),
        ("missing.py", {}, "no such file"),
        ("emptydir", {"emptydir/readme.md": "hi"}, "holds no module"),
        ("faildir", {"faildir/bad.py": "1/0\n"}, "ZeroDivisionError"),
    ],
)
def test_plugin_errors_name_the_plugin(
    plugin_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    files: dict[str, str],
    message: str,
) -> None:
    monkeypatch.chdir(plugin_path)
    for name, text in files.items():
        write(plugin_path / name, text)
    with pytest.raises(PluginError, match=message) as info:
        load_plugin(spec)
    assert repr(spec) in str(info.value)
    assert info.value.plugin == spec


def test_listener_plugins_argument_fails_construction(plugin_path: Path) -> None:
    write(plugin_path / "plug_bad_start.py", "raise ImportError('boom')\n")
    with pytest.raises(PluginError, match=r"plug_bad_start.*boom"):
        Listener(store_url="sqlite://:memory:", plugins=["plug_bad_start"])


def make_distribution(root: Path, entry_points: str) -> None:
    info = root / "demo_plugins-1.0.dist-info"
    write(info / "METADATA", "Metadata-Version: 2.1\nName: demo-plugins\nVersion: 1.0\n")
    write(info / "entry_points.txt", entry_points)


def test_entry_points(plugin_path: Path) -> None:
    write(plugin_path / "plug_ep_mod.py", PLUGIN.format(name="ep"))
    write(plugin_path / "plug_ep_attr.py", PLUGIN.format(name="attr"))
    make_distribution(
        plugin_path,
        "[listener.handlers]\nwhole = plug_ep_mod\nsingle = plug_ep_attr:handlers\n",
    )
    names = sorted(name for router in load_entry_points() for name in router.names())
    assert names == ["plug_ep_attr.attr", "plug_ep_mod.ep", "plug_ep_mod.ep_failed"]
    listener = Listener(store_url="sqlite://:memory:", entry_points=True)
    assert sorted(listener.handlers.names()) == names


@pytest.mark.parametrize(
    ("target", "files", "message"),
    [
        ("plug_ep_gone", {}, "import failed"),
        ("plug_ep_int:x", {"plug_ep_int.py": "x = 1\n"}, "names a int"),
    ],
)
def test_entry_point_errors(
    plugin_path: Path, target: str, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(plugin_path / name, text)
    make_distribution(plugin_path, f"[listener.handlers]\nbroken = {target}\n")
    with pytest.raises(PluginError, match=message) as info:
        load_entry_points()
    assert "broken" in info.value.plugin


def test_notice_handlers_are_registered_by_kind_and_provider() -> None:
    handlers = Handlers()
    inner = Handlers()

    @handlers.on_notice("webhooks_degraded")
    def any_provider(notice: object) -> None: ...

    @inner.on_notice("webhooks_degraded", "webhooks_recovered", provider="nextmv")
    async def nextmv_only(notice: object) -> None: ...

    handlers.include(inner)
    assert [h.func for h in handlers.notice_handlers("webhooks_degraded", "nextmv")] == [
        any_provider,
        nextmv_only,
    ]
    assert [h.func for h in handlers.notice_handlers("webhooks_recovered", "local")] == []
    assert handlers.notice_handlers("webhooks_recovered", "nextmv")[0].is_async
    # Notice handlers are not run handlers: no run event routes to them.
    assert handlers.names() == []


def test_notice_handler_mistakes_fail_at_registration() -> None:
    handlers = Handlers()
    with pytest.raises(ValueError, match="unknown notice kind 'webhook_degraded'"):
        handlers.on_notice("webhook_degraded")
    with pytest.raises(ValueError, match="at least one notice kind"):
        handlers.on_notice()

    @handlers.on_notice("webhooks_degraded", name="alert")
    def alert(notice: object) -> None: ...

    with pytest.raises(DuplicateHandler, match="'alert' is already registered"):
        handlers.on_notice("webhooks_recovered", name="alert")(alert)
    other = Handlers()
    other.on_notice("webhooks_recovered", name="alert")(alert)
    with pytest.raises(DuplicateHandler, match="alert"):
        handlers.include(other)

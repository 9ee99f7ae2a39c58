"""Loading plugins: names, class discovery, and errors that name the file and the cause."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from b2bua.plugin_loader import PluginLoadError, load_chain, load_routers
from b2bua.routing import (
    LocalUser,
    Reject,
    RequestView,
    RouterChain,
    RouterContext,
    ToTrunk,
    TrunkInfo,
)
from plugins.local_users import LocalUsersRouter
from plugins.prefix import PrefixRouter
from plugins.reject import RejectRouter
from plugins.static import StaticRouter

CONTEXT = RouterContext(
    domain="sip.example.com",
    lookup_user=lambda name: name == "1111",
    trunks={"carrier": TrunkInfo("carrier", "sip:198.51.100.10")},
    clock=Clock(),
)
REQUEST = RequestView(method="INVITE", request_uri="sip:1111@sip.example.com", ruri_user="1111")

GOOD = """
from zope.interface import implementer
from b2bua.routing import IRouter, LocalUser

@implementer(IRouter)
class Good:
    def __init__(self, config, context):
        self.config = config
        self.context = context

    def route(self, request):
        return LocalUser(self.config.get("user", "1111"))
"""


@pytest.fixture
def forget_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore sys.path and drop modules imported by the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # rewritten files reload reliably
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def plugin_dir(tmp_path: Path, forget_modules: None) -> Path:
    """A folder on sys.path for the test's plugins."""
    sys.path.insert(0, str(tmp_path))
    return tmp_path


def write(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def load_error(entries: list[dict[str, Any]], **kwargs: Any) -> PluginLoadError:
    with pytest.raises(PluginLoadError) as caught:
        load_routers(entries, CONTEXT, **kwargs)
    return caught.value


# -- what loads ---------------------------------------------------------------------------


def test_builtin_plugins_by_bare_name() -> None:
    routers = load_routers(
        [
            {"plugin": "reject", "rules": [{"pattern": "^900", "status": 403}]},
            {"plugin": "local_users"},
            {"plugin": "prefix", "routes": [{"prefix": "0", "trunk": "carrier"}]},
            {"plugin": "static", "target": "sip:127.0.0.1:5070"},
        ],
        CONTEXT,
    )
    assert [type(r) for r in routers] == [
        RejectRouter,
        LocalUsersRouter,
        PrefixRouter,
        StaticRouter,
    ]


def test_module_colon_class_gets_its_options_without_plugin(plugin_dir: Path) -> None:
    write(plugin_dir, "good_plugin.py", GOOD)
    (router,) = load_routers([{"plugin": "good_plugin:Good", "user": "42"}], CONTEXT)
    built: Any = router
    assert built.config == {"user": "42"} and built.context is CONTEXT
    assert router.route(REQUEST) == LocalUser("42")


def test_dotted_module_and_the_single_router_class_is_found(plugin_dir: Path) -> None:
    write(plugin_dir, "site_routing/__init__.py", "")
    write(plugin_dir, "site_routing/mine.py", GOOD + "\nclass Helper:\n    pass\n")
    (router,) = load_routers([{"plugin": "site_routing.mine"}], CONTEXT)
    assert type(router).__name__ == "Good"


def test_router_attribute_picks_among_several(plugin_dir: Path) -> None:
    code = GOOD + "\n@implementer(IRouter)\nclass Other(Good):\n    pass\n\nRouter = Other\n"
    write(plugin_dir, "several_ok.py", code)
    (router,) = load_routers([{"plugin": "several_ok"}], CONTEXT)
    assert type(router).__name__ == "Other"


def test_search_paths_are_added_for_plugins_next_to_the_config(
    tmp_path: Path, forget_modules: None
) -> None:
    folder = tmp_path / "router.d"
    write(folder, "beside_config.py", GOOD)
    (router,) = load_routers([{"plugin": "beside_config"}], CONTEXT, search_paths=[folder])
    assert router.route(REQUEST) == LocalUser("1111")
    assert sys.path[0] == str(folder)


def test_load_chain_builds_a_working_chain() -> None:
    chain = load_chain(
        [{"plugin": "local_users"}, {"plugin": "static", "target": "sip:127.0.0.1:5070"}], CONTEXT
    )
    assert isinstance(chain, RouterChain) and len(chain.routers) == 2
    results: list[Any] = []
    chain.route(REQUEST).addCallback(results.append)
    assert results == [LocalUser("1111")]


def test_reload_picks_up_an_edited_plugin(plugin_dir: Path) -> None:
    write(plugin_dir, "edited.py", GOOD)
    entries = [{"plugin": "edited:Good"}]
    assert load_routers(entries, CONTEXT)[0].route(REQUEST) == LocalUser("1111")
    write(plugin_dir, "edited.py", GOOD.replace('"1111"', '"2222222"'))
    assert load_routers(entries, CONTEXT)[0].route(REQUEST) == LocalUser("1111")
    reloaded = load_chain(entries, CONTEXT, reload_modules=True)
    assert reloaded.routers[0].route(REQUEST) == LocalUser("2222222")


def test_a_failed_reload_raises_and_leaves_the_old_routers_untouched(plugin_dir: Path) -> None:
    fragile = GOOD.replace('"1111"', "DEFAULT") + '\nDEFAULT = "1111"\n'
    write(plugin_dir, "fragile.py", fragile)
    (old,) = load_routers([{"plugin": "fragile"}], CONTEXT)
    broken = fragile.replace('DEFAULT = "1111"', 'DEFAULT = "9999"\nraise RuntimeError("half")')
    write(plugin_dir, "fragile.py", broken)
    with pytest.raises(PluginLoadError, match="RuntimeError: half"):
        load_chain([{"plugin": "fragile"}], CONTEXT, reload_modules=True)
    assert old.route(REQUEST) == LocalUser("1111")  # not the half-executed "9999"
    write(plugin_dir, "fragile.py", fragile.replace('DEFAULT = "1111"', 'DEFAULT = "3333"'))
    (new,) = load_routers([{"plugin": "fragile"}], CONTEXT, reload_modules=True)
    assert new.route(REQUEST) == LocalUser("3333") and old.route(REQUEST) == LocalUser("1111")


# -- what fails, and how it is reported ---------------------------------------------------

BROKEN: list[tuple[str, str, list[str]]] = [
    ("syntax.py", "def route(:\n", ["SyntaxError", "syntax.py:1"]),
    (
        "imports.py",
        "import no_such_dependency_xyz\n",
        ["ModuleNotFoundError", "no_such_dependency_xyz", "imports.py:1"],
    ),
    (
        "raises.py",
        "x = 1\nraise RuntimeError('module blew up')\n",
        ["RuntimeError: module blew up", "raises.py:2"],
    ),
    ("norouter.py", "class NotARouter:\n    pass\n", ["no class implementing IRouter"]),
]


@pytest.mark.parametrize(("filename", "code", "fragments"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_module_error_names_the_file_and_cause(
    plugin_dir: Path, filename: str, code: str, fragments: list[str]
) -> None:
    path = write(plugin_dir, filename, code)
    module = filename.removesuffix(".py")
    for plugin in (module, f"{module}:Router"):
        error = load_error([{"plugin": "local_users"}, {"plugin": plugin}])
        message = str(error)
        assert message.startswith("router[1]: ")
        assert str(path) in message and error.path == str(path) and error.index == 1
        assert error.plugin == plugin
        if plugin == module:
            for fragment in fragments:
                assert fragment in message


def test_syntax_error_in_a_module_the_plugin_imports_names_that_file(plugin_dir: Path) -> None:
    write(plugin_dir, "helper_bad.py", "x = = 1\n")
    path = write(plugin_dir, "uses_helper.py", "import helper_bad\n" + GOOD)
    message = str(load_error([{"plugin": "uses_helper"}]))
    assert str(path) in message and str(plugin_dir / "helper_bad.py") + ":1" in message


@pytest.mark.parametrize(
    ("code", "plugin", "fragment"),
    [
        (GOOD, "cls_missing:Nope", "has no attribute 'Nope'"),
        (
            GOOD + "\nclass Plain:\n    pass\n",
            "cls_missing:Plain",
            "Plain is not a class implementing IRouter",
        ),
        (GOOD + "\nRouter = 42\n", "cls_missing", "Router is not a class implementing IRouter"),
        (
            "from zope.interface import implementer\nfrom b2bua.routing import IRouter\n"
            "@implementer(IRouter)\nclass Lazy:\n    pass\n",
            "cls_missing",
            "does not fit IRouter",
        ),
        (
            GOOD + "\n@implementer(IRouter)\nclass Second(Good):\n    pass\n",
            "cls_missing",
            "several router classes (Good, Second)",
        ),
        (
            GOOD.replace("self.config = config", "raise KeyError('oops')"),
            "cls_missing",
            "Good(options, context) failed: KeyError: 'oops'",
        ),
    ],
)
def test_class_problems_name_the_file(
    plugin_dir: Path, code: str, plugin: str, fragment: str
) -> None:
    path = write(plugin_dir, "cls_missing.py", code)
    message = str(load_error([{"plugin": plugin}]))
    assert fragment in message and str(path) in message


def test_bad_options_name_the_key_and_the_file() -> None:
    error = load_error(
        [
            {"plugin": "static", "target": "sip:x"},
            {"plugin": "prefix", "routes": [{"prefix": "00", "trunk": "carrier", "strip": -1}]},
        ]
    )
    assert str(error).startswith(
        "router[1].routes[0].strip: must be at least 0, not -1 (plugin 'prefix', "
    )
    assert error.path is not None and error.path.endswith("plugins/prefix.py")
    assert error.path in str(error)


def test_unknown_option_is_named() -> None:
    error = load_error([{"plugin": "static", "target": "sip:x", "tagret": "sip:y"}])
    assert str(error).startswith("router[0].tagret: unknown option")


def test_missing_module_says_where_it_looked() -> None:
    message = str(load_error([{"plugin": "no_such_router_xyz"}]))
    assert "no module plugins.no_such_router_xyz or no_such_router_xyz" in message
    assert "sys.path" in message
    message = str(load_error([{"plugin": "nowhere_pkg_xyz.mod:Class"}]))
    assert message.startswith("router[0]: no module nowhere_pkg_xyz.mod")


def test_broken_parent_package_is_not_reported_as_missing(plugin_dir: Path) -> None:
    path = write(plugin_dir, "badpkg/__init__.py", "import missing_dep_of_badpkg\n")
    write(plugin_dir, "badpkg/mod.py", GOOD)
    message = str(load_error([{"plugin": "badpkg.mod:Good"}]))
    assert "missing_dep_of_badpkg" in message and str(path) in message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "router[0].plugin: is required"),
        ({"plugin": 3}, "router[0].plugin: must be a non-empty string"),
        ({"plugin": ""}, "router[0].plugin: must be a non-empty string"),
        ({"plugin": "a b"}, "router[0].plugin: must be a module name or 'package.module:Class'"),
        (
            {"plugin": "mod:Cls:x"},
            "router[0].plugin: must be a module name or 'package.module:Class'",
        ),
        ("static", "router[0]: must be a table"),
    ],
)
def test_entry_shape_errors(entry: Any, message: str) -> None:
    assert str(load_error([entry])).startswith(message)


def test_deferred_returning_plugin_through_the_loader(plugin_dir: Path) -> None:
    write(
        plugin_dir,
        "slow_plugin.py",
        """
        from twisted.internet.defer import Deferred
        from zope.interface import implementer
        from b2bua.routing import IRouter, LocalUser

        @implementer(IRouter)
        class Slow:
            pending = []

            def __init__(self, config, context):
                pass

            def route(self, request):
                d = Deferred()
                self.pending.append(d)
                return d
        """,
    )
    chain = load_chain([{"plugin": "slow_plugin"}], CONTEXT)
    result: Deferred[Any] = chain.route(REQUEST)
    slow: Any = chain.routers[0]
    fire: Callable[[Any], Any] = slow.pending[0].callback
    fire(LocalUser("1111"))
    results: list[Any] = []
    result.addCallback(results.append)
    assert results == [LocalUser("1111")]


def test_parsed_router_entries_from_the_config_module() -> None:
    @dataclass(frozen=True)
    class ParsedEntry:  # the shape of b2bua.config_schema.RouterEntry
        plugin: str
        options: Mapping[str, Any]

    entries = [
        ParsedEntry("local_users", MappingProxyType({})),
        ParsedEntry("static", MappingProxyType({"target": "sip:127.0.0.1:5070"})),
    ]
    routers = load_routers(entries, CONTEXT)
    assert [type(r) for r in routers] == [LocalUsersRouter, StaticRouter]
    error = load_error([ParsedEntry("static", {"target": "http://x"})])  # type: ignore[list-item]
    assert str(error).startswith("router[0].target: must be a sip: or sips: URI")


def test_chain_from_a_config_file(tmp_path: Path, forget_modules: None) -> None:
    from b2bua.config import load_config

    write(tmp_path, "site_router.py", GOOD)  # a plugin kept next to the config file
    config_path = write(
        tmp_path,
        "b2bua.toml",
        """
        [sip]
        domain = "sip.example.com"
        listen = ["udp:127.0.0.1:5060"]

        [[trunk]]
        name = "carrier"
        uri = "sip:198.51.100.10:5060"

        [[router]]
        plugin = "reject"
        rules = [{ pattern = "^900", status = 403, reason = "Premium numbers barred" }]

        [[router]]
        plugin = "prefix"
        routes = [{ prefix = "00", trunk = "carrier", strip = 2, prepend = "+" }]

        [[router]]
        plugin = "site_router:Good"
        user = "2222"
        """,
    )
    config = load_config(config_path, environ={})
    trunks = {trunk.name: TrunkInfo(trunk.name, trunk.uri) for trunk in config.trunks}
    context = RouterContext(config.sip.domain, lambda name: True, trunks, Clock())
    chain = load_chain(config.routers, context, [config.base_dir])
    results: list[Any] = []
    for number in ("900123", "0049301", "1111"):
        view = RequestView(method="INVITE", request_uri=f"sip:{number}@h", ruri_user=number)
        chain.route(view).addCallback(results.append)
    assert results == [
        Reject(403, "Premium numbers barred"),
        ToTrunk("carrier", "+49301"),
        LocalUser("2222"),
    ]

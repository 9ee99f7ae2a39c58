"""Finding, configuring and building router plugins from the `[[router]]` tables.

`plugin = "prefix"` is the module `plugins.prefix` shipped with the B2BUA (else a top-level
module `prefix` on the search path); `plugin = "package.module:Class"` names a class
exactly. Whatever goes wrong (import error, syntax error, no router class, bad options)
becomes one `PluginLoadError` whose message names the file and the cause, so the service
can refuse to start with a single clear line instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, NoReturn, Protocol

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyClass

from b2bua.routing import IRouter, RouterChain, RouterConfigError, RouterContext

BUILTIN_PACKAGE = "plugins"


class PluginLoadError(Exception):
    """A router plugin could not be found, imported or built from its options."""

    def __init__(self, message: str, *, index: int, plugin: str | None, path: str | None) -> None:
        super().__init__(message)
        self.index = index
        self.plugin = plugin
        self.path = path


# -- options ----------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class RouterOptions:
    """Typed reading of a router's options; every error names the key it is about.

    Call `finish()` once everything is read: keys nobody read are reported as unknown, so a
    typo in the config stops start-up instead of being ignored.
    """

    def __init__(self, config: Mapping[str, Any], prefix: str = "") -> None:
        if not isinstance(config, Mapping):
            raise RouterConfigError(prefix.rstrip(".") or "options", "must be a table")
        self._config = config
        self._prefix = prefix
        self._read: set[str] = set()
        self._children: list[RouterOptions] = []

    def key(self, name: str) -> str:
        """The full name of an option, as the config file's reader should see it."""
        return self._prefix + name

    def fail(self, name: str, problem: str) -> NoReturn:
        """Reject option `name`; for the checks the typed readers cannot do."""
        raise RouterConfigError(self.key(name), problem)

    def has(self, name: str) -> bool:
        return name in self._config

    def _get(self, name: str, kind: type[Any], kind_name: str, default: Any) -> Any:
        self._read.add(name)
        if name not in self._config:
            if default is MISSING:
                self.fail(name, "is required")
            return default
        value = self._config[name]
        # bool is an int in Python, but `strip = true` is a mistake, not 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(name, f"must be {kind_name}, not {type(value).__name__} {value!r}")
        return value

    def string(self, name: str, default: str = MISSING, *, allow_empty: bool = True) -> str:
        value: str = self._get(name, str, "a string", default)
        if not allow_empty and not value:
            self.fail(name, "must not be empty")
        return value

    def optional_string(self, name: str) -> str | None:
        value: str | None = self._get(name, str, "a string", None)
        return value

    def integer(
        self,
        name: str,
        default: int = MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value: int = self._get(name, int, "an integer", default)
        if minimum is not None and value < minimum:
            self.fail(name, f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            self.fail(name, f"must be at most {maximum}, not {value}")
        return value

    def boolean(self, name: str, default: bool = MISSING) -> bool:
        value: bool = self._get(name, bool, "true or false", default)
        return value

    def string_list(self, name: str, default: list[str] = MISSING) -> list[str]:
        values: list[Any] = self._get(name, list, "a list of strings", default)
        for index, value in enumerate(values):
            if not isinstance(value, str):
                self.fail(f"{name}[{index}]", f"must be a string, not {value!r}")
        return list(values)

    def string_map(
        self, name: str, default: dict[str, str] = MISSING, *, allow_empty: bool = True
    ) -> dict[str, str]:
        table: Mapping[str, Any] = self._get(name, Mapping, "a table of strings", default)
        for key, value in table.items():
            if not isinstance(value, str):
                self.fail(f"{name}.{_toml_key(key)}", f"must be a string, not {value!r}")
            if not allow_empty and not value:
                self.fail(f"{name}.{_toml_key(key)}", "must not be empty")
        return dict(table)

    def uri(self, name: str) -> str:
        """A required SIP or SIPS URI."""
        return self._check_uri(name, self.string(name))

    def optional_uri(self, name: str) -> str | None:
        value = self.optional_string(name)
        return None if value is None else self._check_uri(name, value)

    def uri_list(self, name: str, default: list[str] = MISSING) -> list[str]:
        values = self.string_list(name, default)
        return [self._check_uri(f"{name}[{i}]", value) for i, value in enumerate(values)]

    def _check_uri(self, name: str, value: str) -> str:
        scheme, colon, rest = value.partition(":")
        if scheme.lower() not in ("sip", "sips") or not colon or not rest:
            self.fail(name, f"must be a sip: or sips: URI, not {value!r}")
        if any(c.isspace() for c in value):
            self.fail(name, f"must not contain white space: {value!r}")
        return value

    def tables(self, name: str, default: list[Any] = MISSING) -> list[RouterOptions]:
        """An array of tables (`routes = [{...}, {...}]`), each read as options itself."""
        values: list[Any] = self._get(name, list, "a list of tables", default)
        prefix = self.key(name)
        children = [RouterOptions(value, f"{prefix}[{i}].") for i, value in enumerate(values)]
        self._children.extend(children)
        return children

    def finish(self) -> None:
        """Raise for the first option that no reader asked for (a typo, most likely)."""
        for name in self._config:
            if name not in self._read:
                self.fail(str(name), "unknown option")
        for child in self._children:
            child.finish()


def _toml_key(key: str) -> str:
    """Quote a key the way TOML needs it when it is not a bare key."""
    if key and key.isascii() and all(c.isalnum() or c in "-_" for c in key):
        return key
    return '"' + key.replace('"', '\\"') + '"'


# -- loading ----------------------------------------------------------------------------


class RouterEntry(Protocol):
    """A parsed `[[router]]` table (b2bua.config's RouterEntry fits)."""

    @property
    def plugin(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


# A raw `[[router]]` table ({"plugin": ..., **options}) or a parsed one.
Entry = Mapping[str, Any] | RouterEntry


def load_chain(
    entries: Sequence[Entry],
    context: RouterContext,
    search_paths: Iterable[str | os.PathLike[str]] = (),
    *,
    reload_modules: bool = False,
    timeout: float | None = None,
) -> RouterChain:
    """Build a complete chain, or raise PluginLoadError and build nothing.

    For SIGHUP: build with `reload_modules=True` (edited plugin files take effect) and swap
    the chain in only when this returns; calls already routed keep their decisions.
    """
    routers = load_routers(entries, context, search_paths, reload_modules=reload_modules)
    # Each entry's own `timeout` (config's RouterEntry), else `timeout` for the whole chain.
    limits = [getattr(entry, "timeout", timeout) for entry in entries]
    return RouterChain(routers, clock=context.clock, timeouts=limits)


def load_routers(
    entries: Sequence[Entry],
    context: RouterContext,
    search_paths: Iterable[str | os.PathLike[str]] = (),
    *,
    reload_modules: bool = False,
) -> list[IRouter]:
    """Construct one router per `[[router]]` table, in order.

    `search_paths` are folders put in front of sys.path (once) so plugins kept next to the
    config can be named; `reload_modules` re-executes plugin modules already imported.
    """
    paths = _add_search_paths(search_paths)
    reloaded: set[str] = set()
    routers = []
    for index, entry in enumerate(entries):
        loader = _EntryLoader(index, entry, paths, reload_modules, reloaded)
        routers.append(loader.build(context))
    return routers


def _add_search_paths(search_paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    paths = [os.path.abspath(os.fspath(p)) for p in search_paths]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    importlib.invalidate_caches()
    return paths


class _EntryLoader:
    """Turns one `[[router]]` table into a router; every failure names the entry."""

    def __init__(
        self,
        index: int,
        entry: Entry,
        search_paths: list[str],
        reload_modules: bool,
        reloaded: set[str],
    ) -> None:
        self.index = index
        self.entry = entry
        self.search_paths = search_paths
        self.reload_modules = reload_modules
        self.reloaded = reloaded
        self.plugin: str | None = None
        self.path: str | None = None

    def fail(self, problem: str, key: str | None = None) -> NoReturn:
        where = f"router[{self.index}]" + (f".{key}" if key else "")
        about = [f"plugin {self.plugin!r}"] if self.plugin else []
        about += [self.path] if self.path else []
        suffix = f" ({', '.join(about)})" if about else ""
        raise PluginLoadError(
            f"{where}: {problem}{suffix}", index=self.index, plugin=self.plugin, path=self.path
        )

    def build(self, context: RouterContext) -> IRouter:
        if isinstance(self.entry, Mapping):
            plugin = self.entry.get("plugin")
            options = {key: value for key, value in self.entry.items() if key != "plugin"}
        elif hasattr(self.entry, "plugin") and hasattr(self.entry, "options"):
            plugin, options = self.entry.plugin, dict(self.entry.options)
        else:
            self.fail("must be a table")
        if not isinstance(plugin, str) or not plugin:
            self.fail("is required" if plugin is None else "must be a non-empty string", "plugin")
        self.plugin = plugin
        module_name, _, class_name = plugin.partition(":")
        if not _is_dotted_name(module_name) or (class_name and not class_name.isidentifier()):
            self.fail("must be a module name or 'package.module:Class'", "plugin")
        module = self._import(module_name)
        router_class = self._find_class(module, class_name)
        try:
            router: IRouter = router_class(options, context)
        except RouterConfigError as error:
            self.fail(error.problem, error.key)
        except Exception as error:
            self.fail(f"{router_class.__name__}(options, context) failed: {_describe(error)}")
        return router

    def _import(self, module_name: str) -> ModuleType:
        candidates = [module_name] if "." in module_name else []
        candidates = candidates or [f"{BUILTIN_PACKAGE}.{module_name}", module_name]
        for candidate in candidates:
            try:
                spec = importlib.util.find_spec(candidate)
            except ModuleNotFoundError as error:
                if error.name and (candidate + ".").startswith(error.name + "."):
                    continue  # a parent package is missing: not here
                self.fail(f"cannot import {candidate}: {_describe(error)}")
            except Exception as error:
                self.fail(f"cannot import {candidate}: {_describe(error)}")
            if spec is None:
                continue
            self.path = spec.origin if spec.has_location else None
            return self._execute(candidate)
        searched = _searched(candidates, self.search_paths)
        self.fail(f"no module {' or '.join(candidates)} (searched {searched})")

    def _execute(self, name: str) -> ModuleType:
        try:
            if self.reload_modules and name in sys.modules and name not in self.reloaded:
                self.reloaded.add(name)
                return _fresh_import(name)
            return importlib.import_module(name)
        except Exception as error:
            self.fail(f"cannot import {name}: {_describe(error)}")

    def _find_class(self, module: ModuleType, class_name: str) -> type:
        if class_name:
            found = getattr(module, class_name, None)
            if found is None:
                self.fail(f"{module.__name__} has no attribute {class_name!r}")
        elif hasattr(module, "Router"):
            found = module.Router
            class_name = "Router"
        else:
            found = self._only_router_class(module)
            class_name = found.__name__
        if not isinstance(found, type) or not IRouter.implementedBy(found):
            self.fail(f"{module.__name__}.{class_name} is not a class implementing IRouter")
        try:
            verifyClass(IRouter, found)
        except Invalid as error:
            self.fail(f"{module.__name__}.{class_name} does not fit IRouter: {error}")
        return found

    def _only_router_class(self, module: ModuleType) -> type:
        classes = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and value.__module__ == module.__name__
            and IRouter.implementedBy(value)
        ]
        if len(classes) == 1:
            return classes[0]
        if not classes:
            self.fail(
                f"{module.__name__} has no class implementing IRouter"
                " (decorate one with @implementer(IRouter))"
            )
        names = ", ".join(sorted(c.__name__ for c in classes))
        self.fail(
            f"{module.__name__} has several router classes ({names});"
            " pick one with 'module:Class' or set Router = ... in the module"
        )


def _fresh_import(name: str) -> ModuleType:
    """Import `name` again into a new module object; on failure the old one stays.

    Unlike importlib.reload, a module that fails half-way does not leave the routers of the
    running chain looking at half-updated globals.
    """
    old = sys.modules.pop(name)
    try:
        return importlib.import_module(name)
    except BaseException:
        sys.modules[name] = old
        raise


def _is_dotted_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _describe(error: BaseException) -> str:
    """One line: the exception and where it was raised, innermost frame first."""
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error.msg} at {error.filename}:{error.lineno}"
    text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames and not frames[-1].filename.startswith("<frozen"):
        text += f" at {frames[-1].filename}:{frames[-1].lineno}"
    return text


def _searched(candidates: Sequence[str], search_paths: list[str]) -> str:
    """Where a missing plugin was looked for, to put in the error message."""
    places: list[str] = []
    if candidates[0].startswith(BUILTIN_PACKAGE + "."):
        try:
            spec = importlib.util.find_spec(BUILTIN_PACKAGE)
        except ImportError:
            spec = None
        if spec is not None and spec.submodule_search_locations:
            places.extend(spec.submodule_search_locations)
    places.extend(search_paths)
    places.append("the rest of sys.path" if search_paths else "sys.path")
    return ", ".join(places)

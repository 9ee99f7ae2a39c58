"""Apply ``[log] level`` and ``[log] format`` to the observers twistd set up, and a
cheap ``Logger`` for the call path.

twistd starts logging before the service starts, with its own text
observer.  At start we wrap what is there in a level filter, or, for
``format = "json"``, replace it with one JSON object per line on standard
output (what journald and log shippers read).

Twisted's ``Logger`` builds, publishes and only then filters every event, and
as a class attribute it makes a new ``Logger`` on every ``self.log`` access:
with several lines per call step that was a large share of a call's CPU
(bench/README.md).  :class:`Logger` drops an event below the configured
level with one set lookup and hands out one logger per class.
"""

from __future__ import annotations

import sys
from time import time
from typing import Any

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                            globalLogPublisher, jsonFileLogObserver)
from twisted.logger import Logger as _TwistedLogger

__all__ = ["Logger", "apply_log_settings", "enabled", "set_level"]

_ALL_LEVELS = frozenset(LogLevel.iterconstants())
_enabled: frozenset[Any] = _ALL_LEVELS
"""Levels that reach the global publisher; all until ``[log] level`` is applied."""


def set_level(level: Any) -> None:
    """Let :class:`Logger` events at ``level`` and above through (None: all)."""
    global _enabled
    _enabled = _ALL_LEVELS if level is None else frozenset(
        candidate for candidate in _ALL_LEVELS if candidate >= level)


def enabled(level: Any) -> bool:
    """Whether an event at ``level`` would be logged: check before costly arguments."""
    return level in _enabled


class Logger(_TwistedLogger):
    """A twisted ``Logger`` whose disabled levels cost almost nothing.

    Events go to the same observers in the same form, except that
    ``log_source`` is the class a class-attribute logger is declared on, not
    the instance (nothing here reads it; it saves one Logger per access).
    """

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        assert owner is not None
        per_class: dict[type, Logger] | None = self.__dict__.get("_per_class")
        if per_class is None:
            per_class = self.__dict__["_per_class"] = {}
        logger = per_class.get(owner)
        if logger is None:
            logger = per_class[owner] = self.__class__(
                f"{owner.__module__}.{owner.__name__}", owner, observer=self.observer)
        return logger

    def emit(self, level: Any, format: str | None = None, **kwargs: object) -> None:
        if level not in _enabled:
            if level not in _ALL_LEVELS:   # twisted reports the bad level
                super().emit(level, format, **kwargs)
            return
        for key, value in kwargs.items():
            if value.__class__ is str and not value.isascii():
                kwargs[key] = _printable(value)
        kwargs.update(log_logger=self, log_level=level, log_namespace=self.namespace,
                      log_source=self.source, log_format=format, log_time=time())
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)  # type: ignore[call-arg,misc]  # a zope interface: no self


def _printable(text: str) -> str:
    """Bytes a peer sent that were not UTF-8 (lone surrogates after parsing) as
    U+FFFD: a text log on a UTF-8 stream refuses them, and the line was lost
    with a traceback about the observer instead."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def apply_log_settings(settings: Any, publisher: Any = globalLogPublisher,
                       stream: Any = None) -> None:
    level: LogLevel = settings.log_level
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    current = list(getattr(publisher, "_observers", ()))
    for observer in current:
        publisher.removeObserver(observer)
    targets: list[Any] = current
    if settings.format == "json":
        # sys.__stdout__: twistd points sys.stdout back into the log system itself.
        out: Any = stream or sys.__stdout__
        targets = [jsonFileLogObserver(out)]
    # Twisted's observers and predicates are zope interfaces: mypy sees no match.
    filters: list[Any] = [predicate]
    for observer in targets:
        publisher.addObserver(FilteringLogObserver(observer, filters))
    if publisher is globalLogPublisher:
        # Every observer of the process is filtered at this level from now on.
        set_level(level)

"""Apply ``[log] level`` and ``[log] format`` to the observers twistd set up.

twistd starts logging before the service starts, with its own text
observer.  At start we wrap what is there in a level filter, or, for
``format = "json"``, replace it with one JSON object per line on standard
output (what journald and log shippers read).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                            globalLogPublisher, jsonFileLogObserver)


def apply_log_settings(settings: Any, publisher: Any = globalLogPublisher,
                       stream: Any = None) -> None:
    level: LogLevel = settings.log_level
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    current = list(getattr(publisher, "_observers", ()))
    for observer in current:
        publisher.removeObserver(observer)
    if settings.format == "json":
        # sys.__stdout__: twistd points sys.stdout back into the log system itself.
        targets = [jsonFileLogObserver(stream or sys.__stdout__)]
    else:
        targets = current
    for observer in targets:
        publisher.addObserver(FilteringLogObserver(observer, [predicate]))

"""At most one log line per kind of event per interval, so a flood of bad input cannot flood the
log (the services' metrics count every one).

    rejects = LimitedLog(logger, every_s=10.0)
    rejects.warning("not_msgpack", "rejected a request: %s", detail)      # also .info, .error

Per kind, the first event is logged at once; the others within `every_s` of that line are held
back, and the next line logged for that kind ends with "(and N more like it not logged)".  Kinds
should come from a small fixed set (reject reasons): one entry is kept per kind ever seen.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class LimitedLog:
    """Per kind, at most one line every `every_s` seconds of `clock`; the next line says how many
    were held back in between.  Safe to call from several threads (a socket monitor's, say)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.every_s, self.clock = logger, every_s, clock
        self._last: dict[str, float] = {}      # kind -> when its latest line was written
        self._quiet: dict[str, int] = {}       # kind -> events not logged since that line
        self._lock = threading.Lock()

    def info(self, kind: str, msg: str, *args, exc_info: bool = False) -> None:
        self._log(logging.INFO, kind, msg, args, exc_info)

    def warning(self, kind: str, msg: str, *args, exc_info: bool = False) -> None:
        self._log(logging.WARNING, kind, msg, args, exc_info)

    def error(self, kind: str, msg: str, *args, exc_info: bool = False) -> None:
        self._log(logging.ERROR, kind, msg, args, exc_info)

    def _log(self, level: int, kind: str, msg: str, args: tuple, exc_info: bool) -> None:
        with self._lock:
            now, last = self.clock(), self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._quiet[kind] = self._quiet.get(kind, 0) + 1
                return
            quiet = self._quiet.pop(kind, 0)
            self._last[kind] = now
        suffix = f" (and {quiet} more like it not logged)" if quiet else ""
        self.logger.log(level, msg + suffix, *args, exc_info=exc_info)

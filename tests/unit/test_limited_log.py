"""tempest_common.limited_log: at most one log line per kind per interval, the next one saying how
many were held back (the learner's, the replay's and the expert's reject logging)."""
from __future__ import annotations

import logging
import time

from tempest_common.limited_log import LimitedLog


def test_a_flood_logs_one_line_per_kind_per_interval(caplog):
    now = [0.0]
    limited = LimitedLog(logging.getLogger("test.limited"), every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.limited"):
        for i in range(1000):
            limited.warning("a", "bad thing %d", i)
        limited.warning("b", "other thing")
        now[0] = 10.0
        limited.warning("a", "bad thing %d", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing 0", "other thing", "bad thing 1000 (and 999 more like it not logged)"]


def test_reports_what_it_did_not_log_on_the_real_clock(caplog):
    log = logging.getLogger("test.rejects")
    rejects = LimitedLog(log, every_s=0.2)
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        for _ in range(50):
            rejects.warning("busy", "refused %s", "x")
        rejects.warning("other", "another reason logs at once")
        time.sleep(0.25)
        rejects.warning("busy", "refused %s", "y")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused x", "another reason logs at once", "refused y (and 49 more like it not logged)"]


def test_each_method_logs_at_its_level_and_the_count_starts_over(caplog):
    now = [0.0]
    limited = LimitedLog(logging.getLogger("test.levels"), every_s=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, "test.levels"):
        limited.info("i", "info %d", 1)
        limited.warning("w", "warning %d", 1)
        limited.error("e", "error %d", 1)
        limited.error("e", "error %d", 2)          # held back
        now[0] = 1.0
        limited.error("e", "error %d", 3)
        now[0] = 2.0
        limited.error("e", "error %d", 4)          # nothing held back since the last line
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "info 1"), (logging.WARNING, "warning 1"), (logging.ERROR, "error 1"),
        (logging.ERROR, "error 3 (and 1 more like it not logged)"), (logging.ERROR, "error 4")]


def test_exc_info_reaches_the_line_logged(caplog):
    limited = LimitedLog(logging.getLogger("test.exc"), clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, "test.exc"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            limited.warning("internal_error", "failed: %s", "boom", exc_info=True)
            limited.warning("internal_error", "failed: %s", "again", exc_info=True)   # held back
        limited.warning("plain", "no traceback")
    assert [r.getMessage() for r in caplog.records] == ["failed: boom", "no traceback"]
    assert caplog.records[0].exc_info[0] is RuntimeError and not caplog.records[1].exc_info

"""The replay service: PULL for transition batches, ROUTER for sample and priority requests.

Every batch goes into the in-memory mirror at once (sampling reads it) and, through the
background writer, into Redis (the durable copy).  On start the mirror is rebuilt from Redis,
so a restart carries on where the last run stopped.  Sample requests name n and gamma; the
n-step returns are built at sample time.  Requests beyond the samples-per-insert cap, or before
the replay holds MIN_SIZE_TO_SAMPLE transitions, wait up to the request's wait_s, then are
refused with a reason; the learner decides what to do.  Malformed messages are counted, never
fatal, and so is every other reject (limits.py has the limits a peer cannot push past).  Every
transition row is accounted per stream (accounting.py; README, "Accounting"): received, then
stored or dropped with a reason; rows a stream's numbering shows never arrived, missing.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import msgpack
import numpy as np
import zmq

from tempest_common.heap import HeapTrimmer
from tempest_common.limited_log import LimitedLog
from tempest_common.messages import Ack, PriorityReset, PriorityUpdate, SampleReply, SampleRequest, TransitionBatch
from tempest_common.socket_limits import limit_message_size, watch_dropped_connections
from tempest_common.wire import MessageError, decode, encode

from .accounting import StreamAccounting, WorkerLabels, seq_holes, tail
from .config import ReplayConfig
from .inplace import InPlace
from .limits import (MAX_N_STEP, MAX_PARKED, MAX_PRIORITY_ROWS, MAX_SAMPLE_ROWS, MAX_WAIT_S, PRIORITY_CAP,
                     ROUTER_RCVHWM, ROUTER_SNDHWM, RepliesInFlight, largest_priority_update_bytes,
                     largest_transition_batch_bytes)
from .metrics import ReplayMetrics
from .mirror import ReplayMirror
from .storage import ChunkStore

log = logging.getLogger("replay.service")


def _stream_of(payload: bytes | None) -> str | None:
    """The stream_id an unreadable chunk names, if its bytes still say (restore only)."""
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except Exception:   # None, or bytes that are not msgpack: nothing to say
        return None
    stream = obj.get("stream_id") if isinstance(obj, dict) else None
    return stream if isinstance(stream, str) else None


class ReplayService:
    def __init__(self, cfg: ReplayConfig, metrics: ReplayMetrics | None = None, context: zmq.Context | None = None):
        self.cfg = cfg
        self.metrics = metrics or ReplayMetrics()
        self.mirror = ReplayMirror(cfg.capacity, cfg.state_dim, np.dtype(cfg.state_dtype), cfg.alpha,
                                   new_priority_cap=cfg.new_priority_cap)
        self.store = ChunkStore(cfg.redis_url, cfg.redis_prefix, cfg.capacity, cfg.redis_buffer_chunks,
                                on_written=self.metrics.written.inc, on_lost=self.metrics.lost.inc)
        self.rng = np.random.default_rng(None if cfg.seed < 0 else cfg.seed)
        ctx = context or zmq.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 10_000)
        # ZeroMQ cuts the connection of a peer whose message is over the limit (never assembled)
        limit_message_size(self.pull, largest_transition_batch_bytes(cfg.state_dim))
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, ROUTER_SNDHWM)
        self.router.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
        limit_message_size(self.router, largest_priority_update_bytes())
        self.accounting = StreamAccounting()
        self.worker_labels = WorkerLabels()
        self.inserted_total = 0
        self.sampled_total = 0
        self._parked: list[tuple[float, list[bytes], SampleRequest]] = []
        self._replies = RepliesInFlight()
        self._heap = HeapTrimmer(every_s=5.0)
        self._reject_log = LimitedLog(log)
        self.store.on_priorities_saved = self.metrics.priority_snapshots.inc
        self._stop = threading.Event()
        self._warned_dim = False
        self._next_snapshot = time.monotonic() + cfg.priority_snapshot_s

    def stop(self) -> None:
        self._stop.set()

    # -- start-up -------------------------------------------------------------------------------
    def restore(self) -> None:
        chunks, next_seq, counters = self.store.load()
        self.inserted_total, self.sampled_total = counters["inserted_total"], counters["sampled_total"]
        total_rows = sum(r for _, r in chunks)
        log.info("rebuilding the mirror from Redis: %d chunks, %d transitions", len(chunks), total_rows)
        done, skipped, t0, last_report = 0, 0, time.monotonic(), time.monotonic()
        lacking = seq_holes(chunks)   # rows Redis lost between chunks; unreadable chunks' rows join below
        rows_of = dict(chunks)
        # store.load has the chunks in seq order, each once: the ring's order, so links only go forwards
        for seq, payload in self.store.iter_payloads(chunks):
            try:
                if payload is None:
                    raise ValueError("listed, but its payload is missing")
                batch = decode(payload, expect=TransitionBatch)   # schema 1 too: labels derived (wire.UPGRADES)
                stored = self._conform(batch)
                if not self._finite(stored):   # stored before the check was made in the stored dtype
                    raise ValueError(f"NaN/inf values or states beyond {self.mirror.state.dtype}")
                self.mirror.insert(stored, seq_start=seq)
            except (MessageError, ValueError) as exc:
                # No n-step window may span the hole: break the chunk's stream, or every stream
                # when the chunk does not say whose it was (links also need (episode, step)
                # continuity; this covers a stream whose steps do not show the gap).
                stream = _stream_of(payload)
                if stream is None:
                    self.mirror.break_all_streams()
                else:
                    self.mirror.break_stream(stream)
                skipped += 1
                lacking += rows_of[seq]
                if skipped <= 5:
                    log.error("skipping unreadable chunk %d in Redis: %s", seq, exc)
                continue
            done += batch.num_rows()
            # each stream's next row, as Redis has it: a live batch beyond it is a "restart" gap
            self.accounting.observe(batch.stream_id, batch.first_row, batch.num_rows())
            if time.monotonic() - last_report > 2:
                log.info("rebuild: %d / %d transitions (%.0f%%)", done, total_rows, 100 * done / max(1, total_rows))
                last_report = time.monotonic()
        if skipped:
            log.error("rebuild: %d of %d chunks in Redis unreadable or missing, skipped; stream links broken "
                      "across each, so no n-step window spans a hole", skipped, len(chunks))
        if lacking:
            log.error("rebuild: Redis lacks %d rows between its chunks or could not give them back (a restart "
                      "from an append-only file behind the replay, or a full write buffer)", lacking)
        self.metrics.restore_missing.set(lacking)
        self.accounting.mark_restored()
        self.mirror.next_seq = max(self.mirror.next_seq, next_seq)
        self._restore_priorities()
        self._update_gauges()
        log.info("mirror rebuilt: %d transitions in %.1f s", self.mirror.size, time.monotonic() - t0)

    # -- priorities survive restarts through a snapshot in Redis (storage.py has the layout) ------
    def _snapshot_priorities(self) -> None:
        self.store.save_priorities(*self.mirror.priority_snapshot(), self.mirror.alpha, self.mirror.max_priority)

    def _restore_priorities(self) -> None:
        try:
            snap = self.store.load_priorities()
        except ValueError as exc:
            log.error("ignoring the unreadable priority snapshot in Redis: %s", exc)
            return
        if snap is None:
            return
        restored = self.mirror.restore_priorities(*snap)
        self.metrics.priorities_restored.set(restored)
        log.info("priorities restored for %d of %d snapshot rows (the rest were overwritten since)",
                 restored, len(snap[0]))

    def bind(self) -> None:
        for name, sock in (("pull", self.pull), ("router", self.router)):
            watch_dropped_connections(sock, self._dropped_connection_counter(name, sock), f"replay-{name}")
        self.pull.bind(self.cfg.pull_bind)
        self.router.bind(self.cfg.router_bind)

    def _dropped_connection_counter(self, name: str, sock: zmq.Socket):
        counter, limit = self.metrics.connections_dropped.labels(socket=name), sock.getsockopt(zmq.MAXMSGSIZE)

        def on_drop() -> None:   # on the monitor's thread: a counter and a log line only
            counter.inc()
            self._reject_log.info(f"dropped:{name}", "the %s socket lost a connection (a message over %d bytes, or "
                                  "a peer that left)", name, limit)
        return on_drop

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> None:
        self.store.start()
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        log.info("replay serving: transitions on %s, requests on %s", self.cfg.pull_bind, self.cfg.router_bind)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if self.pull in events:
                    self._drain_transitions()
                if self.router in events:
                    self._drain_requests()
                self._serve_parked()
                self._update_gauges()
                self._heap.maybe_trim()   # a burst of large messages does not pin its memory
                if self.cfg.priority_snapshot_s and time.monotonic() >= self._next_snapshot:
                    self._snapshot_priorities()
                    self._next_snapshot = time.monotonic() + self.cfg.priority_snapshot_s
        finally:
            self._snapshot_priorities()
            self.store.stop()
            self.pull.close(0)
            self.router.close(0)

    def _drain_transitions(self, max_messages: int = 256) -> None:
        for _ in range(max_messages):
            try:
                payload = self.pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.insert_payload(payload)

    def insert_payload(self, payload: bytes) -> None:
        try:
            batch = decode(payload, expect=TransitionBatch)
        except MessageError as exc:
            # Whose rows, and how many, the bytes do not say: the stream's next batch shows them
            # as missing (a gap in its row numbers).
            self.metrics.malformed.labels(reason=exc.reason).inc()
            self._reject_log.warning(f"malformed:{exc.reason}", "dropped a malformed transition batch: %s", exc)
            return
        rows = batch.num_rows()
        count = self.metrics.worker(self.worker_labels(batch.worker_id))
        count.received.inc(rows)
        verdict = self.accounting.observe(batch.stream_id, batch.first_row, rows)
        self.metrics.batch_outcomes[verdict.outcome].inc()
        if verdict.missing:
            count.missing[verdict.missing_reason].inc(verdict.missing)
            self._reject_log.info(f"missing:{verdict.missing_reason}", "stream %s: %d rows missing before row %d "
                                  "(%s)", batch.stream_id, verdict.missing, batch.first_row, verdict.missing_reason)
        if verdict.duplicate:
            # Rows the stream already had are never stored twice: dropped and counted; the rest of
            # a part-duplicate batch (only a broken or hostile sender makes one) is stored as new.
            count.dropped["duplicate"].inc(verdict.duplicate)
            self._reject_log.warning("dropped:duplicate", "stream %s: %d of %d rows from row %d came already; "
                                     "dropped", batch.stream_id, verdict.duplicate, rows, batch.first_row)
            if verdict.duplicate == rows:
                return
            batch = tail(batch, verdict.duplicate)
            payload, rows = encode(batch), batch.num_rows()
        if batch.state.shape[1] != self.cfg.state_dim:
            self.metrics.malformed.labels(reason="bad_field").inc()
            count.dropped["malformed"].inc(rows)
            if not self._warned_dim:
                log.error("dropping batches with state size %d (replay expects STATE_DIM=%d)",
                          batch.state.shape[1], self.cfg.state_dim)
                self._warned_dim = True
            return
        if rows == 0:
            return
        # Checked in the stored dtype: a float32 state of 1e6 is finite on the wire but inf in float16.
        stored = self._conform(batch)
        if not self._finite(stored):
            self.metrics.malformed.labels(reason="nonfinite").inc()
            count.dropped["nonfinite"].inc(rows)
            self.mirror.break_stream(batch.stream_id)
            self._reject_log.warning("malformed:nonfinite", "dropped a transition batch of stream %s with NaN/inf "
                                     "values, or states beyond %s (%d rows)", batch.stream_id,
                                     self.mirror.state.dtype, rows)
            return
        breaks = self.mirror.link_breaks
        seq = self.mirror.insert(stored)
        self.metrics.stream_breaks.inc(self.mirror.link_breaks - breaks)
        self.store.put(seq, rows, payload)
        self.inserted_total += rows
        self.metrics.inserted.inc(rows)
        count.stored.inc(rows)

    def _conform(self, batch: TransitionBatch) -> TransitionBatch:
        if batch.state.dtype == self.mirror.state.dtype:
            return batch
        with np.errstate(over="ignore"):    # values beyond float16 become inf: _finite refuses them
            return replace(batch, state=batch.state.astype(self.mirror.state.dtype))

    @staticmethod
    def _finite(batch: TransitionBatch) -> bool:
        return bool(np.isfinite(batch.state).all() and np.isfinite(batch.reward_game).all()
                    and np.isfinite(batch.reward_shaping).all())

    def _drain_requests(self, max_messages: int = 64) -> None:
        for _ in range(max_messages):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, payload = frames[:-1], frames[-1]
            try:
                req = decode(payload, expect=(SampleRequest, PriorityUpdate, PriorityReset))
            except MessageError as exc:
                self.metrics.malformed.labels(reason=exc.reason).inc()
                self._reject_log.warning(f"malformed:{exc.reason}", "rejected a malformed request: %s", exc)
                self._send(envelope, Ack(0, f"{exc.reason}: {exc}"))
                continue
            if isinstance(req, PriorityUpdate):
                self._update_priorities(envelope, req)
            elif isinstance(req, PriorityReset):
                self._reset_max_priority(envelope, req)
            else:
                # wait_s is clamped (inf waits MAX_WAIT_S); NaN fails the comparison: refused at once
                wait_s = min(req.wait_s, MAX_WAIT_S) if req.wait_s >= 0 else 0.0
                self._sample_or_park(envelope, req, time.monotonic() + wait_s)

    def _update_priorities(self, envelope, req: PriorityUpdate) -> None:
        rows = req.num_rows()
        if rows > MAX_PRIORITY_ROWS:
            self._refuse(envelope, Ack(req.request_id, f"too_large: {rows} priority rows, at most {MAX_PRIORITY_ROWS}"),
                         "too_large")
            return
        ignored = self.mirror.update_priorities(req.index, req.priority, PRIORITY_CAP)
        self.metrics.stale_priorities.inc(ignored.pop("stale"))
        for reason, n in ignored.items():
            if n:
                self.metrics.bad_priorities.labels(reason=reason).inc(n)
                self._reject_log.warning(f"priorities:{reason}", "priority update %d: %d of %d rows %s",
                                         req.request_id, n, rows, f"clamped to {PRIORITY_CAP:g}" if reason == "clamped"
                                         else f"ignored ({reason})")
        self._send(envelope, Ack(req.request_id, None))

    def _reset_max_priority(self, envelope, req: PriorityReset) -> None:
        had_updates = self.mirror.priority_count > 0
        forgotten = self.mirror.reset_max_priority()
        self.metrics.priority_resets.inc()
        self._reject_log.warning("priority_reset", "maximum priority %.6g forgotten (request %d): new rows enter "
                                 "at %g", forgotten, req.request_id, self.mirror.new_priority())
        if had_updates or forgotten != self.mirror.max_priority:   # a flood of resets costs no snapshot each
            self._snapshot_priorities()   # a restart must not bring the old maximum back
        self._send(envelope, Ack(req.request_id, None))

    def _refusal(self, req: SampleRequest) -> tuple[str, str] | None:
        if not 1 <= req.batch_size <= MAX_SAMPLE_ROWS or req.n_step > MAX_N_STEP or not 0.0 <= req.gamma <= 1.0 \
                or not 0.0 <= req.beta <= 1.0 or not req.wait_s >= 0:
            return "bad_request", (f"need 1 <= batch_size <= {MAX_SAMPLE_ROWS}, 1 <= n_step <= {MAX_N_STEP}, "
                                   "0 <= gamma <= 1, 0 <= beta <= 1, wait_s >= 0")
        if self._replies.prune() >= self.cfg.reply_bytes_budget:
            return "busy", (f"{self._replies.bytes} bytes of replies not yet taken by their peers "
                            f"(REPLY_BYTES_BUDGET={self.cfg.reply_bytes_budget})")
        if self.mirror.size < self.cfg.min_size_to_sample:
            return "too_small", f"replay holds {self.mirror.size} < MIN_SIZE_TO_SAMPLE={self.cfg.min_size_to_sample}"
        cap = self.cfg.samples_per_insert
        if cap > 0 and self.sampled_total + req.batch_size > cap * self.inserted_total:
            return "rate_limited", (f"samples per insert cap {cap} reached ({self.sampled_total} served, "
                                    f"{self.inserted_total} inserted)")
        return None

    def _sample_or_park(self, envelope, req: SampleRequest, deadline: float) -> bool:
        refusal = self._refusal(req)
        if refusal is not None:
            reason, text = refusal
            if reason in ("too_small", "rate_limited") and time.monotonic() < deadline:
                if len(self._parked) < MAX_PARKED:
                    self._parked.append((deadline, envelope, req))
                    return False
                reason, text = "busy", f"{MAX_PARKED} requests already waiting ({reason}: {text})"
            self._refuse(envelope, SampleReply.failure(req.request_id, f"{reason}: {text}", self.cfg.state_dim),
                         reason)
            return True
        t0 = time.perf_counter()
        # The sample is gathered straight into the reply's wire buffer (~13 MB at 16384 rows).
        reply = InPlace(SampleReply, {"request_id": req.request_id, "error": None},
                        self.mirror.sample_layout(req.batch_size), buffer=self._replies.spare())
        try:
            self.mirror.sample(req.batch_size, req.n_step, req.gamma, req.prioritized, req.beta, self.rng,
                               out=reply.arrays)
        except LookupError as exc:
            self._refuse(envelope, SampleReply.failure(req.request_id, f"too_small: {exc}", self.cfg.state_dim),
                         "too_small")
            return True
        tracker = self.router.send_multipart([*envelope, reply.finish()], copy=False, track=True)
        self._replies.add(reply.buffer, tracker)
        self.metrics.sample_seconds.observe(time.perf_counter() - t0)
        self.sampled_total += req.batch_size
        self.store.add_sampled(req.batch_size)
        self.metrics.samples.inc(req.batch_size)
        return True

    def _serve_parked(self) -> None:
        if not self._parked:
            return
        parked, self._parked = self._parked, []
        for deadline, envelope, req in parked:
            self._sample_or_park(envelope, req, deadline)

    def _send(self, envelope, msg) -> None:
        self.router.send_multipart([*envelope, encode(msg)], copy=False)

    def _refuse(self, envelope, reply: SampleReply | Ack, reason: str) -> None:
        """Count, log (a flood: a few lines) and send a refusal; reply.error is "reason: detail"."""
        self.metrics.refused.labels(reason=reason).inc()
        log_line = self._reject_log.info if reason in ("too_small", "rate_limited") else self._reject_log.warning
        log_line(f"refused:{reason}", "refused request %d: %s", reply.request_id, reply.error)
        self._send(envelope, reply)

    def _update_gauges(self) -> None:
        self.metrics.size.set(self.mirror.size)
        self.metrics.max_priority.set(self.mirror.max_priority)
        self.metrics.priority_mean.set(self.mirror.priority_mean())
        self.metrics.new_priority.set(self.mirror.new_priority())
        self.metrics.sampled_new_share.set(self.mirror.sampled_fresh_share)
        self.metrics.ratio.set(self.sampled_total / self.inserted_total if self.inserted_total else 0.0)
        self.metrics.buffered.set(self.store.buffered)
        self.metrics.reply_bytes_in_flight.set(self._replies.prune())
        self.metrics.parked.set(len(self._parked))

"""The replay service: PULL for transition batches, ROUTER for sample and priority requests.

Every batch goes into the in-memory mirror at once (sampling reads it) and, through the
background writer, into Redis (the durable copy).  On start the mirror is rebuilt from Redis,
so a restart carries on where the last run stopped.  Sample requests name n and gamma; the
n-step returns are built at sample time.  Requests beyond the samples-per-insert cap, or before
the replay holds MIN_SIZE_TO_SAMPLE transitions, wait up to the request's wait_s, then are
refused with a reason; the learner decides what to do.  Malformed messages are counted, never
fatal.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import numpy as np
import zmq

from tempest_common.messages import Ack, PriorityUpdate, SampleReply, SampleRequest, TransitionBatch
from tempest_common.wire import MessageError, decode, encode

from .config import ReplayConfig
from .inplace import InPlace
from .metrics import ReplayMetrics
from .mirror import ReplayMirror
from .storage import ChunkStore

log = logging.getLogger("replay.service")
MAX_BATCH = 1 << 20
MAX_N_STEP = 100


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
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.inserted_total = 0
        self.sampled_total = 0
        self._parked: list[tuple[float, list[bytes], SampleRequest]] = []
        self._reply_buffers: list[tuple[np.ndarray, zmq.MessageTracker]] = []  # the last replies sent
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
        done, t0, last_report = 0, time.monotonic(), time.monotonic()
        for seq, payload in self.store.iter_payloads(chunks):
            try:
                batch = decode(payload, expect=TransitionBatch)
                self.mirror.insert(self._conform(batch), seq_start=seq)
            except (MessageError, ValueError) as exc:
                log.error("skipping unreadable chunk %d in Redis: %s", seq, exc)
                continue
            done += batch.num_rows()
            if time.monotonic() - last_report > 2:
                log.info("rebuild: %d / %d transitions (%.0f%%)", done, total_rows, 100 * done / max(1, total_rows))
                last_report = time.monotonic()
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
        self.pull.bind(self.cfg.pull_bind)
        self.router.bind(self.cfg.router_bind)

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
            self.metrics.malformed.labels(reason=exc.reason).inc()
            log.warning("dropped a malformed transition batch: %s", exc)
            return
        if batch.state.shape[1] != self.cfg.state_dim:
            self.metrics.malformed.labels(reason="bad_field").inc()
            if not self._warned_dim:
                log.error("dropping batches with state size %d (replay expects STATE_DIM=%d)",
                          batch.state.shape[1], self.cfg.state_dim)
                self._warned_dim = True
            return
        rows = batch.num_rows()
        if rows == 0:
            return
        if not (np.isfinite(batch.state).all() and np.isfinite(batch.reward_game).all()
                and np.isfinite(batch.reward_shaping).all()):
            self.metrics.malformed.labels(reason="nonfinite").inc()
            self.mirror.break_stream(batch.stream_id)
            log.warning("dropped a transition batch of stream %s with NaN/inf values (%d rows)", batch.stream_id, rows)
            return
        seq = self.mirror.insert(self._conform(batch))
        self.store.put(seq, rows, payload)
        self.inserted_total += rows
        self.metrics.inserted.inc(rows)

    def _conform(self, batch: TransitionBatch) -> TransitionBatch:
        if batch.state.dtype == self.mirror.state.dtype:
            return batch
        return replace(batch, state=batch.state.astype(self.mirror.state.dtype))

    def _drain_requests(self, max_messages: int = 64) -> None:
        for _ in range(max_messages):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, payload = frames[:-1], frames[-1]
            try:
                req = decode(payload, expect=(SampleRequest, PriorityUpdate))
            except MessageError as exc:
                self.metrics.malformed.labels(reason=exc.reason).inc()
                log.warning("rejected a malformed request: %s", exc)
                self._send(envelope, Ack(0, f"{exc.reason}: {exc}"))
                continue
            if isinstance(req, PriorityUpdate):
                stale = self.mirror.update_priorities(req.index, req.priority)
                self.metrics.stale_priorities.inc(stale)
                self._send(envelope, Ack(req.request_id, None))
            else:
                self._sample_or_park(envelope, req, time.monotonic() + req.wait_s)

    def _refusal(self, req: SampleRequest) -> tuple[str, str] | None:
        if not 1 <= req.batch_size <= MAX_BATCH or req.n_step > MAX_N_STEP or not 0.0 <= req.gamma <= 1.0 \
                or not 0.0 <= req.beta <= 1.0:
            return "bad_request", (f"need 1 <= batch_size <= {MAX_BATCH}, 1 <= n_step <= {MAX_N_STEP}, "
                                   "0 <= gamma <= 1, 0 <= beta <= 1")
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
            if reason != "bad_request" and time.monotonic() < deadline:
                self._parked.append((deadline, envelope, req))
                return False
            self.metrics.refused.labels(reason=reason).inc()
            self._send(envelope, SampleReply.failure(req.request_id, f"{reason}: {text}", self.cfg.state_dim))
            return True
        t0 = time.perf_counter()
        # The sample is gathered straight into the reply's wire buffer (~13 MB at 16384 rows).
        reply = InPlace(SampleReply, {"request_id": req.request_id, "error": None},
                        self.mirror.sample_layout(req.batch_size), buffer=self._spare_reply_buffer())
        try:
            self.mirror.sample(req.batch_size, req.n_step, req.gamma, req.prioritized, req.beta, self.rng,
                               out=reply.arrays)
        except LookupError as exc:
            self.metrics.refused.labels(reason="too_small").inc()
            self._send(envelope, SampleReply.failure(req.request_id, f"too_small: {exc}", self.cfg.state_dim))
            return True
        tracker = self.router.send_multipart([*envelope, reply.finish()], copy=False, track=True)
        self._reply_buffers = [*self._reply_buffers[-1:], (reply.buffer, tracker)]
        self.metrics.sample_seconds.observe(time.perf_counter() - t0)
        self.sampled_total += req.batch_size
        self.store.add_sampled(req.batch_size)
        self.metrics.samples.inc(req.batch_size)
        return True

    def _spare_reply_buffer(self) -> np.ndarray | None:
        """The buffer of an earlier reply that ZeroMQ has finished sending, to build the next one
        in (None: InPlace allocates)."""
        for i, (buffer, tracker) in enumerate(self._reply_buffers):
            if tracker.done:
                del self._reply_buffers[i]
                return buffer
        return None

    def _serve_parked(self) -> None:
        if not self._parked:
            return
        parked, self._parked = self._parked, []
        for deadline, envelope, req in parked:
            self._sample_or_park(envelope, req, deadline)

    def _send(self, envelope, msg) -> None:
        self.router.send_multipart([*envelope, encode(msg)], copy=False)

    def _update_gauges(self) -> None:
        self.metrics.size.set(self.mirror.size)
        self.metrics.ratio.set(self.sampled_total / self.inserted_total if self.inserted_total else 0.0)
        self.metrics.buffered.set(self.store.buffered)

"""The learner: trains the DQN on replay samples, keeps the run's books, publishes weights.

One loop, never re-entered: one zmq.Poller over the control ROUTER, the workers' inbox (episode
summaries, heartbeats) and the replay DEALER; each turn serves whatever came (control requests
are answered at once; replay replies are matched to their sample requests by id), then, unless
pacing or a replay refusal says wait, keeps 2k sample requests out and trains one optimizer step
(dqn.train_step) once k micro-batches are here.  Priorities go back to the replay, target network
upkeep, metrics, weights + schedule published every few steps, checkpoints every
CHECKPOINT_EVERY_S and on stop, and a checkpoint mark each time the global frame count crosses a
multiple of CHECKPOINT_EVERY_FRAMES.  A settings change that alters the samples marks the
requests out under the old settings stale: their replies are dropped when they come, never
waited for.  The maths is in dqn.py; checkpoints, their health verdicts, resuming and the
control "rollback" to a healthy checkpoint are in run_state.py.

Input is not trusted to be sane: each sample reply's rows are screened before training (bad ones
go back at the floor priority: sample_check.py), heartbeats that jump implausibly count nothing
(bookkeeper.py), control "set" and "rollback" need the token (control.py), the inbox and control sockets cut
connections that send oversized messages; every refusal is counted by reason and the loop goes on.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time

import numpy as np
import torch
import zmq

from tempest_common.actions import NUM_ACTIONS
from tempest_common.config import ConfigError
from tempest_common.limited_log import LimitedLog
from tempest_common.messages import EpisodeSummary, Heartbeat, SampleReply, WeightsSchedule
from tempest_common.network import DuelingQNetwork
from tempest_common.socket_limits import SMALL_MESSAGE_BYTES, limit_message_size, watch_dropped_connections
from tempest_common.wire import MessageError, decode, encode

from ..replay.client import ReplayClient, ReplayError, ReplayRefused
from . import checkpoint, probe, run_state, schedules
from .bookkeeper import WINDOWS, Bookkeeper
from .control import ControlServer, control_token_path, ensure_control_token
from .device import cpu_threads, pick_device
from .dqn import Batch, hard_update, soft_update, target_distance, train_step
from .health import SinceCheckpoint
from .metrics import LearnerMetrics
from .sample_check import screen_sample
from .settings import LearnerConfig, LiveSettings, SettingChangeLog, apply_changes

log = logging.getLogger("learner")
PRIORITY_EPS = 1e-3
POLL_S = 0.1               # the longest a turn sleeps in poll: how late stop() may be noticed
REPLAY_TIMEOUT_S = 30.0    # a sample request unanswered this long: the replay is gone or restarted
REFUSED_WAIT_S, TIMEOUT_WAIT_S = 0.5, 1.0
PEER_QUEUE = 100           # messages one peer may have waiting on the inbox or the control socket
SAMPLE_SETTINGS = ("batch_size", "n_step", "gamma", "prioritized", "per_beta", "per_beta_end", "per_beta_frames")


class Learner:
    def __init__(self, cfg: LearnerConfig, live: LiveSettings, metrics: LearnerMetrics | None = None,
                 context: zmq.Context | None = None):
        self.cfg, self.live = cfg, live
        self.metrics = metrics or LearnerMetrics()
        self.device = pick_device(cfg.device)
        torch.set_num_threads(cpu_threads(cfg.torch_threads))
        if cfg.seed >= 0:
            torch.manual_seed(cfg.seed)
        self.online = DuelingQNetwork(cfg.state_dim, NUM_ACTIONS, cfg.hidden_sizes(), cfg.layer_norm).to(self.device)
        self.target = copy.deepcopy(self.online)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=live.lr)
        self.autocast = torch.bfloat16 if self.device.type == "cuda" else None
        self.books = Bookkeeper()
        self.probe = probe.ProbeSet()   # Q on fixed states (probe.py), checkpointed by run_state.py
        self.steps = self.samples = self.target_age = self.weights_version = 0
        self.last_mark = 0  # global frames of the latest checkpoint mark written
        self.run_id = cfg.run_id or checkpoint.new_run_id()   # in each checkpoint and its name (restore: the saved one)
        self.started = time.time()   # with the run id: this process's incarnation, in every weights message
        self.run_started = self.started   # the run's own start: a resumed run keeps its first
        ctx = context or zmq.Context.instance()
        self.replay = ReplayClient(cfg.replay_addr, ctx, state_dim=cfg.state_dim)   # replies sized to the state
        watch_dropped_connections(self.replay.sock, self.metrics.connections_dropped.labels(socket="replay").inc,
                                  "replay")
        self._hostile = LimitedLog(log)   # one line per kind of refused input per 10 s
        self.inbox = ctx.socket(zmq.PULL)
        limit_message_size(self.inbox, SMALL_MESSAGE_BYTES)  # summaries and heartbeats are < 1 KiB
        # a worker sends a heartbeat a second and a summary per life: 100 queued per worker is
        # ample between two turns, and bounds what one flooding peer can park in memory (6.4 MB)
        self.inbox.setsockopt(zmq.RCVHWM, PEER_QUEUE)
        self.inbox.bind(cfg.episodes_bind)
        watch_dropped_connections(self.inbox, self.metrics.connections_dropped.labels(socket="inbox").inc, "inbox")
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 2)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(cfg.weights_bind)
        self.token_path = control_token_path({"CONTROL_TOKEN_FILE": cfg.control_token_file,
                                              "CHECKPOINT_DIR": cfg.checkpoint_dir})
        try:
            token = ensure_control_token(self.token_path)
        except OSError as exc:
            raise ConfigError(f"CONTROL_TOKEN_FILE: cannot write the control token to {self.token_path}: "
                              f"{exc.strerror or exc}") from None
        self.control = ControlServer(
            cfg.control_bind, self.settings_dict, self.change_settings,
            lambda reason: self.metrics.malformed.labels(reason=reason).inc(), ctx, token=token,
            on_refused=lambda reason: self.metrics.control_refused.labels(reason=reason).inc(),
            on_dropped_connection=self.metrics.connections_dropped.labels(socket="control").inc,
            rollback=self.rollback)
        self._poller = zmq.Poller()
        for sock in (self.control.sock, self.inbox, self.replay.sock):
            self._poller.register(sock, zmq.POLLIN)
        self._stop = threading.Event()
        self._sent: dict[int, float] = {}       # sample request id -> when sent (oldest first), unanswered
        self._arrived: dict[int, SampleReply] = {}  # sample replies not yet trained on (arrival order)
        self._hold_until, self._hold_why = 0.0, ""
        self._last_checkpoint = time.monotonic()
        self.since_checkpoint, self.health = SinceCheckpoint(), None   # run_state.py: each checkpoint's verdict
        self.metrics.export_settings(live)
        self.changes = SettingChangeLog(cfg.checkpoint_dir, self.metrics.export_change)

    # -- live settings --------------------------------------------------------------------------
    def settings_dict(self) -> dict:
        return dataclasses.asdict(self.live)

    def change_settings(self, changes: dict) -> dict:
        new = apply_changes(self.live, changes)
        for name in changes:
            log.info("setting changed: %s %s -> %s", name, getattr(self.live, name), getattr(new, name))
            self.changes.record(name, getattr(self.live, name), getattr(new, name), self.steps)
        if any(getattr(new, k) != getattr(self.live, k) for k in SAMPLE_SETTINGS):
            self._drop_requests()  # samples requested under the old settings
        self.live = new
        self.metrics.export_settings(new)
        self.metrics.setting_changes.inc(len(changes))
        return self.settings_dict()

    # -- checkpoints, resume, rollback (run_state.py) -------------------------------------------
    def checkpoint_dict(self) -> dict:
        return run_state.checkpoint_dict(self)

    def save_checkpoint(self) -> None:
        run_state.save_checkpoint(self)

    def save_mark(self, mark: int) -> None:
        run_state.save_mark(self, mark)

    def restore(self, saved: dict, env_overrides: dict | None = None) -> None:
        run_state.restore(self, saved, env_overrides)

    def rollback(self, step: int | None = None) -> dict:
        return run_state.rollback(self, step)

    # -- the loop -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("learner %s on %s: %d parameters, replay %s; control token in %s", self.run_id, self.device,
                 self.online.param_count(), self.cfg.replay_addr, self.token_path)
        self.metrics.export_run(self.run_id, self.incarnation, self.run_started)
        self.publish()
        self._export_books()
        try:
            while not self._stop.is_set():
                self._turn()
                if time.monotonic() - self._last_checkpoint >= self.cfg.checkpoint_every_s:
                    self.save_checkpoint()
                mark = checkpoint.mark_due(self.books.global_frames, self.cfg.checkpoint_every_frames, self.last_mark)
                if mark is not None:
                    self.save_mark(mark)
        finally:
            self.save_checkpoint()
            for sock in (self.inbox, self.pub):
                sock.close(0)
            self.control.close()
            self.replay.close()

    def _turn(self) -> None:
        """Serve the sockets, waiting at most POLL_S (not at all when a step is ready), then train."""
        why = self._wait_reason()
        if why is None:
            self._request_samples()
        t0 = time.monotonic()
        held_for = self._hold_until - t0
        if why is None and len(self._arrived) >= self.live.gradient_accumulation_steps:
            timeout = 0.0
        else:
            timeout = min(POLL_S, held_for) if held_for > 0 else POLL_S
        events = dict(self._poller.poll(timeout * 1000))
        if why is not None:
            self.metrics.waiting.labels(reason=why).inc(time.monotonic() - t0)
        if self.control.sock in events:
            self.control.serve_pending()
        if self.inbox in events:
            self._drain_inbox()
        if self.replay.sock in events:
            self._collect_replies()
        self._check_replay_timeout()
        # asked again: a control change or a refusal may have dropped the batches, or changed pacing
        k = self.live.gradient_accumulation_steps
        if len(self._arrived) >= k and self._wait_reason() is None:
            self.step([self._arrived.pop(rid) for rid in list(self._arrived)[:k]])

    def _drain_inbox(self) -> None:
        for _ in range(1000):
            try:
                payload = self.inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = decode(payload, expect=(EpisodeSummary, Heartbeat))
            except MessageError as exc:
                self.metrics.malformed.labels(reason=exc.reason).inc()
                self._hostile.warning(f"malformed_{exc.reason}", "dropped a malformed worker message: %.300s", exc)
                continue
            if isinstance(msg, Heartbeat):
                if self.books.on_heartbeat(msg) is None:
                    self.metrics.rejected_messages.labels(reason="implausible_frames").inc()
                    self._hostile.warning("implausible_frames", "heartbeat of worker %.40r jumps to %d frames: "
                                          "counted 0, taken as its new baseline", msg.worker_id, msg.frames_total)
            else:
                self.books.on_episode(msg)
                self.metrics.episodes.inc()
        self._export_books()

    def _paced_out(self) -> bool:
        per = self.live.training_steps_per_sample
        need = self.live.batch_size * self.live.gradient_accumulation_steps
        return per > 0 and self.samples + need > per * self.books.global_frames

    def _wait_reason(self) -> str | None:
        """The waiting reason in force (a metric label), None when free to train."""
        if time.monotonic() < self._hold_until:
            return self._hold_why
        return "pacing" if self._paced_out() else None

    def _hold(self, seconds: float, reason: str) -> None:
        """Request and train nothing for `seconds`; the loop keeps serving the sockets meanwhile."""
        self._hold_until, self._hold_why = time.monotonic() + seconds, reason

    def _request_samples(self) -> None:
        """Keep 2k requests out (unanswered or not yet trained on): k micro-batches for the next
        step arrive while this one trains."""
        s = self.live
        beta = schedules.per_beta(s.per_beta, s.per_beta_end, self.books.global_frames, s.per_beta_frames)
        while len(self._sent) + len(self._arrived) < 2 * s.gradient_accumulation_steps:
            rid = self.replay.send_sample(s.batch_size, s.n_step, s.gamma, s.prioritized, beta)
            self._sent[rid] = time.monotonic()

    def _drop_requests(self) -> None:
        """Forget every request out and every batch not trained on; late replies are dropped."""
        for rid in self._sent:
            self.replay.forget(rid)
        self._sent.clear()
        self._arrived.clear()

    def _collect_replies(self) -> None:
        try:
            for reply in self.replay.arrived():  # only replies to requests still out: the replay
                del self._sent[reply.request_id]  # client drops priority acks and stale replies
                fit = self._screen(self.replay.check(reply))
                if fit is not None:
                    self._arrived[reply.request_id] = fit
        except ReplayError as exc:
            self._drop_requests()
            refused = isinstance(exc, ReplayRefused) and exc.reason in ("too_small", "rate_limited", "busy")
            if not refused:
                log.error("replay refused a sample: %s", exc)
            self._hold(REFUSED_WAIT_S, f"replay_{exc.reason}" if refused else "replay_error")

    def _screen(self, reply: SampleReply) -> SampleReply | None:
        """The rows of `reply` fit to train on (None: none are); the bad ones go back to the replay at
        the floor priority, so they stop being drawn (sample_check.py says which are bad and why)."""
        if reply.state.shape[1] != self.cfg.state_dim:  # the replay's STATE_DIM is not ours: no row is wrong
            self.metrics.rejected_messages.labels(reason="wrong_state_dim").inc()
            self._hostile.error("wrong_state_dim", "replay sample of state dim %d, STATE_DIM is %d: dropped",
                                reply.state.shape[1], self.cfg.state_dim)
            return None
        screened = screen_sample(reply)
        if screened.rejected:
            bad = screened.bad_index
            self.replay.send_priorities(bad, np.full(len(bad), PRIORITY_EPS, np.float32), await_ack=False)
            for reason, rows in screened.rejected.items():
                self.metrics.rejected_rows.labels(reason=reason).inc(rows)
            self._hostile.warning("bad_rows", "%d bad sampled row(s) (%s) not trained on, sent back at the floor "
                                  "priority", len(bad), ", ".join(f"{k}: {n}" for k, n in screened.rejected.items()))
        return screened.kept

    def _check_replay_timeout(self) -> None:
        if self._sent and time.monotonic() - next(iter(self._sent.values())) > REPLAY_TIMEOUT_S:
            log.warning("no reply from the replay at %s in %.0f s", self.cfg.replay_addr, REPLAY_TIMEOUT_S)
            self._drop_requests()
            self._hold(TIMEOUT_WAIT_S, "replay_timeout")

    def _to_batch(self, r) -> Batch:
        t = lambda a, dtype: torch.from_numpy(np.array(a)).to(self.device, dtype, non_blocking=True)  # noqa: E731
        return Batch(state=t(r.state, torch.float32), action=t(r.action, torch.long), reward=t(r.reward, torch.float32),
                     discount=t(r.discount, torch.float32), next_state=t(r.next_state, torch.float32),
                     weight=t(r.weight, torch.float32), expert_action=t(r.expert_action, torch.long))

    def step(self, replies: list) -> None:
        s = self.live
        lr = schedules.learning_rate(s.lr_schedule, s.lr, s.lr_min, self.steps, s.lr_schedule_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        bc = schedules.bc_weight(s.bc_weight, self.books.global_frames, s.bc_weight_decay_frames,
                                 s.bc_weight_min_fraction)
        stats = train_step(self.online, self.target, self.optimizer, [self._to_batch(r) for r in replies],
                           s.max_grad_norm, s.target_clamp_value if s.clamp_targets else None, bc,
                           autocast_dtype=self.autocast, bc_margin=s.bc_margin)
        self.since_checkpoint.add(stats)
        m = self.metrics
        m.lr.set(lr)
        m.bc_weight.set(bc)
        if not stats.applied:
            m.nonfinite.inc()
            log.warning("skipped a batch with a non-finite loss or gradient (step %d)", self.steps)
            return
        index = np.concatenate([r.index for r in replies])
        priority = stats.td_error.float().cpu().numpy() + PRIORITY_EPS
        self.replay.send_priorities(index, priority, await_ack=False)
        self.steps += 1
        self.samples += len(index)
        self._update_target()
        m.steps.inc()
        m.step.set(self.steps)
        m.samples.inc(len(index))
        m.intervals.add(q_min=stats.q_min, q_max=stats.q_max, q_mean=stats.q_mean, loss=stats.loss,
                        grad_norm=stats.grad_norm, clip_ratio=stats.clip_ratio,
                        target_clamped_share=stats.target_clamped_share)
        m.target_age.set(self.target_age)
        self.probe.after_step(self.steps, self.online, replies, m)
        if self.steps % s.publish_every_steps == 0:
            self.publish()

    def _update_target(self) -> None:
        s = self.live
        if s.use_soft_target:
            soft_update(self.target, self.online, s.tau)
        if s.hard_target_refresh_every_steps and self.steps % s.hard_target_refresh_every_steps == 0:
            hard_update(self.target, self.online)
            self.target_age = 0
        else:
            self.target_age += 1

    def publish(self) -> None:
        s = self.live
        sched = self.books.schedule(s.expert_ratio_start, s.expert_ratio_decay, s.expert_ratio_decay_frames,
                                    s.expert_ratio_min, s.epsilon)
        self.weights_version += 1
        weights = {k: v.detach().float().cpu().numpy() for k, v in self.online.state_dict().items()}
        # metrics first: whoever has received these weights then scrapes the schedule they carry
        self.metrics.weights_version.set(self.weights_version)
        self.metrics.target_distance.set(target_distance(self.online, self.target))
        self.metrics.expert_ratio.set(sched.expert_ratio)
        self.metrics.epsilon.set(sched.epsilon)
        self.pub.send(encode(WeightsSchedule(self.weights_version, weights, sched.expert_ratio, sched.epsilon,
                                             s.evaluation_share, s.evaluation_epsilon, self.books.global_frames,
                                             time.time(), self.incarnation)), zmq.NOBLOCK)

    @property
    def incarnation(self) -> str:
        """Which learner publishes: the run id (a resumed run's) and this process's start."""
        return f"{self.run_id}:{self.started:.3f}"

    def q_bound(self) -> tuple[float, float] | None:   # Q's bound from the workers' rewards, live gamma (qbound.py)
        return self.books.q_bound(self.live.gamma)

    def _export_books(self) -> None:
        m, b = self.metrics, self.books
        m.global_frames.set(b.global_frames)
        m.export_q_bound(self.q_bound())
        for w in WINDOWS:
            for gauge, mean in ((m.reward_mean, b.reward_mean(w)), (m.life_reward_mean, b.life_reward_mean(w))):
                if mean is not None:
                    gauge.labels(window=w).set(mean)
            m.evaluation_games.labels(window=w).set(b.evaluation_games(w))
            m.evaluation_lives.labels(window=w).set(b.evaluation_lives(w))
        m.reward_slope.labels(window="5M").set(b.reward_slope("5M"))
        m.episode_reward_slope.set(b.episode_reward_slope())
        if b.last_eval_score is not None:
            m.eval_score.set(b.last_eval_score)

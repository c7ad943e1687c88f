"""EmulatorWorker: one MAME played tick by tick; transitions, episodes and heartbeats shipped.

A game session (session.py), an actor chooser and evaluation scheduler (actors.py), an episode
tracker (episodes.py) and a transition adder (adder.py).  Per tick: answer at once, then do the
bookkeeping (and the expert's imitation label on ticks it did not play) while MAME emulates the
next tick.  MAME is restarted when it exits, dies or stalls (the open episode is truncated);
stop() asks MAME to exit through the bridge, then kills it.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import numpy as np

from tempest_common.actions import NOOP
from tempest_common.game_state import decode_ram
from tempest_common.messages import ACTOR_NAMES, ACTOR_RANDOM, NO_ACTION, EpisodeSummary, Heartbeat

from .actors import ActorChooser, ActorSchedule, EvaluationScheduler
from .adder import TransitionAdder
from .bridge import BridgeClosed
from .config import EmulatorConfig
from .episodes import EpisodeTracker, RewardConfig
from .mame_process import check_rom_dir
from .metrics import TRANSITION_DROP_REASONS, WorkerMetrics
from .network_policy import NetworkPolicy
from .peers import Peers
from .session import GameSession, Tick, TickKind

log = logging.getLogger("emulator.worker")


class EmulatorWorker:
    def __init__(self, cfg: EmulatorConfig, metrics: WorkerMetrics | None = None, peers: Peers | None = None):
        self.cfg = cfg
        self.metrics = metrics or WorkerMetrics()
        self.peers = peers or Peers(cfg.replay_addr, cfg.learner_addr, cfg.expert_addr, cfg.send_hwm, self.metrics)
        self.rng = np.random.default_rng(None if cfg.seed < 0 else cfg.seed)
        self.network = NetworkPolicy(cfg.weights_addr, self.metrics)
        self.actors = ActorChooser(self.peers.expert, self.network, cfg.expert_ratio, cfg.epsilon,
                                   cfg.expert_timeout_ms, cfg.expert_backoff_s, self.metrics, self.rng,
                                   ActorSchedule(cfg.actor_draw, cfg.actor_segment_ticks), cfg.expert_labels,
                                   cfg.random_zap)
        self.evaluations = EvaluationScheduler()
        self.stream_id = f"{cfg.worker_id}:{uuid.uuid4().hex[:8]}"
        self.tracker = EpisodeTracker(RewardConfig(cfg.reward_scale, cfg.reward_clip, cfg.death_penalty,
                                                   cfg.survival_bonus), self.stream_id, cfg.worker_id, time.time)
        self.adder = TransitionAdder(self.stream_id, cfg.worker_id, cfg.transition_batch, cfg.state_dtype)
        self._sent = self.metrics.transitions_sent.labels(worker=cfg.worker_id)
        self._dropped = {reason: self.metrics.transitions_dropped.labels(worker=cfg.worker_id, reason=reason)
                         for reason in TRANSITION_DROP_REASONS}   # every reason exists from the start, at 0
        self.metrics.transitions_pending.labels(worker=cfg.worker_id).set_function(lambda: self.adder.pending)
        self._stop = threading.Event()
        self.frames_total = self.episodes_total = 0
        self._prev_ram: np.ndarray | None = None   # the last decision tick's RAM (velocities)
        self._rate_mark = (time.monotonic(), 0, 0)   # (time, video frame, frames_total)
        self._video_frame = 0
        self._next_heartbeat = 0.0
        self._trace: list[tuple[int, np.ndarray, int, int]] | None = [] if cfg.trace_path else None

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        check_rom_dir(self.cfg.rompath, self.cfg.mame_binary)
        log.info("worker %s: stream %s, replay=%s learner=%s expert=%s", self.cfg.worker_id, self.stream_id,
                 self.cfg.replay_addr or "-", self.cfg.learner_addr or "-", self.cfg.expert_addr or "-")
        try:
            self._run_one_mame()
            while not self._stop.is_set():
                self.metrics.mame_restarts.inc()
                self._run_one_mame()
        finally:
            self._end_episode_truncated()
            self._send_batch(self.adder.flush())
            self.peers.close()
            self.network.close()
            self._write_trace()

    def _run_one_mame(self) -> None:
        cfg, session = self.cfg, None
        try:
            session = GameSession.launch(cfg.rompath, mame_binary=cfg.mame_binary, workdir=cfg.workdir or None,
                                         startup_timeout_s=cfg.startup_timeout_s, tick_timeout_s=cfg.stall_timeout_s,
                                         stopping=self._stop.is_set)
            log.info("MAME started (pid %s)", session.mame.pid)
            self._rate_mark = (time.monotonic(), 0, self.frames_total)
            self._play(session)
        except BridgeClosed as exc:
            if not self._stop.is_set():
                log.warning("MAME lost (%s); restarting. MAME log: %s", exc,
                            session.mame.log_tail(2) if session else "-")
        finally:
            self._end_episode_truncated()
            self.evaluations.mame_lost()
            self._prev_ram = None
            if session is not None:
                session.close(grace_s=3.0 if self._stop.is_set() else 0.0)

    # -- the game loop -------------------------------------------------------------------------
    def _play(self, session: GameSession) -> None:
        while True:
            tick = session.next_tick()
            if self._stop.is_set():
                session.exit()
                return
            if tick.loaded:  # an evaluation game begins at the saved start of play
                self.evaluations.game_loaded()
                self._prev_ram = None
                self.metrics.evaluation_games.inc()
            decision = None
            if tick.decides and not self.tracker.in_episode:
                self.actors.life_started()   # this decision tick opens an episode (a life)
            if self.evaluations.should_load(not self.tracker.in_episode and not tick.decides,
                                            session.has_start_state):
                session.load()
                self.evaluations.load_sent()
            elif tick.kind is TickKind.START and not session.has_start_state:
                session.save()  # neutral inputs on this tick: recorded as a random no-op, unlabelled
                decision = (ACTOR_RANDOM, NOOP, NO_ACTION)
            elif tick.decides:
                ram, prev = tick.ram, self._prev_ram
                state_fn = lambda: decode_ram(ram[None])  # noqa: E731
                actor, action = self.actors.choose(state_fn, lambda: self.network.act(ram, prev),
                                                   self.evaluations.evaluating)
                played = session.act(action)   # answered: the label's expert call overlaps MAME's next tick
                decision = (actor, played, self.actors.label(actor, action, state_fn, session.gate))
            else:
                session.pass_tick()
            self._after_tick(tick, decision)

    def _after_tick(self, tick: Tick, decision: tuple[int, int, int] | None) -> None:
        self._video_frame = tick.video_frame
        prev, self._prev_ram = self._prev_ram, (tick.ram if tick.decides else None)
        records, ends = self.tracker.observe(tick, prev, decision, evaluation=self.evaluations.evaluating)
        if decision is not None:
            self.frames_total += 1
            self.metrics.frames.inc()
            self.metrics.actions.labels(actor=ACTOR_NAMES[decision[0]]).inc()
        self._send_batch(self.adder.add(records))
        for end in ends:
            self._episode_ended(end)
        if self._trace is not None:
            key = self.tracker.pending_key if tick.decides else None
            self._trace.append((tick.video_frame, tick.ram, *(key or (-1, -1))))
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._update_rates(now)
            self._next_heartbeat = now + self.cfg.heartbeat_s
            sched = self.network.poll()
            if sched is not None:
                self.actors.follow_schedule(sched.expert_ratio, sched.epsilon, sched.evaluation_share,
                                            sched.evaluation_epsilon)

    def _update_rates(self, now: float) -> None:
        t0, vf0, f0 = self._rate_mark
        dt = max(now - t0, 1e-9)
        video_fps, frames_per_s = (self._video_frame - vf0) / dt, (self.frames_total - f0) / dt
        self.metrics.video_frames.inc(max(0, self._video_frame - vf0))
        self.metrics.video_fps.set(video_fps)
        self.metrics.frames_per_s.set(frames_per_s)
        self._rate_mark = (now, self._video_frame, self.frames_total)
        r = self.tracker.reward   # the settings its rows' rewards are made with: the learner bounds Q by them
        self.peers.send("learner", Heartbeat(self.cfg.worker_id, self.frames_total, self.episodes_total,
                                             video_fps, frames_per_s, time.time(), reward_scale=r.scale,
                                             reward_clip=r.clip, death_penalty=r.death_penalty,
                                             survival_bonus=r.survival_bonus))

    def _write_trace(self) -> None:
        if not self._trace:
            return
        frames, rams, episodes, steps = zip(*self._trace)
        np.savez_compressed(self.cfg.trace_path, video_frame=np.array(frames), ram=np.stack(rams),
                            episode_id=np.array(episodes), step=np.array(steps), stream_id=self.stream_id)
        log.info("trace of %d ticks written to %s", len(frames), self.cfg.trace_path)

    # -- output --------------------------------------------------------------------------------
    def _send_batch(self, batch) -> None:
        """Send and account: rows the socket took are sent; a dropped batch's rows are counted by
        reason and its row numbers go to the next batch (TransitionAdder.unsent)."""
        if batch is None:
            return
        failure = self.peers.try_send("replay", batch)
        if failure is None:
            self._sent.inc(batch.num_rows())
        else:
            self.adder.unsent(batch)
            self._dropped[failure].inc(batch.num_rows())

    def _episode_ended(self, end: EpisodeSummary) -> None:
        self._send_batch(self.adder.flush())  # the episode's records leave before its summary
        if end.end == "terminal":
            self.evaluations.life_ended(end.game_over, self.actors.next_game_is_evaluation())
        self.episodes_total += 1
        self.metrics.episodes.inc()
        self.metrics.episode_score.set(end.score)
        self.metrics.episode_length.set(end.length)
        self.metrics.episode_score_hist.observe(end.score)
        self.metrics.episode_length_hist.observe(end.length)
        self.peers.send("learner", end)
        log.info("episode %d %s: %d frames, %d points (game score %d, level %d)", end.episode_id, end.end,
                 end.length, end.score, end.game_score, end.level + 1)

    def _end_episode_truncated(self) -> None:
        records, ends = self.tracker.truncate()
        self._send_batch(self.adder.add(records))
        for end in ends:
            self._episode_ended(end)

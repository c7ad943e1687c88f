"""EmulatorWorker: supervises one MAME, plays it tick by tick, ships transitions and episodes.

Per game tick: receive RAM from the Lua bridge, choose an action and reply at once (MAME waits
for it), then do the bookkeeping while MAME emulates the next tick: turn ticks into records and
episodes (EpisodeTracker), and per batch of records decode the GameStates, encode the state
vectors and send the batch.
MAME is restarted when it exits, dies or stops sending ticks; the open episode is truncated.
Stopping (SIGTERM / SIGINT / stop()) asks MAME to exit through the bridge, then kills it.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import numpy as np

from tempest_common.actions import ACTIONS, NOOP
from tempest_common.game_state import decode_ram, is_start_of_play, summarize_tick
from tempest_common.messages import ACTOR_NAMES, ACTOR_RANDOM, EpisodeSummary, Heartbeat, TransitionBatch
from tempest_common.state_vector import encode_state

from .actors import ActorChooser
from .bridge import CMD_ACT, CMD_EXIT, CMD_LOAD, CMD_SAVE, BridgeClosed, BridgeServer
from .config import EmulatorConfig
from .episodes import EpisodeEnd, EpisodeTracker, Record, RewardConfig
from .mame_process import MameProcess, check_rom_dir
from .metrics import WorkerMetrics
from .network_policy import NetworkPolicy
from .peers import Peers

log = logging.getLogger("emulator.worker")
POLL_S = 0.25  # receive timeout slice, so a stop request is seen quickly even if MAME stalls


class EmulatorWorker:
    def __init__(self, cfg: EmulatorConfig, metrics: WorkerMetrics | None = None, peers: Peers | None = None):
        self.cfg = cfg
        self.metrics = metrics or WorkerMetrics()
        self.peers = peers or Peers(cfg.replay_addr, cfg.learner_addr, cfg.expert_addr, cfg.send_hwm, self.metrics)
        seed = None if cfg.seed < 0 else cfg.seed
        self.rng = np.random.default_rng(seed)
        self.network = NetworkPolicy(cfg.weights_addr, self.metrics)
        self.actors = ActorChooser(self.peers.expert, self.network, cfg.expert_ratio, cfg.epsilon,
                                   cfg.expert_timeout_ms, cfg.expert_backoff_s, self.metrics, self.rng)
        self.stream_id = f"{cfg.worker_id}:{uuid.uuid4().hex[:8]}"
        self.tracker = EpisodeTracker(RewardConfig(cfg.reward_scale, cfg.reward_clip, cfg.death_penalty,
                                                   cfg.survival_bonus))
        self.state_dtype = np.dtype(cfg.state_dtype)
        self._stop = threading.Event()
        self._records: list[Record] = []
        self.frames_total = 0
        self.episodes_total = 0
        self.mame: MameProcess | None = None
        self.server = BridgeServer()
        self._prev_state = None
        self._ticks_since_zap = 10**6
        self._rate_mark = (time.monotonic(), 0, 0)   # (time, video frame, frames_total)
        self._video_frame = 0
        self._video_fps = 0.0
        self._frames_per_s = 0.0
        self._next_heartbeat = 0.0
        # Evaluation games start from a save state taken on this MAME's first play tick.
        self._start_saved = False
        self._evaluation_game = False
        self._next_game_evaluation = False
        self._load_sent = False   # a load MAME has not confirmed yet (it may read it a frame late)
        self._trace: list[tuple[int, np.ndarray, int, int]] | None = [] if cfg.trace_path else None

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        check_rom_dir(self.cfg.rompath, self.cfg.mame_binary)
        log.info("worker %s: stream %s, replay=%s learner=%s expert=%s", self.cfg.worker_id, self.stream_id,
                 self.cfg.replay_addr or "-", self.cfg.learner_addr or "-", self.cfg.expert_addr or "-")
        first = True
        try:
            while not self._stop.is_set():
                if not first:
                    self.metrics.mame_restarts.inc()
                first = False
                self._run_one_mame()
        finally:
            self._end_episode_truncated()
            self._flush()
            self.server.close()
            self.peers.close()
            self.network.close()
            self._write_trace()

    def _run_one_mame(self) -> None:
        self.mame = MameProcess(self.cfg.rompath, self.server.port, self.cfg.workdir or None,
                                self.cfg.mame_binary, reply_fifo=self.server.reply_fifo)
        self.mame.start()
        log.info("MAME started (pid %s)", self.mame.pid)
        try:
            hello = self._accept()
            if hello is None:
                return
            self.server.reply()
            self._rate_mark = (time.monotonic(), hello.video_frame, self.frames_total)
            self._play()
        except BridgeClosed as exc:
            if not self._stop.is_set():
                log.warning("MAME lost (%s); restarting. MAME log: %s", exc, self.mame.log_tail(2))
        finally:
            self._end_episode_truncated()
            self._prev_state = None
            self._start_saved = self._evaluation_game = self._next_game_evaluation = self._load_sent = False
            self.server.drop_connection()
            self.mame.stop(grace_s=3.0 if self._stop.is_set() else 0.0)

    def _accept(self):
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while not self._stop.is_set():
            try:
                return self.server.accept(min(POLL_S * 4, max(0.01, deadline - time.monotonic())))
            except BridgeClosed:
                if not self.mame.alive():
                    raise BridgeClosed(f"MAME exited during start-up (code {self.mame.proc.returncode})")
                if time.monotonic() > deadline:
                    raise
        return None

    def _receive(self):
        waited = 0.0
        while True:
            try:
                return self.server.receive(POLL_S)
            except BridgeClosed as exc:
                if "no game tick" not in str(exc):
                    raise
            waited += POLL_S
            if self._stop.is_set():
                raise BridgeClosed("worker stopping while MAME is silent")
            if waited >= self.cfg.stall_timeout_s:
                raise BridgeClosed(f"MAME stalled: no game tick for {waited:.0f} s")

    # -- the game loop -------------------------------------------------------------------------
    def _play(self) -> None:
        while True:
            msg = self._receive()
            if self._stop.is_set():
                self.server.reply(CMD_EXIT)
                return
            if self._load_sent and not msg.loaded:
                # sent before MAME read the load: a tick of the finished game, not of any episode
                self.server.reply(CMD_ACT)
                continue
            ram = msg.ram
            if msg.loaded:  # an evaluation game begins at the saved start of play
                self._prev_state = None
                self._evaluation_game, self._next_game_evaluation, self._load_sent = True, False, False
                self.metrics.evaluation_games.inc()
            gamestate = ram[0]
            in_play = gamestate in (0x04, 0x20)
            self._ticks_since_zap += 1
            if self._next_game_evaluation and not self.tracker.in_episode and self._start_saved \
                    and not self._load_sent:
                self.server.reply(CMD_LOAD)
                self._load_sent = True
                actor, action = 0, -1
            elif in_play and not self._start_saved and is_start_of_play(ram):
                self.server.reply(CMD_SAVE)  # neutral inputs on this tick: recorded as a no-op
                self._start_saved = True
                actor, action = ACTOR_RANDOM, NOOP
            elif in_play:
                prev = self._prev_state
                actor, action = self.actors.choose(lambda: decode_ram(ram), lambda: self.network.act(ram, prev),
                                                   int(ram[0x3AA]), self._ticks_since_zap, self._evaluation_game)
                a = ACTIONS[action]
                self.server.reply(CMD_ACT, a.fire, a.zap, a.spinner)
                if a.zap:
                    self._ticks_since_zap = 0
            else:
                self.server.reply(CMD_ACT)
                actor, action = 0, -1
            self._after_tick(msg.video_frame, ram, action, actor, in_play)
            if self._trace is not None:
                key = self.tracker.pending_key if in_play else None
                self._trace.append((msg.video_frame, ram, *(key or (-1, -1))))

    def _after_tick(self, video_frame: int, ram: np.ndarray, action: int, actor: int, in_play: bool) -> None:
        self._video_frame = video_frame
        tick = summarize_tick(ram)
        # Records carry (RAM, previous play tick's RAM); vectors are encoded per batch in _flush,
        # which costs a fraction of encoding tick by tick.
        payload = (ram, self._prev_state) if in_play else None
        self._prev_state = ram if in_play else None
        records, ends = self.tracker.observe(tick, payload, action, actor, evaluation=self._evaluation_game)
        if in_play and tick.player_alive:
            self.frames_total += 1
            self.metrics.frames.inc()
            self.metrics.actions.labels(actor=ACTOR_NAMES[actor]).inc()
        self._records.extend(records)
        if len(self._records) >= self.cfg.transition_batch:
            self._flush()
        for end in ends:
            self._episode_ended(end)
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
        if now > t0:
            self._video_fps = (self._video_frame - vf0) / (now - t0)
            self._frames_per_s = (self.frames_total - f0) / (now - t0)
            self.metrics.video_frames.inc(max(0, self._video_frame - vf0))
            self.metrics.video_fps.set(self._video_fps)
            self.metrics.frames_per_s.set(self._frames_per_s)
        self._rate_mark = (now, self._video_frame, self.frames_total)
        self.peers.send("learner", Heartbeat(self.cfg.worker_id, self.frames_total, self.episodes_total,
                                             self._video_fps, self._frames_per_s, time.time()))

    def _write_trace(self) -> None:
        if not self._trace:
            return
        frames, rams, episodes, steps = zip(*self._trace)
        np.savez_compressed(self.cfg.trace_path, video_frame=np.array(frames), ram=np.stack(rams),
                            episode_id=np.array(episodes), step=np.array(steps), stream_id=self.stream_id)
        log.info("trace of %d ticks written to %s", len(frames), self.cfg.trace_path)

    # -- output --------------------------------------------------------------------------------
    def _episode_ended(self, end: EpisodeEnd) -> None:
        self._flush()  # the episode's records leave before its summary
        if end.game_over or end.end == "truncated":
            self._evaluation_game = False
            self._next_game_evaluation = end.game_over and self.actors.next_game_is_evaluation()
        self.episodes_total += 1
        self.metrics.episodes.inc()
        self.metrics.episode_score.set(end.score)
        self.metrics.episode_length.set(end.length)
        self.metrics.episode_score_hist.observe(end.score)
        self.metrics.episode_length_hist.observe(end.length)
        counts = {ACTOR_NAMES[k]: v for k, v in end.actor_counts.items()}
        self.peers.send("learner", EpisodeSummary(
            self.stream_id, self.cfg.worker_id, end.episode_id, end.game_id, end.evaluation, end.length,
            end.game_reward, end.shaping_reward, end.score, end.game_score, end.level, end.end,
            end.game_over, counts, time.time()))
        log.info("episode %d %s: %d frames, %d points (game score %d, level %d)", end.episode_id, end.end,
                 end.length, end.score, end.game_score, end.level + 1)

    def _end_episode_truncated(self) -> None:
        records, ends = self.tracker.truncate()
        self._records.extend(records)
        for end in ends:
            self._episode_ended(end)

    def _flush(self) -> None:
        if not self._records:
            return
        rs, self._records = self._records, []
        rams = np.stack([r.state[0] for r in rs])
        prev = np.stack([r.state[0] if r.state[1] is None else r.state[1] for r in rs])  # no prev: zero velocity
        states = encode_state(decode_ram(rams), decode_ram(prev))
        batch = TransitionBatch(
            self.stream_id, self.cfg.worker_id,
            np.array([r.episode_id for r in rs], np.int64), np.array([r.step for r in rs], np.int32),
            np.array([r.actor for r in rs], np.uint8), np.array([r.action for r in rs], np.int16),
            np.array([r.reward_game for r in rs], np.float32), np.array([r.reward_shaping for r in rs], np.float32),
            np.array([r.terminal for r in rs], bool), np.array([r.truncated for r in rs], bool),
            states.astype(self.state_dtype))
        self.peers.send("replay", batch)

"""Prometheus metrics of the learner (names fixed by docs/design.md, "Metrics"), including every live setting."""
from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Gauge

from tempest_common.wire import REASONS

from .bookkeeper import WINDOWS
from .control import ControlServer
from .sample_check import REJECT_REASONS
from .settings import LiveSettings

REJECTED_MESSAGE_REASONS = ("implausible_frames", "wrong_state_dim")
RECEIVING_SOCKETS = ("inbox", "control", "replay")


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = {"registry": registry} if registry is not None else {}
        g = lambda name, doc, *labels: Gauge(name, doc, list(labels), **r)  # noqa: E731
        self.q_min = g("tempest_learner_q_min", "Min online Q over the latest sampled batch (all actions)")
        self.q_max = g("tempest_learner_q_max", "Max online Q over the latest sampled batch (all actions)")
        self.q_mean = g("tempest_learner_q_mean", "Mean online Q over the latest sampled batch (all actions)")
        self.loss = g("tempest_learner_loss", "Loss of the latest optimizer step")
        self.grad_norm = g("tempest_learner_grad_norm", "Global L2 gradient norm before clipping")
        self.clip_ratio = g("tempest_learner_grad_clip_ratio", "Post-clip / pre-clip gradient norm (1 = no clipping)")
        self.lr = g("tempest_learner_lr", "Effective learning rate")
        self.bc_weight = g("tempest_learner_bc_weight",
                           "Effective behaviour-cloning loss weight (BC_WEIGHT after its decay over global frames)")
        self.target_age = g("tempest_learner_target_age_steps",
                            "Optimizer steps since the last hard target copy (soft updates only: since training began)")
        self.steps = Counter("tempest_learner_steps", "Optimizer steps", **r)
        self.samples = Counter("tempest_learner_samples", "Transitions trained on", **r)
        self.nonfinite = Counter("tempest_learner_nonfinite_batches",
                                 "Batches skipped for a non-finite loss or gradient", **r)
        self.reward_mean = g("tempest_dqn_reward_mean", "Mean evaluation-game score over the last window of frames",
                             "window")
        self.life_reward_mean = g("tempest_dqn_life_reward_mean",
                                  "Mean points per evaluation life (ended terminal) over the last window of frames",
                                  "window")
        self.evaluation_games = g("tempest_dqn_evaluation_games",
                                  "Evaluation games behind tempest_dqn_reward_mean in the window", "window")
        self.evaluation_lives = g("tempest_dqn_evaluation_lives",
                                  "Evaluation lives behind tempest_dqn_life_reward_mean in the window", "window")
        self.reward_slope = g("tempest_dqn_reward_slope",
                              "Least-squares slope of evaluation scores per million frames", "window")
        self.episode_reward_slope = g("tempest_episode_reward_slope",
                                      "Slope of the last 20 episode rewards against episode index, x20")
        self.expert_ratio = g("tempest_expert_ratio", "Expert share of actions in the published schedule")
        self.epsilon = g("tempest_epsilon", "Epsilon in the published schedule")
        self.global_frames = g("tempest_learner_global_frames", "Global frames from worker heartbeats")
        self.episodes = Counter("tempest_learner_episodes", "Episode summaries received", **r)
        self.eval_score = g("tempest_dqn_last_evaluation_score", "Score of the latest evaluation game")
        self.weights_version = g("tempest_learner_weights_version", "Version of the latest published weights")
        # the run's step (resumed from its checkpoint), beside steps_total (this process's, from 0)
        self.step = g("tempest_learner_step", "Optimizer steps of this run so far, resumed from its checkpoint")
        self.waiting = Counter("tempest_learner_wait_seconds", "Seconds spent waiting (pacing, replay refusals)",
                               ["reason"], **r)
        self.malformed = Counter("tempest_learner_malformed", "Malformed or wrong-version messages", ["reason"], **r)
        self.checkpoints = Counter("tempest_learner_checkpoints", "Checkpoints written (rolling and frame marks)", **r)
        self.setting = g("tempest_learner_setting", "Live settings in force (booleans as 0/1)", "name")
        self.setting_changes = Counter("tempest_learner_setting_changes", "Live setting changes applied", **r)
        # hostile or broken input, each counted by why it was refused; the learner carries on
        self.rejected_rows = Counter("tempest_learner_rejected_rows",
                                     "Sampled rows not trained on, sent back at the floor priority", ["reason"], **r)
        self.rejected_messages = Counter("tempest_learner_rejected_messages",
                                         "Decodable messages not believed (heartbeat jumps, samples of another shape)",
                                         ["reason"], **r)
        self.control_refused = Counter("tempest_learner_control_refused", "Control requests refused", ["reason"], **r)
        self.connections_dropped = Counter(
            "tempest_learner_connections_dropped",
            "Connections cut on a receiving socket (a message over its size limit, or a peer that left)",
            ["socket"], **r)
        # Until the first step there is nothing to report: NaN compares false in every alert
        # (a 0 would read as "all gradients clipped" or a collapsed Q range).
        for gauge in (self.q_min, self.q_max, self.q_mean, self.loss, self.grad_norm):
            gauge.set(float("nan"))
        self.clip_ratio.set(1.0)
        for w in WINDOWS:
            for gauge in (self.reward_mean, self.life_reward_mean, self.evaluation_games, self.evaluation_lives):
                gauge.labels(window=w)
        self.reward_slope.labels(window="5M")
        for counter, reasons in ((self.malformed, REASONS), (self.rejected_rows, REJECT_REASONS),
                                 (self.rejected_messages, REJECTED_MESSAGE_REASONS),
                                 (self.control_refused, ControlServer.REFUSE_REASONS)):
            for reason in reasons:
                counter.labels(reason=reason)
        for socket in RECEIVING_SOCKETS:
            self.connections_dropped.labels(socket=socket)

    def export_settings(self, s: LiveSettings) -> None:
        for f in dataclasses.fields(s):
            value = getattr(s, f.name)
            if isinstance(value, (bool, int, float)):
                self.setting.labels(name=f.name).set(float(value))

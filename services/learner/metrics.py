"""Prometheus metrics of the learner (names fixed by docs/design.md, "Metrics"), including every live setting."""
from __future__ import annotations

import dataclasses

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tempest_common.wire import REASONS

from .bookkeeper import WINDOWS
from .control import ControlServer
from .intervals import IntervalStats
from .probe import PROBE_EVERY_STEPS, PROBE_STATES
from .sample_check import REJECT_REASONS
from .settings import LiveSettings

# Per optimizer step (dqn.StepStats), summed up over the scrape interval by IntervalStats.
STEP_VALUES = ("q_min", "q_max", "q_mean", "loss", "grad_norm", "clip_ratio", "target_clamped_share")
# (metric, help, step value, aggregate): docs/design.md's names carry the interval's mean (Q: its
# extremes), the _min / _max series its extremes.  Until the first step none is exported: an
# absent series fires no alert (a 0 would read as "all gradients clipped" or a collapsed Q range).
INTERVAL_METRICS = (
    ("tempest_learner_q_min", "Min online Q over the batches of the interval (all actions)", "q_min", "min"),
    ("tempest_learner_q_max", "Max online Q over the batches of the interval (all actions)", "q_max", "max"),
    ("tempest_learner_q_mean", "Mean online Q over the batches of the interval (all actions)", "q_mean", "mean"),
    ("tempest_learner_loss", "Mean loss of the interval's optimizer steps", "loss", "mean"),
    ("tempest_learner_loss_min", "Min loss of the interval's optimizer steps", "loss", "min"),
    ("tempest_learner_loss_max", "Max loss of the interval's optimizer steps", "loss", "max"),
    ("tempest_learner_grad_norm", "Mean global L2 gradient norm before clipping over the interval's steps",
     "grad_norm", "mean"),
    ("tempest_learner_grad_norm_min", "Min pre-clip gradient norm of the interval's steps", "grad_norm", "min"),
    ("tempest_learner_grad_norm_max", "Max pre-clip gradient norm of the interval's steps", "grad_norm", "max"),
    ("tempest_learner_grad_clip_ratio", "Mean post-clip / pre-clip norm over the interval's steps (1 = no clipping)",
     "clip_ratio", "mean"),
    ("tempest_learner_grad_clip_ratio_min", "Min clip ratio of the interval's steps (the hardest clip)",
     "clip_ratio", "min"),
    ("tempest_learner_grad_clip_ratio_max", "Max clip ratio of the interval's steps", "clip_ratio", "max"),
    ("tempest_learner_target_clamped_share", "Share of TD targets clamped (CLAMP_TARGETS) over the interval",
     "target_clamped_share", "mean"),
)
INTERVAL_STEPS = "tempest_learner_interval_steps"


class IntervalCollector(Collector):
    """The INTERVAL_METRICS, computed from the IntervalStats at each scrape."""

    def __init__(self, stats: IntervalStats):
        self.stats = stats

    def describe(self):
        return [GaugeMetricFamily(name, doc) for name, doc, _, _ in INTERVAL_METRICS] + \
            [GaugeMetricFamily(INTERVAL_STEPS, "")]

    def collect(self):
        summary = self.stats.summary()
        if summary is None:
            return
        for name, doc, value, how in INTERVAL_METRICS:
            yield GaugeMetricFamily(name, doc, value=getattr(summary[value], how))
        yield GaugeMetricFamily(INTERVAL_STEPS, "Optimizer steps behind the interval aggregates (those of the "
                                "last scrape interval, at least the latest step)", value=summary["loss"].count)


REJECTED_MESSAGE_REASONS = ("implausible_frames", "wrong_state_dim")
RECEIVING_SOCKETS = ("inbox", "control", "replay")


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, interval_s: float = 5.0):
        """interval_s: the window of the step aggregates, Prometheus' scrape interval."""
        r = {"registry": registry} if registry is not None else {}
        g = lambda name, doc, *labels: Gauge(name, doc, list(labels), **r)  # noqa: E731
        # Q, loss, gradient norm, clip ratio: aggregates over the steps of the last scrape interval
        # (intervals.py), not the last step's value
        self.intervals = IntervalStats(STEP_VALUES, interval_s)
        (registry if registry is not None else REGISTRY).register(IntervalCollector(self.intervals))
        self.lr = g("tempest_learner_lr", "Effective learning rate")
        self.target_distance = g("tempest_learner_target_distance",
                                 "||online - target|| / ||online|| over all weights (0 = the target is a copy)")
        # which run this is: rules that look back guard on the start (a new run does not inherit
        # the previous run's series); the dashboard's run filter lists the ids
        self.run_info = g("tempest_learner_run_info", "1, labelled with the run id and this process's incarnation",
                          "run_id", "incarnation")
        self.run_start = g("tempest_learner_run_start_time_seconds", "Unix time the run began (kept across resumes)")
        self.setting_changed_at = g("tempest_learner_setting_change_time_seconds",
                                    "Unix time of each live setting's latest change (dashboard annotations)", "name")
        self.setting_before = g("tempest_learner_setting_before_change",
                                "Each live setting's value before its latest change (booleans as 0/1)", "name")
        self.bc_weight = g("tempest_learner_bc_weight",
                           "Effective behaviour-cloning loss weight (BC_WEIGHT after its decay over global frames)")
        self.target_age = g("tempest_learner_target_age_steps",
                            "Optimizer steps since the last hard target copy (soft updates only: since training began)")
        # Q against its bound (qbound.py) and Q on the fixed probe states (probe.py); NaN until known
        self.q_bound_lower = g("tempest_learner_q_bound_lower",
                               "Lowest Q the workers' reward settings allow at the live gamma: min(0, bonus)/(1-gamma)"
                               " - death_penalty, widest over workers (NaN until a worker reported its settings)")
        self.q_bound_upper = g("tempest_learner_q_bound_upper",
                               "Highest Q the workers' reward settings allow at the live gamma: (clip + max(0, bonus))"
                               "/(1-gamma), widest over workers (NaN until a worker reported its settings)")
        probe = (f"over the fixed probe states (the first {PROBE_STATES} trained on) of max_a Q_online(s, a), the "
                 f"greedy (V-like) Q; every {PROBE_EVERY_STEPS} steps (NaN until measured)")
        self.probe_q_min = g("tempest_learner_probe_q_min", f"Min {probe}")
        self.probe_q_max = g("tempest_learner_probe_q_max", f"Max {probe}")
        self.probe_q_mean = g("tempest_learner_probe_q_mean", f"Mean {probe}")
        self.export_q_bound(None)
        self.export_probe_q(None)
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
        self.checkpoint_healthy = g("tempest_learner_checkpoint_healthy",
                                    "The newest rolling checkpoint's health verdict: 1 healthy, 0 not (NaN: none yet)")
        self.checkpoint_healthy.set(float("nan"))
        self.last_healthy_checkpoint_step = g(
            "tempest_learner_last_healthy_checkpoint_step",
            "Step of the newest rolling checkpoint judged healthy by this process (what a rollback returns to; NaN: none)")
        self.last_healthy_checkpoint_step.set(float("nan"))
        self.rollbacks = Counter("tempest_learner_rollbacks",
                                 "Rollbacks to a checkpoint (ctl rollback): networks and optimizer put back", **r)
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

    def export_q_bound(self, bound: tuple[float, float] | None) -> None:
        """(lower, upper) from Learner.q_bound(); None: NaN, not known yet."""
        lower, upper = bound if bound is not None else (float("nan"), float("nan"))
        self.q_bound_lower.set(lower)
        self.q_bound_upper.set(upper)

    def export_probe_q(self, stats: tuple[float, float, float] | None) -> None:
        """(min, max, mean) from ProbeSet.measure(); None: NaN, not measured yet."""
        for gauge, value in zip((self.probe_q_min, self.probe_q_max, self.probe_q_mean), stats or (float("nan"),) * 3):
            gauge.set(value)

    def export_run(self, run_id: str, incarnation: str, started: float) -> None:
        self.run_info.clear()
        self.run_info.labels(run_id=run_id, incarnation=incarnation).set(1)
        self.run_start.set(started)

    def export_change(self, name: str, before, at: float) -> None:
        if isinstance(before, (bool, int, float)):
            self.setting_before.labels(name=name).set(float(before))
        self.setting_changed_at.labels(name=name).set(at)

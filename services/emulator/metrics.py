"""Prometheus metrics of one emulator worker (names fixed by docs/design.md where it names them)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tempest_common.messages import ACTOR_NAMES

TRANSITION_DROP_REASONS = ("no_peer", "queue_full")   # Peers.try_send's


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = {"registry": registry} if registry is not None else {}
        self.frames = Counter("tempest_frames", "Game ticks in play or zoom that got a decision", **r)
        self.episodes = Counter("tempest_episodes", "Episodes (lives) finished, terminal or truncated", **r)
        self.video_frames = Counter("tempest_emulator_video_frames", "MAME video frames emulated", **r)
        self.video_fps = Gauge("tempest_emulator_video_fps", "MAME video frames per second (last interval)", **r)
        self.frames_per_s = Gauge("tempest_emulator_frames_per_second",
                                  "Decided game ticks per second (last interval)", **r)
        self.episode_score = Gauge("tempest_episode_score", "Game points of the last finished episode", **r)
        self.episode_length = Gauge("tempest_episode_length_frames", "Frames of the last finished episode", **r)
        self.episode_score_hist = Histogram(
            "tempest_episode_score_points", "Game points per episode",
            buckets=(0, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000), **r)
        self.episode_length_hist = Histogram(
            "tempest_episode_length", "Frames per episode",
            buckets=(10, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800), **r)
        self.mame_restarts = Counter("tempest_mame_restarts", "MAME restarts (exit, crash or stall)", **r)
        self.dropped = Counter("tempest_messages_dropped", "Messages that could not be sent (peer away, queue full)",
                               ["peer"], **r)
        self.malformed = Counter("tempest_messages_malformed", "Malformed or wrong-version messages received",
                                 ["peer", "reason"], **r)
        self.connections_dropped = Counter(
            "tempest_connections_dropped", "Connections ZeroMQ cut on a receiving socket (an oversized message, "
            "or a peer that left)", ["socket"], **r)
        self.connections_dropped.labels(socket="weights")
        self.actions = Counter("tempest_emulator_actions", "Decisions by who made them", ["actor"], **r)
        self.expert_timeouts = Counter("tempest_expert_timeouts", "Expert requests that got no reply in time", **r)
        # Imitation labels (TransitionBatch.expert_action) on decided ticks: "labelled" rows carry
        # the expert's choice, "missing" rows wanted one but the expert was unavailable (none
        # configured, backing off, no answer).  With EXPERT_LABELS off only expert turns count.
        self.expert_labels = Counter("tempest_emulator_expert_labels", "Decided ticks by imitation label outcome",
                                     ["result"], **r)
        self.weights_version = Gauge("tempest_emulator_weights_version", "Version of the network weights in use", **r)
        self.learner_incarnations = Counter("tempest_emulator_learner_incarnations",
                                            "Weights taken from a new learner incarnation (a restart or a new run)", **r)
        self.evaluation_games = Counter("tempest_evaluation_games", "Evaluation games started", **r)
        # Delivery accounting (services/replay/README.md, "Accounting"): rows the replay's socket
        # took, rows dropped here and why, and rows waiting in the adder (not yet numbered: what a
        # kill -9 loses).  Labelled by WORKER_ID (one value per process) so they join the replay's
        # tempest_replay_transitions_*{worker}.
        self.transitions_sent = Counter("tempest_emulator_transitions_sent",
                                        "Transition rows handed to the replay's socket", ["worker"], **r)
        self.transitions_dropped = Counter(
            "tempest_emulator_transitions_dropped", "Transition rows not sent, by reason (no_peer: no REPLAY_ADDR; "
            "queue_full: SEND_HWM batches already waiting)", ["worker", "reason"], **r)
        self.transitions_pending = Gauge("tempest_emulator_transitions_pending",
                                         "Transition rows waiting in the adder for a batch", ["worker"], **r)
        for peer in ("replay", "learner", "expert"):
            self.dropped.labels(peer=peer)
        for result in ("labelled", "missing"):
            self.expert_labels.labels(result=result)
        for name in ACTOR_NAMES:
            self.actions.labels(actor=name)

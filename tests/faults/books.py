"""What the faults test checks on a live stack besides "it came back": the delivery books
(services/replay/README.md, "Accounting") and the n-step windows the replay samples, judged
against the rows Redis holds.

Books: a snapshot of one worker's and the replay's counters, scraped one right after the other.
Between two snapshots of the same processes (no restart between), rows the worker handed to its
socket were received or seen missing, up to what is in flight:
    delta sent - delta (received + missing)  in  [-in_flight, +in_flight]
and inside the replay, exactly: delta received = delta stored + delta dropped.

Windows: a sample reply names each row by its replay seq (`index`), and Redis keeps every stored
row under its seq with its (stream, episode, step), so the true window of a sampled row is known
without trusting the replay's links: steps t..t+h of the same stream and episode, bootstrapping
from step t+h's state.  Rows below a durable horizon (a Redis next_seq read while the replay's
mirror and Redis held the same rows) must have their whole window in Redis: a sampled window
that Redis lacks a step of crossed a gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis

from services.replay.client import ReplayClient
from tempest_common.messages import TransitionBatch
from tempest_common.wire import decode
from tests.conftest import scrape

PREFIX = "tempest:replay"     # REPLAY_REDIS_PREFIX's default, which tools/local_stack.py keeps


def total(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in metrics.items()
               if (key == name or key.startswith(name + "{")) and all(w in key for w in want))


@dataclass(frozen=True)
class Books:
    sent: float             # worker: rows handed to its socket
    pending: float          # worker: rows in its adder, not yet numbered
    received: float
    stored: float
    dropped: float
    missing_gap: float
    missing_restart: float
    lost: float             # stored, then lost before Redis
    restore_missing: float  # gauge: holes Redis had at the replay's last start

    @classmethod
    def read(cls, worker_port: int, replay_port: int) -> "Books":
        w, r = scrape(worker_port), scrape(replay_port)
        return cls(sent=total(w, "tempest_emulator_transitions_sent_total"),
                   pending=total(w, "tempest_emulator_transitions_pending"),
                   received=total(r, "tempest_replay_transitions_received_total"),
                   stored=total(r, "tempest_replay_transitions_stored_total"),
                   dropped=total(r, "tempest_replay_transitions_dropped_total"),
                   missing_gap=total(r, "tempest_replay_transitions_missing_total", reason="gap"),
                   missing_restart=total(r, "tempest_replay_transitions_missing_total", reason="restart"),
                   lost=total(r, "tempest_replay_lost_total"),
                   restore_missing=total(r, "tempest_replay_restore_missing_rows"))

    def unbalanced(self, later: "Books", in_flight: int, batch: int) -> str | None:
        """Why the books between this snapshot and `later` (same processes) do not balance; None if
        they do."""
        sent = later.sent - self.sent
        accounted = (later.received + later.missing_gap + later.missing_restart) - \
                    (self.received + self.missing_gap + self.missing_restart)
        if abs(sent - accounted) > in_flight:
            return f"worker sent {sent:.0f} rows, the replay received or saw missing {accounted:.0f}"
        received, kept = later.received - self.received, (later.stored + later.dropped) - (self.stored + self.dropped)
        if abs(received - kept) > batch:    # two counters of one batch, scraped between their increments
            return f"the replay received {received:.0f} rows, stored or dropped {kept:.0f}"
        return None

    def loss_since(self, later: "Books", replay_restarted: bool) -> dict[str, float]:
        """Rows counted lost between the snapshots (a restarted replay counts from 0)."""
        base = Books(*[0.0] * 9) if replay_restarted else self
        return {"missing_gap": later.missing_gap - base.missing_gap,
                "missing_restart": later.missing_restart - base.missing_restart,
                "lost_before_redis": later.lost - base.lost, "dropped": later.dropped - base.dropped,
                "restore_holes": later.restore_missing, "worker_pending_at_last_scrape": self.pending}


class StoredRows:
    """Every row Redis holds: seq -> (stream, episode, step), and per (stream, episode, step) its
    state bytes, reward (game + shaping), terminal and truncated flags."""

    def __init__(self, url: str, prefix: str = PREFIX):
        r = redis.Redis.from_url(url)
        self.key_of: dict[int, tuple[str, int, int]] = {}
        self.rows: dict[tuple[str, int, int], tuple[bytes, float, bool, bool]] = {}
        for entry in r.lrange(f"{prefix}:chunks", 0, -1):
            seq = int(entry.split(b":")[0])
            payload = r.get(f"{prefix}:chunk:{seq}")
            if payload is None:
                continue
            b = decode(payload, expect=TransitionBatch)
            state = np.ascontiguousarray(b.state.astype(np.float16))
            reward = b.reward_game + b.reward_shaping
            for i in range(b.num_rows()):
                key = (b.stream_id, int(b.episode_id[i]), int(b.step[i]))
                self.key_of[seq + i] = key
                self.rows[key] = (state[i].tobytes(), float(reward[i]), bool(b.terminal[i]), bool(b.truncated[i]))

    def window(self, key: tuple[str, int, int], n: int, gamma: float):
        """(return, discount, bootstrap state bytes or None) of the window from `key`, or the
        first step of it that Redis lacks (an int)."""
        stream, episode, t = key
        ret, g = 0.0, 1.0
        for k in range(n):
            rec = self.rows.get((stream, episode, t + k))
            if rec is None:
                return t + k
            state, reward, terminal, truncated = rec
            if truncated:
                return ret, g, state
            ret += g * reward
            if terminal:
                return ret, 0.0, None
            g *= gamma
        boot = self.rows.get((stream, episode, t + n))
        return (ret, g, boot[0]) if boot is not None else t + n


def check_sampled_windows(replay_url: str, redis_url: str, horizon: int, n: int = 5, gamma: float = 0.995,
                          draws: int = 4, batch: int = 2048) -> dict[str, int]:
    """Sample `draws` x `batch` rows uniformly from the live replay and judge each against Redis.
    AssertionError on a wrong window; returns counts: judged, below_horizon, unjudged (rows or
    window steps not in Redis yet, above the horizon)."""
    client = ReplayClient(replay_url, timeout_s=60)
    try:
        replies = [client.sample(batch, n, gamma, prioritized=False) for _ in range(draws)]
    finally:
        client.close()
    stored = StoredRows(redis_url)
    counts = {"judged": 0, "below_horizon": 0, "unjudged": 0}
    for reply in replies:
        states = np.ascontiguousarray(reply.state.astype(np.float16))
        nexts = np.ascontiguousarray(reply.next_state.astype(np.float16))
        for i, seq in enumerate(reply.index.astype(np.int64)):
            key = stored.key_of.get(int(seq))
            below = int(seq) + n < horizon
            if key is None:
                assert not below, f"sampled seq {seq} is below the durable horizon {horizon} but not in Redis"
                counts["unjudged"] += 1
                continue
            assert stored.rows[key][0] == states[i].tobytes(), f"seq {seq}: the sampled state is not Redis' row {key}"
            want = stored.window(key, n, gamma)
            if isinstance(want, int):
                assert not below, (f"seq {seq} {key}: sampled with a complete {n}-step window, but step {want} "
                                   f"never reached Redis: the window crossed a gap")
                counts["unjudged"] += 1
                continue
            ret, discount, boot = want
            assert abs(float(reply.reward[i]) - ret) <= 1e-3 * max(1.0, abs(ret)), \
                f"seq {seq} {key}: sampled return {reply.reward[i]}, the rows in Redis give {ret}"
            assert abs(float(reply.discount[i]) - discount) <= 1e-5, \
                f"seq {seq} {key}: sampled discount {reply.discount[i]}, the rows in Redis give {discount}"
            if boot is not None:
                assert nexts[i].tobytes() == boot, f"seq {seq} {key}: bootstraps from a row other than step t+h"
            counts["judged"] += 1
            counts["below_horizon"] += below
    return counts


def redis_next_seq(url: str, prefix: str = PREFIX) -> int:
    return int(redis.Redis.from_url(url).get(f"{prefix}:next_seq") or 0)

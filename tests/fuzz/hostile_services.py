"""Hostile input for the expert's ROUTER and the learner's inbox PULL and control ROUTER; the Shot
conventions are in hostile.py."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from tempest_common.game_state import FIELD_SPECS, GameState
from tempest_common.messages import ControlRequest, EpisodeSummary, ExpertRequest, Heartbeat
from tempest_common.wire import encode
from tests.fuzz.hostile import (
    U64_MAX, I64_MIN, I64_MAX, NAN, INF, EXPERT_ERRORS, LEARNER_MALFORMED,
    LEARNER_CONTROL_REFUSED, LEARNER_REJECTED, Shot, pack, wire_map, unchecked, wire_mutation,
    weighted)


# -- expert ROUTER: ExpertRequest -----------------------------------------------------------------
def any_states(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """GameState fields with every field any value of its dtype (booleans 0/1: the wire refuses
    other bytes)."""
    out = {}
    for name, (dt, shape) in FIELD_SPECS.items():
        dt = np.dtype(dt)
        if dt == np.bool_:
            out[name] = rng.integers(0, 2, (n, *shape)).astype(bool)
        else:
            info = np.iinfo(dt)
            out[name] = rng.integers(info.min, info.max, (n, *shape), dtype=dt, endpoint=True)
    return out


def random_states(rng: np.random.Generator, n: int) -> GameState:
    """any_states, often in play or zoom and alive (where the expert's rules do the most)."""
    out = any_states(rng, n)
    if rng.random() < 0.7:
        out["mode"] = rng.choice(np.array([0x04, 0x20], np.uint8), n)
        out["player_alive"] = np.ones(n, bool)
    return GameState(**out)


def expert_shots(rng: np.random.Generator, n: int, max_states: int) -> Iterator[Shot]:
    E = EXPERT_ERRORS
    unexpected = ["transitions", "episode", "sample_request", "expert_reply", "control_request"]
    rid = lambda: [0, 1, 2 ** 31, U64_MAX, I64_MIN][int(rng.integers(0, 5))]  # noqa: E731

    def request(b: int) -> ExpertRequest:
        return ExpertRequest(rid(), random_states(rng, b))

    def packed(category: str, reason: str, change: Callable[[dict], None]) -> Callable[[], Shot]:
        def make() -> Shot:
            obj = wire_map(request(int(rng.integers(1, 9))))
            change(obj["states"])
            return Shot([pack(obj)], (E, reason), category)
        return make

    def bool_byte(states: dict) -> None:
        data = bytearray(states["data"])
        data[1] = 2 + int(rng.integers(0, 254))     # `attract`, the record's second byte, a bool
        states["data"] = bytes(data)

    table = [
        (25, lambda: Shot([encode(request(int(rng.integers(1, 33))))], None, "valid")),
        (1, lambda: Shot([encode(request(0))], None, "no_states")),
        (0.3, lambda: Shot([encode(request(max_states))], None, "max_states")),
        (0.5, lambda: Shot([encode(request(max_states + int(rng.integers(1, 800))))], (E, "too_many_states"),
                           "too_many_states")),
        (3, packed("bool_byte", "bad_game_state", bool_byte)),
        (3, packed("layout", "bad_game_state", lambda s: s.update(layout=int(rng.integers(0, 2 ** 32))))),
        (3, packed("n_mismatch", "bad_game_state", lambda s: s.update(n=s["n"] + int(rng.choice([1, -1, 2 ** 40]))))),
        (2, packed("n_negative", "bad_game_state", lambda s: s.update(n=-1))),
        (2, packed("layout_huge", "bad_game_state", lambda s: s.update(layout="L" * 100_000))),
        (2, lambda: Shot([b"extra", encode(request(1))], (E, "bad_frames"), "multipart")),
        (1, lambda: Shot([b"", b"", encode(request(1))], (E, "bad_frames"), "multipart_empty")),
        (1, lambda: Shot([b"", encode(request(1))], None, "req_framing")),
        (25, lambda: wire_mutation(rng, request(int(rng.integers(1, 5))), E, unexpected)),
    ]
    for _ in range(n):
        yield weighted(rng, table)


# -- learner PULL: EpisodeSummary / Heartbeat -------------------------------------------------------
def episode(rng: np.random.Generator, **override) -> EpisodeSummary:
    fields = dict(stream_id="fuzz", worker_id="fuzz-worker", episode_id=int(rng.integers(0, 10 ** 6)),
                  game_id=int(rng.integers(0, 10 ** 4)), evaluation=bool(rng.integers(0, 2)),
                  length=int(rng.integers(1, 5000)), game_reward=float(rng.integers(0, 5000)),
                  shaping_reward=float(rng.random()), score=int(rng.integers(0, 10_000)),
                  game_score=int(rng.integers(0, 100_000)), level=int(rng.integers(0, 99)),
                  end=["terminal", "truncated"][int(rng.integers(0, 2))], game_over=bool(rng.integers(0, 2)),
                  actor_counts={"expert": int(rng.integers(0, 1000)), "network": int(rng.integers(0, 1000))},
                  wall_time=1.7e9)
    fields.update(override)
    return EpisodeSummary(**fields)


def heartbeat(worker: str, frames: int, **override) -> Heartbeat:
    fields = dict(worker_id=worker, frames_total=frames, episodes_total=frames // 500, video_fps=60.0,
                  frames_per_s=900.0, wall_time=1.7e9)
    fields.update(override)
    return Heartbeat(**fields)


class LearnerInbox:
    """Heartbeats of a pool of well-behaved workers (small, plausible increases) among the hostile."""

    def __init__(self, rng: np.random.Generator, workers: int = 8):
        self.rng = rng
        self.frames = {f"fuzz-pool-{i}": 0 for i in range(workers)}
        self.fresh = 0

    def plausible(self) -> Heartbeat:
        w = list(self.frames)[int(self.rng.integers(0, len(self.frames)))]
        self.frames[w] += int(self.rng.integers(1, 300))
        return heartbeat(w, self.frames[w])

    def fresh_worker(self) -> str:
        self.fresh += 1
        return f"fuzz-fresh-{self.fresh}"


def learner_inbox_shots(rng: np.random.Generator, n: int) -> Iterator[Shot]:
    M, J = LEARNER_MALFORMED, LEARNER_REJECTED
    pool = LearnerInbox(rng)
    unexpected = ["transitions", "sample_request", "expert_request", "control_request", "weights"]

    def raw(category, expect, make_obj):
        return lambda: Shot([pack(make_obj())], expect, category)

    def hb_obj(**fields) -> dict:
        return {**wire_map(heartbeat(pool.fresh_worker(), 10)), **fields}

    def ep_obj(**fields) -> dict:
        return {**wire_map(episode(rng)), **fields}

    table = [
        (15, lambda: Shot([encode(pool.plausible())], None, "heartbeat_valid")),
        (10, lambda: Shot([encode(episode(rng))], None, "episode_valid")),
        (3, lambda: Shot([encode(episode(rng, evaluation=True, game_over=True, end="terminal",
                                         game_score=999_999, score=999_999, length=2 ** 53, level=255,
                                         episode_id=2 ** 53, game_id=2 ** 53))], None, "episode_extremes")),
        (4, lambda: Shot([encode(heartbeat(pool.fresh_worker(), 2 ** 53))], (J, "implausible_frames"),
                         "heartbeat_2p53")),
        (3, raw("heartbeat_2p53_plus_1", (M, "bad_field"), lambda: hb_obj(frames_total=2 ** 53 + 1))),
        (3, raw("heartbeat_u64_max", (M, "bad_field"), lambda: hb_obj(frames_total=U64_MAX))),
        (2, raw("heartbeat_episodes_u64", (M, "bad_field"), lambda: hb_obj(episodes_total=U64_MAX))),
        (2, raw("heartbeat_negative", (M, "bad_field"), lambda: hb_obj(frames_total=-1))),
        (2, raw("heartbeat_fps_bad", (M, "bad_field"),
                lambda: hb_obj(video_fps=[NAN, INF, -1.0][int(rng.integers(0, 3))]))),
        (2, raw("episode_score_1e6", (M, "bad_field"), lambda: ep_obj(score=10 ** 6))),
        (2, raw("episode_game_score_negative", (M, "bad_field"), lambda: ep_obj(game_score=-1))),
        (2, raw("episode_level_256", (M, "bad_field"), lambda: ep_obj(level=256))),
        (2, raw("episode_end_bad", (M, "bad_field"), lambda: ep_obj(end="exploded"))),
        (2, raw("episode_length_2p53_plus_1", (M, "bad_field"), lambda: ep_obj(length=2 ** 53 + 1))),
        (2, raw("episode_reward_nan", (M, "bad_field"),
                lambda: ep_obj(game_reward=[NAN, INF][int(rng.integers(0, 2))]))),
        (2, raw("episode_counts_negative", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": -1}))),
        (2, raw("episode_counts_float", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": 1.5}))),
        (2, raw("episode_counts_nested", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": [1, 2]}))),
        (2, raw("episode_counts_u64", (M, "bad_field"), lambda: ep_obj(actor_counts={"expert": U64_MAX}))),
        (1, lambda: Shot([unchecked(episode(rng, actor_counts={f"a{i}": i for i in range(3000)}))], (M, "bad_field"),
                         "episode_many_counts")),
        (25, lambda: wire_mutation(rng, [pool.plausible(), episode(rng)][int(rng.integers(0, 2))], M, unexpected)),
        (1, lambda: Shot([b"junk", encode(pool.plausible())], None, "multipart")),
    ]
    for _ in range(n):
        yield weighted(rng, table)


def learner_inbox_specials(rng: np.random.Generator) -> Iterator[Shot]:
    """Heartbeats of fresh workers with 60 KB ids (under the inbox's 64 KB limit; refused: the
    schema bounds names to MAX_NAME_CHARS)."""
    for i in range(LONG_WORKER_MESSAGES):
        yield Shot([unchecked(heartbeat(f"{i:06d}" + "w" * (LONG_WORKER_BYTES - 6), 100))], (LEARNER_MALFORMED, "bad_field"),
                   "long_worker_id")


LONG_WORKER_BYTES = 60_000
LONG_WORKER_MESSAGES = 2_000   # 120 MB of ids, were the learner to keep every worker's id


# -- learner control ROUTER: ControlRequest --------------------------------------------------------
BAD_SETTINGS = [  # (name, value): every one out of range, of the wrong type, or unknown
    ("lr", 0.0), ("lr", 2.0), ("lr", -1.0), ("lr", NAN), ("lr", INF), ("lr", "abc"), ("lr", "nan"), ("lr", True),
    ("lr", None), ("gamma", 1.5), ("gamma", -0.1), ("gamma", NAN), ("n_step", 0), ("n_step", 101),
    ("n_step", I64_MAX), ("n_step", U64_MAX), ("n_step", 2.5), ("batch_size", 0), ("batch_size", U64_MAX),
    ("batch_size", -5), ("tau", INF), ("epsilon", 1.0000001), ("epsilon", -INF), ("lr_schedule", "linear"),
    ("lr_schedule", 3), ("use_soft_target", 2), ("use_soft_target", "maybe"), ("per_beta", NAN),
    ("training_steps_per_sample", -1.0), ("training_steps_per_sample", INF), ("max_grad_norm", 1e300),
    ("expert_ratio_min", 7), ("gradient_accumulation_steps", 0), ("gradient_accumulation_steps", 10 ** 6),
    ("__class__", 1), ("no_such_setting", 1), ("", 0), ("x" * 256, 1.0), ("LR", 0.001), ("lr ", 0.001),
]
GOOD_SETTINGS = [("lr", 0.0005), ("gamma", 0.9), ("n_step", 2), ("epsilon", 0.2), ("tau", 0.01)]


def control_shots(rng: np.random.Generator, n: int, token: str) -> Iterator[Shot]:
    M, C = LEARNER_MALFORMED, LEARNER_CONTROL_REFUSED
    unexpected = ["transitions", "episode", "heartbeat", "sample_request", "control_reply"]
    rid = lambda: int(rng.integers(1, 2 ** 31))  # noqa: E731

    def bad_settings() -> dict:
        """One to three bad settings, sometimes beside a good one (the set must fail as a whole)."""
        out = dict(BAD_SETTINGS[int(i)] for i in rng.integers(0, len(BAD_SETTINGS), int(rng.integers(1, 4))))
        good, value = GOOD_SETTINGS[int(rng.integers(0, len(GOOD_SETTINGS)))]
        if rng.random() < 0.3 and good not in out:
            out[good] = value
            out = dict(sorted(out.items(), key=lambda _: rng.random()))
        return out

    def any_settings() -> dict:
        return dict([GOOD_SETTINGS[int(rng.integers(0, len(GOOD_SETTINGS)))]]) if rng.random() < 0.5 else bad_settings()

    def set_raw(category, expect, **fields):
        def make() -> Shot:
            obj = wire_map(ControlRequest(rid(), "set", {}, token))
            obj.update({k: (v() if callable(v) else v) for k, v in fields.items()})
            return Shot([pack(obj)], expect, category)
        return make

    wrong_tokens = ["", " ", token[:-1], token + "x", token.upper() if token != token.upper() else token.lower(),
                    "\x00" * len(token), "🙂" * 8, "x" * 256]
    table = [
        (15, lambda: Shot([encode(ControlRequest(rid(), "get", {}, ""))], None, "get")),
        (3, lambda: Shot([encode(ControlRequest(rid(), "get", any_settings(), "bogus"))], None, "get_with_junk")),
        (10, lambda: Shot([encode(ControlRequest(rid(), "set", any_settings(), ""))], (C, "unauthorized"),
                          "set_no_token")),
        (8, lambda: Shot([encode(ControlRequest(rid(), "set", any_settings(),
                                                wrong_tokens[int(rng.integers(0, len(wrong_tokens)))]))],
                         (C, "unauthorized"), "set_wrong_token")),
        (15, lambda: Shot([encode(ControlRequest(rid(), "set", bad_settings(), token))], (C, "bad_setting"),
                          "set_bad_setting")),
        (2, lambda: Shot([unchecked(ControlRequest(rid(), "set", {f"unknown_{i}": i for i in range(2000)}, token))],
                         (M, "bad_field"), "set_many_unknown")),
        (2, set_raw("op_bad", (M, "bad_field"), op=lambda: ["delete", "", "SET", "get ", "exec"][int(rng.integers(0, 5))])),
        (2, set_raw("token_not_str", (M, "bad_field"), token=lambda: [None, 5, b"tok", ["t"]][int(rng.integers(0, 4))])),
        (2, set_raw("settings_nested", (M, "bad_field"), settings={"lr": [0.001]})),
        (2, set_raw("settings_not_map", (M, "bad_field"), settings=[["lr", 0.001]])),
        (2, set_raw("settings_int_key", (M, "not_msgpack"), settings={1: 0.001})),  # msgpack's strict_map_key
        # (without the token: no bit flip can turn one into an authorized, valid change)
        (25, lambda: wire_mutation(rng, ControlRequest(rid(), ["get", "set"][int(rng.integers(0, 2))],
                                                       any_settings(), ""), M, unexpected)),
        (1, lambda: Shot([b"junk", encode(ControlRequest(rid(), "get", {}, ""))], None, "multipart")),
    ]
    for _ in range(n):
        yield weighted(rng, table)

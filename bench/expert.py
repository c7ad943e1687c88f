"""Benchmark: the expert against a uniformly random policy on real Tempest, then the service.

Run as `.venv/bin/python bench/expert.py` (no arguments).  Progress goes to stderr; the last
stdout line is one JSON object:
  expert_mean_score   game points per life, expert (pure policy, in process)
  random_mean_score   game points per life, uniform over the 22 non-zap joint actions (the project's
                      rule for random actions: tempest_common.actions.random_actions)
  score_ratio         expert / random
  expert_mean_level   mean level (1-based) reached by the expert's lives
  lives               lives played per policy
  decisions_per_s     states/s the real service process answers to one client, batches of 32
                      distinct states recorded from play
  single_latency_ms   p50 round trip of a one-state request
Every life starts from the same MAME save state on the first level (TempestEnv.reset), then
plays a seeded random number (0-30) of no-op ticks, the same sequence for both policies, so that
a deterministic policy does not replay one identical life ten times; lives are capped at
MAX_TICKS_PER_LIFE ticks so the run stays well inside 10 minutes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logger, rompath, stop_proc  # noqa: E402
from services.emulator.gym_env import TempestEnv  # noqa: E402
from services.expert.client import ExpertClient  # noqa: E402
from services.expert.policy import expert_action  # noqa: E402
from tempest_common.actions import NOOP, random_actions  # noqa: E402
from tempest_common.game_state import GameState, decode_ram  # noqa: E402

LIVES = 10
MAX_TICKS_PER_LIFE = 4000
SERVICE_SECONDS = 10.0
log = logger()

NOOP_STARTS = np.random.default_rng(12345).integers(0, 31, LIVES)


def play_lives(env: TempestEnv, policy: str, rng: np.random.Generator, recorded: list) -> tuple[list, list]:
    scores, levels = [], []
    for life in range(LIVES):
        env.reset(seed=life)
        start_score = env.game_state.score
        for _ in range(NOOP_STARTS[life]):
            env.step(NOOP)
        for tick in range(MAX_TICKS_PER_LIFE):
            state = env.game_state
            if policy == "expert":
                action = expert_action(state)
                if len(recorded) < 4096 and tick % 3 == 0:
                    recorded.append(state)
            else:
                action = int(random_actions(rng, 1)[0])
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        scores.append(int(env.game_state.score) - int(start_score))
        levels.append(int(env.game_state.level) + 1)
        log(f"{policy} life {life + 1}/{LIVES}: {scores[-1]} points, level {levels[-1]}, {tick + 1} ticks"
            f"{' (capped)' if tick + 1 == MAX_TICKS_PER_LIFE else ''}")
    return scores, levels


def measure_service(states: GameState) -> tuple[float, float]:
    port = free_port()
    env = dict(os.environ, EXPERT_BIND=f"tcp://127.0.0.1:{port}", METRICS_PORT="0", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "services.expert.main"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = ExpertClient(f"tcp://127.0.0.1:{port}")
        one = states[0:1]
        deadline = time.monotonic() + 30
        while client.act(one, 1000) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("expert service did not answer")
        n = len(states)
        batches = [states[i:i + 32] for i in range(0, n - 31, 32)]
        log(f"service: batches of 32 from {len(batches)} distinct recorded batches for {SERVICE_SECONDS:.0f} s")
        done, t0, k = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < SERVICE_SECONDS:
            actions = client.act(batches[k % len(batches)], 5000)
            assert actions is not None and len(actions) == 32
            done += 32
            k += 1
        decisions_per_s = done / (time.perf_counter() - t0)
        log(f"service: {decisions_per_s:,.0f} decisions/s")
        latencies = []
        for i in range(2000):
            t = time.perf_counter()
            assert client.act(states[i % n:i % n + 1], 5000) is not None
            latencies.append(time.perf_counter() - t)
        p50 = statistics.median(latencies) * 1000
        log(f"service: single-state round trip p50 {p50:.3f} ms (p90 {np.percentile(latencies, 90) * 1000:.3f} ms)")
        client.close()
        return decisions_per_s, p50
    finally:
        stop_proc(proc, "expert service", timeout=10)


def main() -> None:
    env = TempestEnv(rompath("expert"))
    rng = np.random.default_rng(0)
    recorded: list[GameState] = []
    try:
        expert_scores, expert_levels = play_lives(env, "expert", rng, recorded)
        random_scores, _ = play_lives(env, "random", rng, recorded)
    finally:
        env.close()
    expert_mean, random_mean = statistics.mean(expert_scores), statistics.mean(random_scores)
    log(f"expert {expert_mean:.0f} vs random {random_mean:.0f} points per life")
    states = GameState.stack(recorded) if recorded else decode_ram(np.zeros((32, 1024), np.uint8))
    decisions_per_s, p50 = measure_service(states)
    print(json.dumps({"expert_mean_score": round(expert_mean, 1), "random_mean_score": round(random_mean, 1),
                      "score_ratio": round(expert_mean / random_mean, 2) if random_mean else None,
                      "expert_mean_level": round(statistics.mean(expert_levels), 2), "lives": LIVES,
                      "decisions_per_s": round(decisions_per_s), "single_latency_ms": round(p50, 3)}))


if __name__ == "__main__":
    main()

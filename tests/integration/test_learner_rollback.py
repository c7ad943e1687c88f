"""Integration (issue 16): `ctl rollback` on the real learner and replay processes, real Redis.

The learner trains on a chain MDP through the replay, stops (its SIGTERM checkpoint is healthy),
resumes and trains on (its weights move), then is rolled back: the weights it publishes are the
checkpoint's, its counters go on, and the replay's maximum priority (ratcheted up here by hand, as
a divergence would) is forgotten."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from services.learner import checkpoint
from services.learner.control import ControlClient, ControlError, ControlServer
from services.replay.client import ReplayClient
from tempest_common.messages import WeightsSchedule
from tempest_common.wire import decode
from tests.conftest import REPO, free_port, scrape, wait_for
from tests.integration.test_learner_service import send_chain, stack  # noqa: F401  (stack: the fixture)

pytestmark = pytest.mark.integration


def test_rollback_restores_the_healthy_checkpoint_keeps_counters_and_resets_replay_priority(stack):  # noqa: F811
    p, sender, start_learner, tmp, _ = stack
    send_chain(sender, 100)
    first = start_learner(PUBLISH_EVERY_STEPS="1000")
    wait_for(lambda: scrape(p["lmetrics"])["tempest_learner_steps_total"] >= 30, 60, what="training")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    (saved_path,) = (tmp / "ckpt").glob("checkpoint-*.pt")
    saved = checkpoint.load(saved_path)
    saved_step = saved["counters"]["steps"]
    assert saved["health"]["healthy"] is True and saved["health"]["step"] == saved_step

    start_learner(PUBLISH_EVERY_STEPS="1000")    # resumes that checkpoint and trains on: the weights move
    wait_for(lambda: scrape(p["lmetrics"])["tempest_learner_step"] >= saved_step + 30, 60, what="training on")

    # a divergence's legacy in the replay: one huge priority, the maximum every new row would enter at
    replay = ReplayClient(f"tcp://127.0.0.1:{p['router']}")
    rows = replay.sample(16, n_step=1, gamma=0.9, prioritized=False).index
    replay.update_priorities(rows, np.full(len(rows), 50.0, np.float32))
    wait_for(lambda: scrape(p["rmetrics"])["tempest_replay_max_priority"] == 50.0, 10, what="max priority 50")

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{p['weights']}")
    time.sleep(0.5)   # the subscription reaches the learner before the rollback publishes
    ctl = [sys.executable, "-m", "services.learner.ctl", "--addr", f"tcp://127.0.0.1:{p['control']}",
           "--token-file", str(tmp / "ckpt" / "control-token")]
    out = subprocess.run([*ctl, "rollback"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    said = re.fullmatch(r"rolled back from step (\d+) to the checkpoint of step (\d+) \((\S+), healthy\); "
                        r"weights version (\d+) published\n", out.stdout)
    assert said, out.stdout
    from_step, to_step, name, version = int(said[1]), int(said[2]), said[3], int(said[4])
    assert to_step == saved_step and name == saved_path.name and from_step >= saved_step + 30

    weights = None
    deadline = time.monotonic() + 20
    while weights is None and time.monotonic() < deadline:
        if sub.poll(500):
            msg = decode(sub.recv(), expect=WeightsSchedule)
            weights = msg.weights if msg.version == version else None
    sub.close(0)
    assert weights is not None, f"no weights of version {version} published"
    online = saved["online"]
    assert sorted(weights) == sorted(online)
    assert all(np.array_equal(weights[k], online[k].float().numpy()) for k in online), \
        "the weights published after the rollback are the checkpoint's"

    m = scrape(p["lmetrics"])
    assert m["tempest_learner_rollbacks_total"] == 1
    assert m["tempest_learner_step"] >= from_step, "the step count goes on, not back to the checkpoint's"
    assert m["tempest_learner_weights_version"] >= version > saved["counters"]["weights_version"]
    r = wait_for(lambda: (lambda m: m if m["tempest_replay_priority_resets_total"] == 1 else None)(
        scrape(p["rmetrics"])), 10, what="the replay's priority reset")
    assert r["tempest_replay_max_priority"] < 5.0, "forgotten: new rows no longer enter at 50"
    log = (tmp / "learner1.log").read_text()
    assert len(re.findall(rf"rollback: step {from_step} -> the checkpoint of step {to_step} ", log)) == 1
    replay.close()

    missing = subprocess.run([*ctl, "rollback", "7"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith(f"refused: no_checkpoint: no checkpoint of run {saved['run_id']} at step 7 in "), \
        missing.stderr
    assert f"(its checkpoints: steps {saved_step})" in missing.stderr
    assert scrape(p["lmetrics"])['tempest_learner_control_refused_total{reason="no_checkpoint"}'] == 1



def test_the_control_endpoint_guards_rollback_like_set():
    """ControlServer over real ZeroMQ with a stand-in rollback: the token is needed, the step must be
    a whole number, a LookupError is the operator's "no_checkpoint" refusal, counted by reason."""
    asked, refused = [], []

    def rollback(step):
        asked.append(step)
        if step == 7:
            raise LookupError("no checkpoint of run r at step 7")
        return {"from_step": 50, "to_step": step if step is not None else 40}

    addr = f"tcp://127.0.0.1:{free_port()}"
    server = ControlServer(addr, dict, dict, lambda reason: None, token="secret", on_refused=refused.append,
                           rollback=rollback)
    good, bad = (ControlClient(addr, timeout_s=5, token=t) for t in ("secret", "wrong"))

    def served(call):
        """call()'s answer (a ControlError as its text), the server answering on this thread."""
        got = {}

        def ask():
            try:
                got["reply"] = call()
            except ControlError as exc:
                got["reply"] = str(exc)
        thread = threading.Thread(target=ask)
        thread.start()
        wait_for(lambda: server.serve_pending() or not thread.is_alive(), 5, interval=0.01, what="a request")
        thread.join(5)
        return got["reply"]
    try:
        assert served(lambda: good.rollback()) == {"from_step": 50, "to_step": 40}
        assert served(lambda: good.rollback(30)) == {"from_step": 50, "to_step": 30}
        assert served(lambda: good.rollback(7)) == "refused: no_checkpoint: no checkpoint of run r at step 7"
        assert served(lambda: bad.rollback()) == ("refused: unauthorized: rollback needs the learner's control token "
                                                  "(CONTROL_TOKEN_FILE)")
        assert served(lambda: good._call("rollback", {"step": "x"})) == \
            "refused: bad_setting: rollback step must be a whole number >= 0, got 'x'"
    finally:
        for client in (good, bad):
            client.close()
        server.close()
    assert asked == [None, 30, 7], "refused requests never reach the learner"
    assert refused == ["no_checkpoint", "unauthorized", "bad_setting"]

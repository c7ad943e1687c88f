"""The learner against hostile or broken input, part by part: sample screening, batch-size bounds,
checkpoint counters, the control endpoint's token and per-turn bound, ctl (rate-limited logging:
tests/unit/test_limited_log.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from services.learner import checkpoint, ctl
from services.learner.control import ControlServer, ensure_control_token
from services.learner.sample_check import screen_sample
from services.learner.settings import apply_changes, load_live_settings
from tempest_common.actions import NUM_ACTIONS
from tempest_common.config import ConfigError
from tempest_common.messages import ControlReply, ControlRequest, SampleReply
from tempest_common.wire import decode, encode
from tests.conftest import free_port

D = 3


def sample(action, state=None, reward=None, discount=None, weight=None, label=None) -> SampleReply:
    b = len(action)
    f = lambda v, default: np.asarray(default if v is None else v, np.float32)  # noqa: E731
    state = f(state, np.zeros((b, D)))
    return SampleReply(7, None, np.arange(100, 100 + b, dtype=np.uint64), state, np.asarray(action, np.int16),
                       f(reward, np.ones(b)), f(discount, np.full(b, 0.9)), state + 1, f(weight, np.ones(b)),
                       np.zeros(b, np.uint8), np.asarray(action if label is None else label, np.int16))


# -- 1. a poisoned sample --------------------------------------------------------------------------
def test_bad_rows_are_taken_out_and_named_by_reason():
    nan_state = np.zeros((7, D), np.float32)
    nan_state[2, 1] = np.nan
    reply = sample([0, 30000, 5, -1, 1, 2, NUM_ACTIONS - 1], state=nan_state,
                   reward=[1, 1, 1, 1, np.inf, 1, 1], discount=[0.9, 0.9, 0.9, 0.9, 0.9, 2.0, 0.9])
    screened = screen_sample(reply)
    # row 1 (action 30000: the crash's index) and 3 (-1) are out of range; 2 (NaN state) and 4 (inf
    # reward) are not finite; 5 has discount 2 (gamma^h is <= 1)
    assert screened.rejected == {"action_out_of_range": 2, "nonfinite": 2, "value_out_of_range": 1}
    assert screened.bad_index.tolist() == [101, 102, 103, 104, 105]
    kept = screened.kept
    assert kept.index.tolist() == [100, 106] and kept.action.tolist() == [0, NUM_ACTIONS - 1]
    assert kept.state.shape == (2, D) and kept.request_id == 7
    kept.validate()


def test_an_expert_label_out_of_range_is_a_bad_row_and_no_label_is_not():
    # the imitation loss indexes Q with the label: 44 would raise there as action 44 does in the TD loss
    screened = screen_sample(sample([0, 1, 2, 3], label=[-1, NUM_ACTIONS, -2, NUM_ACTIONS - 1]))
    assert screened.rejected == {"action_out_of_range": 2}
    assert screened.kept.index.tolist() == [100, 103] and screened.kept.expert_action.tolist() == [-1, NUM_ACTIONS - 1]


def test_a_good_reply_is_passed_through_uncopied_and_an_all_bad_one_keeps_nothing():
    good = sample([0, 1, 2])
    assert screen_sample(good).kept is good and screen_sample(good).rejected == {}
    assert screen_sample(sample([])).kept is None   # an empty batch would only give a NaN loss
    bad = sample([0, 1], weight=[np.nan, -1.0])
    screened = screen_sample(bad)
    assert screened.kept is None and screened.rejected == {"nonfinite": 1, "value_out_of_range": 1}
    assert screened.bad_index.dtype == np.uint64 and screened.bad_index.tolist() == [100, 101]


# -- 4. absurd batch sizes ---------------------------------------------------------------------------
def test_batch_size_and_rows_per_step_are_bounded_at_load_and_on_every_change():
    s = load_live_settings({})
    assert apply_changes(s, {"batch_size": 65536}).batch_size == 65536
    with pytest.raises(ConfigError, match=r"batch_size=65537 is out of range"):
        apply_changes(s, {"batch_size": 65537})
    with pytest.raises(ConfigError, match=r"batch_size x gradient_accumulation_steps = 65536 x 32 = 2097152 rows "
                                          r"per optimizer step: at most 1048576"):
        apply_changes(s, {"batch_size": "65536", "gradient_accumulation_steps": "32"})
    big = apply_changes(s, {"batch_size": 65536, "gradient_accumulation_steps": 16})   # exactly 2^20
    with pytest.raises(ConfigError, match="rows per optimizer step"):
        apply_changes(big, {"gradient_accumulation_steps": 17})
    with pytest.raises(ConfigError, match="rows per optimizer step"):
        load_live_settings({"BATCH_SIZE": "8192", "GRADIENT_ACCUMULATION_STEPS": "256"})
    with pytest.raises(ConfigError, match="BATCH_SIZE=1048576 is out of range"):
        load_live_settings({"BATCH_SIZE": str(1 << 20)})


# -- 2. checkpoint counters ----------------------------------------------------------------------------
def test_impossible_counters_in_a_checkpoint_are_named():
    books = {"global_frames": 5, "episodes": 1, "worker_frames": {"w": 5}, "eval_games": [], "rewards": []}
    checkpoint.check_counters({"bookkeeper": books, "counters": {"steps": 3, "weights_version": 2}})
    with pytest.raises(ValueError, match=r"global_frames=18446744073709551615 is outside 0..2\^53"):
        checkpoint.check_counters({"bookkeeper": {**books, "global_frames": 2**64 - 1}})
    with pytest.raises(ValueError, match=r"worker_frames\['w'\]=-1"):
        checkpoint.check_counters({"bookkeeper": {**books, "worker_frames": {"w": -1}}})
    with pytest.raises(ValueError, match="weights_version=9007199254740993"):
        checkpoint.check_counters({"counters": {"weights_version": 2**53 + 1}})


# -- 3. the control endpoint ---------------------------------------------------------------------------
@pytest.fixture()
def control_pair():
    ctx = zmq.Context.instance()
    url = f"tcp://127.0.0.1:{free_port()}"
    live = {"lr": 0.001}
    refused, changes = [], []

    def set_settings(new):
        if "lr" not in new:
            raise ConfigError(f"unknown setting {next(iter(new))!r}")
        changes.append(new)
        live.update(new)
        return dict(live)
    server = ControlServer(url.replace("127.0.0.1", "*"), lambda: dict(live), set_settings, lambda r: None, ctx,
                           token="s3cret", on_refused=refused.append)
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(url)
    yield server, client, refused, changes
    client.close(0)
    server.close()


def ask(server, client, *requests) -> list[ControlReply]:
    for req in requests:
        client.send(encode(req))
    replies, deadline = [], time.monotonic() + 5
    while len(replies) < len(requests) and time.monotonic() < deadline:
        server.serve_pending()
        while client.poll(10):
            replies.append(decode(client.recv(), expect=ControlReply))
    return replies


def test_set_needs_the_token_and_get_does_not(control_pair):
    server, client, refused, changes = control_pair
    missing, wrong, right, get, bad = ask(server, client, ControlRequest(1, "set", {"lr": 0.5}, ""),
                                          ControlRequest(2, "set", {"lr": 0.5}, "s3cre"),
                                          ControlRequest(3, "set", {"lr": 0.0005}, "s3cret"),
                                          ControlRequest(4, "get", {}, ""),
                                          ControlRequest(5, "set", {"tau": 1}, "s3cret"))
    for reply in (missing, wrong):
        assert not reply.ok and reply.error.startswith("unauthorized:") and reply.settings == {}
    assert right.ok and right.settings["lr"] == 0.0005 and changes == [{"lr": 0.0005}]
    assert get.ok and get.settings == {"lr": 0.0005}
    assert not bad.ok and "unknown setting 'tau'" in bad.error
    assert refused == ["unauthorized", "unauthorized", "bad_setting"]
    # a token that is not ASCII is just wrong, not a crash
    assert ask(server, client, ControlRequest(6, "set", {"lr": 0.1}, "s3cr\u00e9t"))[0].error.startswith(
        "unauthorized:")


def test_a_flood_of_requests_is_served_at_most_64_a_turn(control_pair):
    server, client, *_ = control_pair
    for i in range(100):
        client.send(encode(ControlRequest(i + 1, "get", {}, "")))
    assert server.sock.poll(5000)
    time.sleep(0.3)  # all 100 are queued at the server by now
    turns = [server.serve_pending()]
    assert turns == [ControlServer.MAX_REQUESTS_PER_TURN] == [64]
    deadline = time.monotonic() + 5
    while sum(turns) < 100 and time.monotonic() < deadline:
        turns.append(server.serve_pending())
    assert sum(turns) == 100 and max(turns) == 64


def test_a_control_server_without_a_token_is_refused_at_construction():
    with pytest.raises(ValueError, match="non-empty token"):
        ControlServer(f"tcp://127.0.0.1:{free_port()}", dict, dict, lambda r: None, token="")


def test_the_token_file_is_kept_or_written_private(tmp_path):
    path = tmp_path / "ckpt" / "control-token"
    token = ensure_control_token(path)
    assert len(token) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert ensure_control_token(path) == token


def test_ctl_set_without_a_token_file_says_so_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "control-token"
    assert ctl.main(["--addr", f"tcp://127.0.0.1:{free_port()}", "--token-file", str(missing), "set", "lr=0.1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"no control token in {missing}:")


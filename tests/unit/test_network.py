"""The Q-network's two layouts (plain and LayerNorm) survive the trip the weights make: learner
state_dict -> numpy -> WeightsSchedule on the wire -> the worker's network_from_state_dict, with
bit-identical Q values and the same actions on RAM recorded from the real game."""
import time

import pytest
import torch
import zmq
from prometheus_client import CollectorRegistry

from services.emulator.evaluate import EvaluationError, load_checkpoint_network
from services.emulator.metrics import WorkerMetrics
from services.emulator.network_policy import NetworkPolicy
from services.learner.checkpoint import network_shape
from services.learner.settings import load_learner_config
from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import decode_ram
from tempest_common.messages import WeightsSchedule
from tempest_common.network import (
    CHECKPOINT_FORMAT_VERSION, DuelingQNetwork, hidden_from_state_dict, layer_norm_from_state_dict, network_from_state_dict,
)
from tempest_common.state_vector import STATE_SIZE, encode_state
from tempest_common.wire import decode, encode
from tests.unit.recorded import FIRST_LIVES

HIDDEN = (64, 48, 32)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()   # NetworkPolicy sets one thread, as a worker does
    yield
    torch.set_num_threads(threads)


def learner_net(layer_norm: bool) -> DuelingQNetwork:
    torch.manual_seed(4)   # a seed whose argmax varies over the recorded states, with and without LayerNorm
    net = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, HIDDEN, layer_norm=layer_norm)
    with torch.no_grad():   # trained-looking LayerNorm gains and biases, not the initial 1s and 0s
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def published(net: DuelingQNetwork, version: int = 1, incarnation: str = "run-a:1") -> bytes:
    """What Learner.publish sends."""
    weights = {k: v.detach().float().cpu().numpy() for k, v in net.state_dict().items()}
    return encode(WeightsSchedule(version, weights, 0.5, 0.1, 0.05, 0.01, 12345, time.time(), incarnation))


def test_layouts_and_parameter_names():
    plain, normed = DuelingQNetwork(10, 4, (8, 6)), DuelingQNetwork(10, 4, (8, 6), layer_norm=True)
    assert [type(m).__name__ for m in plain.trunk] == ["Linear", "ReLU"] * 2
    assert [type(m).__name__ for m in normed.trunk] == ["Linear", "LayerNorm", "ReLU"] * 2
    assert list(plain.state_dict())[:4] == ["trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias"]
    assert list(normed.state_dict())[:6] == ["trunk.0.weight", "trunk.0.bias", "trunk.1.weight", "trunk.1.bias",
                                             "trunk.3.weight", "trunk.3.bias"]
    assert normed.param_count() == plain.param_count() + 2 * (8 + 6)   # LayerNorm gain and bias per width
    for net, ln in ((plain, False), (normed, True)):
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        assert hidden_from_state_dict(state) == (8, 6)
        assert layer_norm_from_state_dict(state) is ln
        assert network_shape(net.state_dict()) == (10, (8, 6), 4, ln)
    empty = DuelingQNetwork(10, 4, (), layer_norm=True)                 # no hidden layer: nothing to normalise
    assert hidden_from_state_dict(empty.state_dict()) == () and len(empty.trunk) == 0


def test_default_is_the_plain_network_with_the_same_initialisation():
    torch.manual_seed(7)
    default = DuelingQNetwork(10, 4, (8, 6))
    torch.manual_seed(7)
    plain = DuelingQNetwork(10, 4, (8, 6), layer_norm=False)
    assert default.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), plain.state_dict().values()))


def test_layer_norm_block_hand_computed():
    torch.manual_seed(0)
    net = learner_net(layer_norm=True)
    x = torch.randn(5, STATE_SIZE)
    h = x
    for i in range(len(HIDDEN)):
        lin, ln = net.trunk[3 * i], net.trunk[3 * i + 1]
        z = lin(h)
        mu, var = z.mean(1, keepdim=True), z.var(1, unbiased=False, keepdim=True)
        h = torch.relu((z - mu) / torch.sqrt(var + 1e-5) * ln.weight + ln.bias)
    adv = net.advantage(h)
    torch.testing.assert_close(net(x), net.value(h) + adv - adv.mean(1, keepdim=True), rtol=1e-5, atol=1e-5)


def test_learner_config_layer_norm_off_by_default():
    assert load_learner_config({}).layer_norm is False
    assert load_learner_config({"LAYER_NORM": "1"}).layer_norm is True


@pytest.mark.parametrize("layer_norm", [False, True])
def test_published_weights_rebuild_the_identical_network(layer_norm):
    net = learner_net(layer_norm)
    msg = decode(published(net), expect=WeightsSchedule)
    rebuilt = network_from_state_dict(msg.weights)
    assert rebuilt.layer_norm is layer_norm
    assert [type(m) for m in rebuilt.trunk] == [type(m) for m in net.trunk]
    x = torch.randn(64, STATE_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))


@pytest.mark.parametrize("layer_norm", [False, True])
def test_worker_acts_as_the_learner_network_on_recorded_ram(layer_norm):
    net = learner_net(layer_norm)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://weights")
    policy = NetworkPolicy("inproc://weights", WorkerMetrics(CollectorRegistry()), ctx)
    try:
        deadline = time.monotonic() + 5.0
        while policy.poll() is None:   # a subscriber misses what is sent before it has joined
            assert time.monotonic() < deadline, "the weights never arrived"
            pub.send(published(net))
            time.sleep(0.01)
        assert policy.ready and policy.net.layer_norm is layer_norm
        actions = []
        for prev, ram in zip(FIRST_LIVES[:-1], FIRST_LIVES[1:]):
            state = torch.from_numpy(encode_state(decode_ram(ram), decode_ram(prev)))[None]
            with torch.no_grad():
                expected = int(net(state).argmax(1).item())
                assert torch.equal(policy.net(state), net(state))
            actions.append(policy.act(ram, prev))
            assert actions[-1] == expected
        assert len(set(actions)) > 1   # the states differ enough for the network to choose differently
    finally:
        policy.close()
        pub.close(0)
        ctx.term()


@pytest.mark.parametrize("layer_norm", [False, True])
def test_evaluate_reads_a_checkpoint_of_either_layout(tmp_path, layer_norm):
    net = learner_net(layer_norm)
    path = tmp_path / "mark.pt"
    torch.save({"online": net.state_dict(), "live": {"evaluation_epsilon": 0.01}}, path)
    loaded, _ = load_checkpoint_network(str(path))
    x = torch.randn(8, STATE_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


@pytest.mark.parametrize("version, readable", [(None, True), (1, True), (CHECKPOINT_FORMAT_VERSION, True),
                                               (CHECKPOINT_FORMAT_VERSION + 1, False), (0, False), ("2", False)])
def test_evaluate_refuses_a_checkpoint_format_it_does_not_know(tmp_path, version, readable):
    net = learner_net(False)
    path = tmp_path / "mark.pt"
    saved = {"online": net.state_dict(), "live": {"evaluation_epsilon": 0.01}}
    torch.save(saved if version is None else {**saved, "format_version": version}, path)
    if readable:
        assert load_checkpoint_network(str(path))[0] is not None
    else:
        with pytest.raises(EvaluationError, match=f"checkpoint format {version!r}, this version reads formats 1 to"):
            load_checkpoint_network(str(path))


def _receive(policy: NetworkPolicy, pub, payload: bytes, until=lambda p: p.version > 0) -> None:
    """Publish `payload` until the policy has polled something (the subscriber joins late)."""
    deadline = time.monotonic() + 5.0
    while True:
        pub.send(payload)
        time.sleep(0.01)
        policy.poll()
        if until(policy):
            return
        assert time.monotonic() < deadline, "nothing arrived"


def test_worker_refuses_weights_that_lie_and_keeps_its_network():
    """Weights that decode cleanly but hold NaN, or form a network of another state size or action
    count (whose forward pass would raise on every tick), are counted and ignored; oversized ones
    cut the connection (counted) without being assembled."""
    metrics = WorkerMetrics(CollectorRegistry())
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://weights-hostile")
    policy = NetworkPolicy("inproc://weights-hostile", metrics, ctx)
    malformed = lambda reason: metrics.malformed.labels(peer="learner", reason=reason)._value.get()  # noqa: E731
    try:
        good = learner_net(False)
        _receive(policy, pub, published(good, version=1))
        net = policy.net
        poisoned = learner_net(False)
        with torch.no_grad():
            poisoned.trunk[0].weight[0, 0] = float("nan")
        _receive(policy, pub, published(poisoned, version=2), until=lambda p: malformed("nonfinite") > 0)
        wrong_inputs = DuelingQNetwork(STATE_SIZE + 3, NUM_ACTIONS, (8,))
        _receive(policy, pub, published(wrong_inputs, version=3), until=lambda p: malformed("bad_weights") > 0)
        wrong_actions = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS + 1, (8,))
        _receive(policy, pub, published(wrong_actions, version=4), until=lambda p: malformed("bad_weights") > 1)
        assert policy.net is net and policy.version == 1
        assert policy.act(FIRST_LIVES[1], FIRST_LIVES[0]) in range(NUM_ACTIONS)
    finally:
        policy.close()
        pub.close(0)
        ctx.term()


def test_worker_takes_a_restarted_learners_weights_whatever_their_version():
    """Versions only grow within one learner incarnation: a worker ignores an older version from
    the same learner, but a restarted learner (or a new run) publishing version 1 after version 40
    is taken at once (counted), and its own older copies are then ignored again."""
    metrics = WorkerMetrics(CollectorRegistry())
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://weights-incarnation")
    policy = NetworkPolicy("inproc://weights-incarnation", metrics, ctx)
    try:
        first, stale, restarted, newer = (learner_net(False) for _ in range(4))
        _receive(policy, pub, published(first, version=40, incarnation="run-a:100"))
        assert policy.version == 40 and policy.incarnation == "run-a:100"
        for _ in range(20):   # the subscriber is connected: these arrive, and are each polled
            pub.send(published(stale, version=39, incarnation="run-a:100"))   # the same learner, older
            time.sleep(0.01)
            policy.poll()
        assert policy.version == 40 and metrics.learner_incarnations._value.get() == 0
        state = torch.from_numpy(encode_state(decode_ram(FIRST_LIVES[1]), decode_ram(FIRST_LIVES[0])))[None]
        with torch.no_grad():
            assert torch.equal(policy.net(state), first(state))
        _receive(policy, pub, published(restarted, version=1, incarnation="run-a:200"),
                 until=lambda p: p.incarnation == "run-a:200")
        assert policy.version == 1 and metrics.learner_incarnations._value.get() == 1
        with torch.no_grad():
            assert torch.equal(policy.net(state), restarted(state))
        _receive(policy, pub, published(newer, version=2, incarnation="run-a:200"), until=lambda p: p.version == 2)
        assert metrics.learner_incarnations._value.get() == 1
    finally:
        policy.close()
        pub.close(0)
        ctx.term()

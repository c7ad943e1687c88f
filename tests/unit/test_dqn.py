"""Unit tests for the learner's maths (services/learner/dqn.py), against hand-computed numbers."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from services.learner.dqn import (
    Batch, DuelingQNetwork, bc_margin_loss, hard_update, soft_update, td_loss, td_target, train_step,
)


class LookupQ(nn.Module):
    """Test double of a Q-network: state[:, 0] is a row index into a fixed table of Q values."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, x):
        return self.table[x[:, 0].long()]  # [B, A]


# states 0, 1 are current states; 2, 3 are the next states of rows 0, 1
ONLINE = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.2, 0.9, 0.1], [5.0, 0.0, 0.0]]
TARGET = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10.0, 4.0, 7.0], [2.0, 8.0, 1.0]]
NEXT = torch.tensor([[2.0], [3.0]])
REWARD = torch.tensor([1.0, -0.5])
DISCOUNT = torch.tensor([0.5, 0.0])  # row 1 terminal


def test_td_target_double_dqn_hand_computed():
    y = td_target(LookupQ(ONLINE), LookupQ(TARGET), NEXT, REWARD, DISCOUNT, clamp=None)
    # row 0: a* = argmax online(s2) = 1 -> target(s2)[1] = 4 (not max 10): y = 1 + 0.5 * 4 = 3
    # row 1: terminal: y = -0.5
    torch.testing.assert_close(y, torch.tensor([3.0, -0.5]))
    assert not y.requires_grad


def test_td_target_clamp():
    online, target = LookupQ(ONLINE), LookupQ(TARGET)
    y = td_target(online, target, NEXT, REWARD, DISCOUNT, clamp=2.5)
    torch.testing.assert_close(y, torch.tensor([2.5, -0.5]))
    y = td_target(online, target, NEXT, torch.tensor([-10.0, 0.0]), DISCOUNT, clamp=2.5)
    # row 0: -10 + 0.5 * 4 = -8 -> -2.5; row 1: terminal, 0
    torch.testing.assert_close(y, torch.tensor([-2.5, 0.0]))


def test_td_loss_huber_both_regions_with_weights():
    online = LookupQ(ONLINE)
    y = td_target(online, LookupQ(TARGET), NEXT, REWARD, DISCOUNT, clamp=None)  # [3, -0.5]
    q = online(torch.tensor([[0.0], [1.0]]))
    q_taken = q.gather(1, torch.tensor([[0], [1]])).squeeze(1)  # [1.0, -1.0]
    loss, td = td_loss(q_taken, y, torch.tensor([0.5, 2.0]))
    # row 0: delta = -2 (linear): 1 * (2 - 0.5) = 1.5, * w 0.5 = 0.75
    # row 1: delta = -0.5 (quadratic): 0.5 * 0.25 = 0.125, * w 2 = 0.25
    assert float(loss.detach()) == pytest.approx((0.75 + 0.25) / 2)
    torch.testing.assert_close(td, torch.tensor([-2.0, -0.5]))
    assert not td.requires_grad
    loss.backward()  # gradient flows to the online table only through q_taken
    # d/dq0 = 0.5 * w0 * clip(delta0, -1, 1) = 0.5 * 0.5 * -1; d/dq1 = 0.5 * w1 * delta1 = 0.5 * 2 * -0.5
    assert float(online.table.grad[0, 0]) == pytest.approx(-0.25)
    assert float(online.table.grad[1, 1]) == pytest.approx(-0.5)
    # a wider delta puts row 0 in the quadratic region: 0.5 * 4 * 0.5 = 1.0
    loss2, _ = td_loss(q_taken.detach(), y, torch.tensor([0.5, 2.0]), huber_delta=3.0)
    assert float(loss2) == pytest.approx((1.0 + 0.25) / 2)


def test_bc_margin_loss_hand_computed():
    q = torch.tensor([[1.0, 2.0, 0.5], [3.0, 0.0, 1.0]])
    a = torch.tensor([0, 0])
    # row 0: max(1.0, 2.8, 1.3) - 1.0 = 1.8; row 1: max(3.0, 0.8, 1.8) - 3.0 = 0
    both = bc_margin_loss(q, a, margin=0.8)
    assert float(both) == pytest.approx(0.9)
    first = bc_margin_loss(q, torch.tensor([0, -1]), margin=0.8)   # -1: row 1 has no label
    assert float(first) == pytest.approx(1.8)
    none = bc_margin_loss(q, torch.tensor([-1, -1]), margin=0.8)
    assert float(none) == 0.0
    # row 1 labelled 1 instead: max(3.8, 0.0, 1.8) - 0.0 = 3.8
    assert float(bc_margin_loss(q, torch.tensor([0, 1]), margin=0.8)) == pytest.approx((1.8 + 3.8) / 2)


def test_soft_update_closed_form():
    torch.manual_seed(0)
    online = DuelingQNetwork(6, 4, hidden=(16, 16)).double()
    target = DuelingQNetwork(6, 4, hidden=(16, 16)).double()
    t0 = [p.detach().clone() for p in target.parameters()]
    tau, k = 0.05, 40
    for _ in range(k):
        soft_update(target, online, tau)
    decay = (1 - tau) ** k
    for p_t, p_0, p_o in zip(target.parameters(), t0, online.parameters()):
        expected = decay * p_0 + (1 - decay) * p_o
        torch.testing.assert_close(p_t.detach(), expected, rtol=1e-6, atol=1e-12)
    hard_update(target, online)
    for p_t, p_o in zip(target.parameters(), online.parameters()):
        assert torch.equal(p_t, p_o)


def _random_batch(n, d=6, a=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        state=torch.randn(n, d, generator=g), action=torch.randint(0, a, (n,), generator=g),
        reward=torch.randn(n, generator=g) * 3, discount=torch.full((n,), 0.99 ** 5).where(
            torch.rand(n, generator=g) > 0.2, torch.tensor(0.0)),
        next_state=torch.randn(n, d, generator=g), weight=torch.rand(n, generator=g) + 0.5,
        expert_action=torch.where(torch.rand(n, generator=g) > 0.5, torch.randint(0, a, (n,), generator=g), -1))


def _split(b: Batch, k: int) -> list[Batch]:
    n = b.state.shape[0] // k
    return [Batch(*(getattr(b, f)[i * n:(i + 1) * n] for f in Batch.__dataclass_fields__)) for i in range(k)]


def _nets():
    torch.manual_seed(0)
    online = DuelingQNetwork(6, 4, hidden=(16, 16))
    target = DuelingQNetwork(6, 4, hidden=(16, 16))
    return online, target


@pytest.mark.parametrize("max_grad_norm", [0.0, 1e-3])
def test_gradient_accumulation_matches_full_batch(max_grad_norm):
    online_a, target = _nets()
    online_b = copy.deepcopy(online_a)
    batch = _random_batch(32)
    opt_a = torch.optim.SGD(online_a.parameters(), lr=0.1, momentum=0.0)
    opt_b = torch.optim.SGD(online_b.parameters(), lr=0.1, momentum=0.0)
    s_a = train_step(online_a, target, opt_a, _split(batch, 4), max_grad_norm, clamp=None)
    s_b = train_step(online_b, target, opt_b, [batch], max_grad_norm, clamp=None)
    assert s_a.applied and s_b.applied and not s_a.nonfinite
    for p_a, p_b in zip(online_a.parameters(), online_b.parameters()):
        torch.testing.assert_close(p_a, p_b, atol=1e-6, rtol=0)
    assert s_a.loss == pytest.approx(s_b.loss, rel=1e-5)
    assert s_a.grad_norm == pytest.approx(s_b.grad_norm, rel=1e-5)
    torch.testing.assert_close(s_a.td_error, s_b.td_error)
    assert s_a.td_error.shape == (32,) and bool((s_a.td_error >= 0).all())
    assert s_a.q_min <= s_a.q_mean <= s_a.q_max
    if max_grad_norm > 0:
        assert s_a.clip_ratio < 1.0
        assert s_a.clip_ratio == pytest.approx(max_grad_norm / s_a.grad_norm, rel=1e-3)
    else:
        assert s_a.clip_ratio == 1.0


def test_clip_ratio_is_one_when_norm_below_threshold():
    online, target = _nets()
    opt = torch.optim.SGD(online.parameters(), lr=0.1)
    s = train_step(online, target, opt, [_random_batch(8)], max_grad_norm=1e9, clamp=50.0)
    assert s.clip_ratio == 1.0 and s.grad_norm > 0


def test_nonfinite_reward_skips_step():
    online, target = _nets()
    before = [p.detach().clone() for p in online.parameters()]
    batch = _random_batch(8)
    batch.reward[3] = float("nan")
    opt = torch.optim.SGD(online.parameters(), lr=0.1)
    s = train_step(online, target, opt, [_random_batch(8, seed=2), batch], max_grad_norm=10.0, clamp=None)
    assert s.nonfinite and not s.applied
    for p, p0 in zip(online.parameters(), before):
        assert torch.equal(p, p0)
        assert p.grad is None or not bool(p.grad.any())


def test_train_step_with_bc_and_bf16_autocast_runs():
    online, target = _nets()
    opt = torch.optim.Adam(online.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in online.parameters()]
    s = train_step(online, target, opt, _split(_random_batch(16), 2), max_grad_norm=10.0, clamp=50.0,
                   bc_weight=1.0, autocast_dtype=torch.bfloat16)
    assert s.applied and not s.nonfinite and s.td_error.dtype == torch.float32
    assert any(not torch.equal(p, p0) for p, p0 in zip(online.parameters(), before))


def test_dueling_forward_shape_and_identity():
    torch.manual_seed(0)
    net = DuelingQNetwork(200, 44, hidden=(32, 16))
    x = torch.randn(5, 200)
    q = net(x)
    assert q.shape == (5, 44)
    h = net.trunk(x)
    v, adv = net.value(h), net.advantage(h)
    torch.testing.assert_close(q, v + adv - adv.mean(1, keepdim=True))
    torch.testing.assert_close(q.mean(1, keepdim=True), v)  # mean_a Q = V
    q16 = net(x.half())  # float16 input is cast to the weights' dtype
    assert q16.dtype == torch.float32
    torch.testing.assert_close(q16, net(x.half().float()))
    expected = (200 * 32 + 32) + (32 * 16 + 16) + (16 + 1) + (16 * 44 + 44)
    assert net.param_count() == expected
    assert DuelingQNetwork(200, 44).param_count() > 0


# Q of 4 rows (3 actions), played actions 0, 1, 0, 0.  Labels: row 0 the expert's own row (label =
# action); rows 1 and 2 the network's, labelled by the expert with 2 and 0 (row 1 against the action
# played); row 3 the network's, unlabelled (-1)
BC_Q = [[1.0, 1.02, 0.9], [0.5, 0.6, 0.58], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]
BC_ACTION = torch.tensor([0, 1, 0, 0])
BC_LABEL = torch.tensor([0, 2, 0, -1])


def test_bc_margin_loss_small_margin_hand_computed():
    q = torch.tensor(BC_Q)
    # m = 0.05: row 0: max(1.0, 1.07, 0.95) - 1.0 = 0.07; row 1: max(0.55, 0.65, 0.58) - 0.58 = 0.07;
    # row 2: max(2.0, 0.05, 0.05) - 2.0 = 0; row 3 (3.05 - 0) has no label: ignored
    assert float(bc_margin_loss(q, BC_LABEL, margin=0.05)) == pytest.approx(0.14 / 3)
    # the default m = 0.8: 0.82, 0.82, 0
    assert float(bc_margin_loss(q, BC_LABEL)) == pytest.approx(1.64 / 3)
    assert float(bc_margin_loss(q, BC_LABEL, margin=0.0)) == pytest.approx(0.04 / 3)
    # the label, not the action played, is imitated: row 1 labelled with its action (1) would cost
    # max(0.55, 0.6, 0.63) - 0.6 = 0.03 instead of 0.07
    assert float(bc_margin_loss(q, BC_ACTION.where(BC_LABEL >= 0, -1), margin=0.05)) == pytest.approx(0.10 / 3)


def test_train_step_passes_weight_and_margin_to_the_bc_loss():
    table = BC_Q + [[0.0, 0.0, 0.0]] * 4                  # rows 4..7: the next states
    batch = Batch(state=torch.tensor([[0.0], [1.0], [2.0], [3.0]]), action=BC_ACTION,
                  reward=torch.tensor([1.0, 0.0, -1.0, 0.5]), discount=torch.zeros(4),
                  next_state=torch.tensor([[4.0], [5.0], [6.0], [7.0]]), weight=torch.ones(4), expert_action=BC_LABEL)

    def loss(**bc):
        online = LookupQ(table)
        return train_step(online, LookupQ(table), torch.optim.SGD(online.parameters(), lr=0.0), [batch],
                          max_grad_norm=0.0, clamp=None, **bc).loss

    td = loss()
    assert loss(bc_weight=2.0, bc_margin=0.05) == pytest.approx(td + 2.0 * 0.14 / 3)
    assert loss(bc_weight=2.0) == pytest.approx(td + 2.0 * 1.64 / 3)     # default margin 0.8
    assert loss(bc_weight=0.0, bc_margin=0.05) == td

import pytest

from tempest_common.actions import (ACTIONS, NOOP, NUM_ACTIONS, SPINNER_SPEEDS, ZAP_COOLDOWN_TICKS, decode_action,
                                    encode_action, gate_zap, spinner_index)


def test_joint_space_round_trip():
    assert NUM_ACTIONS == 44
    seen = set()
    for i in range(NUM_ACTIONS):
        a = decode_action(i)
        assert encode_action(a.fire, a.zap, spinner_index(a.spinner)) == i
        seen.add(a)
    assert len(seen) == 44
    assert decode_action(NOOP) == (False, False, 0)
    assert set(SPINNER_SPEEDS.tolist()) == {0, 1, -1, 3, -3, 6, -6, 9, -9, 12, -12}


def test_bad_index_is_rejected():
    with pytest.raises(ValueError):
        decode_action(44)
    with pytest.raises(ValueError):
        encode_action(True, False, 11)


@pytest.mark.parametrize("zaps_used,since,keeps_zap", [
    (0, ZAP_COOLDOWN_TICKS, True), (1, 10**6, True), (2, 10**6, False), (0, ZAP_COOLDOWN_TICKS - 1, False)])
def test_superzapper_gate(zaps_used, since, keeps_zap):
    zap_fire_right = encode_action(True, True, 10)
    gated = decode_action(gate_zap(zap_fire_right, zaps_used, since))
    assert gated.zap == keeps_zap and gated.fire and gated.spinner == 12
    assert gate_zap(encode_action(True, False, 3), 2, 0) == encode_action(True, False, 3)


def test_gate_keeps_every_action_without_a_zap_and_only_drops_the_zap_bit():
    for i in range(NUM_ACTIONS):
        blocked = decode_action(gate_zap(i, 2, 0))
        assert blocked == decode_action(i)._replace(zap=False)
        assert gate_zap(i, 0, ZAP_COOLDOWN_TICKS) == i
    assert ACTIONS == tuple(decode_action(i) for i in range(NUM_ACTIONS))


def test_random_actions_never_choose_the_zap_unless_allowed():
    import numpy as np

    from tempest_common.actions import ZAP_USES_PER_LEVEL, random_actions
    rng = np.random.default_rng(7)
    drawn = random_actions(rng, 20_000)
    assert not any(ACTIONS[a].zap for a in drawn), "by default random play never presses the zap"
    assert set(drawn.tolist()) == {i for i in range(NUM_ACTIONS) if not ACTIONS[i].zap}, "all 22 others, uniformly"
    assert abs(np.bincount(drawn, minlength=NUM_ACTIONS).max() / 20_000 - 1 / 22) < 0.01
    allowed = random_actions(rng, 20_000, allow_zap=True)
    assert 0.45 < np.mean([ACTIONS[a].zap for a in allowed]) < 0.55
    # allowed zaps are still gated: while the gate is shut no random action reaches the game with its zap
    for zaps_used, since in ((ZAP_USES_PER_LEVEL, 10**6), (0, ZAP_COOLDOWN_TICKS - 1)):
        assert not any(ACTIONS[gate_zap(int(a), zaps_used, since)].zap for a in allowed)

import numpy as np
import pytest

from tempest_common.actions import (ACTIONS, NOOP, NUM_ACTIONS, SPINNER_SPEEDS, ZAP_COOLDOWN_TICKS, decode_action,
                                    encode_action, gate_zap, gate_zap_one, spinner_index)


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
    gated = decode_action(int(gate_zap(zap_fire_right, zaps_used, since)))
    assert gated.zap == keeps_zap and gated.fire and gated.spinner == 12
    assert int(gate_zap(encode_action(True, False, 3), 2, 0)) == encode_action(True, False, 3)
    assert np.array_equal(gate_zap(np.array([zap_fire_right] * 3), zaps_used, since),
                          np.full(3, int(gate_zap(zap_fire_right, zaps_used, since))))


def test_gate_zap_one_matches_the_vectorised_gate_on_every_case():
    idx, used, since = np.meshgrid(np.arange(NUM_ACTIONS), np.arange(4), np.arange(0, 130, 7), indexing="ij")
    expected = gate_zap(idx.ravel(), used.ravel(), since.ravel())
    got = [gate_zap_one(int(i), int(u), int(s)) for i, u, s in zip(idx.ravel(), used.ravel(), since.ravel())]
    assert np.array_equal(np.array(got), expected)
    assert any(g != i for g, i in zip(got, idx.ravel()))  # the gate does drop zaps somewhere
    assert ACTIONS == tuple(decode_action(i) for i in range(NUM_ACTIONS))

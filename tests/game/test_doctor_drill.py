"""Game tier (issue 17): the stability doctor in auto mode on the real game.  `make up`'s stack
(tools/local_stack.py, one worker, DOCTOR_MODE=auto) trains healthy; then the incident's settings
are set live (tools/doctor_drill.PROVOKE: lr 0.05 constant, tau 1, no clip, unpaced, no margin
loss).  The doctor must see Q leave its bound, rank a cause, set its cure and roll back to a healthy
checkpoint from before the divergence; Q then stays inside its bound for KEEP_STEPS steps."""
from __future__ import annotations

import json

import pytest

from tests.game.test_local_stack import pick_offset
from tools.doctor_drill import PROVOKE, drill, own_stack

pytestmark = [pytest.mark.game, pytest.mark.integration]
KEEP_STEPS = 500


def test_the_doctor_catches_rolls_back_and_cures_a_real_divergence(rompath, tmp_path):
    with own_stack(tmp_path / "run", pick_offset(), TEMPEST_ROMPATH=rompath) as stack:
        r = drill(stack, keep_steps=KEEP_STEPS, settle_s=20.0, timeout_s=600.0)
    print(json.dumps(r))
    assert r["out_of_bound_at_step"] is not None, "the provocation did not take Q out of its bound"
    assert r["provoked_at_step"] <= r["detected_at_step"]
    # back to a checkpoint from before Q left its bound, and a cure that undoes a provoked setting
    assert r["rollback_to_step"] < r["out_of_bound_at_step"] <= r["rollback_from_step"]
    undone = {k: v for k, v in r["cure"].items() if k in PROVOKE}
    assert undone, f"the cure {r['cure']} changes none of the provoked settings"
    assert all(abs(v) < abs(PROVOKE[k]) or (PROVOKE[k] == 0 and v > 0) for k, v in undone.items()), r["cure"]
    assert r["kept_steps"] >= KEEP_STEPS and r["kept_scrapes"] >= 3
    text = open(r["diagnosis"]).read()
    assert "## Root Cause Analysis" in text and "python -m services.learner.ctl set" in text, text[:2000]

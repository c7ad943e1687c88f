"""Emulator configuration: bad values are errors that name the variable and the allowed range."""
import subprocess
import sys

import pytest

from services.emulator.config import EmulatorConfig, load_emulator_config
from services.emulator.mame_process import RomError, check_rom_dir
from tempest_common.config import ConfigError
from tests.conftest import REPO


def test_defaults_load():
    cfg = load_emulator_config({})
    assert isinstance(cfg, EmulatorConfig) and cfg.state_dtype == "float16"
    assert (cfg.actor_draw, cfg.actor_segment_ticks) == ("segment", 200)   # DAgger segments (issue 13)
    assert cfg.expert_labels is True   # imitation labels on the network's own states, by default


@pytest.mark.parametrize("value,expected", [("0", False), ("off", False), ("true", True), ("", True)])
def test_expert_labels_setting_loads(value, expected):
    assert load_emulator_config({"EXPERT_LABELS": value}).expert_labels is expected


def test_actor_draw_settings_load():
    cfg = load_emulator_config({"ACTOR_DRAW": "segment", "ACTOR_SEGMENT_TICKS": "50"})
    assert (cfg.actor_draw, cfg.actor_segment_ticks) == ("segment", 50)
    assert load_emulator_config({"ACTOR_DRAW": "life"}).actor_draw == "life"


@pytest.mark.parametrize("var,value,fragment", [
    ("EXPERT_RATIO", "1.5", "EXPERT_RATIO=1.5 is out of range"),
    ("STATE_DTYPE", "int8", "STATE_DTYPE=int8"),
    ("TRANSITION_BATCH", "0", "TRANSITION_BATCH=0"),
    ("METRICS_PORT", "seventy", "METRICS_PORT=seventy"),
    ("ACTOR_DRAW", "episode", "ACTOR_DRAW=episode"),
    ("ACTOR_SEGMENT_TICKS", "0", "ACTOR_SEGMENT_TICKS=0"),
    ("ACTOR_SEGMENT_TICKS", "100001", "ACTOR_SEGMENT_TICKS=100001"),
    ("EXPERT_LABELS", "sometimes", "EXPERT_LABELS=sometimes"),
])
def test_bad_values_name_the_variable(var, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_emulator_config({var: value})


def test_main_exits_with_a_clear_line_on_bad_config():
    out = subprocess.run([sys.executable, "-m", "services.emulator.main"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "EXPERT_RATIO": "2", "METRICS_PORT": "0"})
    assert out.returncode == 2
    assert "EXPERT_RATIO=2 is out of range" in out.stderr


def test_missing_rom_path_is_a_clear_error(tmp_path):
    with pytest.raises(RomError, match="TEMPEST_ROMPATH is not set"):
        check_rom_dir("", verify=False)
    with pytest.raises(RomError, match="not a directory"):
        check_rom_dir(tmp_path / "nope", verify=False)
    (tmp_path / "tempest1").mkdir()
    with pytest.raises(RomError, match="incomplete"):
        check_rom_dir(tmp_path, verify=False)

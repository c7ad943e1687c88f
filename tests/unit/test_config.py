"""Typed env config: parsing, range/choice validation and the error messages people will read."""
from __future__ import annotations

import dataclasses

import pytest

from tempest_common.config import ConfigError, describe, load_config, setting, validate


@dataclasses.dataclass
class Cfg:
    expert_ratio: float = setting("EXPERT_RATIO", 0.9, type=float, min=0.0, max=1.0,
                                  help="expert probability")
    batch_size: int = setting("BATCH_SIZE", 256, min=1, help="samples per step")
    device: str = setting("DEVICE", "auto", choices=("auto", "cpu", "cuda"))
    use_per: bool = setting("USE_PER", True)
    run_name: str = setting("RUN_NAME", "")
    seed: int | None = setting("SEED", None, type=int, min=0)
    internal: int = setting(None, 3, help="not configurable")
    plain: str = "x"


def test_defaults():
    cfg = load_config(Cfg, {})
    assert cfg == Cfg()
    assert cfg.seed is None and cfg.internal == 3


def test_parse_all_types():
    env = {"EXPERT_RATIO": "0.5", "BATCH_SIZE": "1_024", "DEVICE": "cpu", "USE_PER": "No",
           "RUN_NAME": " a b ", "SEED": "1e3", "UNRELATED": "whatever"}
    cfg = load_config(Cfg, env)
    assert (cfg.expert_ratio, cfg.batch_size, cfg.device, cfg.use_per, cfg.run_name, cfg.seed) \
        == (0.5, 1024, "cpu", False, " a b ", 1000)
    assert type(load_config(Cfg, {"EXPERT_RATIO": "1"}).expert_ratio) is float


@pytest.mark.parametrize("raw,expected", [
    ("1", True), ("0", False), ("TRUE", True), ("false", False), ("Yes", True), ("no", False),
    ("on", True), ("off", False)])
def test_bool_spellings(raw, expected):
    assert load_config(Cfg, {"USE_PER": raw}).use_per is expected


def test_empty_value_means_default_except_for_str():
    cfg = load_config(Cfg, {"BATCH_SIZE": "", "USE_PER": " ", "RUN_NAME": ""})
    assert cfg.batch_size == 256 and cfg.use_per is True and cfg.run_name == ""


@pytest.mark.parametrize("env,message", [
    ({"EXPERT_RATIO": "1.5"}, "EXPERT_RATIO=1.5 is out of range: allowed 0.0 <= value <= 1.0"),
    ({"EXPERT_RATIO": "-0.1"}, "EXPERT_RATIO=-0.1 is out of range: allowed 0.0 <= value <= 1.0"),
    ({"BATCH_SIZE": "0"}, "BATCH_SIZE=0 is out of range: allowed value >= 1"),
    ({"BATCH_SIZE": "1.5"}, "BATCH_SIZE=1.5 is not a valid int"),
    ({"BATCH_SIZE": "many"}, "BATCH_SIZE=many is not a valid int"),
    ({"EXPERT_RATIO": "nan"}, "EXPERT_RATIO=nan is not a valid (finite) float"),
    ({"DEVICE": "tpu"}, "DEVICE=tpu is not one of the allowed choices: auto, cpu, cuda"),
    ({"USE_PER": "maybe"}, "USE_PER=maybe is not a valid bool"),
    ({"SEED": "-1"}, "SEED=-1 is out of range: allowed value >= 0"),
])
def test_errors_name_variable_value_and_range(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, env)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)


def test_bad_default_fails_at_load():
    @dataclasses.dataclass
    class Bad:
        lr: float = setting("LR", 2.0, min=0.0, max=1.0)

    with pytest.raises(ConfigError, match=r"LR=2.0 is out of range"):
        load_config(Bad, {})
    assert load_config(Bad, {"LR": "0.5"}).lr == 0.5


def test_validate_live_changes():
    cfg = load_config(Cfg, {})
    validate(dataclasses.replace(cfg, expert_ratio=0.1, batch_size=32))
    with pytest.raises(ConfigError, match=r"EXPERT_RATIO=1.5 is out of range: allowed "
                                          r"0.0 <= value <= 1.0"):
        validate(dataclasses.replace(cfg, expert_ratio=1.5))
    with pytest.raises(ConfigError, match="BATCH_SIZE=32.0 has the wrong type: expected int"):
        validate(dataclasses.replace(cfg, batch_size=32.0))
    with pytest.raises(ConfigError, match="USE_PER=1 has the wrong type: expected bool"):
        validate(dataclasses.replace(cfg, use_per=1))
    with pytest.raises(ConfigError, match="DEVICE=gpu is not one of the allowed choices"):
        validate(dataclasses.replace(cfg, device="gpu"))
    with pytest.raises(ConfigError, match="internal=-"):  # env-less settings named by field
        @dataclasses.dataclass
        class C:
            internal: int = setting(None, -1, min=0)
        validate(C())


def test_describe():
    rows = describe(Cfg)
    assert [r[0] for r in rows] == ["EXPERT_RATIO", "BATCH_SIZE", "DEVICE", "USE_PER",
                                    "RUN_NAME", "SEED"]
    assert rows[0] == ("EXPERT_RATIO", "float", 0.9, "0.0 <= value <= 1.0", "expert probability")
    assert rows[2][3] == "one of: auto, cpu, cuda"
    assert rows[3][3] == ""


def test_setting_declaration_errors():
    with pytest.raises(TypeError):
        setting("X", [1])
    with pytest.raises(TypeError):
        setting("X", True, min=0)

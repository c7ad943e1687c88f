"""Game tier: the hard-start bank on the real game.  Built twice from the same inputs it plays
identically (the same expert lives: points and ticks; the state files themselves may differ in a
couple of bytes that play never reads); a corrupt or stale bank is rebuilt with one line saying
why; its states open the level they name."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from services.emulator.evaluate import Player, play_life
from services.emulator.session import GameSession
from services.emulator.start_bank import load_bank
from services.expert.client import start_local_expert

pytestmark = pytest.mark.game

LEVELS, SEEDS = (2, 3), (0,)   # a small bank: the expert reaches level 3 in ~1,000 ticks


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(rompath, folder, lines):
    return load_bank(rompath, LEVELS, SEEDS, folder=folder, log=lines.append)


def test_the_bank_is_deterministic_and_rebuilt_when_corrupt_or_stale(rompath, tmp_path):
    one, two = [], []
    starts, manifest = build(rompath, tmp_path / "a" / "start-bank", one)
    again, _ = build(rompath, tmp_path / "b" / "start-bank", two)
    assert [s.name for s in starts] == ["level-2-seed-0", "level-3-seed-0"] and [s.level for s in starts] == [2, 3]
    assert [(s.name, s.level) for s in starts] == [(s.name, s.level) for s in again]
    assert all(s.sha256 == digest(s.path) for s in starts + again)
    assert one[0].startswith("start bank: no bank yet; building it")
    assert manifest["inputs"]["levels"] == [2, 3] and len(manifest["inputs"]["expert"]) == 16

    used = []
    assert build(rompath, tmp_path / "a" / "start-bank", used)[0] == starts and used == [], "a current bank is reused"

    data = bytearray(starts[1].path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    starts[1].path.write_bytes(bytes(data))
    lines = []
    rebuilt, _ = build(rompath, tmp_path / "a" / "start-bank", lines)
    assert lines[0] == ("start bank: corrupt (level-3-seed-0.sta is missing or fails its checksum); building it in "
                        f"{tmp_path / 'a' / 'start-bank'} (the expert plays levels 2-3 from 1 seeds, a few minutes)")
    assert [s.name for s in rebuilt] == [s.name for s in starts] and rebuilt[1].sha256 == digest(rebuilt[1].path)

    manifest_path = tmp_path / "a" / "start-bank" / "manifest.json"
    old = json.loads(manifest_path.read_text())
    old["inputs"]["expert"] = "0" * 16   # an older expert built it
    manifest_path.write_text(json.dumps(old))
    lines = []
    build(rompath, tmp_path / "a" / "start-bank", lines)
    assert lines[0].startswith("start bank: stale (expert changed); building it")
    manifest_path.write_text("{not json")
    lines = []
    build(rompath, tmp_path / "a" / "start-bank", lines)
    assert lines[0].startswith("start bank: its manifest is unreadable (JSONDecodeError); building it")

    # the two builds play alike: the expert's lives from each bank's starts, two no-op offsets each
    expert, addr = start_local_expert()
    session = GameSession.launch(rompath, workdir=str(tmp_path / "mame"))
    try:
        player, lives = Player("expert", None, addr), {}
        for bank, built in (("a", rebuilt), ("b", again)):
            for s in built:
                session.install_state(f"{bank}-{s.name}", s.path.read_bytes())
                tick = session.restart(f"{bank}-{s.name}")
                assert tick.loaded and tick.level + 1 == s.level and tick.decides
                lives[bank] = lives.get(bank, []) + [play_life(session, player, noops, 400, np.random.default_rng(0),
                                                               f"{bank}-{s.name}") for noops in (0, 17)]
        assert lives["a"] == lives["b"], "two builds of the same bank play identically"
        assert [life["start_level"] for life in lives["a"]] == [2, 2, 3, 3]
        assert len({(life["points"], life["ticks"]) for life in lives["a"]}) > 1
    finally:
        session.close(grace_s=10.0)
        expert.terminate()
        expert.wait(10)

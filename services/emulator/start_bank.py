"""The hard-start bank: MAME save states at the first tick of chosen levels, reached by the expert.

    python -m services.emulator.start_bank [--levels 13,15,17,19] [--seeds 0,2,3] [--rebuild]

From the start of play, after a no-op offset drawn from each seed, the expert plays the whole game
(every life); at the first play tick of each chosen level the game is saved into a named slot.
MAME and the expert (stateless) replay identically, so the same inputs give the same bank.  The
expert's own deaths on the way are recorded (the level of each), which is how the levels were
chosen: the expert first dies around level 17 (docs/evaluation.md).

The bank lives in a cache folder (TEMPEST_CACHE_DIR, default ~/.cache/tempest), never in the
repository: it derives from the ROM.  Its manifest names its inputs (ROM checksum, MAME version,
the bridge script, the expert's version, levels, seeds); a bank whose inputs differ (stale) or
whose files fail their checksums (corrupt) is rebuilt, with one line saying why.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempest_common.actions import NOOP
from tempest_common.game_state import decode_ram

from ..expert.client import ExpertClient, start_local_expert
from .mame_process import LUA_BRIDGE, ROM_SET, RomError, check_rom_dir, find_mame
from .session import GameSession, TickKind

BANK_FORMAT = 1
DEFAULT_LEVELS = (13, 15, 17, 19)
DEFAULT_SEEDS = (0, 2, 3)   # seed 1's game ends at level 9 (the expert zooms into a spike on every life)
NOOP_STARTS = 31            # offsets 0-30, as the first-level suite's
MAX_GAME_TICKS = 60_000     # one seed's game; the expert loses its last life long before (level ~20)
EXPERT_SOURCES = ("services/expert/policy.py", "tempest_common/game_state.py", "tempest_common/ram_map.py",
                  "tempest_common/actions.py")
ROOT = Path(__file__).resolve().parents[2]


class BankError(RuntimeError):
    """The bank cannot be built (MAME, the ROM or the expert): one line."""


def cache_dir() -> Path:
    return Path(os.environ.get("TEMPEST_CACHE_DIR") or Path.home() / ".cache" / "tempest")


def _sha256(chunks) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def rom_checksum(rompath: str) -> str:
    files = sorted((Path(rompath) / ROM_SET).iterdir())
    return _sha256(f.name.encode() + f.read_bytes() for f in files if f.is_file())[:16]


def expert_version() -> str:
    """The expert's behaviour: a checksum of the code that decides its actions."""
    return _sha256((ROOT / p).read_bytes() for p in EXPERT_SOURCES)[:16]


def game_inputs(rompath: str) -> dict:
    """What makes a replay of the game identical: ROM, MAME, the bridge script."""
    version = subprocess.run([find_mame(), "-version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return {"rom": rom_checksum(rompath), "mame": version, "bridge": _sha256([LUA_BRIDGE.read_bytes()])[:16]}


@dataclass(frozen=True)
class Start:
    name: str          # the save slot's name, e.g. "level-17-seed-0"
    level: int         # 1-based level the state opens
    seed: int
    path: Path         # the .sta file
    sha256: str        # its checksum (the start's identity in the expert's cache)


def noop_offset(seed: int) -> int:
    return int(np.random.default_rng([2024, seed]).integers(0, NOOP_STARTS))


def _bank_inputs(rompath: str, levels, seeds) -> dict:
    return {"format": BANK_FORMAT, **game_inputs(rompath), "expert": expert_version(),
            "levels": sorted(int(v) for v in levels), "seeds": [int(s) for s in seeds]}


def load_bank(rompath: str, levels=DEFAULT_LEVELS, seeds=DEFAULT_SEEDS, expert_addr: str = "",
              folder: Path | None = None, rebuild: bool = False, log=print) -> tuple[list[Start], dict]:
    """The bank's starts (built first if missing, stale or corrupt) and its manifest."""
    folder = folder or cache_dir() / "start-bank"
    folder.parent.mkdir(parents=True, exist_ok=True)
    inputs = _bank_inputs(rompath, levels, seeds)
    with open(folder.parent / ".start-bank.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # two evaluations at once build it once
        why = "rebuild asked" if rebuild else _stale_or_corrupt(folder, inputs)
        if why:
            log(f"start bank: {why}; building it in {folder} (the expert plays levels "
                f"{inputs['levels'][0]}-{inputs['levels'][-1]} from {len(seeds)} seeds, a few minutes)")
            _build(folder, inputs, rompath, expert_addr, log)
        manifest = json.loads((folder / "manifest.json").read_text())
    starts = [Start(s["name"], s["level"], s["seed"], folder / f"{s['name']}.sta", s["sha256"])
              for s in manifest["starts"]]
    return starts, manifest


def _stale_or_corrupt(folder: Path, inputs: dict) -> str:
    """Why the bank in `folder` cannot be used ('' if it can)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        return "no bank yet"
    except (OSError, ValueError) as exc:
        return f"its manifest is unreadable ({exc.__class__.__name__})"
    if not isinstance(manifest, dict) or manifest.get("inputs") != inputs:
        old = manifest.get("inputs", {}) if isinstance(manifest, dict) else {}
        changed = [k for k in inputs if not isinstance(old, dict) or old.get(k) != inputs[k]]
        return f"stale ({', '.join(changed) or 'manifest'} changed)"
    for start in manifest.get("starts", []):
        path = folder / f"{start['name']}.sta"
        if not path.is_file() or _sha256([path.read_bytes()]) != start["sha256"]:
            return f"corrupt ({path.name} is missing or fails its checksum)"
    return ""


def _build(folder: Path, inputs: dict, rompath: str, expert_addr: str, log) -> None:
    check_rom_dir(rompath)
    expert_proc = None
    if not expert_addr:
        expert_proc, expert_addr = start_local_expert()
    work = Path(tempfile.mkdtemp(prefix="tempest-bank-"))
    try:
        session = GameSession.launch(rompath, workdir=str(work / "mame"))
        expert = ExpertClient(expert_addr)
        try:
            starts, deaths = [], []
            for seed in inputs["seeds"]:
                got, died = _play_one_game(session, expert, seed, inputs["levels"], log)
                starts += got
                deaths += [{"seed": seed, **d} for d in died]
            out = work / "bank"
            out.mkdir()
            for s in starts:
                data = session.state_bytes(s["name"])
                (out / f"{s['name']}.sta").write_bytes(data)
                s["sha256"] = _sha256([data])
        finally:
            expert.close()
            session.close(grace_s=10.0)
        missing = [f"level {lv} seed {sd}" for sd in inputs["seeds"] for lv in inputs["levels"]
                   if not any(s["level"] == lv and s["seed"] == sd for s in starts)]
        if not starts:
            raise BankError("the expert reached none of the bank's levels "
                            f"{inputs['levels']}: choose lower ones (--bank-levels)")
        if missing:
            log(f"start bank: the expert lost its last life before {', '.join(missing)}: those starts are left out")
        (out / "manifest.json").write_text(json.dumps({"inputs": inputs, "starts": starts, "missing": missing,
                                                       "expert_deaths": deaths}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(out, folder)
        log(f"start bank: {len(starts)} starts in {folder}; the expert died on the way at levels "
            f"{[d['level'] for d in deaths] or 'none'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if expert_proc is not None:
            expert_proc.terminate()
            expert_proc.wait(10)


def _play_one_game(session: GameSession, expert: ExpertClient, seed: int, levels: list[int], log):
    """The expert plays one game from the start of play (after the seed's no-op offset), saving
    the first play tick of each level in `levels`; returns (starts, deaths)."""
    targets, starts, deaths = sorted(levels), [], []
    tick = session.restart()
    score0, ticks = tick.score, 0
    for _ in range(noop_offset(seed)):
        session.act(NOOP)
        tick = session.next_decision()
    while targets and ticks < MAX_GAME_TICKS:
        if tick.kind is TickKind.GAME_OVER:
            deaths.append({"level": tick.level + 1, "ticks": ticks})
            break
        if tick.kind is TickKind.DEATH:
            deaths.append({"level": tick.level + 1, "ticks": ticks})
            session.pass_tick()
            tick = session.next_decision()
            continue
        level = tick.level + 1
        while targets and targets[0] < level:   # passed without a play tick (cannot happen in play)
            targets.pop(0)
        if targets and level == targets[0] and tick.kind is not TickKind.ZOOM:
            name = f"level-{level}-seed-{seed}"
            session.save(name)   # neutral inputs on this tick: the same in every build
            starts.append({"name": name, "level": level, "seed": seed, "noops": noop_offset(seed),
                           "ticks": ticks, "score": tick.score - score0, "lives": tick.lives})
            log(f"start bank: seed {seed}: level {level} after {ticks} ticks, {tick.score - score0} points, "
                f"{tick.lives} lives")
            targets.pop(0)
        else:
            actions = expert.act(decode_ram(tick.ram[None]), timeout_ms=10_000)
            if actions is None:
                raise BankError(f"the expert at {expert.url} did not answer within 10 s")
            session.act(int(actions[0]))
        ticks += 1
        tick = session.next_decision()
    for _ in range(100):   # the last save is confirmed by a later tick's flags
        if all(s["name"] in session.saved for s in starts):
            break
        session.pass_tick() if not tick.decides else session.act(NOOP)
        tick = session.next_tick()
    return starts, deaths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.emulator.start_bank", description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="levels whose first tick is saved")
    ap.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="one expert game per seed")
    ap.add_argument("--rebuild", action="store_true", help="build even if the cached bank is current")
    args = ap.parse_args(argv)
    try:
        levels, seeds = parse_ints(args.levels, 1, 99), parse_ints(args.seeds, 0, 2**31 - 1)
    except ValueError as exc:
        ap.error(str(exc))
    try:
        starts, manifest = load_bank(os.environ.get("TEMPEST_ROMPATH", ""), levels, seeds, rebuild=args.rebuild,
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
    except (RomError, RuntimeError) as exc:
        print(f"start_bank: {exc}", file=sys.stderr)
        return 2
    for s in manifest["starts"]:
        print(f"{s['name']}: level {s['level']}, reached after {s['ticks']} ticks with {s['score']} points, "
              f"{s['lives']} lives")
    return 0


def parse_ints(text: str, lo: int, hi: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: comma-separated whole numbers expected") from None
    if not values or any(not lo <= v <= hi for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{text!r}: distinct numbers within {lo}..{hi} expected")
    return values


if __name__ == "__main__":
    sys.exit(main())

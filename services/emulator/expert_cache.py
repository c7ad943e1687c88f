"""The expert's evaluation lives, computed once: the expert is deterministic on a given start.

A life's key is a checksum of everything that decides it: the game's inputs (ROM, MAME version,
bridge script), the expert's version (a checksum of its deciding code), the start (the start of
play, or the bank state's checksum), the no-op offset and the tick cap.  The evaluation seed
enters only through the no-op offset (the expert draws no random numbers).  Only an expert the
evaluation starts itself is cached: a running service (--expert-addr) may be another version.
The cache is one JSON file in the cache folder (TEMPEST_CACHE_DIR), written atomically; an
unreadable file counts as empty (one line says so) and is rewritten.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from .start_bank import cache_dir, expert_version, game_inputs

CACHE_FORMAT = 1


class ExpertCache:
    def __init__(self, rompath: str, path: Path | None = None, log=print):
        self.path = path or cache_dir() / "expert-lives.json"
        self.log = log
        self._base = {"format": CACHE_FORMAT, **game_inputs(rompath), "expert": expert_version()}

    def key(self, start_id: str, noops: int, max_ticks: int) -> str:
        text = json.dumps({**self._base, "start": start_id, "noops": int(noops), "max_ticks": int(max_ticks)},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                return data
            raise ValueError("not an object")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.log(f"expert cache: {self.path} is unreadable ({exc.__class__.__name__}); starting it afresh")
            return {}

    def get(self, keys: list[str]) -> dict[str, dict]:
        data = self._read()
        return {k: data[k] for k in keys if isinstance(data.get(k), dict)}

    def put(self, results: dict[str, dict]) -> None:
        if not results:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            data.update(results)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)

"""Checkpoints: model, target, optimizer, counters, schedule state, performance windows and the
settings in force, in one file written atomically (temp file + rename).

Loaded with torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only, so loading one never runs code from it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

PREFIX = "checkpoint-"
KEEP = 3


def save(directory: str | os.PathLike, state: dict, steps: int) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{PREFIX}{steps:012d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({**state, "saved_at": time.time()}, tmp)
    os.replace(tmp, path)
    for old in sorted(d.glob(f"{PREFIX}*.pt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def latest(directory: str | os.PathLike) -> Path | None:
    found = sorted(Path(directory).glob(f"{PREFIX}*.pt")) if Path(directory).is_dir() else []
    return found[-1] if found else None


def load(path: str | os.PathLike, device: str = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)

"""Launching and stopping one headless MAME running the project's Lua bridge.

Each worker gets its own cfg/nvram/state/ini folders so replicas never race on MAME's files and
runs are reproducible (Debian's MAME otherwise shares ~/.mame and the high-score table changes the
attract sequence).  Headless MAME ignores SIGTERM: it is asked to exit through the bridge and
killed with SIGKILL only after a timeout.  PR_SET_PDEATHSIG makes the kernel kill MAME if its
worker dies with kill -9, so no orphan keeps a core busy.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

LUA_BRIDGE = Path(__file__).with_name("lua") / "bridge.lua"
DEFAULT_MAME = "/usr/games/mame"
ROM_SET = "tempest1"
# Files of the tempest1 set that must be present (program and vector ROMs).
REQUIRED_ROM_FILES = ("136002-113.d1", "136002-237.p1", "136002-138.np3")


class RomError(RuntimeError):
    """The ROM directory is missing, incomplete or fails MAME's own verification."""


def find_mame(explicit: str | None = None) -> str:
    for candidate in (explicit, DEFAULT_MAME, "mame"):
        found = candidate and (candidate if os.path.isfile(candidate) else shutil.which(candidate))
        if found:
            return found
    raise FileNotFoundError(
        "MAME not found: install Debian's 'mame' package (binary /usr/games/mame) or set MAME_BINARY")


def check_rom_dir(rompath: str | os.PathLike, mame: str | None = None, verify: bool = True) -> Path:
    """Clear errors for a missing or wrong ROM before MAME starts and fails obscurely."""
    root = Path(rompath)
    if not str(rompath):
        raise RomError("TEMPEST_ROMPATH is not set: point it at the folder that holds tempest1/")
    set_dir = root / ROM_SET
    if not root.is_dir():
        raise RomError(f"TEMPEST_ROMPATH={root}: not a directory")
    if not set_dir.is_dir() and not (root / f"{ROM_SET}.zip").is_file():
        raise RomError(f"TEMPEST_ROMPATH={root}: no {ROM_SET}/ folder or {ROM_SET}.zip in it")
    if set_dir.is_dir():
        missing = [f for f in REQUIRED_ROM_FILES if not (set_dir / f).is_file()]
        if missing:
            raise RomError(f"TEMPEST_ROMPATH={root}: {ROM_SET} is incomplete, missing {missing}")
    if verify:
        out = subprocess.run([find_mame(mame), "-rompath", str(root), ROM_SET, "-verifyroms"],
                             capture_output=True, text=True, timeout=60, env=_headless_env())
        if out.returncode != 0:
            detail = (out.stdout + out.stderr).strip().splitlines()[-3:]
            raise RomError(f"TEMPEST_ROMPATH={root}: MAME rejects the {ROM_SET} ROM set: {' | '.join(detail)}")
    return root


def _headless_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    return env


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C in a terminal reaches the worker, which stops MAME itself


class MameProcess:
    """One MAME child process with private folders; start() / stop() / alive."""

    def __init__(self, rompath: str, port: int, workdir: str | None = None, mame: str | None = None,
                 lua_script: Path = LUA_BRIDGE, reply_fifo: str = "",
                 extra_args: list[str] | None = None, log_path: str | None = None):
        self.rompath = rompath
        self.port = port
        self.mame = find_mame(mame)
        self.lua_script = lua_script
        self.reply_fifo = reply_fifo
        self.extra_args = list(extra_args or [])
        self._own_workdir = workdir is None   # a temp dir of its own, removed at stop
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tempest-mame-"))
        self.log_path = log_path or str(self.workdir / "mame.log")
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        d = self.workdir
        return [self.mame, "-rompath", str(self.rompath), ROM_SET,
                "-video", "none", "-sound", "none", "-nothrottle", "-skip_gameinfo",
                "-cfg_directory", str(d / "cfg"), "-nvram_directory", str(d / "nvram"),
                "-state_directory", str(d / "sta"), "-inipath", str(d / "ini"),
                "-snapshot_directory", str(d / "snap"), "-input_directory", str(d / "inp"),
                "-diff_directory", str(d / "diff"), "-homepath", str(d),
                "-autoboot_script", str(self.lua_script), *self.extra_args]

    def start(self) -> None:
        for sub in ("cfg", "nvram", "sta", "ini", "snap", "inp", "diff"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        env = _headless_env()
        env.update(TEMPEST_BRIDGE_PORT=str(self.port), TEMPEST_BRIDGE_REPLY_FIFO=self.reply_fifo)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
        log.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace_s: float = 3.0) -> None:
        """Wait for a bridge-requested exit, then SIGKILL (MAME ignores SIGTERM)."""
        if not self.wait(grace_s):
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

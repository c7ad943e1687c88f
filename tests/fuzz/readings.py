"""What the flood reads off a service: its resident memory (/proc) and its reject counters by
family and reason (a /metrics scrape as tests.conftest.scrape returns it)."""
from __future__ import annotations

from pathlib import Path


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def family_values(m: dict[str, float], family: str) -> dict[str, float]:
    """{label text: value} of one counter family in a scrape ("" for an unlabelled counter)."""
    out = {}
    for key, value in m.items():
        if key == family:
            out[""] = value
        elif key.startswith(family + "{"):
            out[key[len(family) + 1:-1]] = value
    return out


def reason_value(m: dict[str, float], family: str, reason: str) -> float | None:
    return m.get(f'{family}{{reason="{reason}"}}')


def family_total(m: dict[str, float], family: str) -> float:
    return sum(family_values(m, family).values())

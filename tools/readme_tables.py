"""Markdown tables generated from code, embedded in READMEs between marker comments.

    python -m tools.readme_tables          # rewrite every README's generated blocks

A unit test (tests/unit/test_docs.py) checks the READMEs hold exactly what this generates, so the
docs match the code.  It lives in tools/, not in the shared package, because it imports every
service's configuration.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from tempest_common.config import describe
from tempest_common.state_vector import FEATURES

REPO = Path(__file__).resolve().parent.parent


def config_table(cls) -> str:
    rows = ["| variable | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for env, typ, default, allowed, help_ in describe(cls):
        shown = "(host-pid)" if env == "WORKER_ID" else f"`{default}`" if default != "" else "''"
        rows.append(f"| `{env}` | {typ} | {shown} | {allowed} | {help_} |")
    return "\n".join(rows)


def state_vector_table() -> str:
    rows = ["| index | name | RAM | meaning | range |", "|---|---|---|---|---|"]
    for i, f in enumerate(FEATURES):
        rows.append(f"| {i} | `{f.name}` | {f.source} | {f.meaning} | [{f.lo:g}, {f.hi:g}] |")
    return "\n".join(rows)


def blocks() -> dict[Path, dict[str, str]]:
    from services.doctor.config import DoctorConfig
    from services.emulator.config import EmulatorConfig
    from services.expert.config import ExpertConfig
    from services.learner.settings import LearnerConfig, LiveSettings
    from services.replay.config import ReplayConfig
    svc = REPO / "services"
    return {svc / "emulator" / "README.md": {"config": config_table(EmulatorConfig),
                                             "state-vector": state_vector_table()},
            svc / "expert" / "README.md": {"config": config_table(ExpertConfig)},
            svc / "replay" / "README.md": {"config": config_table(ReplayConfig)},
            svc / "doctor" / "README.md": {"config": config_table(DoctorConfig)},
            svc / "learner" / "README.md": {"config": config_table(LearnerConfig), "live": config_table(LiveSettings)}}


def render(text: str, generated: dict[str, str]) -> str:
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"missing <!-- generated:{name} --> ... <!-- end:{name} --> markers")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    for path, generated in blocks().items():
        path.write_text(render(path.read_text(), generated))
        print(f"updated {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

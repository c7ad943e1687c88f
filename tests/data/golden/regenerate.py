"""Rewrite tests/data/golden/<kind>.msgpack from tests/unit/wire_examples.py.

Run after a deliberate wire change (and bump wire.SCHEMA_VERSION if old peers would misread the
new bytes):  .venv/bin/python tests/data/golden/regenerate.py

Before a bump, copy the files of the kinds the old version stays readable for (wire.UPGRADES)
into v<old version>/ first: v1/ and v2/ pin the bytes older peers and stored replay chunks hold.
"""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "unit")]

from tempest_common.wire import encode  # noqa: E402
from wire_examples import examples  # noqa: E402

if __name__ == "__main__":
    for kind, msg in examples().items():
        path = HERE / f"{kind}.msgpack"
        path.write_bytes(encode(msg))
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")

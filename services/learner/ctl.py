"""Read and change the learner's live settings from a terminal.

    python -m services.learner.ctl get                 # every setting
    python -m services.learner.ctl get lr tau          # some
    python -m services.learner.ctl set lr=0.0005 n_step=3
    python -m services.learner.ctl rollback            # to the run's newest healthy checkpoint
    python -m services.learner.ctl rollback 120000     # to the checkpoint of step 120000, healthy or not
    (--addr tcp://HOST:5559, default $CONTROL_ADDR or tcp://127.0.0.1:5559;
     --token-file PATH, default $CONTROL_TOKEN_FILE or $CHECKPOINT_DIR/control-token)
"set" and "rollback" carry the learner's control token, read from the token file the learner wrote
at start; "get" needs none.  Values are validated by the learner.  A refused change prints
"refused: <why>" ("refused: unauthorized: ..." with a wrong token; "refused: no_checkpoint: ..."
for a rollback with nothing to go back to), a learner that does not answer "no reply from the
learner ...", a missing token file one line naming it; all exit 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .control import ControlClient, ControlError, ControlTimeout, control_token_path, read_control_token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.learner.ctl", description="learner live settings")
    ap.add_argument("--addr", default=os.environ.get("CONTROL_ADDR", "tcp://127.0.0.1:5559"))
    ap.add_argument("--token-file", default=str(control_token_path()),
                    help="the learner's control token (default: %(default)s)")
    ap.add_argument("op", choices=("get", "set", "rollback"))
    ap.add_argument("items", nargs="*", help="names (get), name=value pairs (set), or a step (rollback)")
    args = ap.parse_args(argv)
    token = read_control_token(Path(args.token_file))
    if args.op in ("set", "rollback") and not token:
        print(f"no control token in {args.token_file}: the learner writes it at start; pass --token-file "
              "or set CONTROL_TOKEN_FILE (or CHECKPOINT_DIR) as the learner has it", file=sys.stderr)
        return 1
    client = ControlClient(args.addr, token=token)
    try:
        if args.op == "get":
            settings = client.get()
            names = args.items or sorted(settings)
            unknown = [n for n in names if n not in settings]
            if unknown:
                print(f"unknown setting(s): {', '.join(unknown)}", file=sys.stderr)
                return 1
            for name in names:
                print(f"{name} = {settings[name]}")
            return 0
        if args.op == "rollback":
            return rollback(client, args.items)
        changes = {}
        for item in args.items:
            name, sep, value = item.partition("=")
            if not sep or not name:
                print(f"expected name=value, got {item!r}", file=sys.stderr)
                return 2
            changes[name] = value
        if not changes:
            print("nothing to set", file=sys.stderr)
            return 2
        settings = client.set(**changes)
        for name in changes:
            print(f"{name} = {settings[name]}")
        return 0
    except (ControlError, ControlTimeout) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        client.close()


def rollback(client: ControlClient, items: list[str]) -> int:
    if len(items) > 1 or (items and not items[0].isdigit()):
        print(f"expected at most one step (a whole number), got {' '.join(items)!r}", file=sys.stderr)
        return 2
    done = client.rollback(int(items[0]) if items else None)
    print(f"rolled back from step {done['from_step']} to the checkpoint of step {done['to_step']} "
          f"({done['checkpoint']}, {'healthy' if done['healthy'] else 'not healthy'}); "
          f"weights version {done['weights_version']} published")
    return 0


if __name__ == "__main__":
    sys.exit(main())

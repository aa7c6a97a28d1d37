"""`twin validate --json OUT` with docs/notes/s27epfwd_rule.md's candidate (calibration.pipeline.ADOPT_EP_FORWARD_HOST)
off or on, every other switch as committed: the two outputs the rule's guard G compares.

    PYTHONPATH=. nice .venv/bin/python benchmarks/s27epfwd_validate.py off /tmp/s27epfwd_val_off.json   (minutes)
    PYTHONPATH=. nice .venv/bin/python benchmarks/s27epfwd_validate.py on /tmp/s27epfwd_val_on.json
    .venv/bin/python -m calibration.ep_forward_host guards /tmp/s27epfwd_val_off.json /tmp/s27epfwd_val_on.json
"""

from __future__ import annotations

import sys

import calibration.pipeline as pipe
from twin.cli.main import main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("off", "on"):
        print("usage: benchmarks/s27epfwd_validate.py off|on OUT.json", file=sys.stderr)
        sys.exit(2)
    pipe.ADOPT_EP_FORWARD_HOST = sys.argv[1] == "on"
    sys.exit(main(["validate", "--quiet", "--json", sys.argv[2]]))

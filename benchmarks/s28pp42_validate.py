"""`twin validate --json OUT` with docs/notes/s28pp42_rule.md's candidates off or on, every other switch as
committed: the outputs the rule's guard G compares (`off` against `on`: ADOPT_EP_FORWARD_LEASE_X2 and
ADOPT_FORWARD_LEASE_ALL both True; either alone moves no more than both).

    PYTHONPATH=. nice .venv/bin/python benchmarks/s28pp42_validate.py off /tmp/s28pp42_val_off.json   (minutes)
    PYTHONPATH=. nice .venv/bin/python benchmarks/s28pp42_validate.py on /tmp/s28pp42_val_on.json
    .venv/bin/python -m calibration.ep_forward_host guards /tmp/s28pp42_val_off.json /tmp/s28pp42_val_on.json
"""

from __future__ import annotations

import sys

import calibration.pipeline as pipe
from twin.cli.main import main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("off", "on"):
        print(f"usage: benchmarks/s28pp42_validate.py off|on OUT.json (got {sys.argv[1:]!r})", file=sys.stderr)
        sys.exit(2)
    pipe.ADOPT_EP_FORWARD_LEASE_X2 = pipe.ADOPT_FORWARD_LEASE_ALL = sys.argv[1] == "on"
    sys.exit(main(["validate", "--quiet", "--json", sys.argv[2]]))

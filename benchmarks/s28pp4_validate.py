"""`twin validate --json OUT` with docs/notes/s28pp4_rule.md's candidates off or on, every other switch as
committed: the outputs the rule's guard G compares (`off` against `F4`: ADOPT_EP_FORWARD_HOST_X4; `off` against `P`:
ADOPT_EP_FORWARD_LEASE).

    PYTHONPATH=. nice .venv/bin/python benchmarks/s28pp4_validate.py off /tmp/s28pp4_val_off.json   (minutes)
    PYTHONPATH=. nice .venv/bin/python benchmarks/s28pp4_validate.py F4 /tmp/s28pp4_val_F4.json
    PYTHONPATH=. nice .venv/bin/python benchmarks/s28pp4_validate.py P /tmp/s28pp4_val_P.json
    .venv/bin/python -m calibration.ep_forward_host guards /tmp/s28pp4_val_off.json /tmp/s28pp4_val_F4.json
"""

from __future__ import annotations

import sys

import calibration.pipeline as pipe
from twin.cli.main import main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("off", "F4", "P"):
        print(f"usage: benchmarks/s28pp4_validate.py off|F4|P OUT.json (got {sys.argv[1:]!r})", file=sys.stderr)
        sys.exit(2)
    pipe.ADOPT_EP_FORWARD_HOST_X4 = sys.argv[1] == "F4"
    pipe.ADOPT_EP_FORWARD_LEASE = sys.argv[1] == "P"
    sys.exit(main(["validate", "--quiet", "--json", sys.argv[2]]))

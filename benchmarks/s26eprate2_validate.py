"""`twin validate --json OUT` with docs/notes/s26eprate2_rule.md's candidate (calibration.pipeline.ADOPT_EP_PACE_DURING)
off or on, every other switch as committed: the two outputs the rule's guard G compares.

    PYTHONPATH=. nice .venv/bin/python benchmarks/s26eprate2_validate.py off /tmp/s26eprate2_val_off.json   (1-3 min)
    PYTHONPATH=. nice .venv/bin/python benchmarks/s26eprate2_validate.py on /tmp/s26eprate2_val_on.json
    .venv/bin/python -m calibration.ep_probe_rate guards /tmp/s26eprate2_val_off.json /tmp/s26eprate2_val_on.json
"""

from __future__ import annotations

import sys

import calibration.pipeline as pipe
from twin.cli.main import main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("off", "on"):
        print("usage: benchmarks/s26eprate2_validate.py off|on OUT.json", file=sys.stderr)
        sys.exit(2)
    pipe.ADOPT_EP_PACE_DURING = sys.argv[1] == "on"
    sys.exit(main(["validate", "--quiet", "--json", sys.argv[2]]))

"""`twin validate --json OUT` with docs/notes/s25ep_rule.md's candidate C (calibration.predict.ADOPT_EP_FOUR_SORTS and
ADOPT_CUB_LAUNCH_HOST) set off or on, every other switch as committed: the two outputs G compares.

    PYTHONPATH=. nice .venv/bin/python benchmarks/s25ep_validate.py off /tmp/s25ep_val_off.json   (1-3 minutes)
    PYTHONPATH=. nice .venv/bin/python benchmarks/s25ep_validate.py on /tmp/s25ep_val_on.json
    .venv/bin/python -m calibration.ep_sort_host guards /tmp/s25ep_val_off.json /tmp/s25ep_val_on.json
"""

from __future__ import annotations

import sys

import calibration.predict as predict
from twin.cli.main import main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("off", "on"):
        print("usage: benchmarks/s25ep_validate.py off|on OUT.json", file=sys.stderr)
        sys.exit(2)
    predict.ADOPT_EP_FOUR_SORTS = predict.ADOPT_CUB_LAUNCH_HOST = sys.argv[1] == "on"
    sys.exit(main(["validate", "--quiet", "--json", sys.argv[2]]))

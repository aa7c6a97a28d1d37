"""`python -m real.bench ARGS` on torchrun ranks whose rank 0 comes out of init_process_group HOLD_S late,
as a rank descheduled inside gloo's connection of its full mesh on a loaded machine does. Each rank
writes, into the folder $HELD_BACK_TIMES_DIR, when its init returned and when its run of real.bench
ended (rank<R>.json, time.time()). Run as a torchrun script by tests/real/test_bench_gloo_init.py.
"""

import json
import os
import runpy
import time

import torch.distributed as dist

HOLD_S = 1.0
TIMES: dict[str, float] = {}
_init_process_group = dist.init_process_group


def init_held_back(*args, **kwargs):
    """init_process_group, then on rank 0 a wait of HOLD_S before it returns."""
    _init_process_group(*args, **kwargs)
    if dist.get_rank() == 0:
        time.sleep(HOLD_S)
    TIMES["init_returned"] = time.time()


if __name__ == "__main__":
    dist.init_process_group = init_held_back
    try:
        runpy.run_module("real.bench", run_name="__main__", alter_sys=True)
    finally:
        TIMES["ended"] = time.time()
        with open(os.path.join(os.environ["HELD_BACK_TIMES_DIR"], f"rank{os.environ['RANK']}.json"), "w") as f:
            json.dump(TIMES, f)

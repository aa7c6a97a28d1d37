"""`python -m real.<module> ARGS` for the campaigns' CPU dry runs, torch's heap frozen before the module runs.

real/bench/device.py's free_memory collects garbage between a bench's cases (on a GPU, so that
empty_cache can return the memory of the last case's cycles). On the CPU of a dry run each full
collection walks every object `import torch` created, ~0.15-0.25 s a call, a third of some dry runs
(s8dense's tiny campaign: 5 of its 12 s in 18 calls). Here torch is imported first and what it
created moves to the collector's permanent generation (gc.freeze, as tests/torchrun_forked.py does
before it forks the ranks); then the module runs as `python -m` runs it: as __main__, with the same
sys.argv (its file first), the folder it was started in first on sys.path, its exit status and
traceback, and the interpreter's usual end (atexit, flushing). Its collections walk only what it
creates itself. Run by tests/torchrun_forked_python for `-m real.*`; imports torch and the standard
library only.
"""

from __future__ import annotations

import gc
import os
import runpy
import sys

import torch  # noqa: F401  (imported, then frozen, before the module runs)

gc.freeze()

if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]    # run_module puts the module's file in sys.argv[0], as -m does
    sys.path[0] = os.getcwd()             # as `python -m` (here: this file's folder)
    runpy.run_module(module, run_name="__main__", alter_sys=True)

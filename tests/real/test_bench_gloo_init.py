"""real/bench/cli.py's gloo ranks wait for each other after init_process_group. gloo connects its full
mesh inside the init and a rank returns from it once its own side is up (no barrier in torch's init
since 2.1); s8cp's torch_cp part on a CPU then makes no collective (PyTorch's CP needs CUDA), so the
faster rank could finish and exit while rank 0 still connected to it, and rank 0's init failed
("Connection closed by peer") before it wrote env.json: CI's stop 32, the s8cp dry run on a loaded
two-core machine (docs/notes/s20ci.md). Here rank 0 comes out of its init a second late
(tests/real/held_back_rank0.py), and no rank may end before it has: without the barrier rank 1
ended ~1 s before, on every run."""

import json
import os
import subprocess
from pathlib import Path

from tests.campaigns import FORKED_PY, REPO


def test_no_rank_ends_before_a_rank_held_back_in_gloo_init_is_connected(tmp_path):
    times = tmp_path / "times"
    times.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HELD_BACK_TIMES_DIR": str(times)}
    script = str(Path(__file__).with_name("held_back_rank0.py"))
    out = tmp_path / "out"
    done = subprocess.run([FORKED_PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           script, "--out", str(out), "--only", "torch_cp", "--quick", "--budget-s", "30"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    held, other = (json.loads((times / f"rank{r}.json").read_text()) for r in range(2))
    assert other["ended"] >= held["init_returned"]   # rank 1 waited for rank 0 (the barrier)
    written = json.loads((out / "env.json").read_text())
    assert written["world_size"] == 2 and "CUDA" in written["torch_cp_skipped"]

"""Running the multi-GPU campaigns of real/campaigns/ that source two_gpu_parts.sh, in their tests: the
CPU dry run on gloo ranks, and the run on a host with no GPU (which must stop cleanly, nothing run)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the PY/PYTHON a dry run hands its campaign: this interpreter, torchrun's ranks forked from one
# process that imported torch (tests/torchrun_forked.py: ~2.5 s less CPU a rank)
FORKED_PY = str(REPO / "tests" / "torchrun_forked_python")


def dry_run(name: str, out: Path, timeout_s: float, scale: int = 4, **env_extra: str) -> tuple[Path, str]:
    """real/campaigns/<name>.sh OUT as its CPU dry run: <NAME>_TINY=1 (the tiny model on gloo ranks),
    its parts' timeouts times `scale` (<NAME>_TIMEOUT_SCALE), this interpreter with torchrun's ranks
    forked (FORKED_PY), one thread a rank, plus
    `env_extra` (e.g. S12EP_PARTS). Returns (OUT/<name>, the campaign's log)."""
    up = name.upper()
    env = {**os.environ, "PY": FORKED_PY, f"{up}_TINY": "1", f"{up}_TIMEOUT_SCALE": str(scale),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env_extra}
    subprocess.run(["bash", str(REPO / f"real/campaigns/{name}.sh"), str(out)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=timeout_s)
    return out / name, (out / name / f"{name}.log").read_text()


def without_gpus(name: str, out: Path) -> tuple[Path, str]:
    """real/campaigns/<name>.sh OUT where no nvidia-smi is on the PATH (0 GPUs); skipped on a host
    whose plain PATH has one (the campaign would run). Returns (OUT/<name>, the campaign's log)."""
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi on the plain PATH: the campaign would run")
    env = {**os.environ, "PY": sys.executable, "PATH": "/usr/bin:/bin"}
    subprocess.run(["bash", str(REPO / f"real/campaigns/{name}.sh"), str(out)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    return out / name, (out / name / f"{name}.log").read_text()

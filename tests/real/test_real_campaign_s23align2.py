"""real/campaigns/s23align2.sh (session s23align2): the s23align bench on fresh shapes (--set s23align2).
The bench's dry run is tested by test_real_campaign_s23align.py; here: the no-GPU path and the shape set."""

import os
import subprocess
import sys
from pathlib import Path

from real.bench import gemm_align as ga

REPO = Path(__file__).resolve().parents[2]


def test_s23align2_campaign_needs_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "S23ALIGN_QUICK": "1", "S23ALIGN_QUICK_GPUS": "0",
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s23align2.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    assert "nothing to run" in (tmp_path / "s23align2" / "log.txt").read_text()
    assert not (tmp_path / "s23align2" / "gemm_align.csv").exists()


def test_s23align2_shapes_are_fresh_and_paired():
    """Every misaligned layer is new (no s23align (O, I)) and has an aligned neighbour in the set;
    BF16 only, every pass of every layer at every token count."""
    seen = {(o, i) for _, _, o, i in ga.LAYERS}
    widths = {name: (o, i) for name, _, o, i in ga.LAYERS2}
    misaligned = [n for n, (o, i) in widths.items() if min(ga.align_elements(o), ga.align_elements(i)) < 8]
    assert misaligned and all(widths[n] not in seen for n in misaligned)
    assert any(ga.align_elements(o) == 8 and ga.align_elements(i) == 8 for o, i in widths.values())
    assert all(split == "heldout" for _, split, _, _ in ga.LAYERS2)
    grid = ga.cases(quick=False, shape_set="s23align2")
    assert {c[6] for c in grid} == {"bf16"} and len(grid) == len(ga.LAYERS2) * len(ga.TOKENS2) * len(ga.PASSES)
    assert len(ga.cases(quick=False)) == len(ga.LAYERS) * len(ga.TOKENS) * (len(ga.PASSES) + len(ga.FP8_KINDS))

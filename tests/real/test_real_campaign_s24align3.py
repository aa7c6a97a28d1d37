"""real/campaigns/s24align3.sh (session s24align3): the s23align bench on fresh shapes (--set s24align3),
each GEMM alone and each linear layer's training triple (pass "layer")."""

import os
import subprocess
from pathlib import Path

import pytest

from real.bench import gemm_align as ga
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, gpus: str):
    env = {**os.environ, "PYTHON": FORKED_PY, "S24ALIGN3_QUICK": "1", "S24ALIGN3_QUICK_GPUS": gpus,
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24align3.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s24align3"


def test_s24align3_campaign_needs_a_gpu(tmp_path):
    out = _run(tmp_path, "0")
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not (out / "gemm_align.csv").exists()


def test_s24align3_dry_run_writes_gemm_and_layer_rows(tmp_path):
    """The CPU dry run: every quick case measured, the layer triple beside the three GEMMs, with
    three GEMMs' FLOPs and the environment in every row."""
    pd = pytest.importorskip("pandas")
    out = _run(tmp_path, "1")
    df = pd.read_csv(out / "gemm_align.csv")
    assert set(df["status"]) == {"ok"} and set(df["campaign"]) == {"s24align3"}
    assert set(df["pass"]) == {"fwd", "dgrad", "wgrad", ga.LAYER_PASS}
    fwd = df[df["pass"] == "fwd"].set_index(["layer", "tokens"])["flops"]
    layer = df[df["pass"] == ga.LAYER_PASS].set_index(["layer", "tokens"])["flops"]
    assert (layer / fwd.loc[layer.index] == 3.0).all()
    assert df["torch_version"].notna().all() and df["gpu_name"].notna().all()


def test_s24align3_shapes_are_fresh_and_paired():
    """No misaligned layer was measured before (s23align, s23align2), each has an aligned neighbour
    of the same role in the set, every row is held out, token counts are new."""
    seen = {(o, i) for _, _, o, i in ga.LAYERS + ga.LAYERS2}
    widths = {name: (o, i) for name, _, o, i in ga.LAYERS3}
    misaligned = [n for n, (o, i) in widths.items() if min(ga.align_elements(o), ga.align_elements(i)) < 8]
    assert len(misaligned) == 11 and all(widths[n] not in seen for n in misaligned)
    aligned = {n for n, (o, i) in widths.items() if ga.align_elements(o) == 8 and ga.align_elements(i) == 8}
    assert all(any(a.rsplit("_", 1)[0] == n.rsplit("_", 1)[0] for a in aligned) for n in misaligned)
    assert all(split == "heldout" for _, split, _, _ in ga.LAYERS3)
    assert not set(ga.TOKENS3) & (set(ga.TOKENS) | set(ga.TOKENS2))
    grid = ga.cases(quick=False, shape_set="s24align3")
    assert {c[6] for c in grid} == {"bf16"}
    assert len(grid) == len(ga.LAYERS3) * len(ga.TOKENS3) * (len(ga.PASSES) + 1)

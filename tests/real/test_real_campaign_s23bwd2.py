"""real/campaigns/s23bwd2.sh (issue 13): s23ephost2.sh's machinery (its CPU dry run is
test_real_campaign_s23ephost2) on shapes no record holds; here the no-GPU path and the parts' shapes."""

import re
from pathlib import Path

from tests.campaigns import without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s23bwd2.sh"


def test_s23bwd2_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s23bwd2", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-small-6l").exists()


def test_s23bwd2_parts_are_new_shapes_with_a_host_bound_model():
    cases = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1].split()
    shapes = {name: (model, int(n), int(seq), int(seqs))
              for name, spec in (c.split("=") for c in cases) for model, n, seq, seqs in [spec.split(":")]}
    assert shapes == {"bench-small-6l": ("bench-small", 6, 2048, 1), "bench-small-2k": ("bench-small", 4, 1024, 2),
                      "qwen2moe-mla-1k": ("qwen2moe-mla-slice", 4, 1024, 4)}
    # never recorded: s23ephost2 (2 x 2,048, 4 layers) and s23bwd / s23ephost (1 x 4,096, 4 layers)
    assert all((n, seq, seqs) not in {(4, 2048, 2), (4, 4096, 1)} for _, n, seq, seqs in shapes.values())

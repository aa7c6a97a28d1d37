"""real/bench/gemm_in_layer.py and real/campaigns/s14gl.sh (issue 13: GEMMs and memory kernels inside
the one-GPU layers against the same calls alone): the op capture, the replay order, and the campaign's
CPU dry run (tiny shapes) writing layer rows, in-layer op rows and both alone timings that join on
(config, direction, op, input_shapes), every row with its environment columns."""

import csv
import os
import subprocess
from pathlib import Path

import torch

from real.bench import gemm_in_layer as gl
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_capture_keeps_each_distinct_call_once_and_skips_host_syncing_masks():
    a, b = torch.randn(8, 4), torch.randn(4, 3)
    idx, mask = torch.tensor([0, 2, 2]), torch.tensor([True, False] * 4)
    with gl.OpCapture() as cap:
        a @ b
        a @ b                       # the same layouts: one entry
        a[:4] @ b                   # another shape: a second entry
        a[idx]                      # integer gather: captured, indices copied
        a[mask]                     # bool mask (nonzero inside): skipped
    names = [o["name"] for o in cap.ops.values()]
    assert names.count("aten::mm") == 2 and names.count("aten::index") == 1
    gather = next(o for o in cap.ops.values() if o["name"] == "aten::index")
    assert torch.equal(gather["args"][1][0], idx)
    out = gather["func"](*torch.utils._pytree.tree_map(gl._rebuild, gather["args"]))
    assert out.shape == (3, 4)      # the rebuilt float operand has the captured layout


def test_rebuilt_operand_keeps_strides_and_offset():
    base = torch.randn(6, 10)
    view = base.t()[2:5]
    spec = gl._Spec(view)
    t = spec.build()
    assert t.shape == view.shape and t.stride() == view.stride() and t.storage_offset() == view.storage_offset()


def test_replay_order_puts_gemm_classes_first_then_the_largest_operands():
    ops = [dict(cls="elementwise", bytes=9e9), dict(cls="gather", bytes=1.0), dict(cls="dense_gemm", bytes=1.0),
           dict(cls="elementwise", bytes=1e10), dict(cls="grouped_gemm", bytes=1.0)]
    order = [(o["cls"], o["bytes"]) for o in gl.alone_order(ops)]
    assert order == [("grouped_gemm", 1.0), ("dense_gemm", 1.0), ("gather", 1.0), ("elementwise", 1e10),
                     ("elementwise", 9e9)]
    assert gl.op_class("aten::_scaled_mm") == "fp8_gemm" and gl.op_class("aten::view") is None


def test_the_dry_run_replays_the_largest_calls_of_each_class_the_campaign_up_to_its_cap():
    ops = [dict(cls="elementwise", bytes=float(b)) for b in range(40)] + [
        dict(cls="dense_gemm", bytes=2.0), dict(cls="dense_gemm", bytes=5.0), dict(cls="dense_gemm", bytes=3.0),
        dict(cls="gather", bytes=1.0)]
    assert gl.QUICK_ALONE_PER_CLASS == 2
    assert [(o["cls"], o["bytes"]) for o in gl.alone_ops(ops, quick=True)] == [
        ("dense_gemm", 5.0), ("dense_gemm", 3.0), ("gather", 1.0), ("elementwise", 39.0), ("elementwise", 38.0)]
    full = gl.alone_ops(ops, quick=False)
    assert len(full) == gl.MAX_ALONE_OPS and full == gl.alone_order(ops)[:gl.MAX_ALONE_OPS]


def test_campaign_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "S14GL_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / "real/campaigns/s14gl.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "s14gl"
    log = (out / "log.txt").read_text()
    assert "part gemm_in_layer exit 0" in log and "s14gl done" in log and "alone failed" not in log
    layer = _rows(out / "gl_layer.csv")
    assert list(layer[0]) == SHAPE_COLS["gl_layer"] + STAT_COLS + ENV_COLS
    assert {(r["layer"], r["precision"][:3], r["direction"]) for r in layer} == {
        (lay, p, d) for lay in ("moe", "mla") for p in ("bf1", "fp8") for d in ("fwd", "bwd")}
    ops = _rows(out / "gl_ops.csv")
    assert list(ops[0]) == SHAPE_COLS["gl_ops"] + STAT_COLS + ENV_COLS
    where = {(r["where"], r["op_class"]) for r in ops}
    for cls in ("dense_gemm", "fp8_gemm", "grouped_gemm", "gather", "index_put", "elementwise"):
        assert {("layer", cls), ("alone_burst", cls), ("alone_graph", cls)} <= where, cls
    key = lambda r: (r["config"], r["precision"], r["direction"], r["op"], r["input_shapes"])   # noqa: E731
    in_layer = {key(r) for r in ops if r["where"] == "layer"}
    alone = [r for r in ops if r["where"] != "layer"]
    assert sum(key(r) in in_layer for r in alone) >= 0.9 * len(alone)   # alone calls join their layer rows
    for r in layer + ops:
        assert r["split"] == "fit" and float(r["time_s"]) > 0
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
    assert (out / "env.json").is_file()

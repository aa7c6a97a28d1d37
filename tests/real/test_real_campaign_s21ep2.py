"""real/bench/ep_fresh.py and real/campaigns/s21ep2.sh (issue 13: the EP2 layer at shapes no record
holds): the case list the rule pre-registers, and the campaign's CPU dry run on two gloo ranks (tiny
shapes) writing the dispatch, combine and layer rows with their split and both ranks' kernel rows,
every row with its environment columns; on a host without GPUs it stops cleanly."""

import csv

from real.bench.ep_fresh import FRESH_CASES, QUICK_CASES
from real.bench.records import SHAPE_COLS
from real.bench.sections import MULTI_GPU_SECTIONS, OPT_IN_SECTIONS
from tests.campaigns import dry_run, without_gpus

# the shapes of the committed EP2 layer records (h200x2/ep.csv: s12ep; s14epl's fitting folders)
RECORDED_TOKENS = {1024, 2048, 4096, 8192, 16384}


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_fresh_cases_are_new_shapes_and_one_fitting_repeat():
    held = [c for c in FRESH_CASES if c[3] == "holdout"]
    # every held-out case differs from every recorded case (32 experts, skew 0 or 1, recorded tokens)
    assert all(not (E == 32 and skew in (0.0, 1.0) and T in RECORDED_TOKENS) for T, E, skew, _ in held)
    assert [c for c in FRESH_CASES if c[3] == "fit"] == [(8192, 32, 0.0, "fit")]   # s14epl's shape, last
    assert FRESH_CASES[-1][3] == "fit"
    assert all(E % 2 == 0 for _, E, _, _ in FRESH_CASES + QUICK_CASES)   # experts divide over two ranks
    assert "ep_fresh" in OPT_IN_SECTIONS and "ep_fresh" in MULTI_GPU_SECTIONS


def test_s21ep2_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s21ep2", tmp_path, 300)
    assert "s21ep2 part ep_fresh rc=0" in log, log[-2000:]
    _, ep_rows = _rows(d / "ep" / "ep.csv")
    assert {r["bench"] for r in ep_rows} == {"ep_dispatch", "ep_combine", "moe_layer_ep_fwd", "moe_layer_ep_bwd"}
    cases = {(int(r["tokens_per_rank"]), int(r["num_experts"]), float(r["skew"]), r["split"]) for r in ep_rows}
    assert cases == set(QUICK_CASES)
    header, kern = _rows(d / "ep" / "ep_kernels.csv")
    assert header[:len(SHAPE_COLS["ep_kernels"])] == SHAPE_COLS["ep_kernels"]
    assert {r["rank"] for r in kern} == {"0", "1"}
    assert {(r["bench"], r["num_experts"]) for r in kern} == {(b, str(E)) for b in ("moe_layer_ep_fwd", "moe_layer_ep_bwd")
                                                            for _, E, _, _ in QUICK_CASES}
    assert all(float(r["time_s"]) >= float(r["nccl_overlap_s"] or 0) for r in kern)
    for r in ep_rows + kern:
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["num_gpus"] != ""


def test_s21ep2_campaign_without_gpus_runs_nothing(tmp_path):
    d, log = without_gpus("s21ep2", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "ep").exists()

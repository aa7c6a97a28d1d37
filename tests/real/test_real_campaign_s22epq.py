"""real/bench/ep_models.py and real/campaigns/s22epq.sh (issue 13: the Qwen slices' EP2 layer
profiled per rank): the case list, and the campaign's CPU dry run on two gloo ranks (tiny shapes)
writing the dispatch, combine and layer rows and both ranks' kernel rows with their environment
columns; on a host without GPUs it stops cleanly."""

import csv

from real.bench.ep_models import MODEL_CASES, QUICK_CASES
from real.bench.records import SHAPE_COLS
from real.bench.sections import MULTI_GPU_SECTIONS, OPT_IN_SECTIONS
from real.configs import get_spec
from tests.campaigns import dry_run, without_gpus


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_model_cases_are_the_pipeline_slices_at_their_micro_batch():
    assert {m for m, _, _ in MODEL_CASES} == {"qwen2moe-mla-slice", "qwen3moe-mla-slice", "mixtral-mla-slice"}
    assert MODEL_CASES[0] == ("qwen2moe-mla-slice", 4096, 0.0)   # the largest excess first
    assert all(get_spec(m).num_routed_experts % 2 == 0 for m, _, _ in MODEL_CASES + QUICK_CASES)
    # the three models' layers are told apart in ep.csv by (experts, top-k): no model column there
    assert len({(get_spec(m).num_routed_experts, get_spec(m).top_k) for m, _, _ in MODEL_CASES}) == 3
    assert "ep_models" in OPT_IN_SECTIONS and "ep_models" in MULTI_GPU_SECTIONS


def test_s22epq_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s22epq", tmp_path, 300)
    assert "s22epq part ep_models rc=0" in log, log[-2000:]
    _, ep_rows = _rows(d / "ep" / "ep.csv")
    assert {r["bench"] for r in ep_rows} == {"ep_dispatch", "ep_combine", "moe_layer_ep_fwd", "moe_layer_ep_bwd"}
    assert {(int(r["tokens_per_rank"]), float(r["skew"]), r["split"]) for r in ep_rows} == {(32, 1.0, "fit")}
    header, kern = _rows(d / "ep" / "ep_kernels.csv")
    assert header[:len(SHAPE_COLS["ep_kernels"])] == SHAPE_COLS["ep_kernels"]
    assert {r["rank"] for r in kern} == {"0", "1"}
    assert {r["bench"] for r in kern} == {"moe_layer_ep_fwd", "moe_layer_ep_bwd"}
    for r in ep_rows + kern:
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["num_gpus"] != ""


def test_s22epq_campaign_without_gpus_runs_nothing(tmp_path):
    d, log = without_gpus("s22epq", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "ep").exists()

"""real/bench/dense_dropout.py (s11drop): Megatron's GPT block with its dropout, on a CPU."""

import csv
import json
import subprocess

import pytest
import torch

from real.bench import dense_dropout as dd
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from real.dense import GPTBlock, build_block, slice_of

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_gpt_block_dropout_is_training_only_and_changes_the_output():
    shape = slice_of("gpt", 32, 4, 4, 8, 64, 64, 1)
    torch.manual_seed(0)
    plain = GPTBlock(shape)
    drop = GPTBlock(shape, 0.1, 0.1)
    drop.load_state_dict(plain.state_dict())
    x = torch.randn(1, 16, 32)
    assert not torch.equal(drop(x), plain(x))              # dropout ran (training mode)
    drop.eval()
    torch.testing.assert_close(drop(x), plain(x))           # eval: no dropout
    with pytest.raises(ValueError, match="GPT block only"):
        build_block(slice_of("llama", 32, 4, 2, 8, 64, 64, 1), attention_dropout=0.1)


def test_sdpa_op_ran_names_the_backend():
    assert dd.sdpa_op_ran(["aten::linear", "aten::_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert dd.sdpa_op_ran(["aten::_scaled_dot_product_flash_attention_for_cpu"]) == "flash"
    assert dd.sdpa_op_ran(["aten::_scaled_dot_product_efficient_attention"]) == "efficient"
    assert dd.sdpa_op_ran(["aten::_scaled_dot_product_attention_math"]) == "math"
    assert dd.sdpa_op_ran(["aten::add"]) == "none"


def test_dense_dropout_entry_point_cpu(tmp_path):
    """The campaign's Python entry point for a few seconds (rows with their environment, split),
    then the dropout config of the block: the backend that ran is recorded (CPU: flash without
    dropout, math with it)."""
    assert dd.run(tmp_path, quick=True, budget_s=0.5) == 0
    with (tmp_path / "dense_dropout.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["dense_dropout"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == []
    rec = dd.Recorder(tmp_path / "more", env)
    (tmp_path / "more").mkdir()
    b = dd.Bench(rec, torch.device("cpu"), dd.Telemetry(0), quick=True, budget_s=60)
    case = dd.cases(quick=True)[0]
    dd.run_block(b, case, 0.1, 0.1, "auto")
    dd.run_dropadd(b, case, 0.1)
    rec.close()
    rows = list(csv.DictReader((tmp_path / "dense_dropout.csv").open()))
    rows += list(csv.DictReader((tmp_path / "more" / "dense_dropout.csv").open()))
    by = {(r["bench"], r["attention_dropout"], r["hidden_dropout"]): r for r in rows}
    assert by[("block_fwd_bwd", "0", "0")]["sdpa_ran"] == "flash"
    assert by[("block_fwd_bwd", "0.1", "0.1")]["sdpa_ran"] == "math"   # CPU flash takes no dropout
    assert float(by[("dropadd_fwd_bwd", "0", "0.1")]["bytes"]) > 0
    # each row carries its case's split: tiny-gpt's rows "fit", tiny-gpt-tp2's "holdout" (until s20ci every
    # row had to be "fit", which held only while the 0.5 s budget ran out before the tp2 case started:
    # a fast moment failed it, 4 runs of 4 on HEAD 2d01fb0 here)
    split_of = {case.model: case.split for case in dd.cases(quick=True)}
    assert {r["model"] for r in rows} <= set(split_of) and "tiny-gpt" in {r["model"] for r in rows}
    assert all(float(r["time_s"]) > 0 and r["split"] == split_of[r["model"]] and r["num_gpus"] == "1" for r in rows)


def test_campaign_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "real/campaigns/s11drop.sh")], check=True)

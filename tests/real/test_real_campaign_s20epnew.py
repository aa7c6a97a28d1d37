"""real/campaigns/s20epnew.sh (session s20epnew): real/pipeline's EP2 training step of the slices of
other MoE families as a CPU dry run on two gloo ranks (the tiny model), and the script's models are
the ones calibration.prereg predicted."""

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from calibration import prereg
from real.bench.records import PIPELINE_STEP_COLS
from real.configs import get_spec
from real.model import Transformer
from real.pipeline import PipelineRunner, build_mesh
from tests.campaigns import dry_run, without_gpus
from tests.ports import free_port
from twin.core.schedules import build_schedule

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s20epnew.sh"


def test_s20epnew_campaign_cpu_dry_run(tmp_path):
    """One part (the first model's; the others run the same command) writes the three ep_step rows
    at 1, 2, 4 micro-batches with the bench's environment columns."""
    d, log = dry_run("s20epnew", tmp_path, 120, S20EPNEW_PARTS="qwen3moe-mla-slice")
    assert "s20epnew part qwen3moe-mla-slice rc=0" in log, log[-2000:]
    assert "part qwen2moe-mla-slice" not in log   # parts not asked for do not run
    with (d / "qwen3moe-mla-slice" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert [(r["bench"], r["pp"], r["ep"], r["dp"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "1", "2", "2", "1", "fit"), ("ep_step", "1", "2", "2", "2", "holdout"),
        ("ep_step", "1", "2", "2", "4", "fit")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    assert "s20epnew done" in log


def test_s20epnew_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s20epnew", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "qwen3moe-mla-slice").exists()


def test_campaign_models_are_the_preregistered_ones():
    """The script's model:layers list and calibration.prereg.EP_CASES (what was predicted) are the same."""
    text = re.search(r'^MODELS="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    assert [(m, int(n)) for m, n in (c.split(":") for c in text.split())] == list(prereg.EP_CASES)
    assert re.search(r"--ep-microbatches (\S+)", SCRIPT.read_text())[1] == ",".join(map(str, prereg.EP_MICROBATCHES))


def _toy_ep_worker(rank, world, port, names):
    """Each slice at toy widths but its own expert count, top-k, shared width and the campaign's layer
    count, on two gloo EP ranks: a 2-micro-batch EP2 step runs (dispatch and combine of real/ep.py)
    to a finite loss, each rank holding half the routed experts."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mesh = build_mesh(1, 2)
        for name, layers in names:
            spec = get_spec(name)
            toy = dataclasses.replace(spec, num_layers=layers, num_mtp_modules=0, hidden_size=32, vocab_size=64,
                                      num_heads=2, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                                      v_head_dim=8, intermediate_size=32, moe_intermediate_size=16)
            torch.manual_seed(0)
            model = Transformer(toy, ep_group=mesh.ep_group, max_seq_len=8)
            local = {layer.ffn.num_local_experts for layer in model.layers}
            assert local == {spec.num_routed_experts // 2}, (name, local)
            tokens = torch.randint(0, toy.vocab_size, (2, 1, 8), generator=torch.Generator().manual_seed(1 + rank))
            runner = PipelineRunner(model, build_schedule("1f1b", 1, 2), mesh, torch.device("cpu"),
                                    (1, 8, toy.hidden_size))
            timeline = runner.step(tokens, torch.roll(tokens, -1, -1))
            assert np.isfinite(timeline.loss), name
    finally:
        dist.destroy_process_group()


def test_new_slices_run_an_ep2_step_at_toy_widths():
    mp.spawn(_toy_ep_worker, args=(2, free_port(), list(prereg.EP_CASES)), nprocs=2, join=True)

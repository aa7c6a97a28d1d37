"""real/ep.py's host marks and real/campaigns/s13ep.sh (issue 13: where the EP2 step's host time
goes): marked and unmarked EP2 steps give bit-identical losses and gradients on gloo ranks, every
MoE layer's forward and backward carries its marks in order inside its op; the campaign's CPU dry
run (tiny shapes, two gloo ranks) writes the unmarked rows and both marked modes' rows."""

import csv
import dataclasses

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real import ep
from real.bench.records import EP_HOST_MARKS_COLS, PIPELINE_STEP_COLS
from real.configs import get_spec
from real.model import Transformer
from real.pipeline import PipelineRunner, build_mesh
from real.pipeline.bench import mark_rows
from twin.core.schedules import build_schedule
from tests.ports import free_port
from tests.campaigns import dry_run

FORWARD = ["dispatch", "counts_a2a", "tolist_send", "tolist_recv", "gather", "tokens_a2a", "dispatch_post",
           "dispatch_end", "combine", "combine_a2a", "combine_post", "combine_end"]
BACKWARD = {"bwd_combine_a2a", "bwd_combine_a2a_end", "bwd_dispatch_a2a", "bwd_dispatch_a2a_end"}


def test_marks_are_the_documented_segments_and_a_no_op_outside_recording():
    assert set(FORWARD) | BACKWARD == set(ep.MARK_SEGMENTS)
    assert ep._marks is ep._NO_MARKS
    marks = ep.HostMarks()
    with ep.recording(marks):
        assert ep._marks is marks
        with ep.recording(None):      # a nested None records nothing
            ep._marks.point("dispatch")
        ep._marks.next_layer()
        ep._marks.point("dispatch")
    assert ep._marks is ep._NO_MARKS  # restored
    assert [(p.label, p.layer, p.main_thread) for p in marks.points] == [("dispatch", 0, True)]


def _step(model, mesh, schedule, tokens, targets, mode, spec):
    runner = PipelineRunner(model, schedule, mesh, torch.device("cpu"), (2, 8, spec.hidden_size), host_marks=mode)
    timeline = runner.step(tokens, targets)
    return timeline, {name: g.clone() for name, g in runner.grads_by_name().items()}


def _worker(rank, world, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        spec = dataclasses.replace(get_spec("tiny"), num_layers=4, num_mtp_modules=0)
        mesh = build_mesh(1, 2)
        torch.manual_seed(0)
        model = Transformer(spec, ep_group=mesh.ep_group, max_seq_len=8)
        gen = torch.Generator().manual_seed(1 + rank)
        tokens = torch.randint(0, spec.vocab_size, (2, 2, 8), generator=gen)
        targets = torch.roll(tokens, -1, -1)
        schedule = build_schedule("1f1b", 1, 2)
        plain, plain_grads = _step(model, mesh, schedule, tokens, targets, "off", spec)
        marked, marked_grads = _step(model, mesh, schedule, tokens, targets, "host", spec)
        # the marks change nothing the step computes
        assert marked.loss == plain.loss and plain.marks == []
        assert plain_grads.keys() == marked_grads.keys()
        for name, g in plain_grads.items():
            assert torch.equal(g, marked_grads[name]), name
        rows = mark_rows(marked)
        moe_layers = sum(1 for layer in model.layers if hasattr(layer.ffn, "gate"))
        for op in (o for o in marked.ops if o.kind in ("F", "BW")):
            mine = [r for r in rows if r["op_index"] == op.op_index]
            assert all(op.host_start_s <= r["host_s"] <= op.host_end_s for r in mine)
            if op.kind == "F":  # each MoE layer's forward marks, in program order, on the main thread
                assert [r["mark"] for r in mine] == FORWARD * moe_layers
                assert [r["layer"] for r in mine] == [k for k in range(moe_layers) for _ in FORWARD]
                assert [r["host_s"] for r in mine] == sorted(r["host_s"] for r in mine)
            else:               # the backward's all-to-alls, begin and end, of every MoE layer
                assert sorted(r["mark"] for r in mine) == sorted(list(BACKWARD) * moe_layers)
                assert {r["layer"] for r in mine} == set(range(moe_layers))
        assert all(r["gpu_s"] != r["gpu_s"] for r in rows)   # no CUDA events on a CPU: nan
    finally:
        dist.destroy_process_group()


def test_host_marks_change_no_result_and_mark_every_moe_layer():
    mp.spawn(_worker, args=(2, free_port()), nprocs=2, join=True)


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_s13ep_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s13ep", tmp_path, 400)
    assert "s13ep part ep2 rc=0" in log, log[-2000:]
    want = {("ep_step", "1", "2", "1", "fit"), ("ep_step", "1", "2", "2", "holdout"), ("ep_step", "1", "2", "4", "fit"),
            ("pipeline_step", "2", "1", "4", "fit")}
    for sub in ("", "marks_host", "marks_events"):   # every configuration under each of the three modes
        header, steps = _rows(d / "x2" / sub / "pipeline_step.csv")
        assert header == PIPELINE_STEP_COLS
        assert {(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in steps} == want
        assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in steps)
    assert not (d / "x2" / "ep_host_marks.csv").exists()   # the unmarked rows carry no marks
    for sub in ("marks_host", "marks_events"):
        header, marks = _rows(d / "x2" / sub / "ep_host_marks.csv")
        assert header == EP_HOST_MARKS_COLS
        assert {r["num_microbatches"] for r in marks} == {"1", "2", "4"} and {r["ep"] for r in marks} == {"2"}
        assert {r["mark"] for r in marks} == set(ep.MARK_SEGMENTS)
        assert {r["rank"] for r in marks} == {"0", "1"} and all(r["op_index"] != "-1" for r in marks)

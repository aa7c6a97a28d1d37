"""Pipeline parallelism (real/pipeline/) over gloo ranks against a single-process reference:
the loss and every gradient of each layout (PP2 under every schedule, EP2, PP2 x DP2 with and
without EP) equal one process's over the same model and batch; and the pure pieces (stage cut,
flow orders, the deferred weight gradient) on their own."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real.configs import get_spec
from real.fp8 import Precision, grouped_mm, linear
from real.model import Transformer
from real.pipeline import PipelineRunner, build_mesh, flow_orders, load_from, stage_layers
from real.wgrad import WeightGradStore, deferring
from twin.core.schedules import SCHEDULES, build_schedule
from tests.ports import free_port
from tests.campaigns import FORKED_PY

MB_SEQS, SEQ = 2, 8


def _spec():
    # tiny with four layers (DualPipeV on 2 ranks cuts 4 stages) and no MTP (stages don't run it)
    return dataclasses.replace(get_spec("tiny"), num_layers=4, num_mtp_modules=0)


def test_stage_layers_cut_contiguously():
    assert stage_layers(4, 2) == [range(0, 2), range(2, 4)]
    assert stage_layers(7, 4) == [range(0, 1), range(1, 3), range(3, 5), range(5, 7)]
    with pytest.raises(ValueError, match="cannot fill"):
        stage_layers(3, 4)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("pp", [2, 4])
def test_every_flow_is_sent_and_received_in_the_same_order(name, pp):
    virtual = SCHEDULES[name].virtual   # interleaved 1F1B: two chunks per rank, groups of pp micro-batches
    for n in ((2 * pp, 3 * pp, 4 * pp) if virtual else (2 * pp, 2 * pp + 2, 3 * pp + 2)):
        sent, received = flow_orders(build_schedule(name, pp, n, 2 if virtual else 1))
        assert sent == received
        assert sent  # there are flows at all


def test_deferred_weight_gradient_equals_the_immediate_one():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, requires_grad=True)
    w = torch.randn(12, 8, requires_grad=True)
    we = torch.randn(3, 12, 8, requires_grad=True)  # E, N, K: passed transposed, as the model does
    offs = torch.tensor([16, 16, 32], dtype=torch.int32)
    split = Precision(split_wgrad=True)

    def run(precision, defer):
        for t in (x, w, we):
            t.grad = None
        h = linear(x, w, precision).reshape(-1, 12)[:, :8]
        y = grouped_mm(torch.cat([h, h.new_zeros(17, 8)]), we.transpose(-2, -1), offs, precision)
        store = WeightGradStore()
        if defer:
            with deferring(store):
                y.square().sum().backward()
            assert w.grad is None and we.grad is None and x.grad is not None
            assert store.flush() == 2
        else:
            y.square().sum().backward()
        return [t.grad.clone() for t in (x, w, we)]

    for got, want in zip(run(split, True), run(Precision(), False)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


# ---- spawned gloo ranks

LAYOUTS = {  # world size -> (pp, ep, schedule, num_microbatches)
    2: [(2, 1, "1f1b", 4), (2, 1, "zb1p", 4), (2, 1, "dualpipev", 4), (2, 1, "dualpipe", 4),
        (1, 2, "1f1b", 2)],
    4: [(2, 1, "zb1p", 4), (2, 2, "1f1b", 3), (2, 2, "dualpipev", 4), (2, 2, "dualpipe", 4)],
}


def _check(pp, ep, name, n):
    spec = _spec()
    mesh = build_mesh(pp, ep, pairs=name == "dualpipe")
    torch.manual_seed(0)
    ref = Transformer(spec, max_seq_len=SEQ)
    model = Transformer(spec, ep_group=mesh.ep_group, max_seq_len=SEQ)
    ep_rank = mesh.dp_rank % ep
    load_from(model, ref, ep_rank, ep)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, spec.vocab_size, (mesh.dp, n, MB_SEQS, SEQ), generator=gen)
    targets = torch.roll(tokens, -1, -1)
    ref_loss = ref.loss(tokens.flatten(0, 2), targets.flatten(0, 2))
    ref_loss.backward()

    runner = PipelineRunner(model, build_schedule(name, pp, n), mesh, torch.device("cpu"),
                            (MB_SEQS, SEQ, spec.hidden_size))
    timeline = runner.step(tokens[mesh.dp_rank], targets[mesh.dp_rank])
    losses = [None] * dist.get_world_size()
    dist.all_gather_object(losses, timeline.loss)
    label = f"{name} pp={pp} ep={ep} dp={mesh.dp} rank={mesh.rank}"
    assert sum(losses) == pytest.approx(ref_loss.item(), rel=1e-5), label
    ref_params = dict(ref.named_parameters())
    grads = runner.grads_by_name()
    assert grads, label
    for param_name, grad in grads.items():
        want = ref_params[param_name].grad
        if param_name.endswith(("w13_E2FD", "w2_EDF")):
            el = want.shape[0] // ep
            want = want[ep_rank * el:(ep_rank + 1) * el]
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6, msg=f"{label}: {param_name}")
    # every compute op of the program was timed once, in program order, on a clock from 0
    compute = [o for o in timeline.ops if o.kind in ("F", "B", "W", "BW", "FB")]
    assert [o.op_index for o in compute] == list(range(len(runner.program)))
    assert all(0 <= o.start_s <= o.end_s for o in timeline.ops), label


def _worker(rank, world, port):
    torch.set_num_threads(1)  # tiny tensors: more threads per rank only contend for the cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for layout in LAYOUTS[world]:
            _check(*layout)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", sorted(LAYOUTS))
def test_pipeline_layouts_match_single_process(world):
    mp.spawn(_worker, args=(world, free_port()), nprocs=world, join=True)


# ---- the campaign's entry point (real/campaigns/i13pp.sh runs it under torchrun on two GPUs)


def _bench_worker(rank, world, ports, out):
    import os

    from real.pipeline.bench import main

    # two runs, like the campaign's two torchruns; each its own rendezvous port (a rank that
    # finishes the first run early must not join the other rank's closing store)
    for port, (layouts, append) in zip(ports, (("pp2", False), ("ep2", True))):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        args = ["--out", str(out), "--tiny", "--layouts", layouts, "--schedules", "zb1p,dualpipev",
                "--microbatches", "4", "--ep-microbatches", "2", "--holdout", "4", "--trace-microbatches", "4",
                "--warmup", "1", "--reps-min", "2", "--reps-max", "2"]
        assert main(args + (["--append"] if append else [])) == 0


def test_bench_writes_step_rows_op_timelines_and_traces(tmp_path):
    import csv
    import json

    from real.bench.records import PIPELINE_OPS_COLS, PIPELINE_STEP_COLS

    mp.spawn(_bench_worker, args=(2, (free_port(), free_port()), tmp_path), nprocs=2, join=True)
    with open(tmp_path / "pipeline_step.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == PIPELINE_STEP_COLS
        steps = list(reader)
    assert [(r["bench"], r["schedule"], r["pp"], r["ep"], r["dp"], r["split"]) for r in steps] == [
        ("pipeline_step", "zb1p", "2", "1", "1", "holdout"), ("pipeline_step", "dualpipev", "2", "1", "1", "holdout"),
        ("ep_step", "1f1b", "1", "2", "2", "holdout")]
    assert all(float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"]) for r in steps)
    with open(tmp_path / "pipeline_ops.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == PIPELINE_OPS_COLS
        ops = list(reader)
    zb = [o for o in ops if o["schedule"] == "zb1p" and o["rep"] == "0"]
    assert {o["kind"] for o in zb} == {"F", "B", "W", "send", "recv"}
    assert {o["kind"] for o in ops if o["schedule"] == "dualpipev"} >= {"F", "B", "W", "BW", "FB"}
    assert {o["kind"] for o in ops if o["pp"] == "1"} == {"F", "BW", "allreduce"}
    # the host's issue marks of every timed op (s9ep: the dispatch rate in the steps that are timed)
    # and the configuration's split, as its step row
    assert all(0 <= float(o["host_start_s"]) <= float(o["host_end_s"]) for o in ops)
    assert {o["split"] for o in ops} == {"holdout"}
    # one shared axis per step: the step's time is its latest op end, over both ranks
    for r in steps[:2]:
        ends = [float(o["end_s"]) for o in ops if o["schedule"] == r["schedule"]]
        assert min(float(o["start_s"]) for o in ops if o["schedule"] == r["schedule"]) >= 0
        assert max(ends) >= float(r["time_s"])
    for rank in ("0", "1"):  # a rank's compute ops run one after another, in program order
        mine = [o for o in zb if o["rank"] == rank and o["kind"] in ("F", "B", "W")]
        assert [int(o["op_index"]) for o in mine] == sorted(int(o["op_index"]) for o in mine)
        assert all(float(a["end_s"]) <= float(b["start_s"]) for a, b in zip(mine, mine[1:]))
    trace = json.loads((tmp_path / "pipeline_trace_dualpipev.json").read_text())
    names = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == 0}
    assert "F0.0" in names and any("&" in n for n in names)  # the twin's labels, e.g. F2.1&BW0.0
    assert {e["pid"] for e in trace["traceEvents"] if e["ph"] == "X"} == {0, 1}
    assert (tmp_path / "pipeline_trace_ep2.json").exists()


def test_layouts_parse_and_refuse_what_they_are_not():
    from real.pipeline.bench import parse_layout

    assert [parse_layout(x) for x in ("pp2", "ep2", "pp2ep2", "pp4")] == [(2, 1), (1, 2), (2, 2), (4, 1)]
    for bad in ("", "pp", "dp2", "pp2x", "ep2pp2"):
        with pytest.raises(SystemExit, match="not a layout"):
            parse_layout(bad)


def test_s9ep_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s9ep.sh's 2-GPU part (EP2, PP2, EP2 again) on two gloo ranks, tiny model,
    one schedule and count each: every step row and every op row with its split, every op row
    with the host's issue marks, each part's rows kept in its folder."""
    import csv
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    tiny = ("--tiny --schedules zb1p --microbatches 4 --ep-microbatches 2 --holdout 4 --ep-holdout 2 "
            "--trace-microbatches 4 --warmup 1 --reps-min 2 --reps-max 2")
    env = {**os.environ, "PY": FORKED_PY, "S9EP_ARGS": tiny, "S9EP_NPROC": "2",
           "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "S9EP_TIMEOUT_SCALE": "4"}
    subprocess.run(["bash", str(repo / "real/campaigns/s9ep.sh"), str(tmp_path)], cwd=repo, env=env,
                   check=True, capture_output=True, timeout=400)
    d = tmp_path / "s9ep"
    log = (d / "s9ep.log").read_text()
    for part in ("ep2", "pp2", "ep2r2"):
        assert f"s9ep part {part} rc=0" in log, log[-2000:]

    def rows(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    steps = rows(d / "x2" / "pipeline_step.csv")
    assert [(r["bench"], r["split"]) for r in steps] == [("ep_step", "holdout"), ("pipeline_step", "holdout")]
    ops = rows(d / "x2" / "pipeline_ops.csv")
    assert {o["split"] for o in ops} == {"holdout"} and {o["pp"] for o in ops} == {"1", "2"}
    assert all(float(o["host_start_s"]) <= float(o["host_end_s"]) for o in ops)
    assert [r["bench"] for r in rows(d / "x2_round2" / "pipeline_step.csv")] == ["ep_step"]


def test_s10pp_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s10pp.sh's two 4-GPU parts (PP2 x EP2 unpinned, then with each rank's main
    thread pinned) on four gloo ranks, tiny model, DualPipe at one count: step and op rows with
    their split and host marks in each part's folder, the routing loads of every rank's gates,
    each rank's pinned CPUs in the pinned part's environment record (none in the unpinned one)."""
    import csv
    import json
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    tiny = ("--tiny --schedules dualpipe --microbatches 4 --holdout 4 --trace-microbatches 4 --warmup 1 "
            "--reps-min 2 --reps-max 2 --budget-s 600")
    env = {**os.environ, "PY": FORKED_PY, "S10PP_ARGS": tiny, "S10PP_NPROC": "4", "S10PP_TIMEOUT_SCALE": "6",
           "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(repo / "real/campaigns/s10pp.sh"), str(tmp_path)], cwd=repo, env=env,
                   check=True, capture_output=True, timeout=900)
    d = tmp_path / "s10pp"
    log = (d / "s10pp.log").read_text()
    for part, folder in (("unpinned", "x4"), ("pinned", "x4_pinned")):
        assert f"s10pp part {part} rc=0" in log, log[-2000:]
        with open(d / folder / "pipeline_step.csv", newline="") as f:
            steps = list(csv.DictReader(f))
        assert [(r["schedule"], r["pp"], r["ep"], r["num_gpus"], r["split"]) for r in steps] == [
            ("dualpipe", "2", "2", "4", "holdout")]
        with open(d / folder / "pipeline_ops.csv", newline="") as f:
            ops = list(csv.DictReader(f))
        assert {o["rank"] for o in ops} == {"0", "1", "2", "3"} and {o["split"] for o in ops} == {"holdout"}
        assert all(0 <= float(o["host_start_s"]) <= float(o["host_end_s"]) for o in ops)
        pinned = json.loads((d / folder / "env_pipeline_pp2ep2.json").read_text())["pinned_cpus_by_rank"]
        assert len(pinned) == 4 and all(bool(p) == (part == "pinned") for p in pinned)
        # the routing loads: every rank's tokens per MoE gate and expert in a step; DualPipe's two
        # chunks each carry half the micro-batches, each token to top_k experts
        with open(d / folder / "pipeline_routing.csv", newline="") as f:
            routing = list(csv.DictReader(f))
        sums: dict = {}
        for r in routing:
            key = (r["rank"], r["chunk"], r["layer"])
            sums[key] = sums.get(key, 0.0) + float(r["tokens_per_step"])
        tokens_per_chunk = 4 // 2 * 2 * 16 * 2          # micro-batches x sequences x seq len x top_k (tiny)
        assert {k[0] for k in sums} == {"0", "1", "2", "3"} and {k[1] for k in sums} == {"0", "1"}
        assert set(sums.values()) == {tokens_per_chunk}


def test_measured_trace_events_carry_the_trace_event_format_fields():
    """real/'s per-rank timeline trace: name, ph, pid and tid on every event (process_name and
    process_sort_index had no tid until s19ux2), times in microseconds."""
    from real.pipeline.bench import chrome_trace
    from real.pipeline.engine import OpRecord, StepTimeline

    ops = [OpRecord(0, "F", 0, 0, "F0.0", 0.0, 0.002), OpRecord(1, "send", 0, 0, "act", 0.002, 0.0025)]
    steps = [StepTimeline(rank=r, pp_rank=r, dp_rank=0, host_start_s=0.0, loss=1.0, ops=ops) for r in (0, 1)]
    events = chrome_trace(steps, {"schedule": "1f1b"})["traceEvents"]
    assert [e for e in events if not {"name", "ph", "pid", "tid"} <= set(e)] == []
    assert [(e["ts"], e["dur"]) for e in events if e["ph"] == "X"][:2] == [(0.0, 2000.0), (2000.0, 500.0)]
    assert {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"} >= {
        (e["pid"], e["tid"]) for e in events if e["ph"] == "X"}

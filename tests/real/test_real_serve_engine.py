"""The serving engine (real/serve) on CPU with the tiny model in float32: batching, paging and
chunking change no greedy token; pages come back; EP2 over gloo ranks gives the tokens of one
process; the load generator's records agree with each other; the campaign script runs end to end."""

import csv
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real.configs import get_spec
from real.infer import generate
from real.model import build_model
from real.serve.engine import Engine, EngineConfig, Request
from real.serve.forward import step_forward
from real.serve.graphs import DecodeGraphs, default_batch_buckets, default_page_buckets
from real.serve.loadgen import PoissonArrivals, parse_lengths, run_load
from real.serve.plans import RunSpec
from real.serve.records import percentile
from tests.ports import free_port
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
LENGTHS = [(5, 7), (17, 3), (33, 9), (1, 4), (40, 1), (9, 12), (26, 6)]  # (input, output)


def _model(spec, ep_group=None):
    torch.manual_seed(0)
    m = build_model(spec, "cpu", torch.float32, ep_group=ep_group, max_seq_len=128)
    return m.eval()


def _requests(spec, lengths):
    g = torch.Generator().manual_seed(1)
    return [Request(i, 0.0, torch.randint(0, spec.vocab_size, (n_in,), generator=g).tolist(), n_out)
            for i, (n_in, n_out) in enumerate(lengths)]


def _reference(model, req):
    return generate(model, torch.tensor([req.prompt]), req.output_len)[0].tolist()


def _drain(engine, on_step=None):
    while engine.has_work:
        engine.step()
        if on_step:
            on_step(engine)


@pytest.fixture(scope="module")
def references():
    """real.infer.generate on each LENGTHS prompt alone (computed once for the module)."""
    spec = get_spec("tiny")
    model = _model(spec)
    return [_reference(model, r) for r in _requests(spec, LENGTHS)]


def test_engine_tokens_equal_unbatched_generation(tiny, references):
    """Seven prompts of 1-40 tokens through 4-token pages, a 16-token budget and 4 running slots:
    chunked prefills, mixed prefill+decode iterations and admissions mid-run all happen, and every
    request's tokens equal real.infer.generate on that prompt alone."""
    model = _model(tiny)
    reqs = _requests(tiny, LENGTHS)
    engine = Engine(model, EngineConfig(page_size=4, num_pages=64, token_budget=16, max_running=4,
                                        max_context=128))
    for r in reqs:
        engine.add(r)
    _drain(engine)
    for r, want in zip(reqs, references):
        assert r.output == want, f"request {r.request_id}"
    its = engine.iterations
    assert any(it.prefill_seqs and it.decode_seqs for it in its), "no mixed iteration"
    assert max(r.num_chunks for r in reqs) > 1, "no chunked prefill"
    assert all(it.prefill_tokens + it.decode_seqs <= 16 and it.running <= 4 for it in its)


def test_pages_are_owned_once_and_freed(tiny, references):
    """While running, no page belongs to two requests and none is scratch page 0; each request
    holds ceil((input + output - 1) / page) pages; at the end the pool is whole again. A pool of
    12 pages makes requests wait for pages (admission is by pages, not only by slots)."""
    model = _model(tiny)
    reqs = _requests(tiny, LENGTHS)
    engine = Engine(model, EngineConfig(page_size=4, num_pages=13, token_budget=16, max_running=4,
                                        max_context=64))
    for r in reqs:
        engine.add(r)
    waited = []

    def check(e):
        owned = [p for r in e.running for p in r.pages]
        assert len(owned) == len(set(owned)) and 0 not in owned
        assert len(owned) + e.cache.num_free_pages == 12
        for r in e.running:
            assert len(r.pages) == -(-(r.input_len + r.output_len - 1) // 4)
        waited.append(len(e.running) < 4 and len(e.waiting) > 0)

    _drain(engine, check)
    assert any(waited), "the small pool never held a request back"
    assert engine.cache.num_free_pages == 12
    assert [r.output for r in reqs] == references


def _ep_worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        spec = get_spec("tiny")
        ref = _model(spec)
        ep_model = _model(spec, ep_group=dist.group.WORLD)
        full = dict(ref.named_parameters())
        with torch.no_grad():  # replicated weights from the reference, experts: this rank's slice
            for name, p in ep_model.named_parameters():
                src = full[name]
                if name.endswith(("w13_E2FD", "w2_EDF")):
                    el = src.shape[0] // world
                    src = src[rank * el:(rank + 1) * el]
                p.copy_(src)
        control = dist.new_group(backend="gloo")
        engine = Engine(ep_model, EngineConfig(page_size=4, num_pages=64, token_budget=16,
                                               max_running=4, max_context=128))
        arrivals = PoissonArrivals(400.0, 0.02, parse_lengths("uniform:1-30"), parse_lengths("list:1,4,9"),
                                   spec.vocab_size, seed=3, rank=rank, world=world)
        run_load(engine, arrivals, 120.0, control)
        lines = [f"{r.request_id} {' '.join(map(str, r.output))} {' '.join(map(str, r.prompt))}"
                 for r in engine.finished]
        idle = sum(it.idle for it in engine.iterations)
        Path(out_dir, f"rank{rank}.txt").write_text(f"{len(engine.iterations)} {idle}\n" + "\n".join(lines))
    finally:
        dist.destroy_process_group()


def test_ep2_over_gloo_gives_the_tokens_of_one_process(tiny, tmp_path):
    """Two gloo ranks, 4 experts each, data-parallel attention: each rank serves its own Poisson
    requests; every request's tokens equal the single-process generation on the full model, and
    both ranks ran the same number of iterations (idle ones padding)."""
    mp.spawn(_ep_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    model = _model(tiny)
    counts, ids = [], []
    for rank in range(2):
        head, *lines = Path(tmp_path, f"rank{rank}.txt").read_text().splitlines()
        counts.append(int(head.split()[0]))
        for line in lines:
            rid, *rest = line.split(" ")
            ids.append(int(rid))
            assert int(rid) % 2 == rank
        reqs = {}
        for line in lines:
            rid = int(line.split(" ")[0])
            reqs[rid] = line
        for rid, line in reqs.items():
            parts = line.split(" ")[1:]
            # output then prompt; regenerate the request to split them
            arr = PoissonArrivals(400.0, 0.02, parse_lengths("uniform:1-30"), parse_lengths("list:1,4,9"),
                                  tiny.vocab_size, seed=3)
            req = next(r for r in arr.pending if r.request_id == rid)
            out, prompt = parts[:req.output_len], parts[req.output_len:]
            assert list(map(int, prompt)) == req.prompt
            assert list(map(int, out)) == _reference(model, req), f"request {rid}"
    assert counts[0] == counts[1]
    assert len(ids) >= 4 and sorted(ids) == list(range(len(ids)))


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_campaign_script_cpu_dry_run_records_agree(tmp_path):
    """real/campaigns/i15engine.sh with the tiny plans on CPU (one process, then two gloo ranks):
    every record family is written, and within each run the records agree with each other."""
    env = {**os.environ, "PYTHON": FORKED_PY, "I15_DEVICE": "cpu", "I15_PLAN1": "tiny",
           "I15_PLAN2": "tiny-ep2", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/i15engine.sh"), str(tmp_path)], cwd=REPO,
                   env=env, check=True, capture_output=True, timeout=240)
    d = tmp_path / "i15engine"
    loads = _read(d / "serve_load.csv")
    reqs, its = _read(d / "serve_requests.csv"), _read(d / "serve_iterations.csv")
    assert [r["ep_size"] for r in loads] == ["1", "1", "2", "2"]
    assert {r["split"] for r in loads} == {"fit", "holdout"}
    assert "nccl_version" in loads[0] and loads[0]["gpu_name"].startswith("cpu")
    for load, part in zip(loads, ["gpu1", "gpu1", "ep2", "ep2"]):
        run = load["run_id"]
        assert (d / part / "env.json").exists()
        rr = [r for r in reqs if r["run_id"] == run]
        ii = [i for i in its if i["run_id"] == run]
        assert int(load["num_requests"]) == len(rr) > 0
        assert int(load["num_completed"]) == sum(r["finish_s"] != "" for r in rr)
        ends = {(i["rank"], int(i["iteration"])): float(i["start_s"]) + float(i["duration_s"]) for i in ii}
        for r in rr:
            f = float
            assert f(r["arrival_s"]) <= f(r["admitted_s"]) <= f(r["first_token_s"])
            assert f(r["first_token_s"]) == pytest.approx(ends[(r["rank"], int(r["first_token_iteration"]))])
            if r["finish_s"]:
                assert f(r["first_token_s"]) <= f(r["finish_s"])
                assert int(r["tokens_out"]) == int(r["output_len"])
                # a running request decodes every iteration: one token per iteration
                assert int(r["finish_iteration"]) - int(r["first_token_iteration"]) + 1 == int(r["output_len"])
                assert f(r["finish_s"]) == pytest.approx(ends[(r["rank"], int(r["finish_iteration"]))])
        for rank in {i["rank"] for i in ii}:
            mine = [r for r in rr if r["rank"] == rank]
            its_r = [i for i in ii if i["rank"] == rank]
            # every decode row emits one token; every first token comes from a prefill
            assert (sum(int(i["decode_seqs"]) for i in its_r)
                    == sum(int(r["tokens_out"]) for r in mine) - sum(r["first_token_s"] != "" for r in mine))
            assert sum(int(i["prefill_tokens"]) for i in its_r) == sum(
                int(r["input_len"]) for r in mine if r["first_token_s"] != "")
            for i in its_r:
                assert int(i["decode_kv_tokens"]) <= int(i["kv_tokens"])
                assert int(i["max_kv_tokens"]) <= min(int(i["kv_tokens"]), int(load["max_context"]))
            starts = [float(i["start_s"]) for i in its_r]
            assert starts == sorted(starts)
        if load["arrival"] == "closed":
            per_rank = int(load["concurrency"]) // int(load["ep_size"])
            assert all(int(i["running"]) <= per_rank for i in ii)
        assert float(load["ttft_p50_s"]) <= float(load["ttft_p99_s"])
        assert float(load["output_tokens_per_s"]) > 0
    assert any(i["idle"] == "1" for i in its), "no EP padding iteration in the ep2 dry run"


def test_length_specs_and_errors():
    assert parse_lengths("fixed:7").values == (7,)
    assert parse_lengths("uniform:3-9").max == 9
    assert parse_lengths("list:4,1,8").values == (4, 1, 8)
    for bad in ["fixed:0", "uniform:9-3", "gauss:3", "list:", "uniform:4"]:
        with pytest.raises(ValueError, match=r"input_len .*expected 'fixed:N'"):
            parse_lengths(bad, "input_len")
    with pytest.raises(ValueError, match="token_budget .* must be >= max_running"):
        EngineConfig(token_budget=8, max_running=16)
    with pytest.raises(ValueError, match="arrival must be 'poisson' or 'closed'"):
        RunSpec("x", "bursty", "fixed:1", "fixed:1")


def test_request_longer_than_context_is_refused(tiny):
    engine = Engine(_model(tiny), EngineConfig(page_size=4, num_pages=64, token_budget=16,
                                               max_running=4, max_context=32))
    with pytest.raises(ValueError, match="exceeds max_context 32"):
        engine.add(Request(0, 0.0, [1] * 30, 8))


def test_graph_buckets_cover_every_batch(tiny):
    """Buckets: 1, 2, 4, 8, then steps of 8/16/32; a batch replays the smallest bucket >= it."""
    assert default_batch_buckets(64) == [1, 2, 4, 8, 16, 24, 32, 48, 64]
    assert default_batch_buckets(6) == [1, 2, 4, 6]
    assert default_page_buckets(34) == [1, 2, 4, 8, 16, 32, 34]
    engine = Engine(_model(tiny), EngineConfig(page_size=4, num_pages=16, token_budget=16,
                                               max_running=8, max_context=64))
    g = DecodeGraphs(engine.model, engine.cache, engine.precision, [1, 2, 4, 8], [1, 2, 4, 16])
    assert g.bucket(3, 3) == (4, 4)
    assert g.bucket(8, 16) == (8, 16)
    assert g.bucket(9, 1) is None and g.bucket(1, 17) is None


def test_percentile_matches_linear_interpolation():
    # sorted 1..5: p50 = 3; p90 at position 3.6 = 4 + 0.6 * (5 - 4)
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile([5, 1, 3, 2, 4], 90) == pytest.approx(4.6)
    assert percentile([], 50) != percentile([], 50)  # NaN


class _EagerGraph:
    """Stands in for a CUDA graph on the CPU: replay re-runs the captured call on the same static
    buffers and writes its result into the same output tensor."""

    def __init__(self, fn):
        self.fn = fn
        self.out = fn()

    def replay(self):
        self.out.copy_(self.fn())


class _CpuDecodeGraphs(DecodeGraphs):
    def capture(self):
        self._pad()
        for b in self.batch_buckets:
            for w in self.page_buckets:
                g = _EagerGraph(lambda b=b, w=w: self._forward(b, w))
                self.graphs[(b, w)] = (g, g.out)
        return len(self.graphs)

    def _forward(self, b, w):
        return step_forward(self.model, self.cache, self._inputs(b, w), self.precision)


def test_graph_replay_path_pads_and_gives_the_same_tokens(tiny):
    """The CUDA-graph decode path's static buffers, padding rows (scratch page, length 1) and
    bucket choice, with graphs replaced by eager re-runs on the same buffers: decode-only
    iterations go through it (batch 3 replays bucket 4 with one padding row) and every token
    equals the unbatched generation."""
    model = _model(tiny)
    reqs = _requests(tiny, [(5, 9), (12, 6), (3, 11)])
    engine = Engine(model, EngineConfig(page_size=4, num_pages=64, token_budget=16, max_running=4,
                                        max_context=64))
    engine.graphs = _CpuDecodeGraphs(model, engine.cache, engine.precision,
                                     default_batch_buckets(4), default_page_buckets(16))
    engine.graphs.capture()
    for r in reqs:
        engine.add(r)
    _drain(engine)
    assert {it.graph_batch for it in engine.iterations} >= {0, 4}
    for r in reqs:
        assert r.output == _reference(model, r), f"request {r.request_id}"


def test_lowload_plans_keep_away_from_the_runs_already_measured():
    """The s7srv campaign's plans: run names and seeds of their own, closed-loop concurrencies that
    divide over the EP ranks, fit runs at no held-out configuration, and held-out runs at
    configurations no earlier run has (so no fit ever saw them)."""
    from real.serve.plans import EP2, EP2_LOWLOAD, GPU1, GPU1_LOWLOAD
    conf = lambda r: (r.arrival, r.input_len, r.rate_per_s, r.concurrency)  # noqa: E731
    for base, low, ranks in ((GPU1, GPU1_LOWLOAD, 1), (EP2, EP2_LOWLOAD, 2)):
        assert {r.split for r in low.runs} == {"fit", "holdout"}
        assert not {r.name for r in low.runs} & {r.name for r in base.runs}
        assert len({r.seed for r in low.runs}) == len(low.runs) and not {r.seed for r in low.runs} & {r.seed for r in base.runs}
        assert all(r.concurrency % ranks == 0 for r in low.runs if r.arrival == "closed")
        held = {conf(r) for r in base.runs if r.split == "holdout"}
        assert not held & {conf(r) for r in low.runs if r.split == "fit"}
        fitted = {conf(r) for r in (*base.runs, *low.runs) if r.split == "fit"}
        assert not fitted & {conf(r) for r in low.runs if r.split == "holdout"}
        # the engine settings (and so the fitted table they feed) are the base plan's
        assert (low.model, low.page_size, low.token_budget, low.max_running) == (base.model, base.page_size, base.token_budget, base.max_running)


def test_s7srv_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s7srv.sh with the tiny plans on CPU (one process, then two gloo ranks)."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S7_DEVICE": "cpu", "S7_PLAN1": "tiny",
           "S7_PLAN2": "tiny-ep2", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s7srv.sh"), str(tmp_path)], cwd=REPO,
                   env=env, check=True, capture_output=True, timeout=240)
    d = tmp_path / "s7srv"
    loads = _read(d / "serve_load.csv")
    assert [r["ep_size"] for r in loads] == ["1", "1", "2", "2"]
    assert all(int(r["num_completed"]) > 0 for r in loads)
    assert _read(d / "serve_iterations.csv") and (d / "gpu1" / "env.json").exists() and (d / "ep2" / "env.json").exists()
    assert "s7srv end" in (d / "log.txt").read_text()

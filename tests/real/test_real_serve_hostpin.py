"""real/serve/hostpin.py (CPU lists, rank shares, pinning the calling thread), the engine's
per-iteration host / GPU split and CPU readings on CPU, the s8srv plans' design of experiments and
the s8srv campaign script end to end on CPU (one process, then two gloo ranks)."""

import csv
import os
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from real.configs import get_spec
from real.model import build_model
from real.serve import hostpin
from real.serve.engine import Engine, EngineConfig, Request

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_parse_cpu_list_reads_the_kernels_format():
    assert hostpin.parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert hostpin.parse_cpu_list("") == []


def test_rank_share_splits_shared_cpus_by_local_rank_and_is_never_empty():
    cpus = list(range(8))
    assert hostpin.rank_share(cpus, 0, 2) == [0, 1, 2, 3]
    assert hostpin.rank_share(cpus, 1, 2) == [4, 5, 6, 7]
    assert hostpin.rank_share(cpus, 1, 1) == cpus           # alone on its node: all of them
    assert hostpin.rank_share([5], 1, 2) == [5]               # one CPU for two ranks: both get it


def test_pin_modes_and_bad_mode():
    allowed = sorted(os.sched_getaffinity(0))
    assert hostpin.pin_cpus("none", 0, 1, None) == allowed
    assert hostpin.pin_cpus("core", 0, 1, None) == allowed[-1:]
    assert hostpin.pin_cpus("numa", 0, 1, None) == allowed
    with pytest.raises(ValueError, match="pin mode 'socket': expected one of none, numa, core"):
        hostpin.pin_cpus("socket", 0, 1, None)


def test_apply_pin_sets_only_the_calling_thread_and_none_restores_it():
    """Run in a thread of its own so the test process keeps its affinity."""
    seen = {}

    def work():
        seen["core"] = hostpin.apply_pin("core")
        seen["after_core"] = sorted(os.sched_getaffinity(0))
        seen["cpu"] = hostpin.current_cpu()
        hostpin.apply_pin("none")
        seen["after_none"] = sorted(os.sched_getaffinity(0))

    before = sorted(os.sched_getaffinity(0))
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["after_core"] == seen["core"] == before[-1:]
    assert seen["cpu"] == before[-1]
    assert seen["after_none"] == sorted(hostpin.ALLOWED_AT_START)
    assert sorted(os.sched_getaffinity(0)) == before


def test_warm_shapes_runs_each_flat_batch_size_once_and_changes_no_token():
    spec = get_spec("tiny")
    torch.manual_seed(0)
    model = build_model(spec, "cpu", torch.float32, max_seq_len=128).eval()
    cfg = EngineConfig(page_size=4, num_pages=64, token_budget=16, max_running=4, max_context=64)
    outs = []
    for warm in (0, 10):
        engine = Engine(model, cfg)
        assert engine.warm_shapes(warm) == warm and engine.warmed_tokens == warm
        if warm:
            assert engine.warm_shapes(6) == 0 and engine.warm_shapes(12) == 2   # sizes 11, 12 only
        engine.add(Request(0, 0.0, [3, 1, 4, 1, 5], 4))
        while engine.has_work:
            engine.step()
        assert engine.cache.num_free_pages == cfg.num_pages - 1     # the scratch page only, as before
        outs.append(engine.finished[0].output)
    assert outs[0] == outs[1]


def test_engine_timing_records_host_split_and_cpu_on_cpu():
    spec = get_spec("tiny")
    torch.manual_seed(0)
    model = build_model(spec, "cpu", torch.float32, max_seq_len=128).eval()
    engine = Engine(model, EngineConfig(page_size=4, num_pages=64, token_budget=16, max_running=4, max_context=64))
    engine.timing = True
    for i, (n_in, n_out) in enumerate([(5, 3), (9, 2)]):
        engine.add(Request(i, 0.0, list(range(1, n_in + 1)), n_out))
    while engine.has_work:
        engine.step()
    its = engine.iterations
    assert its and all(0 < it.host_s <= it.duration_s for it in its)
    assert all(it.gpu_s != it.gpu_s for it in its)             # NaN on CPU
    allowed = os.sched_getaffinity(0)
    assert all(it.cpu_id in allowed and it.cpu_id_end in allowed for it in its)
    off = Engine(model, EngineConfig(page_size=4, num_pages=64, token_budget=16, max_running=4, max_context=64))
    off.add(Request(0, 0.0, [1, 2, 3], 2))
    off.step()
    assert off.iterations[0].cpu_id == -1 and off.iterations[0].host_s != off.iterations[0].host_s


def test_s8_plans_repeat_earlier_configurations_with_their_split_and_seed():
    """ep2-pin: each earlier EP2 configuration twice (both pinnings, alternating order); gpu1-pin:
    five one-GPU configurations as the engine comes, then again after warming every flat batch
    size; always the original split and seed, so no held-out configuration is ever fitted."""
    from real.serve.plans import EP2, EP2_LOWLOAD, EP2_PIN, GPU1, GPU1_LOWLOAD, GPU1_PIN, WARM_TOKENS
    conf = lambda r: (r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency, r.seed)  # noqa: E731
    by_conf = {conf(r): r for r in GPU1.runs + GPU1_LOWLOAD.runs}
    cold, warm = GPU1_PIN.runs[:5], GPU1_PIN.runs[5:]
    assert [conf(r) for r in cold] == [conf(r) for r in warm]
    assert {r.warm_shapes for r in cold} == {0} and {r.warm_shapes for r in warm} == {WARM_TOKENS}
    assert all(r.split == by_conf[conf(r)].split for r in GPU1_PIN.runs)
    assert len({r.name for r in GPU1_PIN.runs}) == 10
    for pinned, earlier, pins in ((EP2_PIN, EP2.runs + EP2_LOWLOAD.runs, {"none", "core"}),):
        by_conf = {conf(r): r for r in earlier}
        names = [r.name for r in pinned.runs]
        assert len(set(names)) == len(names)
        assert not set(names) & {r.name for r in earlier}
        for a, b in zip(pinned.runs[::2], pinned.runs[1::2]):
            assert conf(a) == conf(b) and {a.pin, b.pin} == pins
            src = by_conf[conf(a)]
            assert a.split == b.split == src.split
        assert [r.pin for r in pinned.runs[:4]] == ["none", "core", "core", "none"]
    assert len(EP2_PIN.runs) == 2 * len(EP2.runs + EP2_LOWLOAD.runs)
    assert EP2_PIN.runs[0].warm_shapes > 0 and {r.warm_shapes for r in EP2_PIN.runs[1:]} == {0}
    assert {r.split for r in EP2_PIN.runs[:6]} == {"holdout"}    # held-out configurations first


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s8srv_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s8srv.sh with the tiny plans on CPU (one process, then two gloo ranks)."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S8_DEVICE": "cpu", "S8_PLAN1": "tiny-pin",
           "S8_PLAN2": "tiny-ep2-pin", "S8_FORCE_EP2": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s8srv.sh"), str(tmp_path)], cwd=REPO,
                   env=env, check=True, capture_output=True, timeout=240)
    d = tmp_path / "s8srv"
    loads = _read(d / "serve_load.csv")
    assert [r["ep_size"] for r in loads] == ["1"] * 5 + ["2"] * 4
    assert [r["pin"] for r in loads] == ["none", "core", "core", "none", "none", "none", "core", "core", "none"]
    assert [r["warm_shapes"] for r in loads] == ["0"] * 4 + ["12"] + ["10"] * 4   # EP2: warmed before its first run
    assert all(int(r["num_completed"]) > 0 for r in loads)
    assert all(len(r["pin_cpus"].split(";")) == int(r["ep_size"]) for r in loads)
    its = _read(d / "serve_iterations.csv")
    assert its and all(r["host_s"] and int(r["cpu_id"]) >= 0 for r in its)
    assert (d / "host.txt").exists() and (d / "gpu1" / "env.json").exists() and (d / "ep2" / "env.json").exists()
    assert "s8srv end" in (d / "log.txt").read_text()

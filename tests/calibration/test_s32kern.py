"""Session s32kern (docs/notes/s32kern_rule.md): candidate C-k's constant comes from the s32cold probe's records alone;
it charges a warmed one-GPU H200 replay per GEMM kernel its model's map gives that the process had not launched, and
nothing where there is no complete map, under EP or off the H200."""

import csv

import pytest

from calibration import s32kern as s
from calibration import serve_eager_host as seh
from calibration import serve_load_validation as slv
from calibration.records_io import read_json
from tests.calibration.conftest import assert_cold_judgement, cold_run_replayed
from twin.serving import engine


def test_fit_recomputes_the_committed_constants_from_the_probe():
    got, committed = s.fit(), read_json(slv.COLD_KERNEL_FIT)
    assert got["points"] == committed["points"] == 42 and got["warmup_sizes"] == committed["warmup_sizes"]
    assert got["kernel_s"]["h200"] == pytest.approx(committed["kernel_s"]["h200"], rel=1e-6)
    assert got["lookup_fit_s"] == pytest.approx(committed["lookup_fit_s"], rel=1e-6) and got["lookup_pinned"]
    assert committed["lookup_s"]["h200"] == 0.0 and s.AMENDED_NO_LOOKUP   # rule amendment 1: C-k judged
    assert 0.5e-3 < committed["kernel_s"]["h200"] < 4e-3 and 2048 in committed["warmup_sizes"]


def test_cold_kernels_launched_set_and_charge_per_new_kernel():
    kmap = (frozenset(), frozenset({0}), frozenset({0, 1}), frozenset({2, 3}))
    ck = engine.ColdKernels(kmap, {1}, 2e-3, 0.0)
    assert ck.launched == {0} and ck.of(3) == {2, 3} and ck.of(99) == frozenset()
    state = type("S", (), {"cold": ck, "cold_launched": set(ck.launched), "cold_met": set(ck.met)})()
    charge = engine.Instance._cold_kernel_charge
    assert charge(state, [2]) == pytest.approx(2e-3)     # kernel 1 new
    assert charge(state, [2]) == 0.0                     # met now
    assert charge(state, [3]) == pytest.approx(4e-3)     # kernels 2 and 3 new


def _map(path, weights, sizes):
    path.mkdir(parents=True)
    with (path / "kernelmap.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["weight", "m", "kernels"])
        for name in weights:
            for m in sizes:
                w.writerow([name, m, f"k{m // 512}_{name[-2:]}" + (";splitK" if m < 8 else "")])


def test_sizes_run_before_hands_c_only_to_a_warmed_h200_session_with_a_complete_map(tmp_path, monkeypatch):
    root = tmp_path / "rec"
    _map(root / slv.COLD_KERNEL_MAPS / "m-full", ["layers.0.attn.wq_XD", "head_YD"], range(1, 2049))
    _map(root / slv.COLD_KERNEL_MAPS / "m-part", ["layers.0.attn.wq_XD"], range(1, 1000))
    monkeypatch.setattr("calibration.records.records_root", lambda: root)
    slv._CK_CACHE.clear()
    kmap = slv.cold_kernel_map("m-full")
    assert len(kmap) == 2049 and kmap[600] == kmap[1000] and kmap[600] != kmap[100]   # head_YD left out
    assert len(set().union(*kmap)) == 6 and slv.cold_kernel_map("m-part") is None

    def runs(model, gpu="NVIDIA H200", ep=1):
        base = {"model": model, "gpu_name": gpu, "ep_size": ep, "token_budget": 2048, "duration_s": 5}
        return [{**base, "run_id": "a", "warm_shapes": 336, "timestamp_utc": "2026-11-29T03:00:00Z"},
                {**base, "run_id": "b", "warm_shapes": 0, "timestamp_utc": "2026-11-29T03:00:06Z"}]
    its = [{"run_id": "a", "graph_batch": 0, "prefill_tokens": 700, "decode_seqs": 2, "rank": 0}]

    def cold(rs):
        return {k: [x for x in v if isinstance(x, engine.ColdKernels)] for k, v in slv.sizes_run_before(rs, its).items()}
    assert cold(runs("m-full")) == {"a": [], "b": []}     # off: nothing
    monkeypatch.setattr(engine, "ADOPT_COLD_KERNELS", True)
    got = cold(runs("m-full"))
    (a,), (b,) = got["a"], got["b"]
    assert 336 in a.met and 337 not in a.met and 2048 in a.met and 702 not in a.met and 702 in b.met
    assert all(v == [] for v in cold(runs("m-part")).values())
    assert all(v == [] for v in cold(runs("m-full", gpu="NVIDIA H100 80GB HBM3")).values())
    assert all(v == [] for v in cold(runs("m-full", ep=2)).values())
    slv._CK_CACHE.clear()


JUDGEMENT = read_json(slv.COLD_KERNEL_FIT.parent / "s32kern_judgement.json")
RUN = "n32k-v3s1l-poisson-early-n"


def test_the_judgement_is_its_commands_and_its_verdict_follows_the_criteria():
    assert s.JUDGED == "C-k"
    assert_cold_judgement(JUDGEMENT, s, ("C1_three_more_checks_lower_median", "C2_early_ttft_p50_no_fewer_lower_median"),
                          "ADOPT_COLD_KERNELS")


def test_one_set_n_run_replayed_live_is_the_judgements(monkeypatch):
    """n32k-v3s1l-poisson-early-n under both settings (~2 CPU-s): the same errors as the judgement file."""
    off, on = cold_run_replayed(monkeypatch, JUDGEMENT, s, "ADOPT_COLD_KERNELS", RUN)
    assert on[0]["ttft_p50_s_predicted"] > off[0]["ttft_p50_s_predicted"]   # C-k charges the process's first run


@pytest.mark.xfail(strict=True, reason="s32kern: candidate C-k not adopted (G2 missed on sets I and J; docs/notes/s32kern.md)")
def test_candidate_c_k_adopted():
    a, b = (seh.checks(JUDGEMENT["J"][k]) for k in ("None", s.JUDGED))
    (ea, eb) = JUDGEMENT["early"]
    failed = [k for k, v in JUDGEMENT["criteria"].items() if not v]
    assert JUDGEMENT["adopt"] == s.JUDGED, (
        f"set N (H200, 60 checks): in force {a[0]} met, median {a[1]:.2%} -> C-k {b[0]}, {b[1]:.2%}; early TTFT P50 "
        f"{ea[0]} -> {eb[0]} met, median {ea[1]:.2%} -> {eb[1]:.2%}; failed: {', '.join(failed)}")

"""Synthetic records: CSVs in real/bench/records.py's columns whose times come from known curves.

`synthetic_records(tmp, profile)` writes <tmp>/<gpu>/{gemm,attention,memory,moe_layer}.csv with
time_s = the twin's prediction under `profile` times a deterministic +-noise, so a fit must
recover `profile` and validation must score it near zero error.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from calibration import records as rec
from calibration.predict import gpu_spec, predict_s
from calibration.records_io import open_csv
from twin.costs.profile import GemmCurve, Profile, SeqCurve

ENV = {"gpu_name": "NVIDIA H100 80GB HBM3", "sm_clock_mhz": 1980, "torch_version": "2.9.0",
       "cuda_version": "12.8"}

TRUE = Profile(
    "h100",
    gemm={"bf16": GemmCurve(0.80, 60.0, 400.0, 300.0), "fp8-rowwise": GemmCurve(0.70, 150.0, 900.0, 500.0)},
    grouped_gemm={"bf16": GemmCurve(0.72, 40.0, 200.0, 400.0), "fp8-rowwise": GemmCurve(0.60, 120.0, 300.0, 600.0)},
    attention={"fwd": SeqCurve(0.55, 300.0), "bwd": SeqCurve(0.45, 500.0)},
    memory_eff=0.85, launch_s=6e-6, calibrated=True)
# real/'s stack: unfused eager quantization, host dispatch per op class; launch_s is the default
# profile's (not fitted: the per-repetition timing cannot separate it from host time)
TRUE = Profile(TRUE.gpu, {**TRUE.gemm, "fp8": TRUE.gemm["fp8-rowwise"]},
               {**TRUE.grouped_gemm, "fp8": TRUE.grouped_gemm["fp8-rowwise"]},
               TRUE.attention, TRUE.memory_eff, 4e-6, True,
               fp8_quant_fused=False, quant_bytes_per_elem=30.0, gather_eff=0.6,
               host_s={"op": 1.2e-5, "gemm.bf16": 3e-5, "gemm.fp8-rowwise": 4e-5, "grouped_gemm.bf16": 4e-5,
                       "grouped_gemm.fp8-rowwise": 5e-5, "attn_fwd": 2e-5, "attn_bwd": 3e-5})


def _rows():
    rows = []
    for n, k in [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]:
        for m in [128, 256, 512, 1024, 2048, 4096, 8192, 16384]:
            for p in ("bf16", "fp8-rowwise"):
                rows.append(("gemm", dict(bench="gemm", m=m, n=n, k=k, groups=1, tokens_per_group=m, precision=p, shape_tag="v3_proj")))
    for s in [1024, 2048, 4096, 8192]:
        for p in ("bf16", "fp8-rowwise"):
            rows.append(("gemm", dict(bench="gemm", m=s, n=s, k=s, groups=1, tokens_per_group=s, precision=p, shape_tag="square")))
    for n, k in [(4096, 7168), (7168, 2048), (2816, 2048), (2048, 1408)]:
        for e in [4, 8, 16, 32, 64]:
            for tpg in [128, 256, 512, 1024, 2048, 4096]:
                if e * tpg > 131072:
                    continue
                for p in ("bf16", "fp8-rowwise"):
                    rows.append(("gemm", dict(bench="grouped_gemm", m=e * tpg, n=n, k=k, groups=e, tokens_per_group=tpg,
                                              precision=p, shape_tag="expert")))
    for h in [16, 32, 128]:
        for s in [1024, 2048, 4096, 8192, 16384]:
            b = max(1, (16384 if h <= 32 else 8192) // s)
            for bench in ("attn_fwd", "attn_bwd"):
                rows.append(("attention", dict(bench=bench, model="", batch=b, seq_len=s, num_heads=h, qk_head_dim=192,
                                               v_head_dim=128, causal=True, precision="bf16")))
    for t in [1024, 4096, 16384, 65536]:
        for op, nbytes in [("copy", 4 * t * 7168), ("rmsnorm", 4 * t * 7168), ("swiglu", 12 * t * 2048), ("softmax", 8 * t * 256)]:
            rows.append(("memory", dict(bench="memory", op=op, tokens=t, width=7168, bytes_moved=nbytes)))
    for e in [16, 32, 64]:
        for t in [1024, 4096]:
            for skew, imb in [(0.0, 1.0), (1.0, 1.6)]:
                mean = t * 8 / e
                for bench in ("moe_layer_fwd", "moe_layer_bwd"):
                    for p in ("bf16", "fp8-rowwise"):
                        rows.append(("moe_layer", dict(bench=bench, model="v3-slice-1l", hidden_size=7168, moe_intermediate_size=2048,
                                                       tokens=t, num_experts=e, top_k=8, num_shared_experts=1, skew=skew,
                                                       max_expert_tokens=int(mean * imb), mean_expert_tokens=mean, precision=p)))
    return rows


def synthetic_records(root: Path, profile: Profile = TRUE, gpu: str = "h100", noise_frac: float = 0.01) -> Path:
    spec = gpu_spec(gpu)
    rng = np.random.default_rng(0)
    files: dict[str, list[dict]] = {}
    for family, row in _rows():
        row = dict(row)
        t = predict_s(row, spec, profile) * (1.0 + noise_frac * rng.uniform(-1, 1))
        row.update(time_s=t, time_p10_s=t * 0.98, time_p90_s=t * 1.02, reps=10, flops="", bytes="", **ENV)
        files.setdefault(family, []).append(row)
    out = root / gpu
    out.mkdir(parents=True, exist_ok=True)
    for family, rows in files.items():
        cols = list(dict.fromkeys(c for r in rows for c in r))
        with open(out / f"{family}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    return synthetic_records(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="session")
def synthetic_fit(synthetic_root):
    """`twin fit`'s fit_gpu on the synthetic H100 records -> (profile, stats), once per session:
    a full fit takes minutes on CI's two cores, and the recovery, provenance and validation tests
    each judge the same deterministic fit of the same records."""
    from calibration.fit import fit_gpu
    from tests import once
    # test_fit and test_validate may run on different xdist workers: one of them fits
    return once.computed("synthetic_h100_fit", lambda: fit_gpu("h100", synthetic_root))


def assert_complete_held_out_set(name: str, models, runs_per_model: int, gpu: str = "h100",
                                 gpu_name: str = "NVIDIA H100 80GB HBM3") -> None:
    """A fresh serving set as filed (records <gpu>/<name>/<model>/serve_load.csv): each model's runs all held out,
    every request completed, none truncated, every row with its GPU and versions (s25v3pre's sets F and G)."""
    for model in models:
        with open_csv(rec.MEASUREMENTS_DIR / gpu / name / model / "serve_load.csv") as f:
            runs = list(csv.DictReader(f))
        assert len(runs) == runs_per_model and all(r["split"] == "holdout" and r["model"] == model for r in runs)
        assert all(r["num_completed"] == r["num_requests"] and r["truncated"] == "0" for r in runs)
        assert all(r["gpu_name"] == gpu_name and r["torch_version"] and r["nccl_version"] for r in runs)


def assert_graph_guards_recomputed(judgement: dict, judged: str, guard_labels) -> None:
    """A serving-graph judgement's guards (s27serve rounds 1-3) recomputed from its own rows: K2 per seen set within
    the margin, K1 pooled, K3 on the committed sets, and the verdict as their conjunction."""
    from calibration import serve_start_sync as ssy   # lazy: the serving judges are heavy to import

    m = ssy.SET_MARGIN_CHECKS
    assert set(judgement["seen_sets"]) == set(guard_labels)
    for label, (a, b) in judgement["seen_sets"].items():
        assert judgement["criteria"][f"K2_set_{label}_within_{m}"] == (b[0] >= a[0] - m)
    (a, b) = judgement["pooled"]
    assert judgement["criteria"]["K1_pooled_no_fewer"] == (b[0] >= a[0])
    assert judgement["criteria"]["K1_pooled_median_no_higher"] == (b[1] <= a[1])
    summ = {k: (v["in_force"], v[judged]) for k, v in judgement["summary"].items()}
    k3 = ssy.committed_criteria({k: a for k, (a, _) in summ.items()}, {k: b for k, (_, b) in summ.items()})
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("K3")} == k3
    assert judgement["incomplete"] == []
    assert judgement["passes"] == all(judgement["criteria"].values())
    assert judgement["adopt"] == (judged if judgement["passes"] else None)


def assert_live_row_is_committed(judgement: dict, set_name: str, model: str, run: str, floor: bool = False) -> None:
    """One fresh run replayed live under the twin in force as judged equals its committed row of the judgement
    (`floor`: timing.ADOPT_GRAPH_OP_FLOOR, adopted by s28serve; every judgement up to s28serve's ran with it off)."""
    from unittest import mock

    from calibration import serve_eager_host as seh   # lazy: as above
    from calibration.serve_load_validation import FIGURES   # lazy: as above
    from twin.serving import timing

    with mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", floor):
        live = seh.set_rows(set_name, (model,), run_ids={run})
    assert len(live) == 1
    stored = next(r for r in judgement["J"]["None"] if r["run_id"] == run)
    for f in FIGURES:
        a, b = live[0][f"{f}_rel_error"], stored[f"{f}_rel_error"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), f


def assert_cold_judgement(judgement: dict, module, names: tuple[str, str], switch: str, exact: bool = False) -> None:
    """A cold-charge round's committed judgement (calibration.cold_judge: s32cold, s32kern, s33cold) is its judge
    command's on complete fresh records, carries the round's two criteria (`names`), G1, G3 and G2 on every guarded
    set (`exact`: nothing else), its verdict is their conjunction and twin.serving.engine's `switch` follows it."""
    from twin.serving import engine   # lazy: only the serving judgements' tests need the engine

    assert judgement["command"].startswith(f"python -m {module.__name__} judge") and judgement["code_commit"]
    assert judgement["candidate"] == module.JUDGED and not judgement["incomplete"]
    assert len(judgement["J"]["None"]) == len(judgement["J"][module.JUDGED]) == module.FRESH_RUNS
    crit = judgement["criteria"]
    want = {*names, "G1_issue15_no_check_lost", "G3_committed_holdout_no_fewer", "G3_with_input_holdout_no_fewer",
            *(f"G2_set_{k}_no_fewer" for k in module.GUARDED)}
    assert want == set(crit) if exact else want <= set(crit)
    assert (judgement["adopt"] == module.JUDGED) == all(crit.values())
    assert getattr(engine, switch) == (judgement["adopt"] == module.JUDGED)


def cold_run_replayed(monkeypatch, judgement: dict, module, switch: str, run: str, model: str = "v3-slice-1l"):
    """One fresh run of a cold-charge round replayed live with `switch` off and under the round's candidate: both equal
    the judgement's rows (every figure's error); returns the live (off, on) rows."""
    from calibration import serve_eager_host as seh   # lazy: as above
    from twin.serving import engine   # lazy: as above

    monkeypatch.setattr(engine, switch, False)
    off = seh.set_rows(module.FRESH, (model,), run_ids=(run,))
    with module.candidate():
        on = seh.set_rows(module.FRESH, (model,), run_ids=(run,))
    for live, key in ((off, "None"), (on, module.JUDGED)):
        (row,) = [r for r in judgement["J"][key] if r["run_id"] == run]
        for k in seh.FIGURES:
            assert live[0][f"{k}_rel_error"] == pytest.approx(row[f"{k}_rel_error"], abs=1e-9)
    return off, on

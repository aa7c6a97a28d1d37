"""Figures (not a test): docs/notes/s17cp_rule.md part C's checks of ADOPT_COMPILED_CP_ONE_GATHER
(compiled torch_allgather CP: the backward runs no K/V all-gather of its own).

1. The compiled records' NCCL kernels per repetition, by CP degree, rank and phase (s10cpc's core,
   h100x4/torch_cp_scaling; with --block FOLDER also campaign s17cp's checkpointed block): all-gathers
   and SendRecv (dK/dV hand-overs).
3. The held-out compiled CP4 core predicted with the switch off and on (calibration.torch_cp).
5. Each published torch_allgather row with cp > 1: its step off and on, the shortening, and the bound
   S x (a backward op's layers x the all-gather's seconds), S = 1 on one stage, m + p - 1 under 1F1B.
The published rows' errors off and on are printed too (criterion 4 is `twin validate --json` off
and on, compared field by field).

Usage: PYTHONPATH=. python benchmarks/compiled_cp_gather_check.py [--block FOLDER]   (a few seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from calibration import torch_cp
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from calibration.published_runs import evaluate, load_runs, scenario_of
from calibration.records_io import glob_csv, read_csv, read_csvs
from twin.costs import context_parallel
from twin.costs.profile import profile_from_json
from twin.training import step as st
from twin.training.results import Perturb

CORE_DIR = Path("calibration/measurements/h100x4/torch_cp_scaling")


def nccl_calls(kernels: pd.DataFrame) -> pd.DataFrame:
    """Calls per repetition of each NCCL kernel kind (all_gather, send_recv) by cp, rank, phase."""
    n = kernels[kernels["category"] == "nccl"].copy()
    n["kind"] = n["kernel"].map(lambda k: "all_gather" if "AllGather" in k else "send_recv" if "SendRecv" in k else k)
    return n.groupby(["cp", "rank", "phase", "kind"])["calls"].sum().unstack("kind", fill_value=0)


def check_structure(k: pd.DataFrame, cp: int) -> pd.DataFrame:
    """The NCCL calls a repetition at one CP degree, printed and returned (criteria 1 and 2 read them)."""
    calls = nccl_calls(k[pd.to_numeric(k["cp"]) == cp])
    print(calls.to_string())
    return calls


def block_reading(folder: Path) -> dict | None:
    """Part D of the rule: T(W), the slowest rank's compiled checkpointed block step at CP W
    (torch_cp_cp<W>.csv of campaign s17cp), u21 = T(2) - T(1), u42 = (T(4) - T(2)) / 2, r = u42 / u21;
    None where a CP degree is missing."""
    t = {}
    for p in glob_csv(folder, "torch_cp_cp*.csv"):
        for _, r in read_csv(p).iterrows():
            if float(r["time_s"]) > 0:
                t[int(r["cp"])] = float(r["time_s"])
    if not {1, 2, 4} <= t.keys():
        return {"T_s": t} if t else None
    u21, u42 = t[2] - t[1], (t[4] - t[2]) / 2
    return {"T_s": t, "u21_s": u21, "u42_s": u42, "r": u42 / u21}


def with_switch(on: bool, fn):
    old = context_parallel.ADOPT_COMPILED_CP_ONE_GATHER
    context_parallel.ADOPT_COMPILED_CP_ONE_GATHER = on
    st._PREPARED.clear()
    try:
        return fn()
    finally:
        context_parallel.ADOPT_COMPILED_CP_ONE_GATHER = old
        st._PREPARED.clear()


def core_predictions() -> list[dict]:
    rows, _ = torch_cp.load_scaling(CORE_DIR, compiled=True)
    profile = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    out = []
    for on in (False, True):
        for r in with_switch(on, lambda: torch_cp.scaling_table(rows, gpu_spec("h100"), profile, compiled=True)):
            out.append({"switch": on, "cp": r["cp"], "split": r["split"], "measured_ms": r["measured_s"] * 1e3,
                        "twin_ms": r["predicted_s"] * 1e3, "err": r["err"]})
    return out


def schedule_chain(sc) -> int:
    """S: the most backward ops a dependency chain crosses: 1 on one stage (one micro-batch a step
    on these rows), m + p - 1 under 1F1B."""
    p = sc.plan
    if p.pp == 1:
        return 1
    return sc.num_microbatches + p.pp - 1


def row_checks() -> list[dict]:
    runs, _ = load_runs()
    out = []
    for run in runs:
        plan = run.plan
        if plan.get("cp_kind") != "torch_allgather" or plan.get("cp", 1) == 1:
            continue
        sc = scenario_of(run)
        off = with_switch(False, lambda: (evaluate(run), st.simulate_step(sc, record_events=False).step_time_s))
        on = with_switch(True, lambda: (evaluate(run), st.simulate_step(sc, record_events=False).step_time_s))
        costs = st._prepare(sc, None, Perturb(), False)[1]
        gather_s = costs._collective_s("all_gather", costs.kv_bytes * sc.plan.cp, sc.plan.cp, costs.cp_same_node)
        layers = math.ceil(sc.model.num_layers / sc.plan.pp)
        S = schedule_chain(sc)
        shortened = off[1] - on[1]
        bound = S * layers * gather_s
        out.append({"id": run.id, "step_off_s": off[1], "step_on_s": on[1], "shortened_s": shortened,
                    "S": S, "op_removal_s": layers * gather_s, "bound_s": bound,
                    "holds": 0 < shortened <= bound + 1e-9,
                    "err_off": off[0]["rel_error"], "err_on": on[0]["rel_error"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=Path, help="campaign s17cp's records folder (torch_cp_kernels_cp*.csv)")
    args = ap.parse_args(argv)
    ok = True
    print("1. compiled core (s10cpc), NCCL kernels a repetition:")
    core = read_csvs(CORE_DIR, "torch_cp_kernels_compiled_cp*.csv")
    for cp in (2, 4):
        calls = check_structure(core, cp)
        if cp == 2:
            bwd = calls.xs("bwd", level="phase")
            c1 = bool((bwd.get("all_gather", 0) == 0).all()) and bool((bwd.get("send_recv", 0) == cp).all())
            print(f"   criterion 1 (CP2, fit): {'holds' if c1 else 'FAILS'}")
            ok &= c1
    if args.block is not None:
        blk = read_csvs(args.block, "torch_cp_kernels_cp*.csv")
        if blk.empty or not (pd.to_numeric(blk["cp"]) == 2).any():
            print("2. no CP2 block records: criterion 2 not met (the switch stays off)")
            ok = False
        else:
            print("2. compiled checkpointed block (s17cp), NCCL kernels a repetition:")
            calls = check_structure(blk, 2)
            bwd = calls.xs("bwd", level="phase")
            c2 = bool((bwd.get("all_gather", 0) == 1).all())
            print(f"   criterion 2 (CP2, fit): {'holds' if c2 else 'FAILS'}")
            ok &= c2
            if (pd.to_numeric(blk["cp"]) == 4).any():
                check_structure(blk, 4)
        reading = block_reading(args.block)
        print(f"Part D (diagnostic): {reading}")
        for p in sorted(args.block.glob("env_cp*.json")):
            e = json.loads(p.read_text())
            print(f"   {p.name}: {e.get('gpu_name')}, compiled {e.get('cp_block_compiled')}, "
                  f"error {e.get('cp_block_error', '-')}, memory {e.get('cp_block_memory')}")
    else:
        print("2. --block not given: criterion 2 not checked")
        ok = False
    print("3. compiled core predicted (err = twin / measured - 1):")
    for r in core_predictions():
        print(f"   switch {'on ' if r['switch'] else 'off'} cp{r['cp']} {r['split']:8} measured {r['measured_ms']:.1f} ms "
              f"twin {r['twin_ms']:.1f} ms {r['err']:+.1%}")
        if r["switch"] and r["cp"] == 4:
            c3 = abs(r["err"]) <= 0.05
            print(f"   criterion 3 (held-out CP4 within 5%): {'holds' if c3 else 'FAILS'}")
            ok &= c3
    print("5. published torch_allgather rows, cp > 1:")
    print(f"   {'row':22} {'step off s':>10} {'step on s':>10} {'shortened s':>11} {'S':>3} {'op removal s':>12} "
          f"{'bound s':>8} {'check':>6} {'err off':>8} {'err on':>8}")
    for r in row_checks():
        print(f"   {r['id']:22} {r['step_off_s']:10.3f} {r['step_on_s']:10.3f} {r['shortened_s']:11.4f} {r['S']:3d} "
              f"{r['op_removal_s']:12.4f} {r['bound_s']:8.4f} {'holds' if r['holds'] else 'FAILS':>6} "
              f"{r['err_off']:+8.1%} {r['err_on']:+8.1%}")
        ok &= r["holds"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

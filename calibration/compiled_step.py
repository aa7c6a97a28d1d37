"""torch.compile's gain on the torchtitan 8B rows' own step, measured, and the s31pub candidate judged on it (issue 14).

Rule: docs/notes/s31pub_rule.md (committed before campaign s31pub ran). The candidate is
twin.costs.compute.ADOPT_COMPILED_ELEMENTWISE_EFF: inside a torch.compile'd block (plan.kernels 'fused_blocks') the
elementwise kernels and an FP8 GEMM's casts run at COMPILED_ELEMENTWISE_RATIO of memory_eff, the fraction
calibration.dense_block.compiled_elementwise_ratio reads from the H100's compiled block records (eager_elementwise_eff's
estimator on compiled blocks).

The fresh set: real/campaigns/s31pub.sh, real.fsdp_memory on one GPU with Table 1's shape and options (Llama 3.1 8B cut
to N blocks, 2 x 8,192 a step, per-op SAC, flash SDPA), parts step_eager / step_compile / step_fp8. A part's figure is
the median step time of MEASURED_STEPS. The twin's prediction: simulate_step of the rows' plans (tt-8b-fsdp8, -compile,
-compile-fp8) with the model cut to the run's blocks, one GPU, 2 sequences of 8,192, on the card that ran, the switch
off and on. Criteria F1-F2 (the step), P1-P3 (the published rows), guards G1 (`--guards OFF.json ON.json`: two
`twin validate --json` files, the switch off and on) and G2 (the eager rows unmoved): the rule's.

    python -m calibration.compiled_step FOLDER [--guards OFF.json ON.json] [--json FILE]
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path


from calibration import entry
from calibration.cp_block import measured_kernel_class
from calibration.dense_block import compiled_elementwise_ratio
from calibration.published_runs import evaluate, load_runs, summarize
from calibration.records_io import glob_csv, read_csv
from twin.core.atomic import write_text
from twin.core.scenario import from_dict
from twin.costs import compute
from twin.training.step import simulate_step

MEASURED_STEPS = (3, 4, 5, 6)   # 1 compiles / warms, 2 warms; 6 is profiled (real/campaigns/s31pub.sh)
PARTS = {"step_eager": "tt-8b-fsdp8", "step_compile": "tt-8b-fsdp8-compile", "step_fp8": "tt-8b-fsdp8-compile-fp8"}
F1_MARGIN = 0.02   # the twin's compile gain (off) at least this far above the measured one
EAGER_ROWS = ("tt-8b-fsdp8", "tt-8b-fsdp128")


@contextlib.contextmanager
def switch(on: bool):
    """compute.ADOPT_COMPILED_ELEMENTWISE_EFF set to `on` for the block, restored after."""
    old = compute.ADOPT_COMPILED_ELEMENTWISE_EFF
    compute.ADOPT_COMPILED_ELEMENTWISE_EFF = on
    try:
        yield
    finally:
        compute.ADOPT_COMPILED_ELEMENTWISE_EFF = old


def gpu_key(gpu_name: str) -> str:
    return "h200" if "H200" in gpu_name else "h100"


def step_scenario(row_id: str, gpu: str, layers: int):
    """The fresh set's scenario: the row's plan on one `gpu`, the model cut to `layers` blocks, 2 x 8,192 a step."""
    run = next(r for r in load_runs()[0] if r.id == row_id)
    raw = {"name": f"s31pub-{row_id}-{layers}", "model": {"name": run.model, "num_layers": layers},
           "cluster": {"gpu": gpu, "num_gpus": 1}, "plan": dict(run.plan),
           "workload": {"seq_len": 8192, "global_batch_seqs": 2}}
    return from_dict(raw, "calibration.compiled_step")


def predicted_step_s(row_id: str, gpu: str, layers: int, on: bool) -> float:
    with switch(on):
        return simulate_step(step_scenario(row_id, gpu, layers), record_events=False, check_memory=False).step_time_s


def measured(folder: Path) -> dict:
    """Each part's rows: gpu, blocks, the step times, the median over MEASURED_STEPS, the profiled step's classes."""
    out = {}
    for part in PARTS:
        paths = glob_csv(folder / part, "fsdp_memory_r0.csv")
        if not paths:
            continue
        rows = read_csv(paths[0])
        ok = rows[(rows["status"] == "ok") & rows["step"].isin(MEASURED_STEPS)]
        res = {"gpu_name": str(rows["gpu_name"].iloc[0]), "layers": int(rows["layers"].iloc[0]),
               "step_times_s": {int(s): float(t) for s, t in zip(rows["step"], rows["step_time_s"])},
               "steps_ok": sorted(int(s) for s in rows[rows["status"] == "ok"]["step"]),
               "measured_s": float(ok["step_time_s"].median()) if len(ok) else math.nan,
               "peak_reserved_gib": float(rows["peak_reserved_bytes"].max()) / 2**30,
               "peak_allocated_gib": float(rows["peak_allocated_bytes"].max()) / 2**30,
               "alloc_retries": int(rows["num_alloc_retries"].max())}
        kpaths = glob_csv(folder / part, "fsdp_step_kernels_r0.csv")
        if kpaths:
            k = read_csv(kpaths[0])
            k = k.assign(cls=k["kernel"].astype(str).map(measured_kernel_class))
            res["profiled_classes_s"] = {c: float(v) for c, v in k.groupby("cls")["time_s"].sum().items()}
        out[part] = res
    if len(out) < len(PARTS):
        raise FileNotFoundError(f"{folder}: needs {', '.join(PARTS)} (each with fsdp_memory_r0.csv); has {sorted(out)}")
    return out


def published(on: bool) -> dict:
    with switch(on):
        rows = [evaluate(r) for r in load_runs()[0]]
    return {"rows": {r["id"]: r["rel_error"] for r in rows}, "summary": summarize(rows)}


def guards(off: dict, on: dict) -> dict:
    """G1 from two `twin validate --json` results: the sections that differ (beside inputs), the rows that moved,
    and those whose plan is not kernels 'fused_blocks'."""
    compiled = {r.id for r in load_runs()[0] if r.plan.get("kernels") == "fused_blocks"}
    sections = sorted(k for k in set(off) | set(on) if k != "inputs" and off.get(k) != on.get(k))
    rows_off = {r["id"]: r for r in off["published_runs"]["rows"]}
    moved = sorted(r["id"] for r in on["published_runs"]["rows"] if r != rows_off.get(r["id"]))
    outside = [k for k in moved if k not in compiled]
    return {"sections_changed": sections, "rows_moved": moved, "rows_moved_outside": outside,
            "G1": sections in ([], ["published_runs"]) and not outside}


def judge(folder: Path | str, validate_pair: tuple[dict, dict] | None = None) -> dict:
    folder = Path(folder)
    meas = measured(folder)
    gpu = gpu_key(meas["step_eager"]["gpu_name"])
    layers = meas["step_eager"]["layers"]
    steps = {}
    for part, row_id in PARTS.items():
        off, on = predicted_step_s(row_id, gpu, layers, False), predicted_step_s(row_id, gpu, layers, True)
        m = meas[part]["measured_s"]
        steps[part] = {**meas[part], "row": row_id, "twin_off_s": off, "twin_on_s": on,
                       "rel_error_off": off / m - 1.0, "rel_error_on": on / m - 1.0}
    gain = {k: steps["step_eager"][k] / steps["step_compile"][k] for k in ("measured_s", "twin_off_s", "twin_on_s")}
    fp8_gain = {k: steps["step_compile"][k] / steps["step_fp8"][k] for k in ("measured_s", "twin_off_s", "twin_on_s")}
    f1 = gain["measured_s"] <= gain["twin_off_s"] - F1_MARGIN
    f2 = (abs(gain["twin_on_s"] - gain["measured_s"]) < abs(gain["twin_off_s"] - gain["measured_s"])
          and all(abs(steps[p]["rel_error_on"]) < abs(steps[p]["rel_error_off"]) for p in ("step_compile", "step_fp8")))
    pub_off, pub_on = published(False), published(True)
    so, sn = pub_off["summary"], pub_on["summary"]
    within_off = {k for k, e in pub_off["rows"].items() if e is not None and abs(e) <= 0.10}
    left = sorted(k for k in within_off if pub_on["rows"][k] is None or abs(pub_on["rows"][k]) > 0.10)
    eager_moved = [k for k in EAGER_ROWS if pub_on["rows"][k] != pub_off["rows"][k]]
    crit = {"F1": f1, "F2": f2,
            "P1": sn["median_abs_rel_error"] <= so["median_abs_rel_error"],
            "P2": sn["num_within_row_target"] >= so["num_within_row_target"],
            "P3": not left, "G2": not eager_moved}
    res = {"folder": str(folder), "gpu": gpu, "gpu_name": meas["step_eager"]["gpu_name"], "layers": layers,
           "measured_steps": list(MEASURED_STEPS), "ratio": compute.COMPILED_ELEMENTWISE_RATIO,
           "ratio_from_records": compiled_elementwise_ratio("h100"), "steps": steps,
           "compile_gain": gain, "fp8_gain_over_compile": fp8_gain,
           "published_gain": {"compile_8": 6667 / 5762, "compile_128": 6514 / 5605, "fp8_8": 8532 / 6667,
                              "fp8_128": 8380 / 6514},
           "published_off": pub_off, "published_on": pub_on, "left_10pct": left, "eager_rows_moved": eager_moved,
           "criteria": crit}
    if validate_pair is not None:
        res["guards"] = guards(*validate_pair)
        crit["G1"] = res["guards"]["G1"]
    res["adopt"] = all(crit.values()) and "G1" in crit
    return res


def show(res: dict) -> None:
    print(f"{res['folder']}: {res['gpu_name']}, {res['layers']} blocks; "
          f"figure = median of steps {res['measured_steps']}")
    for part, s in res["steps"].items():
        times = ", ".join(f"{k}: {v:.4f}" for k, v in s["step_times_s"].items())
        print(f"  {part} ({s['row']}): measured {s['measured_s']:.4f} s  twin off {s['twin_off_s']:.4f} "
              f"({s['rel_error_off']:+.2%})  on {s['twin_on_s']:.4f} ({s['rel_error_on']:+.2%}); steps {times}; "
              f"reserved {s['peak_reserved_gib']:.1f} GiB, retries {s['alloc_retries']}")
        if "profiled_classes_s" in s:
            print("    profiled step: " + ", ".join(f"{c} {v:.4f}" for c, v in sorted(s["profiled_classes_s"].items())))
    g, f, pg = res["compile_gain"], res["fp8_gain_over_compile"], res["published_gain"]
    print(f"  compile gain: measured {g['measured_s']:.4f}, twin off {g['twin_off_s']:.4f}, on {g['twin_on_s']:.4f} "
          f"(published rows {pg['compile_8']:.3f} / {pg['compile_128']:.3f})")
    print(f"  Float8 gain over compile: measured {f['measured_s']:.4f}, twin off {f['twin_off_s']:.4f}, on "
          f"{f['twin_on_s']:.4f} (published {pg['fp8_8']:.3f} / {pg['fp8_128']:.3f})")
    so, sn = res["published_off"]["summary"], res["published_on"]["summary"]
    print(f"  published_runs: median {so['median_abs_rel_error']:.2%} -> {sn['median_abs_rel_error']:.2%}, within 10% "
          f"{so['num_within_row_target']} -> {sn['num_within_row_target']}; left 10%: {res['left_10pct'] or 'none'}")
    for k, e in res["published_off"]["rows"].items():
        e2 = res["published_on"]["rows"][k]
        if e is not None and e2 != e:
            print(f"    {k:28} {e:+.2%} -> {e2:+.2%}")
    if "guards" in res:
        gd = res["guards"]
        print(f"  G1: sections changed {gd['sections_changed']}, rows moved outside the compiled ones "
              f"{gd['rows_moved_outside'] or 'none'}")
    print("  criteria: " + ", ".join(f"{k} {v}" for k, v in res["criteria"].items()) + f" -> adopt {res['adopt']}")


def main(argv=None) -> int:
    ap = entry.parser("calibration.compiled_step", __doc__)
    ap.add_argument("folder", type=entry.folder,
                    help="the campaign's s31pub folder (step_eager, step_compile, step_fp8)")
    ap.add_argument("--guards", nargs=2, type=Path, metavar=("OFF.json", "ON.json"), default=None,
                    help="two `twin validate --json` files, the switch off and on (the rule's G1)")
    ap.add_argument("--json", type=Path, default=None, help="write the judgement here")
    args = ap.parse_args(argv)
    pair = None
    if args.guards:
        with entry.user_inputs("--guards", args.guards, "two `twin validate --json` files"):
            pair = tuple(json.loads(Path(p).read_text()) for p in args.guards)
    with entry.user_inputs("folder", args.folder, "a folder holding step_eager/, step_compile/, step_fp8/"):
        res = judge(args.folder, pair)
    show(res)
    if args.json:
        write_text(args.json, json.dumps(res, indent=1, sort_keys=True, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An EP step's forward host time, mark by mark, beside the twin's forward (issue 13, s13ep).

    python -m calibration.ep_host_compare MARKS_FOLDER [--records ROOT] [--gpu h200] [--json]

MARKS_FOLDER: a `real.pipeline --host-marks` folder (marks_host/ or marks_events/); the split of each
forward's host interval is calibration.ep_host's (issue, collective calls, .tolist() waits; with
CUDA events the waits' local / all-to-all+peer / return). `--records ROOT` (a records root, as every script's:
calibration/measurements for the committed records; until s28prod the <gpu>x2 folder itself): its <gpu>x2 folder
is the one whose host rates, collectives and profile the twin takes: the same configuration's forward op list
(calibration.pipeline.stage_ops) replayed from level (ep_host.twin_forward). Prints per
configuration the medians over ranks, steps and forwards (ms), and the backward's all-to-all calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import calibration.pipeline as pipe
from calibration import entry
from calibration import records as rec
from calibration.ep_host import (CONFIG_KEYS, GROUPS, backward_calls, between_syncs, forward_segments,
                                 forward_summary, load, measured_groups, sync_split, twin_forward, twin_groups)
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives
from twin.core.schedules import build_schedule


def twin_forward_of(records: Path, gpu: str, cfg: dict) -> dict:
    """twin_forward of a configuration's forward on the committed records folder `records` (its
    host rates, accumulate rates and collectives, the fitted profile of `gpu`)."""
    prof, _ = load_fitted_profile(gpu, rec.load_records(gpu), PROFILES_DIR)
    prof = with_measured_collectives(prof, records)
    acc = pipe.measured_accumulate(records, gpu)
    host = pipe.measured_host_s(records, gpu, prof, acc) or {}
    spec = pipe._spec_of({"model": cfg["model"], "num_layers": pipe._num_layers(records, cfg)})
    n, pp, ep = int(cfg["num_microbatches"]), int(cfg["pp"]), int(cfg["ep"])
    schedule = build_schedule("1f1b" if pp == 1 else str(cfg["schedule"]), pp, n)
    stages = pipe.stage_layers(spec.num_layers, schedule.num_model_stages)
    if pp == 1 and ep > 1 and "fwd_ep" in host:
        host = {**host, "fwd": host["fwd_ep"]}
    ops = pipe.stage_ops(spec, stages[0], True, len(stages) == 1, int(cfg["micro_batch_seqs"]), int(cfg["seq_len"]),
                         str(cfg["precision"]), gpu_spec(gpu), prof, ep, (n - 1) / n, acc, host)
    out = twin_forward(ops.f, 0.0, host.get("device_gap", 0.0))
    out["launches"] = sum(1 for h, _ in ops.f if h is not None)
    out["groups"] = twin_groups(ops.f)
    out["fwd_rate_s"] = host.get("fwd")
    return out


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.ep_host_compare", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fit-only", action="store_true", help="the fitting split's configurations only")
    args = ap.parse_args(argv)
    try:
        marks, ops = load(args.folder)
        if args.fit_only:
            marks, ops = marks[marks["split"] == "fit"], ops[ops["split"] == "fit"]
    except FileNotFoundError as e:
        print(f"folder: {e} not found (a real.pipeline --host-marks folder holds ep_host_marks.csv)", file=sys.stderr)
        return 2
    segments = forward_segments(marks, ops)
    summary = forward_summary(segments, sync_split(marks), between_syncs(marks, ops))
    rows = summary.to_dict("records")
    groups = measured_groups(segments)
    names = list(GROUPS) + ["after"]
    for r in rows:
        g = groups[(groups["num_microbatches"] == r["num_microbatches"]) & (groups["split"] == r["split"])]
        r["groups_first"] = g[g["layer"] == 0][list(GROUPS)].median().to_dict()
        r["groups_mid"] = g[g["layer"] > 0][list(GROUPS)].median().to_dict()
        r["groups_mid"]["after"] = float(g["after"].median()) if "after" in g else float("nan")
    bwd = backward_calls(marks, ops)
    if not bwd.empty:
        med = bwd.groupby(CONFIG_KEYS + ["split"])[["host", "calls", "call_s"]].median().reset_index()
        for r in rows:
            hit = med[(med["num_microbatches"] == r["num_microbatches"]) & (med["split"] == r["split"])]
            if len(hit):
                r["backward"] = hit.iloc[0][["host", "calls", "call_s"]].astype(float).to_dict()
    if getattr(args, entry.RECORDS_DEST) is not None:   # --records DIR: the twin's side from that records root
        for r in rows:
            r["twin"] = twin_forward_of(rec.records_root() / f"{args.gpu}x2", args.gpu, r)
    if args.json:
        print(json.dumps(rows, indent=1, default=float))
        return 0
    for r in rows:
        print(f"{r['model']} pp{r['pp']} ep{r['ep']} n={r['num_microbatches']} ({r['split']}): forward host "
              f"{r['host'] * 1e3:.2f} ms = issue {r.get('issue', 0) * 1e3:.2f} + collective calls "
              f"{r.get('collective', 0) * 1e3:.2f} + waits {r.get('wait', 0) * 1e3:.2f}")
        segs = {k[4:]: v for k, v in r.items() if k.startswith("seg_") and v == v}
        print("   segments (ms): " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in segs.items()))
        if "sync_local" in r and r["sync_local"] == r["sync_local"]:
            print(f"   send-splits waits (ms): local GPU {r['sync_local'] * 1e3:.2f}, all-to-all + peer "
                  f"{r['sync_a2a_peer'] * 1e3:.2f} (peer later by {r['sync_peer_late'] * 1e3:.2f}), return "
                  f"{r['sync_return'] * 1e3:.2f}")
        if "backward" in r:
            bw = r["backward"]
            print(f"   backward: host {bw['host'] * 1e3:.2f} ms, {bw['calls']:.0f} all-to-all calls "
                  f"{bw['call_s'] * 1e3:.2f} ms ({bw['call_s'] / max(bw['calls'], 1) * 1e6:.0f} us each)")
        if "between_first" in r:
            print(f"   between syncs (ms): first {r['between_first'] * 1e3:.2f}, per later layer "
                  f"{r['between_mid'] * 1e3:.2f}, last {r['between_last'] * 1e3:.2f}")
        print("   per MoE layer, host ms (layer 0 / median of the later layers / the twin's later layer):")
        tg = r.get("twin", {}).get("groups", [])
        for name in names:
            twin = tg[-1].get(name, float("nan")) if tg and name == "after" else (
                tg[1].get(name, float("nan")) if len(tg) > 1 else float("nan"))
            print(f"     {name:13} {r['groups_first'].get(name, float('nan')) * 1e3:7.3f} "
                  f"{r['groups_mid'].get(name, float('nan')) * 1e3:7.3f}   twin {twin * 1e3:7.3f}")
        if "twin" in r:
            t = r["twin"]
            b = t["between_s"]
            mids = b[2:-1:2]
            print(f"   twin between syncs (ms): first {b[0] * 1e3:.2f}, per later layer "
                  f"{float(np.median(mids)) * 1e3 if mids else float('nan'):.2f}, last {b[-1] * 1e3:.2f}")
            print(f"   twin: host {t['host_s'] * 1e3:.2f} ms = launches {t['launch_s'] * 1e3:.2f} "
                  f"({t['launches']} at {t['fwd_rate_s'] * 1e6:.1f} us) + waits {t['wait_s'] * 1e3:.2f}; "
                  f"GPU ends {t['gpu_s'] * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The host's dispatch speed as an input of a host-bound record's prediction, like the SM clock
(issue 13, session s9mla): each MLA layer record of real/campaigns/s9mla.sh (mla_paired.csv,
real/bench/mla_paired.py) is taken right after a probe block (chains of 64 small ops by dispatch
class) and right before the next one; its host time per kernel is predicted from those probes,
never from the record's own time.

The probe of a class is not the layer's rate (a layer's kernels carry more Python and autograd
work each than a chain's), so the mapping is calibrated on the fitting split only: per round,
the fitting MLA host rows (V3-slice, BF16 layers for fwd / bwd, every layer for infer:
layer_gaps.host_rates_of) over the probe block beside them give k = layer rate / probe rate per
class; k is the median over rounds. A record's rates are k times the mean of its two bracketing
probe blocks (RATE_PROBES: which probe class stands for which rate):
  fwd    autograd recording a forward          probe `mul` `record`
  bwd    the autograd engine's backward        probe `mul` `engine`
  infer  no-grad (and inside autograd.Functions, predict.NoGradHost)   probe `mul` `nograd`

`python -m calibration.host_probe FILE --gpu h100` prints, for the held-out records, median / P90
|error| under three host inputs: the committed profile's rates (`profile`), the run's own fitting
host rows (`run`: one rate per class for the whole run) and each record's probes (`paired`),
over every round and over each record's median round (as committed records are chosen)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration.layer_gaps import host_rates_of
from calibration.predict import gpu_spec, predict_s
from calibration.records import _case_name
from calibration.split import is_held_out
from calibration.records_io import csv_exists, read_csv
from twin.costs.profile import Profile, fitted_profile

RATE_PROBES = {"fwd": ("mul", "record"), "bwd": ("mul", "engine"), "infer": ("mul", "nograd")}
PAIRED_FILE = "mla_paired.csv"    # calibration/measurements/<gpu>/, from real/campaigns/s9mla.sh
# set before any paired record existed (s9mla, 2026-11-26): the probes stand for the host's speed only
# if, on the FITTING host rows, each class's layer rate over its bracketing probes (k) varies at most
# this much (max / min) across the rounds; otherwise the file is a diagnostic and the layer records
# of attention.csv stay the validated ones
TRACK_SPREAD = 1.2
INPUTS = ("profile", "run", "paired")
RECORD_KEY = ["bench", "model", "batch", "seq_len", "precision"]


def load_paired(path: Path | str) -> pd.DataFrame:
    df = read_csv(path)
    return df.assign(tokens=df["batch"] * df["seq_len"])


def paired_from_rounds(folder: Path | str) -> pd.DataFrame:
    """An s8mla run's raw rounds (real/campaigns/s8mla.sh: DIR/round<i>/{host_class,host_dispatch,
    attention}.csv) in mla_paired's form: one probe block a round, at its start (`pair` = round),
    beside every host row and record of that round."""
    frames = []
    for d in sorted(Path(folder).glob("round*"), key=lambda p: int(p.name[5:])):
        i = int(d.name[5:])
        for name in ("host_class", "host_dispatch", "attention"):
            if csv_exists(d / f"{name}.csv"):
                frames.append(read_csv(d / f"{name}.csv").assign(round=i, pair=i))
    if not frames:
        raise FileNotFoundError(f"{folder}: no round<i>/ folders of real/campaigns/s8mla.sh")
    df = pd.concat(frames, ignore_index=True)
    df = df[~df["bench"].isin(["attn_fwd", "attn_bwd"])]
    return df.assign(tokens=df["batch"] * df["seq_len"])


def probe_blocks(paired: pd.DataFrame) -> pd.DataFrame:
    """Per probe block (`pair`): its round and, per rate (RATE_PROBES), the probe's host seconds per op."""
    p = paired[paired["bench"] == "host_class"]
    out = {}
    for rate, (op, phase) in RATE_PROBES.items():
        s = p[(p["op"] == op) & (p["phase"] == phase)]
        out[rate] = (s["host_s"] / s["n_ops"]).groupby(s["pair"]).median()
    blocks = pd.DataFrame(out)
    blocks["round"] = p.groupby("pair")["round"].first()
    return blocks.dropna()


def bracket(blocks: pd.DataFrame, pair: int) -> pd.Series:
    """The probes around a record: the mean of its block and the next one of the same round (the
    block alone where the round ended there)."""
    here = blocks.loc[pair]
    nxt = blocks.loc[pair + 1] if pair + 1 in blocks.index else None
    if nxt is not None and nxt["round"] == here["round"]:
        return (here[list(RATE_PROBES)] + nxt[list(RATE_PROBES)]) / 2
    return here[list(RATE_PROBES)]


def probe_scales(paired: pd.DataFrame, gpu: str, profile: Profile) -> dict:
    """{rate: k}: the fitting host rows' rate per kernel over their own probes, median over rounds."""
    return {r: float(np.median(v)) for r, v in _round_scales(paired, gpu, profile).items()}


def probe_tracking(paired: pd.DataFrame, gpu: str, profile: Profile) -> dict:
    """{rate: max / min over rounds of k}: how closely the probes follow the fitting host rows."""
    return {r: float(max(v) / min(v)) for r, v in _round_scales(paired, gpu, profile).items()}


def _round_scales(paired: pd.DataFrame, gpu: str, profile: Profile) -> dict:
    blocks, ks = probe_blocks(paired), {r: [] for r in RATE_PROBES}
    host = paired[(paired["bench"] == "host_dispatch") & (paired["split"] == "fit")]
    for _, rows in host.groupby("round"):
        rates = host_rates_of(rows, gpu, None, profile)
        probe = bracket(blocks, int(rows["pair"].iloc[0]))
        for r in RATE_PROBES:
            if r in rates:
                ks[r].append(rates[r] / probe[r])
    return {r: v for r, v in ks.items() if v}


def record_rates(paired: pd.DataFrame, gpu: str, profile: Profile) -> dict:
    """{pair: {rate: host seconds per kernel}} of every record's probes (probe_scales x bracket)."""
    k, blocks = probe_scales(paired, gpu, profile), probe_blocks(paired)
    pairs = paired.loc[paired["bench"].str.startswith("mla_layer"), "pair"].unique()
    return {int(p): {r: k[r] * float(bracket(blocks, int(p))[r]) for r in k} for p in pairs}


def _with_host(profile: Profile, rates: dict) -> Profile:
    return dataclasses.replace(profile, eager={**(profile.eager or {}), "host_s": {**(profile.eager or {}).get("host_s", {}),
                                                                                   **rates}})


def predict_records(paired: pd.DataFrame, gpu: str, profile: Profile, inputs: str) -> pd.DataFrame:
    """Every MLA layer record of the run with its prediction under `inputs` (INPUTS)."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs {inputs!r}: one of {INPUTS}")
    spec = gpu_spec(gpu)
    recs = paired[paired["bench"].str.startswith("mla_layer")].copy()
    if inputs == "run":
        host = paired[(paired["bench"] == "host_dispatch") & (paired["split"] == "fit")]
        run_prof = _with_host(profile, host_rates_of(host, gpu, None, profile))
    per_pair = record_rates(paired, gpu, profile) if inputs == "paired" else {}
    preds = []
    for _, r in recs.iterrows():
        prof = {"profile": profile, "run": run_prof if inputs == "run" else None,
                "paired": _with_host(profile, per_pair.get(int(r["pair"]), {}))}[inputs]
        preds.append(predict_s(r, spec, prof))
    recs["predicted_s"] = preds
    recs["rel_error"] = recs["predicted_s"] / recs["time_s"] - 1.0
    recs["held_out"] = [is_held_out(r) for _, r in recs.iterrows()]
    return recs


def median_rounds(recs: pd.DataFrame) -> pd.DataFrame:
    """Each record's round with the median time (the lower median), as committed records are chosen."""
    keep = [g.index[(len(g) - 1) // 2] for _, g in recs.sort_values("time_s").groupby(RECORD_KEY)]
    return recs.loc[keep]


def held_out_summary(recs: pd.DataFrame) -> dict:
    e = recs.loc[recs["held_out"], "rel_error"].abs()
    return {"num_cases": int(len(e)), "median_abs_rel_error": float(e.median()) if len(e) else None,
            "p90_abs_rel_error": float(e.quantile(0.9)) if len(e) else None}


def evaluate(paired: pd.DataFrame, gpu: str, profile: Profile) -> dict:
    """{inputs: {"every_round": summary, "median_round": summary}} of the held-out records."""
    out = {}
    for inputs in INPUTS:
        recs = predict_records(paired, gpu, profile, inputs)
        out[inputs] = {"every_round": held_out_summary(recs), "median_round": held_out_summary(median_rounds(recs))}
    return out


def committed_paired(root: Path | str, gpu: str, profile: Profile) -> dict | None:
    """The paired MLA records committed for a GPU (PAIRED_FILE), None without one: `tracking`
    (probe_tracking), `adopted` (every class within TRACK_SPREAD), and `cases`: each record's median
    round predicted from its own probes, in calibration.validate's case form."""
    path = Path(root) / gpu / PAIRED_FILE
    if not csv_exists(path):
        return None
    paired = load_paired(path)
    tracking = probe_tracking(paired, gpu, profile)
    adopted = set(tracking) == set(RATE_PROBES) and all(v <= TRACK_SPREAD for v in tracking.values())
    recs = median_rounds(predict_records(paired, gpu, profile, "paired"))
    cases = [{"name": _case_name(r), "gpu": gpu, "bench": r["bench"], "kind": "mla_layer", "num_gpus": 1,
              "measured_s": float(r["time_s"]), "predicted_s": float(r["predicted_s"]),
              "rel_error": float(r["rel_error"]), "held_out": bool(r["held_out"])} for _, r in recs.iterrows()]
    return {"tracking": tracking, "adopted": adopted, "cases": cases}


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.host_probe", description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path, help="mla_paired.csv of real/campaigns/s9mla.sh, or an s8mla run's folder "
                                            "(round<i>/ inside: one probe block a round)")
    ap.add_argument("--gpu", required=True, choices=("h100", "h200"))
    ap.add_argument("--cases", action="store_true", help="also every held-out record under each input")
    args = ap.parse_args(argv)
    if not (csv_exists(args.file) or args.file.is_dir()):
        print(f"file: {args.file} does not exist (expected real/campaigns/s9mla.sh's mla_paired.csv or an s8mla folder)")
        return 2
    prof = fitted_profile(args.gpu)   # the committed profile (calibration/validate.py predicts with it)
    paired = load_paired(args.file) if csv_exists(args.file) else paired_from_rounds(args.file)
    print(f"probe scales (layer rate / probe rate, fitting rows): "
          f"{ {r: round(v, 2) for r, v in probe_scales(paired, args.gpu, prof).items()} }; their spread over rounds "
          f"(max / min, the criterion <= {TRACK_SPREAD}): "
          f"{ {r: round(v, 2) for r, v in probe_tracking(paired, args.gpu, prof).items()} }")
    for inputs, s in evaluate(paired, args.gpu, prof).items():
        for which, v in s.items():
            print(f"{inputs:8} {which:13} held-out n={v['num_cases']:3d} median {v['median_abs_rel_error']:.1%} "
                  f"P90 {v['p90_abs_rel_error']:.1%}")
    if args.cases:
        table = pd.concat({i: predict_records(paired, args.gpu, prof, i).set_index(["round", *RECORD_KEY])["rel_error"]
                           for i in INPUTS}, axis=1)
        held = predict_records(paired, args.gpu, prof, "profile").set_index(["round", *RECORD_KEY])["held_out"]
        print(table[held].round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The s24probe rule's figures (docs/notes/s24probe_rule.md): which host-speed probe predicts the eager steps' host
time across fresh hosts (issues 13 and 15). Analysis of real/campaigns/s24probe.sh's records, no fit beyond the rule's
per-case constant.

Per host h (a folder calibration/measurements/<gpu>/s24probe_<n>/, n its order by start time) and case c (bench,
model, batch, prompt length):
  T(h, c)  the median host seconds of the call over the case's timed steps (serve_steps.csv, control and probed)
  P(h, c)  a candidate's value at the case: the mean of the two probe sets around it (host_probes.csv, sets k and k + 1
           for steps of config `set<k>`); for OLD (the old protocol) the median of the case's per-step 3 ms probes
  r(h, c)  T / P
Choice on the fitting hosts (1 and 2): the candidate with the smallest D = median over cases of |ln r(2, c) / r(1, c)|;
k(c) = sqrt(r(1, c) r(2, c)). Judged on hosts 3+: error k(c) P(h, c) / T(h, c) - 1 (J1, J2), and the across-host
spread max_h r / min_h r - 1 over all hosts (J3).
Run: python -m calibration.step_probe
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv

OLD = "launch_3ms_step"          # host_steps' protocol: a 3 ms launch probe right before each probed step
CANDIDATES = (OLD, "launch_3ms", "launch", "mix", "refmodel", "cpuop", "py")   # real/serve/stepprobe.CANDIDATES + OLD
CASE_KEY = ["bench", "model", "batch", "prompt_len"]
FIT_HOSTS = (1, 2)
MIN_CASES = 12                   # a host with fewer cases is dropped (the rule's guard)
J1_MEDIAN_GAIN = 0.02
J2_MEDIAN_SLACK = 0.01
J3_SPREAD_BOUND = 0.10
FOLDER = re.compile(r"s24probe_(\d+)$")


def host_folders(root: Path | None = None) -> list[tuple[int, str, Path]]:
    """(n, gpu, folder) of every committed s24probe host, by n."""
    root = rec.records_root() if root is None else root
    found = []
    for gpu_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for sub in gpu_dir.iterdir():
            m = FOLDER.fullmatch(sub.name)
            if m and csv_exists(sub / "host_probes.csv") and csv_exists(sub / "serve_steps.csv"):
                found.append((int(m[1]), gpu_dir.name, sub))
    return sorted(found)


def case_values(probes: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per case: T (`host_s`) and every candidate's P (columns CANDIDATES)."""
    sets = probes.pivot_table(index="set", columns="candidate", values="host_s_per_unit", aggfunc="first")
    rows = []
    for key, grp in steps[steps["bench"].isin(["prefill", "decode"])].groupby(CASE_KEY + ["config"], sort=False):
        k = int(str(key[-1]).removeprefix("set"))
        row = dict(zip(CASE_KEY, key[:-1]))
        row["host_s"] = grp["host_s"].median()
        row[OLD] = grp.loc[grp["block"] == "probed", "host_probe_launch_s"].median()
        for name in CANDIDATES[1:]:
            row[name] = (sets.loc[k, name] + sets.loc[k + 1, name]) / 2 if k + 1 in sets.index else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def all_hosts(root: Path | None = None) -> pd.DataFrame:
    """case_values of every host with >= MIN_CASES cases, with columns host (n) and gpu."""
    root = rec.records_root() if root is None else root
    frames = []
    for n, gpu, folder in host_folders(root):
        cases = case_values(read_csv(folder / "host_probes.csv"), read_csv(folder / "serve_steps.csv"))
        cases = cases.dropna(subset=["host_s"])
        if len(cases) >= MIN_CASES:
            frames.append(cases.assign(host=n, gpu=gpu))
        else:
            print(f"s24probe host {n} ({gpu}): {len(cases)} cases < {MIN_CASES}, dropped", file=sys.stderr)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ratios(data: pd.DataFrame, name: str) -> pd.DataFrame:
    """r = T / P of candidate `name`, cases x hosts."""
    return data.assign(r=data["host_s"] / data[name]).pivot_table(index=CASE_KEY, columns="host", values="r")


def fit_distance(r: pd.DataFrame, hosts=FIT_HOSTS) -> float:
    """D: median over cases of |ln(r(h2) / r(h1))| on the two fitting hosts."""
    a, b = hosts
    return float(np.nanmedian(np.abs(np.log(r[b] / r[a]))))


def case_constants(r: pd.DataFrame, hosts=FIT_HOSTS) -> pd.Series:
    """k(c): the geometric mean of r over the fitting hosts."""
    return np.exp(np.log(r[list(hosts)]).mean(axis=1))


def held_out_errors(r: pd.DataFrame, k: pd.Series, hosts=FIT_HOSTS) -> pd.DataFrame:
    """Prediction error k P / T - 1 = k / r - 1 on every host after the fitting ones, cases x hosts."""
    later = [h for h in r.columns if h not in hosts]
    return r[later].rdiv(k, axis=0) - 1.0


def spread(r: pd.DataFrame) -> pd.Series:
    """Per case, max over hosts of r / min - 1."""
    return r.max(axis=1) / r.min(axis=1) - 1.0


def summary(data: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: D, the held-out pooled median / P90 |error|, each held-out host's median |error|, the
    median spread over all hosts."""
    rows = []
    for name in CANDIDATES:
        r = ratios(data, name)
        row = {"candidate": name, "D": fit_distance(r), "spread_median": float(spread(r).median())}
        err = held_out_errors(r, case_constants(r)).abs()
        pooled = err.stack()
        row["heldout_median"] = float(pooled.median()) if len(pooled) else math.nan
        row["heldout_p90"] = float(pooled.quantile(0.9)) if len(pooled) else math.nan
        for h in err.columns:
            row[f"host{h}_median"] = float(err[h].median())
        rows.append(row)
    return pd.DataFrame(rows).set_index("candidate")


def verdict(table: pd.DataFrame) -> dict:
    """The rule: the chosen candidate (smallest D) and J1-J3 against OLD. Not judged without a held-out host."""
    chosen = str(table["D"].idxmin())
    out = {"chosen": chosen}
    hosts = [c for c in table.columns if c.startswith("host") and c.endswith("_median")]
    if not hosts:
        return {**out, "judged": False}
    c, o = table.loc[chosen], table.loc[OLD]
    out["J1"] = bool(c["heldout_median"] <= o["heldout_median"] - J1_MEDIAN_GAIN and c["heldout_p90"] <= o["heldout_p90"])
    out["J2"] = bool(all(c[h] <= o[h] + J2_MEDIAN_SLACK for h in hosts))
    out["J3"] = bool(c["spread_median"] <= J3_SPREAD_BOUND and c["spread_median"] < o["spread_median"])
    out["judged"] = True
    out["wins"] = chosen != OLD and out["J1"] and out["J2"] and out["J3"]
    return out


@entry.script
def main(argv: list[str] | None = None) -> int:
    entry.parser("calibration.step_probe", __doc__).parse_args(argv)
    data = all_hosts(rec.records_root())
    if data.empty or data["host"].nunique() < 2:
        print("s24probe: fewer than two hosts committed; nothing to choose")
        return 0
    hosts = data.groupby("host")["gpu"].first()
    print("hosts: " + ", ".join(f"{h} ({g})" for h, g in hosts.items()))
    table = summary(data)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(4).to_string())
    print(verdict(table))
    each = each_hosts(rec.records_root())
    if not each.empty:
        print("candidate 2 (per-step kinds), S = median over cases of std ln(host / probe):")
        print(each_scatter(each).round(4).to_string())
        print(each_verdict(each))
        if each["host"].nunique() > 1:
            print("candidate 2, reported: median |k / r - 1| on later hosts (k: the first host's r per case and kind):")
            print(each_cross_host(each).round(4).to_string())
    return 0



# Candidate 2 (docs/notes/s24probe_rule.md "Candidate 2"): a rotating-kind probe right before each step.
EACH_KINDS = ("launch", "mix", "refmodel", "cpuop", "py")   # real/serve/stepprobe.EACH_KINDS
EACH_FOLDER = re.compile(r"s24probe2_(\d+)$")
E1_FACTOR = 0.9


def each_hosts(root: Path | None = None) -> pd.DataFrame:
    """Every committed s24probe2 host's probe_steps rows, with columns host (n) and gpu."""
    root = rec.records_root() if root is None else root
    frames = []
    for gpu_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for sub in gpu_dir.iterdir():
            m = EACH_FOLDER.fullmatch(sub.name)
            if m and csv_exists(sub / "probe_steps.csv"):
                frames.append(read_csv(sub / "probe_steps.csv").assign(host=int(m[1]), gpu=gpu_dir.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def each_scatter(steps: pd.DataFrame) -> pd.DataFrame:
    """S(h, c, q): the standard deviation of ln(host_s / probe) over a case's steps of one kind; hosts x kinds of
    the median over cases (rows: host; columns: kinds)."""
    s = steps.assign(lr=np.log(steps["host_s"] / steps["probe_s_per_unit"]))
    per_case = s.groupby(["host"] + CASE_KEY + ["kind"])["lr"].std().rename("S").reset_index()
    return per_case.pivot_table(index="host", columns="kind", values="S", aggfunc="median")[list(EACH_KINDS)]


def each_verdict(steps: pd.DataFrame) -> dict:
    """Candidate 2's rule: the kind with the smallest S on the first host; E1, E2 against launch on the later ones."""
    table = each_scatter(steps)
    first = table.index.min()
    chosen = str(table.loc[first].idxmin())
    later = [h for h in table.index if h != first]
    out = {"chosen": chosen, "S_first": table.loc[first].round(4).to_dict()}
    if not later:
        return {**out, "judged": False}
    s = steps[steps["host"].isin(later)].assign(lr=lambda d: np.log(d["host_s"] / d["probe_s_per_unit"]))
    pooled = s.groupby(["host"] + CASE_KEY + ["kind"])["lr"].std().groupby("kind").median()
    out["E1"] = bool(all(table.loc[h, chosen] <= E1_FACTOR * table.loc[h, "launch"] for h in later))
    out["E2"] = bool(pooled[chosen] < pooled["launch"])
    out["judged"] = True
    out["wins"] = chosen != "launch" and out["E1"] and out["E2"]
    return out


def each_cross_host(steps: pd.DataFrame) -> pd.DataFrame:
    """Reported, not judged: per kind, k(c) = the first host's median r = host / probe of the case's steps of that
    kind; on each later host the median over cases of |k(c) / r(c) - 1| (rows: later hosts; columns: kinds)."""
    r = steps.assign(r=steps["host_s"] / steps["probe_s_per_unit"]).pivot_table(
        index=CASE_KEY + ["kind"], columns="host", values="r", aggfunc="median")
    first = min(r.columns)
    err = r.drop(columns=first).rdiv(r[first], axis=0).sub(1.0).abs()
    return err.groupby("kind").median().T[list(EACH_KINDS)]


if __name__ == "__main__":
    raise SystemExit(main())

"""Session s23closed: the closed loops' start, and the score term scaled by the model's heads (docs/notes/s23closed_rule.md).

A closed loop of C clients issues C prompts at t = 0. real/serve's scheduler (real/serve/engine.py `schedule`) gives
each iteration its token budget (2048 here) less one token per decoding request, first to the request part-way through
its prompt, then to waiting requests first come first served (a request's chunk is what the budget leaves): 24 prompts
of 192-768 tokens take five iterations of 4-7 prompts and 1,775-2,048 tokens, the decode rows joining one iteration
after their prompt's last chunk. The twin (twin.serving.engine) runs the same policy: `closed_start` prints both logs
side by side (the same tokens, prompts and decode rows in every iteration); what differs is the time of those
multi-prompt iterations.

`replays(on)`: every run of the records of models never served (set A: the s21srvnew, s21srvnew2 and s22ttft
registrations, H100 and H200; set B: s21srvnew2's configurations on two more H100 hosts; all held out) replayed as
`twin validate`'s diagnostic replays them (calibration.prereg_serve.replay_recorded: the recorded requests, the
record's host probe), with twin.serving.timing.ADOPT_HEAD_SCALED_SCORES off or on. `verdict(off, on)` is the rule's
judgement, as written in docs/notes/s23closed_rule.md.

    python -m calibration.serve_score_heads            # both settings, the verdict, every check that changed side
    python -m calibration.serve_score_heads start      # the closed loops' first iterations, engine and twin
    python -m calibration.serve_score_heads overlap    # the second candidate: with the one-GPU tables refitted in
                                                       # the launch-overlap form (serve_engine_fit.LAUNCH_OVERLAP)
    python -m calibration.serve_score_heads floor      # the third candidate: the scores scaled and a one-GPU eager
                                                       # iteration's launch floor (timing.ADOPT_LAUNCH_FLOOR)
    python -m calibration.serve_score_heads fresh      # set C under the committed twin and the three candidates
"""

from __future__ import annotations

import csv
import dataclasses
import math
from unittest import mock
from pathlib import Path

import numpy as np

import calibration.serve_engine_fit as sef
from calibration import entry
from calibration import prereg_serve
from calibration import records as rec
from calibration import serve_switch_compare as ssc
from calibration.records_io import open_csv
from calibration.serve_engine_fit import base_table
from calibration.serve_host_speed import before_t, tables_with
from calibration.serve_load_validation import FIGURES, scenario_for, sizes_run_before
from twin.serving import timing
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

REGISTRATIONS = ("s21srvnew", "s21srvnew2", "s22ttft")   # set A: examined iteration by iteration before the rule
# set B: the s21srvnew2 configurations on two more H100 hosts (calibration/measurements/h100/<name>/<model>/, read by
# no validation), not examined in session s23closed before the rule
EXTRA = ("s21srvnew2_extra_h100_second", "s21srvnew2_extra_h100x2_gpu0")


# set C: fresh runs of the same models, engine and mix (real/serve/plans.py S23C_PLANS, real/campaigns/s23closed.sh;
# calibration/measurements/<gpu>/s23closed/<model>/), measured after the third candidate's rule; no predictions file
FRESH = prereg_serve.Registration(
    "s23closed", (prereg_serve.RunCase("poisson-r24-mid", "poisson", prereg_serve.MIX_IN, prereg_serve.MIX_OUT,
                                       rate_per_s=24.0, seed=71),
                  prereg_serve.RunCase("closed-c16-mid", "closed", prereg_serve.MIX_IN, prereg_serve.MIX_OUT,
                                       concurrency=16, seed=72),
                  prereg_serve.RunCase("closed-c24-mid", "closed", prereg_serve.MIX_IN, prereg_serve.MIX_OUT,
                                       concurrency=24, seed=73)), "n23")


def registration(name: str) -> prereg_serve.Registration:
    """A registration's records (REGISTRATIONS), an extra set of s21srvnew2's configurations (EXTRA) or the fresh
    set (FRESH)."""
    if name in EXTRA:
        return dataclasses.replace(prereg_serve.S21B, name=name)
    if name == FRESH.name:
        return FRESH
    return prereg_serve.REGISTRATIONS[name]


def head_scaled(on: bool):
    """twin.serving.timing.ADOPT_HEAD_SCALED_SCORES set to `on` (candidate T's switches off: priced as committed
    before T), restored after."""
    stack = before_t()
    stack.enter_context(mock.patch.object(timing, "ADOPT_HEAD_SCALED_SCORES", on))
    return stack


def replays(on: bool, root: Path | str | None = None, names=REGISTRATIONS + EXTRA) -> list[dict]:
    """The diagnostic replay rows (prereg_serve.replay_recorded) of the named record sets, switch `on`."""
    root = rec.records_root() if root is None else root
    with head_scaled(on):
        return [{**r, "registration": name} for name in names
                for r in prereg_serve.replay_recorded(root, registration(name))]


def _checks(rows: list[dict], figures=FIGURES) -> tuple[int, float]:
    """(checks met, median |error|) over rows' `figures`."""
    errs = [abs(r[f"{k}_rel_error"]) for r in rows for k in figures if math.isfinite(r[f"{k}_rel_error"])]
    met = sum(bool(r[f"{k}_within_target"]) for r in rows for k in figures)
    return met, float(np.median(errs)) if errs else math.nan


def closed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "-closed-" in r["run_id"]]


def _criteria(off: list[dict], on: list[dict]) -> dict:
    """The rule's criteria 1-4 on one set of rows (off and on in the same order)."""
    p99_off, p99_on = _checks(closed(off), ("ttft_p99_s",)), _checks(closed(on), ("ttft_p99_s",))
    others = tuple(k for k in FIGURES if k != "ttft_p99_s")
    rest_off, rest_on = _checks(closed(off), others)[0], _checks(closed(on), others)[0]
    all_off, all_on = _checks(off), _checks(on)
    gpus = sorted({r["gpu"] for r in off})
    by_gpu = {g: (_checks([r for r in off if r["gpu"] == g])[0], _checks([r for r in on if r["gpu"] == g])[0])
              for g in gpus}
    crit = {
        "1_closed_ttft_p99": p99_on[0] > p99_off[0] and p99_on[1] < p99_off[1],
        "2_closed_other_figures": rest_on >= rest_off,
        "3_all_checks": all_on[0] >= all_off[0] and all_on[1] <= all_off[1],
        "4_each_gpu": all(b >= a for a, b in by_gpu.values()),
    }
    return {"closed_ttft_p99": (p99_off, p99_on), "closed_other_checks": (rest_off, rest_on), "all": (all_off, all_on),
            "by_gpu": by_gpu, "criteria": crit, "met": all(crit.values())}


def verdict(off: list[dict], on: list[dict]) -> dict:
    """docs/notes/s23closed_rule.md criteria 1-4 on set A (REGISTRATIONS, pooled) and on set B (EXTRA); adopt only if
    both meet all four (criterion 5, the committed sets unmoved, is checked apart: `twin validate --json` with the
    switch off and on)."""
    keys = [(r["registration"], r["run_id"]) for r in off]
    if keys != [(r["registration"], r["run_id"]) for r in on]:
        raise ValueError("off and on replays differ in their runs")
    part = lambda names: [i for i, r in enumerate(off) if r["registration"] in names]  # noqa: E731
    out = {label: _criteria([off[i] for i in part(names)], [on[i] for i in part(names)])
           for label, names in (("A", REGISTRATIONS), ("B", EXTRA))}
    return {**out, "adopt": out["A"]["met"] and out["B"]["met"]}


def changed_sides(off: list[dict], on: list[dict]) -> list[str]:
    """Every check that changed side of its target, off -> on."""
    out = []
    for a, b in zip(off, on):
        for k in FIGURES:
            if bool(a[f"{k}_within_target"]) != bool(b[f"{k}_within_target"]):
                out.append(f"{'GAINED' if b[f'{k}_within_target'] else 'LOST'} {a['gpu']} {a['run_id']} {k}: "
                           f"{a[f'{k}_rel_error']:+.1%} -> {b[f'{k}_rel_error']:+.1%}")
    return out


# ---- the second candidate: the scores scaled and the one-GPU tables in the launch-overlap form ------------

ONE_GPU_TABLES = ("real-serve-h100-ep1", "real-serve-h200-ep1")
# docs/notes/s23closed_rule.md second candidate, criterion 5: the committed sets (serve_switch_compare.summary keys)
COMMITTED_SETS = ("committed_holdout", "committed_fit", "with_input_holdout", "s13srv_fit", "never_fitted_holdout")


def launch_overlap(on: bool):
    """calibration.serve_engine_fit.LAUNCH_OVERLAP set to `on`, restored after."""
    return mock.patch.object(sef, "LAUNCH_OVERLAP", on)


def overlap_tables() -> dict[str, dict]:
    """The one-GPU tables refitted in the launch-overlap form on the same fit runs (host references held)."""
    with launch_overlap(True):
        fitted = sef.fitted_tables()
    return {k: fitted[k] for k in ONE_GPU_TABLES}


def committed_criterion(off: dict, on: dict) -> dict[str, bool]:
    """Criterion 5 of the second candidate on serve_switch_compare.summary's (met, checks, median) per set: no fewer
    checks on every committed set, and on the committed held-out set a median |error| no higher."""
    out = {name: on[name][0] >= off[name][0] for name in COMMITTED_SETS}
    out["committed_holdout_median"] = on["committed_holdout"][2] <= off["committed_holdout"][2]
    return out


def second_candidate(root: Path | str | None = None) -> dict:
    """Both switches off (the committed twin) against both on (the overlap tables loaded): sets A and B (verdict),
    the committed sets (serve_switch_compare.all_rows), the tables."""
    root = rec.records_root() if root is None else root
    off_sets, off_ab = ssc.all_rows(Path(root)), replays(False, root)
    tables = overlap_tables()
    with launch_overlap(True), tables_with(tables):
        on_sets, on_ab = ssc.all_rows(Path(root)), replays(True, root)
    v = verdict(off_ab, on_ab)
    sum_off, sum_on = ssc.summary(off_sets), ssc.summary(on_sets)
    committed = committed_criterion(sum_off, sum_on)
    return {"verdict": v, "committed": committed, "summary_off": sum_off, "summary_on": sum_on, "tables": tables,
            "adopt": v["adopt"] and all(committed.values()), "changed": changed_sides(off_ab, on_ab),
            "moved": ssc.moved(off_sets, on_sets), "rows": (off_ab, on_ab)}


# ---- the third candidate: the scores scaled and a one-GPU eager iteration's launch floor ------------------------

ONE_GPU_FOLDERS = {"real-serve-h100-ep1": "h100", "real-serve-h200-ep1": "h200"}


def launch_floor(on: bool):
    """twin.serving.timing.ADOPT_LAUNCH_FLOOR set to `on` (candidate T's switches off: priced as committed before T),
    restored after."""
    stack = before_t()
    stack.enter_context(mock.patch.object(timing, "ADOPT_LAUNCH_FLOOR", on))
    return stack


def floor_terms(root: Path | str | None = None) -> dict[str, dict]:
    """Per one-GPU table, its launch floor (timing.LAUNCH_FLOOR_TERMS): the launch terms (iteration, eager forward,
    chunk) of its fit runs fitted in the launch-overlap form (serve_engine_fit.fit_folder with LAUNCH_OVERLAP)."""
    root = rec.records_root() if root is None else root
    out = {}
    with launch_overlap(True):
        for table, folder in ONE_GPU_FOLDERS.items():
            r = sef.fit_folder(Path(root) / folder)
            out[table] = {"launch_floor_iteration_s": r["iteration_s"], "launch_floor_eager_s": r["eager_iteration_s"],
                          "launch_floor_chunk_s": r["chunk_s"]}
    return out


def third_candidate(root: Path | str | None = None) -> dict:
    """Both switches off (the committed twin) against ADOPT_HEAD_SCALED_SCORES and ADOPT_LAUNCH_FLOOR on (the floor
    terms loaded into the one-GPU tables): sets A, B and, where its records exist, C (verdict per set), the committed
    sets (serve_switch_compare.all_rows)."""
    root = rec.records_root() if root is None else root
    names = REGISTRATIONS + EXTRA + (FRESH.name,)
    off_sets, off_rows = ssc.all_rows(Path(root)), replays(False, root, names)
    terms = floor_terms(root)
    with launch_floor(True), tables_with(terms):
        on_sets, on_rows = ssc.all_rows(Path(root)), replays(True, root, names)
    part = lambda rows, group: [r for r in rows if r["registration"] in group]  # noqa: E731
    sets = {"A": REGISTRATIONS, "B": EXTRA, "C": (FRESH.name,)}
    v = {label: _criteria(part(off_rows, group), part(on_rows, group)) for label, group in sets.items()
         if part(off_rows, group)}
    sum_off, sum_on = ssc.summary(off_sets), ssc.summary(on_sets)
    committed = committed_criterion(sum_off, sum_on)
    adopt = "C" in v and all(v[k]["met"] for k in ("A", "B", "C")) and all(committed.values())
    return {"verdict": v, "committed": committed, "summary_off": sum_off, "summary_on": sum_on, "terms": terms,
            "adopt": adopt, "changed": changed_sides(off_rows, on_rows), "moved": ssc.moved(off_sets, on_sets),
            "rows": (off_rows, on_rows)}


def fresh_settings(root: Path | str | None = None) -> dict[str, list[dict]]:
    """Set C's replay rows under the committed twin and each candidate (scores; scores + overlap tables; scores +
    launch floor)."""
    root = rec.records_root() if root is None else root
    names = (FRESH.name,)
    out = {"committed": replays(False, root, names), "scores": replays(True, root, names)}
    with launch_overlap(True), tables_with(overlap_tables()):
        out["scores+overlap"] = replays(True, root, names)
    with launch_floor(True), tables_with(floor_terms(root)):
        out["scores+floor"] = replays(True, root, names)
    return out


# ---- task 1: the closed loop's first iterations, engine and twin -----------------------------------------

def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def closed_start(folder: Path | str, run_id: str, iterations: int = 7) -> list[dict]:
    """The first `iterations` iterations of a recorded run and of the twin's replay of its requests (the record's
    probe, the GPU's one-GPU table, no iteration spread: the mean), side by side: (start, duration) in seconds, prompt
    tokens and decode rows."""
    d = Path(folder)
    runs, reqs, its = _read(d / "serve_load.csv"), _read(d / "serve_requests.csv"), _read(d / "serve_iterations.csv")
    run = next(r for r in runs if r["run_id"] == run_id)
    sc = scenario_for(run, spread=False, engine=base_table(run))
    rows = sorted((q for q in reqs if q["run_id"] == run_id), key=lambda q: float(q["arrival_s"]))
    arrival = None if run["arrival"] == "closed" else [float(q["arrival_s"]) for q in rows]
    reqs_twin = from_records(arrival, [int(q["input_len"]) for q in rows], [int(q["output_len"]) for q in rows],
                             sc.traffic)
    trace = simulate(sc, requests=reqs_twin, run_batch_sizes=sizes_run_before(runs, its)[run_id]).trace
    measured = [it for it in its if it["run_id"] == run_id][:iterations]
    return [{"measured_start_s": float(m["start_s"]), "measured_s": float(m["duration_s"]),
             "measured_prompt_tokens": int(m["prefill_tokens"]), "measured_prompts": int(m["prefill_seqs"]),
             "measured_decode_rows": int(m["decode_seqs"]), "twin_start_s": t[2], "twin_s": t[3],
             "twin_prompt_tokens": int(t[5]), "twin_decode_rows": int(t[4])}
            for m, t in zip(measured, trace)]


def _print_start(root: Path) -> None:
    for gpu in prereg_serve.GPUS:
        for model in prereg_serve.MODELS:
            for name in REGISTRATIONS:
                reg = prereg_serve.REGISTRATIONS[name]
                run = next(r for r in reg.runs if r.arrival == "closed")
                rid = prereg_serve.run_id(model, run, reg.prefix)
                rows = closed_start(prereg_serve.records_dir(root, gpu, model, reg), rid, 5)
                ms = " ".join(f"{r['measured_s'] * 1e3:5.1f}" for r in rows)
                ts = " ".join(f"{r['twin_s'] * 1e3:5.1f}" for r in rows)
                same = all(r["measured_prompt_tokens"] == r["twin_prompt_tokens"]
                           and r["measured_decode_rows"] == r["twin_decode_rows"] for r in rows)
                print(f"{gpu} {rid:30s} ms engine {ms} | twin {ts} | same batches: {same}")


def _fmt(c: dict) -> list[str]:
    (p_off, p_on), (r_off, r_on), (a_off, a_on) = c["closed_ttft_p99"], c["closed_other_checks"], c["all"]
    return [f"    closed TTFT P99: {p_off[0]} -> {p_on[0]} within target, median |err| {p_off[1]:.1%} -> {p_on[1]:.1%}",
            f"    closed other figures: {r_off} -> {r_on} checks",
            f"    all checks: {a_off[0]} -> {a_on[0]}, median |err| {a_off[1]:.2%} -> {a_on[1]:.2%}",
            "    by GPU: " + ", ".join(f"{g} {a} -> {b}" for g, (a, b) in c["by_gpu"].items()),
            "    criteria: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in c["criteria"].items())]


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_score_heads", __doc__)
    ap.add_argument("part", nargs="?", choices=["start", "overlap", "fresh", "floor"],
                    help="one part (see above); default: both settings, the verdict, every check that changed side")
    part = ap.parse_args(argv).part
    argv = [part] if part else []
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if argv[:1] == ["start"]:
        _print_start(root)
        return 0
    if argv[:1] == ["overlap"]:
        out = second_candidate(root)
        for key, t in out["tables"].items():
            print(f"{key}: " + ", ".join(f"{k} {t[k]:.4g}" for k in sef.TERMS if t[k]) + f", overlap {t['launch_overlap']:g}")
        for name in out["summary_off"]:
            (ma, na, ea), (mb, nb, eb) = out["summary_off"][name], out["summary_on"][name]
            print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
        print("criterion 5: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in out["committed"].items()))
        off, on = out["rows"]
        v = out["verdict"]
        for label, names in (("A", REGISTRATIONS), ("B", EXTRA)):
            print(f"set {label} ({', '.join(names)}):")
            print("\n".join(_fmt(v[label])))
        print(f"verdict: {'ADOPT' if out['adopt'] else 'not adopted'}")
        print("\n".join(out["changed"]))
        print("\n".join(out["moved"]))
        _print_rows(off, on)
        return 0
    if argv[:1] == ["fresh"]:
        rows = fresh_settings(root)
        base = rows["committed"]
        for name, rs in rows.items():
            c = _criteria(base, rs)
            (_, p_on), (_, r_on), (_, a_on) = c["closed_ttft_p99"], c["closed_other_checks"], c["all"]
            print(f"{name:15} closed TTFT P99 {p_on[0]}/{len(closed(rs))} median |err| {p_on[1]:.1%}; closed other "
                  f"{r_on}; all {a_on[0]}/{len(rs) * len(FIGURES)} median {a_on[1]:.2%}; criteria vs committed: "
                  + ", ".join(f"{k} {'met' if v else 'no'}" for k, v in c["criteria"].items()))
        for name, rs in rows.items():
            for r in rs:
                figs = " ".join(f"{r[f'{k}_rel_error']:+6.1%}{'' if r[f'{k}_within_target'] else '!'}" for k in FIGURES)
                print(f"{name:15} {r['gpu']} {r['run_id']:32s} {figs}")
        return 0
    if argv[:1] == ["floor"]:
        out = third_candidate(root)
        for key, t in out["terms"].items():
            print(f"{key}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in t.items()))
        for name in out["summary_off"]:
            (ma, na, ea), (mb, nb, eb) = out["summary_off"][name], out["summary_on"][name]
            print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
        print("criterion 5: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in out["committed"].items()))
        for label, c in out["verdict"].items():
            print(f"set {label}:")
            print("\n".join(_fmt(c)))
        print(f"verdict: {'ADOPT' if out['adopt'] else 'not adopted'}")
        print("\n".join(out["changed"]))
        print("\n".join(out["moved"]))
        _print_rows(*out["rows"])
        return 0
    off, on = replays(False, root), replays(True, root)
    v = verdict(off, on)
    for label, names in (("A", REGISTRATIONS), ("B", EXTRA)):
        print(f"set {label} ({', '.join(names)}):")
        print("\n".join(_fmt(v[label])))
    print(f"verdict: {'ADOPT' if v['adopt'] else 'not adopted'}")
    print("\n".join(changed_sides(off, on)))
    _print_rows(off, on)
    return 0


def _print_rows(off: list[dict], on: list[dict]) -> None:
    for label, rows in (("off", off), ("on", on)):
        for r in rows:
            figs = " ".join(f"{r[f'{k}_rel_error']:+6.1%}{'' if r[f'{k}_within_target'] else '!'}" for k in FIGURES)
            print(f"{label} {r['gpu']} {r['run_id']:32s} {figs}")


if __name__ == "__main__":
    raise SystemExit(main())

"""Issue 15's serving targets on the s13srv records (calibration/measurements/<folder>/s13srv/ and other
hosts' s13srv_round2/ and s14srv_newhost_*/: the held-out configurations re-measured with the host probe
beside every run, as the host came and under a busy co-runner): each held-out run replayed with its GPU and EP's committed table and the record's host
probe as the twin's serve.host_launch_s (calibration/serve_host_speed.py replay; the tables carry a
host reference only where docs/notes/s13srv_rule.md adopted it), against the same targets as the
committed runs (throughput 5%, TTFT / TPOT P50 10%, P99 20%).

Misses are strict xfails carrying the live figure (NOT_MET), never loosened."""

import functools
from pathlib import Path

import pytest

from calibration.records_io import csv_exists, read_csv
from calibration.serve_host_speed import probe_folders, replay
from calibration.serve_load_validation import FIGURES, TARGETS

# other hosts' runs of the same campaign beside a fit folder, never fitted (the adopted input's new-host
# checks): s13srv_round2 (a second 2xH200 host; h100/: one GPU of a 4xH100 host) and
# s14srv_newhost_<date>_<time> (session 14: a 2xH100 machine, its one-GPU part in h100/, EP2 in h100x2/)
NEW_HOST_GLOBS = ("s13srv_round*", "s14srv_newhost_*")


def new_host_folders(fit_folders: dict[str, Path]) -> dict[str, Path]:
    """'<gpu folder>/<run>' (run: round2, newhost_20261127_0135) -> a never-fitted host's records."""
    return {f"{name}/{d.name.removeprefix('s13srv_').removeprefix('s14srv_')}": d
            for name, fit in fit_folders.items() for pattern in NEW_HOST_GLOBS
            for d in sorted(fit.parent.glob(pattern)) if csv_exists(d / "serve_load.csv")}


# the fit's records (s13srv) and the new-host checks
FOLDERS = {**probe_folders(), **new_host_folders(probe_folders())}

# (folder, run, figure): twin / measured - 1 at the time of writing (s13srv, host input adopted, refitted
# with the 2xH100 fit runs of h100x2/s13srv (GPUs 0,1 of a 4xH100 host): with the committed 80, 118 -> 142
# of the 190 held-out checks met). The dosed runs (`-slow`: a
# busy co-runner time-slicing the engine thread's CPU) stay under-predicted on Poisson short prompts
# (-24..-55% on the H200s; the H100 host's over-predicted instead): the dose's time slices stall single
# iterations, a tail the mean scaling and the fit host's spread do not hold; h200 r40-short is the
# committed records' own miss (-18% TTFT P50 there); the TTFT P99 tails sit on a few host stalls.
# h100x2 (one 4xH100 host's GPUs 0,1; its table's reference from these runs alone): the input takes it from
# 4 to 8 of 20 but over-scales c48-short and r10-long (TPOT +30% / +18%): its probe (13 us) sits
# beside fit runs whose factors scatter 1.23-1.66 as the host came.
# newhost_20261127_0135 (s14: a 2xH100 machine the fit never saw, probe as it came 8.7-12.8 us one GPU,
# 12.0-13.9 us EP2): one GPU 26 of 35 held-out checks met with the input against 16 without; EP2 10 of 20
# against 4, the scaled host again over-predicting c48-short (throughput -17%, TPOT +20%), r10-long's and
# r30-short's TPOT (+20%, +11%) and the dosed r30-short (its fit runs' factors 1.48-1.76 as the host
# came, 2.29-2.40 dosed, against (p / p_ref)^beta 1.57-1.71 and 2.74-2.86).
# s14srv2 (docs/notes/s14srv2_rule.md; three candidates, none adopted, no figure here moved): the EP2
# over-prediction is the level (the probe reads the 2xH100 hosts' as-came EP2 runs 5-12% slower than they
# run) and the spread's bin (a scaled decode iteration, 9-15 ms, draws from the fit host's 8-16 ms bin,
# mean ratio 1.116: +12%); neither rows, the ranks' lockstep nor the flag exchange's level.
# s20srv3 (docs/notes/s20srv3_rule.md; not adopted, no figure here moved): as the host came the probe follows an
# EP2 run's decode level to ~3% within a host (calibration/serve_probe_state.py); the EP decode path's reference
# from the as-came decode iterations (prompt path as now) took c48-short TPOT P50 +29.8% -> +21.2%, 142 -> 143 of
# 190, but the median rose (5.94% -> 6.01%) and the s13srv fit runs fell 80 -> 79.
# (s26flip, docs/notes/s26start2_rule.md "Adoption") candidate T adopted (its three switches on; the one-GPU tables'
# `start_sync` terms): the one-GPU folders' held-out checks here 133 -> 138 of 175 met (EP folders unmoved); 16 left
# the list (among them h200 r40-short TTFT P50, h100 c24-short TTFT P50 on three hosts, h200/round2's r30-short, r40,
# c12 and dosed r30 TTFT P99 / TPOT P50, newhost r30-short TTFT P99 +48% -> +2%), 11 entered (h200 c12 / c24
# throughput +5.9% / +5.7%, h200 r30-short TTFT P99 +20.3%, h100 r30-short TTFT P50 / P99 -12% / -21%, the dosed
# h100 r30-short's TPOT +20% / +25% and newhost's TTFT P50 +45%, h200/round2 c24 TTFT P99 -26%, h100/round2
# r30-short TTFT P99 -41%); every one-GPU figure below is T's live figure.
# (s30pace, docs/notes/s30pace_rule.md, adopted: an EP2 instance's paced kernels at its slower board, +0.36% on the
# default profile's GEMM and attention) h200x2 r30-short TTFT P99 +25.0% -> +16.1% met and left the list; every EP2
# figure below is the live one (moves of up to ~9 points on TTFT: the replay's event order under a 0.36% kernel change,
# not the pace itself); held out 72 -> 73 of 110, fit 82 of 120 and never-fitted 107 of 145 unchanged, none lost.
NOT_MET: dict = {
    ("h200", "g1s13-poisson-r40-short", "tpot_p50_s"): -0.114,
    ("h200", "g1s13-poisson-r40-short", "tpot_p99_s"): -0.232,
    ("h200", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): -0.167,
    ("h200", "g1s13-poisson-r30-short-slow", "tpot_p50_s"): -0.376,
    ("h200", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): -0.474,
    ("h200", "g1s13-poisson-r30-short-slow", "tpot_p99_s"): -0.277,
    ("h200", "g1s13-closed-c8-long-slow", "output_tokens_per_s"): +0.091,
    ("h200", "g1s13-poisson-r30-short", "ttft_p99_s"): +0.203,
    ("h200", "g1s13-closed-c24-short", "output_tokens_per_s"): +0.057,
    ("h200", "g1s13-closed-c12-short", "output_tokens_per_s"): +0.059,
    ("h200x2", "ep2s13-poisson-r30-short", "ttft_p50_s"): +0.180,
    ("h200x2", "ep2s13-poisson-r10-long", "tpot_p50_s"): -0.265,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "ttft_p50_s"): -0.199,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "tpot_p50_s"): -0.267,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "ttft_p99_s"): -0.338,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "tpot_p99_s"): -0.274,
    ("h100", "g1s13-poisson-r40-short", "ttft_p50_s"): -0.144,
    ("h100", "g1s13-closed-c8-long", "output_tokens_per_s"): -0.055,
    ("h100", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): +0.397,
    ("h100", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): +0.233,
    ("h100", "g1s13-closed-c8-long-slow", "output_tokens_per_s"): -0.053,
    ("h100", "g1s13-poisson-r30-short", "ttft_p50_s"): -0.124,
    ("h100", "g1s13-poisson-r30-short", "ttft_p99_s"): -0.205,
    ("h100", "g1s13-poisson-r30-short-slow", "tpot_p50_s"): +0.199,
    ("h100", "g1s13-poisson-r30-short-slow", "tpot_p99_s"): +0.252,
    ("h100x2", "ep2s13-poisson-r30-short", "output_tokens_per_s"): -0.060,
    ("h100x2", "ep2s13-poisson-r30-short", "ttft_p99_s"): -0.294,
    ("h100x2", "ep2s13-closed-c48-short", "output_tokens_per_s"): -0.223,
    ("h100x2", "ep2s13-closed-c48-short", "tpot_p50_s"): +0.298,
    ("h100x2", "ep2s13-closed-c48-short", "tpot_p99_s"): +0.289,
    ("h100x2", "ep2s13-poisson-r10-long", "ttft_p50_s"): +0.142,
    ("h100x2", "ep2s13-poisson-r10-long", "tpot_p50_s"): +0.181,
    ("h100x2", "ep2s13-poisson-r10-long", "tpot_p99_s"): +0.227,
    ("h100x2", "ep2s13-poisson-r30-short-slow", "output_tokens_per_s"): -0.116,
    ("h100x2", "ep2s13-poisson-r30-short-slow", "ttft_p50_s"): +0.254,
    ("h100x2", "ep2s13-poisson-r30-short-slow", "tpot_p50_s"): +0.138,
    ("h100x2", "ep2s13-poisson-r30-short-slow", "ttft_p99_s"): -0.242,
    ("h200/round2", "g1s13-closed-c24-short", "output_tokens_per_s"): +0.111,
    ("h200/round2", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): +0.480,
    ("h200/round2", "g1s13-closed-c24-short", "ttft_p99_s"): -0.256,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "output_tokens_per_s"): +0.081,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "ttft_p50_s"): -0.130,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "tpot_p50_s"): -0.262,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "ttft_p99_s"): -0.275,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "tpot_p99_s"): -0.254,
    ("h200x2/round2", "ep2s13-closed-c48-short", "output_tokens_per_s"): +0.099,
    ("h200x2/round2", "ep2s13-closed-c48-short", "ttft_p50_s"): +0.130,
    ("h200x2/round2", "ep2s13-poisson-r10-long", "output_tokens_per_s"): +0.051,
    ("h200x2/round2", "ep2s13-poisson-r10-long", "tpot_p50_s"): -0.190,
    ("h200x2/round2", "ep2s13-poisson-r30-short-slow", "ttft_p99_s"): -0.244,
    ("h100/round2", "g1s13-poisson-r40-short", "ttft_p99_s"): -0.750,
    ("h100/round2", "g1s13-poisson-r30-short-slow", "output_tokens_per_s"): +0.055,
    ("h100/round2", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): -0.147,
    ("h100/round2", "g1s13-poisson-r30-short-slow", "tpot_p50_s"): -0.339,
    ("h100/round2", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): -0.478,
    ("h100/round2", "g1s13-poisson-r30-short-slow", "tpot_p99_s"): -0.298,
    ("h100/round2", "g1s13-closed-c8-long-slow", "output_tokens_per_s"): +0.079,
    ("h100/round2", "g1s13-poisson-r30-short", "ttft_p99_s"): -0.412,
    ("h100/newhost_20261127_0135", "g1s13-poisson-r30-short", "ttft_p50_s"): -0.139,
    ("h100/newhost_20261127_0135", "g1s13-poisson-r30-short", "tpot_p50_s"): -0.132,
    ("h100/newhost_20261127_0135", "g1s13-poisson-r40-short", "ttft_p99_s"): -0.215,
    ("h100/newhost_20261127_0135", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): +0.526,
    ("h100/newhost_20261127_0135", "g1s13-closed-c8-long-slow", "output_tokens_per_s"): +0.085,
    ("h100/newhost_20261127_0135", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): +0.452,
    ("h100/newhost_20261127_0135", "g1s13-poisson-r30-short-slow", "tpot_p50_s"): +0.188,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r30-short", "ttft_p50_s"): +0.202,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r30-short", "tpot_p50_s"): +0.103,
    ("h100x2/newhost_20261127_0135", "ep2s13-closed-c48-short", "output_tokens_per_s"): -0.174,
    ("h100x2/newhost_20261127_0135", "ep2s13-closed-c48-short", "tpot_p50_s"): +0.200,
    ("h100x2/newhost_20261127_0135", "ep2s13-closed-c48-short", "tpot_p99_s"): +0.250,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r10-long", "tpot_p50_s"): +0.197,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r30-short-slow", "output_tokens_per_s"): -0.155,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r30-short-slow", "ttft_p50_s"): +0.233,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r30-short-slow", "tpot_p50_s"): +0.214,
    ("h100x2/newhost_20261127_0135", "ep2s13-poisson-r30-short-slow", "tpot_p99_s"): +0.220,
}


@functools.cache
def _rows(folder: str) -> dict:
    return {r["run_id"]: r for r in replay(FOLDERS[folder], True, ("holdout",))}


def _cases():
    for folder, d in FOLDERS.items():
        load = read_csv(d / "serve_load.csv", dtype=str).fillna("")
        for run_id in load.loc[load.split == "holdout", "run_id"]:
            for k in FIGURES:
                marks = []
                if (folder, run_id, k) in NOT_MET:
                    marks = [pytest.mark.xfail(strict=True, reason=f"not met: {NOT_MET[folder, run_id, k]:+.1%} "
                                                                   f"against {TARGETS[k]:.0%} (issue 15 open)")]
                yield pytest.param(folder, run_id, k, marks=marks, id=f"{folder}-s13srv-{run_id}-{k}")


@pytest.mark.parametrize("folder,run_id,figure", list(_cases()))
def test_s13srv_held_out_run_within_target(folder, run_id, figure):
    row = _rows(folder)[run_id]
    err = row[f"{figure}_rel_error"]
    assert abs(err) <= TARGETS[figure], f"{run_id} {figure}: {err:+.1%} (target {TARGETS[figure]:.0%})"


def test_the_adopted_tables_carry_their_fit_hosts_probe(monkeypatch):
    """docs/notes/s13srv_rule.md adopted: the tables with s13srv fit runs carry a reference probe and the
    exponent; the committed records have no probe, so their replays keep the fit host (scale 1). The tables were
    fitted before s30pace's ADOPT_SERVE_BOARD_PACE and not refitted under it (docs/notes/s30pace_rule.md): the
    references are recomputed with the kernel physics they were fitted against (under the pace they differ by
    <= 2.4e-4, EP2's, and the shared exponent by 9e-5: docs/notes/s30pace.md "Left")."""
    from calibration.serve_engine_fit import HOST_SPEED, candidate_references
    from twin.core.specs import serve_engines
    from twin.serving import iteration
    monkeypatch.setattr(iteration, "ADOPT_SERVE_BOARD_PACE", False)
    assert HOST_SPEED
    refs = candidate_references()
    assert refs and all(serve_engines()[t]["host_probe_launch_s"] == pytest.approx(v["host_probe_launch_s"], rel=1e-4)
                        and serve_engines()[t]["host_probe_exponent"] == pytest.approx(v["host_probe_exponent"], rel=1e-4)
                        for t, v in refs.items())


def test_the_new_hosts_runs_stay_out_of_the_fit():
    new = new_host_folders(probe_folders())
    assert {"h200x2/round2", "h100/round2", "h100/newhost_20261127_0135", "h100x2/newhost_20261127_0135"} <= set(new)
    assert not set(new.values()) & set(probe_folders().values())


def test_s13srv_records_carry_the_probe_on_every_run():
    for folder, d in FOLDERS.items():
        load = read_csv(d / "serve_load.csv")
        for w in ("before", "after"):
            assert (load[f"probe_{w}_launch_s"] > 0).all(), folder
        assert load.cpu_model.notna().all() and load.gpu_name.notna().all(), folder

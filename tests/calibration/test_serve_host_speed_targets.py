"""Issue 15's serving targets on the s13srv records (calibration/measurements/<folder>/s13srv/ and a
second host's s13srv_round2/: the held-out configurations re-measured with the host probe beside every
run, as the host came and under a busy co-runner): each held-out run replayed with its GPU and EP's committed table and the record's host
probe as the twin's serve.host_launch_s (calibration/serve_host_speed.py replay; the tables carry a
host reference only where docs/notes/s13srv_rule.md adopted it), against the same targets as the
committed runs (throughput 5%, TTFT / TPOT P50 10%, P99 20%).

Misses are strict xfails carrying the live figure (NOT_MET), never loosened."""

import functools

import pandas as pd
import pytest

from calibration.serve_host_speed import probe_folders, replay
from calibration.serve_load_validation import FIGURES, TARGETS

# the fit's records (s13srv) and a second 2xH200 host's run of the same campaign, never fitted
# (s13srv_round2: the adopted input's new-host check)
FOLDERS = {**probe_folders(), **{f"{name}/round2": d.parent / "s13srv_round2" for name, d in probe_folders().items()
                                 if (d.parent / "s13srv_round2" / "serve_load.csv").is_file()}}

# (folder, run, figure): twin / measured - 1 at the time of writing (s13srv, host input adopted: with
# the committed 80, 114 -> 135 of the 170 held-out checks met). The dosed runs (`-slow`: a
# busy co-runner time-slicing the engine thread's CPU) stay under-predicted on Poisson short prompts
# (-24..-55% on the H200s; the H100 host's over-predicted instead): the dose's time slices stall single
# iterations, a tail the mean scaling and the fit host's spread do not hold; h200 r40-short is the
# committed records' own miss (-18% TTFT P50 there); the TTFT P99 tails sit on a few host stalls.
NOT_MET: dict = {
    ("h200", "g1s13-poisson-r40-short", "ttft_p50_s"): -0.126,
    ("h200", "g1s13-poisson-r40-short", "tpot_p50_s"): -0.134,
    ("h200", "g1s13-poisson-r40-short", "ttft_p99_s"): -0.216,
    ("h200", "g1s13-poisson-r40-short", "tpot_p99_s"): -0.243,
    ("h200", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): -0.303,
    ("h200", "g1s13-poisson-r30-short-slow", "tpot_p50_s"): -0.422,
    ("h200", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): -0.549,
    ("h200", "g1s13-poisson-r30-short-slow", "tpot_p99_s"): -0.376,
    ("h200", "g1s13-closed-c8-long-slow", "output_tokens_per_s"): +0.083,
    ("h200x2", "ep2s13-poisson-r30-short", "ttft_p50_s"): +0.147,
    ("h200x2", "ep2s13-poisson-r10-long", "tpot_p50_s"): -0.246,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "ttft_p50_s"): -0.244,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "tpot_p50_s"): -0.270,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "ttft_p99_s"): -0.409,
    ("h200x2", "ep2s13-poisson-r30-short-slow", "tpot_p99_s"): -0.276,
    ("h100", "g1s13-closed-c24-short", "ttft_p50_s"): +0.181,
    ("h100", "g1s13-closed-c8-long", "output_tokens_per_s"): -0.073,
    ("h100", "g1s13-poisson-r30-short-slow", "ttft_p50_s"): +0.125,
    ("h100", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): +0.588,
    ("h100", "g1s13-closed-c8-long-slow", "output_tokens_per_s"): -0.061,
    ("h100", "g1s13-closed-c8-long-slow", "ttft_p50_s"): +0.103,
    # round 2 (another host, 23:22-23:24 UTC; never fitted): with the input 37 of 55 met, without it 19
    ("h200/round2", "g1s13-poisson-r30-short", "ttft_p50_s"): -0.114,
    ("h200/round2", "g1s13-poisson-r30-short", "tpot_p50_s"): -0.102,
    ("h200/round2", "g1s13-closed-c24-short", "output_tokens_per_s"): +0.083,
    ("h200/round2", "g1s13-poisson-r40-short", "ttft_p50_s"): -0.111,
    ("h200/round2", "g1s13-poisson-r40-short", "tpot_p50_s"): -0.102,
    ("h200/round2", "g1s13-closed-c12-short", "ttft_p50_s"): +0.118,
    ("h200/round2", "g1s13-poisson-r30-short-slow", "tpot_p50_s"): -0.157,
    ("h200/round2", "g1s13-poisson-r30-short-slow", "ttft_p99_s"): +0.329,
    ("h200/round2", "g1s13-closed-c8-long-slow", "ttft_p50_s"): +0.101,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "output_tokens_per_s"): +0.076,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "ttft_p50_s"): -0.103,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "tpot_p50_s"): -0.250,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "ttft_p99_s"): -0.353,
    ("h200x2/round2", "ep2s13-poisson-r30-short", "tpot_p99_s"): -0.239,
    ("h200x2/round2", "ep2s13-closed-c48-short", "output_tokens_per_s"): +0.091,
    ("h200x2/round2", "ep2s13-closed-c48-short", "ttft_p50_s"): +0.135,
    ("h200x2/round2", "ep2s13-poisson-r10-long", "output_tokens_per_s"): +0.052,
    ("h200x2/round2", "ep2s13-poisson-r10-long", "tpot_p50_s"): -0.177,
}


@functools.cache
def _rows(folder: str) -> dict:
    return {r["run_id"]: r for r in replay(FOLDERS[folder], True, ("holdout",))}


def _cases():
    for folder, d in FOLDERS.items():
        load = pd.read_csv(d / "serve_load.csv", dtype=str).fillna("")
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


def test_the_adopted_tables_carry_their_fit_hosts_probe():
    """docs/notes/s13srv_rule.md adopted: the tables with s13srv fit runs carry a reference probe and the
    exponent; the committed records have no probe, so their replays keep the fit host (scale 1)."""
    from calibration.serve_engine_fit import HOST_SPEED, candidate_references
    from twin.core.specs import serve_engines
    assert HOST_SPEED
    refs = candidate_references()
    assert refs and all(serve_engines()[t]["host_probe_launch_s"] == pytest.approx(v["host_probe_launch_s"], rel=1e-4)
                        and serve_engines()[t]["host_probe_exponent"] == pytest.approx(v["host_probe_exponent"], rel=1e-4)
                        for t, v in refs.items())


def test_s13srv_records_carry_the_probe_on_every_run():
    for folder, d in FOLDERS.items():
        load = pd.read_csv(d / "serve_load.csv")
        for w in ("before", "after"):
            assert (load[f"probe_{w}_launch_s"] > 0).all(), folder
        assert load.cpu_model.notna().all() and load.gpu_name.notna().all(), folder

"""Issue 15's serving targets on the committed records: the request simulation replays each
held-out real/serve load run (configurations the engine-cost fit never saw) and must give its
throughput within 5%, TTFT and TPOT P50 within 10%, P99 within 20%, on each GPU.

The (folder, run, figure) pairs the twin does not yet meet are listed in NOT_MET with their
measured error, as strict xfails: they are reported, never loosened, and the test fails the day
one of them passes (so the list must shrink with the model). The lead decides on them."""

import functools

import pytest

from calibration import records as rec
from calibration.records_io import open_csv
import pandas as pd

from calibration.serve_engine_fit import rebuild
from twin.serving.timing import graph_bucket
from calibration.serve_load_validation import FIGURES, TARGETS, serve_load_dirs
from tests.committed import validation

FOLDERS = [d.name for d in serve_load_dirs(rec.MEASUREMENTS_DIR)]

# (folder, run, figure): relative error at the time of writing (twin / measured - 1; the twin's
# figure the median of SPREAD_SEEDS replays drawing iteration times from the measured spread).
# One GPU: h100 r40 TTFT P50 (-10.03%), two h100 TTFT P99 tails (-26%, -38%); h200 r40 TTFT P50
# (-18%), lo-r30 TTFT P50/P99 (-12%, -32%). The engine's admission is real/serve's (an arrival joins at the
# next iteration boundary; an idle engine wakes wake_s late), and an eager iteration pays the one-off
# costs of a flat batch size the engine process had not run: new_size_s for the exact size (~0.8 ms)
# and new_bin_s for a 16-token bin of sizes it never met (2.3-2.9 ms on one GPU), both measured by
# the s9srv campaign (h100x2/s9srv: a prompt iteration of a new bin 2.1x, an exact new size in a met
# bin +2 ms, on a one-GPU engine and under EP alike) and fitted on the fit runs (the replay is told
# the sizes earlier runs of the session ran). With the bin term the h200 fit iterations' median error
# falls 4.1% -> 3.9% (h100 3.4% -> 3.3%), but the h200 held-out r40 / lo-r30 prompts, which meet few
# new bins, run slower than the fit's seen-size level (as before the term: r40's prompt iterations at
# 1.08x the fit), so their TTFT now falls under (before it: 24 of 25 met, now 21); the P99 tails rest
# on a few host stalls. (s11srv, per miss) An eager prompt iteration is host-bound (h100/s8srv_round2:
# host 4.4-10.9 ms of 5.4-11.4 ms) and its level moves from run to run beyond what size or time since
# the last eager iteration explains: the h200 low-rate Poisson runs' prompt iterations take 1.13x
# (r40, held out) and 1.05x (lo-r30) the fit, as do the fit's own r10 / lo-r5 (1.22x, 1.19x; their
# TTFT P50 -14% / -18%) while r120 / lo-r70 take 0.94x / 0.88x; h100 lo-r30's TTFT P99 (151
# requests) is its second-largest TTFT, set by one 30 ms prompt iteration (3.5x), and lo-c12's by a
# 2-chunk prompt behind a 36 ms iteration of the closed loop's second wave.
# EP2 (s9srv): real/serve's expert-parallel engine is host-launch-bound (decode host_s ~0.96 of each
# iteration) and its decode iterations take either ~4.5 ms (the one-GPU engine's eager decode on the
# 16 rows, 4.4-4.6 ms) or ~7-7.5 ms, in phases of 0.3-2 s: the host CPU's speed (s9srv's fixed
# pure-Python probe takes 100 us in the fast phases, 150-180 us on the rank that is slow in a slow one,
# the lockstep partner waiting for it), not the GPU's clock, the pinning or the all-to-alls. What is
# modelled: (1) EP prompt iterations start slow in a fresh process and fall over ~150 of them (h200x2
# r60 25 -> 12 ms): the first-size terms above, per rank (new_size_s, new_bin_s); sessions end where a
# run follows later than its own duration (the h100x2 plans ran in two processes); (2) the h200x2
# folder's two sessions (03:23, 06:45 UTC) differ in host speed (decode 6.6-8.2 vs 4.5-5.8 ms) and get
# a table each, fitted on that session's fit runs; the h100x2 sessions do not: pooled; (3) (s11srv) the
# DP-attention ranks launch and score their own prompt chunks side by side: the engine's per-chunk
# and per-pair terms count the busiest rank's (they counted both ranks', so a Poisson long prompt
# alone on its rank was predicted 30-34 ms where it takes 39-42 ms, like a closed-loop pair of
# prompts); (4) (s11srv) a first-met size's terms are host stalls, paid where the iteration is
# host-bound (kernel physics under its fixed host terms; a longer GPU queue hides them: new-size
# 2048-token prompt iterations took 0.81-0.91x a fit charging them everywhere, 370-token ones
# 1.0-1.1x), one GPU and EP alike. Replayed, the fit runs meet 213 of their 250 checks (204 before
# (3)-(4)); held out 66 of 80 (63 before). What is left, per miss:
# - h100x2 c48 throughput / TPOT P50 and r10-long TPOT P50: the host phase the run happened to meet.
#   s8srv round 2 repeated these configurations unpinned 50 min later (h100x2/s8srv_round2, out of
#   fits and validation); against those repeats the twin is c48 -1.8% throughput, +1.1% TPOT P50 and
#   r10-long +23% TPOT P50 (here -18%): the twin lies between two measurements of one configuration
#   that differ by more than the targets;
# - r30-short (both hosts) TTFT P50/P99, TPOT P50: its prompt iterations run at 0.66x (h200x2) and
#   0.83x (h100x2) the fit's prediction, where the fit runs' r20/r60 (each the first short-prompt
#   Poisson run of its process) ran at 0.92-0.96x: a size new to a rank costs r30 +0.3 ms, r20/r60
#   +2-3 ms. The s11srv campaign (h100x2/s11srv) found an exact new size's cost to be cuBLASLt's
#   heuristics cache (+1.25 ms one GPU, +1.6 ms EP2; gone with the cache off) and a new bin's (+8-11
#   ms) a one-off cost of a GEMM configuration first used, fading as the process meets sizes; a
#   new_bin_s fading with the bins a rank met (e-folding 25-200 bins) lowers the EP fits' residual
#   by 1-2% and leaves r30's prompt iterations at 0.63x / 0.83x: not modelled. (s11srv2) The fade
#   stated as a rule before held-out figures (new_bin_s x h / (h + bins met), h by the fit runs'
#   residual, host-bound only; calibration/serve_engine_fit.py NEW_BIN_FADE): fit runs 216 of 250
#   (213), held out 68 of 80 (h100x2 / h200x2 r30-short TTFT P99 met) but the held-out median |error|
#   3.55% -> 3.81% (h200x2 r30-short TTFT P50 +35%): off, as its criterion said. h100 r40 TTFT P50
#   sits 0.03 points past its 10% target (a strict xfail within 0.2 points: left, not tuned).
#   The s11srv2 campaign (h100x2/s11srv2): CUDA_MODULE_LOADING=EAGER leaves the new bin's cost and its
#   fade (first-call excess 23.6/9.4/6.1 ms by thirds against LAZY's 19.8/9.6/5.9): not lazy loading.
# (s12srv) real/serve's closed-loop client draws each successor's prompt in the engine's thread between
# iterations (0.3-0.6 us a prompt token): the twin now waits it (issue_s_per_token, fitted on the fit
# runs' gaps; calibration/serve_engine_fit.py CLIENT_ISSUE, criterion committed first): held-out median
# 3.55% -> 2.85%, fit checks 213 -> 216 of 250; live figures of lo-c12 TTFT P99 and c48 updated. A
# stall hidden only as far as the GPU backlog reaches (STALL_BACKLOG) was tested and failed its
# criterion (held out 69 of 80 but median 3.55% -> 3.72%, fit 212 of 250), as did launches overlapping
# one-GPU kernels (LAUNCH_OVERLAP: 67 of 80, median 3.17%, fit 205) and a cold process's slower prompts
# (COLD_PROCESS: 68 of 80, median 3.01%, fit 216). Components of each miss (s12srv: TTFT = wait for the
# first-token iteration + that iteration, ms, measured vs twin, the P50 / P99 request): admission agrees
# (one GPU: 99-100% of requests join the iteration after their arrival, EP2 89-96%, the rest arriving in
# the ranks' flag exchange, which the twin's loop_s before admission holds); every miss is iteration time:
# h100 r40 P50 10.2 = 1.6 + 8.6 vs 9.2 = 1.8 + 7.3; h200 r40 P50 11.0 = 1.6 + 9.5 vs 9.0 = 1.1 + 7.9;
# h200 lo-r30 P50 10.1 = 1.6 + 8.4 vs 8.9 = 1.2 + 7.7 (prompt iterations p50 8.0-8.5 vs 7.2-7.6);
# h200 lo-r30 P99 25.4 = 10.5 + 14.9 vs 17.9 = 6.3 + 11.6 (two-prompt iterations of 731 / 949 tokens,
# physics 3.3 / 4.0 ms just over 3.0 ms of host terms, so charged no first-size stall, measured 13.9 /
# 21.2 vs 10.3 / 12.2); h100 lo-r30 P99 27.0 = 10.1 + 16.9 vs 18.5 = 8.1 + 10.3; h100 lo-c12 P99
# 68.1 = 31.9 + 36.2 vs 48.4 = 24.4 + 23.2 (a seen 2048-token chunk at 36.2 vs 23.7); EP2 r30-short
# TTFT P50 h100x2 14.5 = 6.6 + 7.9 vs 16.3 = 5.2 + 11.2, h200x2 12.2 = 4.3 + 8.0 vs 16.0 = 4.2 + 12.3
# (prompt iterations p50 9.5 / 8.0 vs 10.9 / 12.0); c48 / r10-long TPOT: decode iterations 4.77 / 7.40
# vs 6.27 / 6.07 ms (the host phase).
# (s13srv) The host's speed is now an input (serve.host_launch_s, docs/notes/s13srv_rule.md): these
# records carry no host probe, so they replay at their fit host's speed and none of these figures moves;
# the held-out configurations re-measured with the probe (H100, H200, 2xH100, 2xH200) are judged in
# tests/calibration/test_serve_host_speed_targets.py (with the input 76 of 110 checks there, 52 without; 118 -> 142
# of the 190 together with these).
# (s15srv2, docs/notes/s15srv2_rule.md) a one-GPU eager path gone cold after CUDA-graph replays (a stall on
# an eager iteration after 16 / 32 graph iterations), fitted on the fit runs, moved the one-GPU TTFT misses
# the wrong way (h100 r40 P50 -10.7%, h200 r40 P50 -19.6%; 66 of 80 met): not adopted, no figure here moved.
# (s16srv, docs/notes/s16srv_rule.md) an exact new size's stall held at its measured cuBLASLt look-up cost
# (s11srv: EP2 1.6 ms, one GPU 1.25 ms, scaled by the table's host level) instead of the NNLS's 2.9-5.1 ms
# under EP2: the fit moved the excess onto every prompt iteration (h200x2 prompt_iteration_s 0.2 -> 3.1 ms);
# 68 of 80 met but median 2.85% -> 2.97% (h200x2 r30-short TTFT P50 +33%), s13srv fit 66 of 120, never-fitted
# 96 of 145: not adopted, no figure here moved.
# (s16srv, second change) a first-met size's large cost per GEMM kernel region first launched (the s16srv
# campaign's sweep, h100/s16srv) instead of 16-token bins: 67 of 80 but median 2.85% -> 2.92% (h200x2 r30-short
# TTFT P50 +39.8%), fit runs 211 of 250, s13srv fit 73 of 120: not adopted, no figure here moved.
# (s18srv, docs/notes/s18srv_rule.md) a decode-only iteration within a few iterations after a prompt iteration paying
# post_prompt_s (EP2 fit runs: +0.3-0.8 ms over 1-16 iterations; one GPU ~0.1 ms): 66 of 80, median 2.85% -> 2.98%,
# h200x2 r10-long / r30-short TPOT P50 past 10%; c48 TPOT P50 +15.6% -> +14.9% only: not adopted, no figure here moved.
# (s20srv, docs/notes/s20srv.md; calibration/serve_decode_phases.py) group C per phase: an EP2 decode iteration is
# the host's launch stream (4.3 of 4.6 ms; kernels 2.4 ms summed, hidden but a 0.2-0.3 ms tail) at one of two host
# states, 0.80x / 1.16x the table on the fit runs (medians of their fast / slow windows); c48 ran 94% fast (0.75x),
# r10-long slow throughout (1.2x), as fit c16 (TPOT P50 +23.6%) and c8-long (-17.5%); no KV-length dependence on the
# steady host (long / short 0.98), a per-row host term moves them by under 2%: no term, no figure moved.
# (s26flip, docs/notes/s26start2_rule.md "Adoption") candidate T adopted, its three switches on: the one-GPU runs
# replay under T's table terms. Held out h100 22 -> 22 of 25, h200 22 -> 24: h200 lo-r30 TTFT P50 (-11.9% -> -9.3%)
# and P99 (-32.3% -> -19.7%) now met and left the list; the one-GPU misses re-stated at their live figures (h100 r40
# TTFT P50 -10.0% -> -14.9%, lo-c12 P99 -25.7% -> -26.5%, lo-r30 P99 -37.7% -> -38.2%; h200 r40 P50 -18.4% -> -18.0%).
# EP folders unmoved (T does not reach them).
# (s30pace, docs/notes/s30pace_rule.md, adopted: an EP2 instance's paced kernels at its slower board, +0.36% on the
# default profile's GEMM and attention) h100x2 r30-short TTFT P50 +12.4% -> +9.9% met and left the list; the EP2 misses
# at their live figures (r30-short TTFT P99 h100x2 +33.9% -> +36.2%, h200x2 +22.4% -> +24.6%; h100x2 TPOT P50 +13.6% ->
# +14.0%). Moves of this size from a 0.36% kernel change are the replay's event order (admission at iteration
# boundaries, the first-met stall charged where an iteration is host-bound), not the pace itself.
NOT_MET = {
    ("h100", "g1-poisson-r40-short", "ttft_p50_s"): -0.149,
    ("h100", "g1lo-closed-c12-short", "ttft_p99_s"): -0.265,
    ("h100", "g1lo-poisson-r30-short", "ttft_p99_s"): -0.382,
    ("h100x2", "ep2-closed-c48-short", "output_tokens_per_s"): -0.155,
    ("h100x2", "ep2-closed-c48-short", "tpot_p50_s"): +0.156,
    ("h100x2", "ep2-poisson-r10-long", "tpot_p50_s"): -0.178,
    ("h100x2", "ep2lo-poisson-r30-short", "ttft_p99_s"): +0.362,
    ("h100x2", "ep2lo-poisson-r30-short", "tpot_p50_s"): +0.140,
    ("h200", "g1-poisson-r40-short", "ttft_p50_s"): -0.180,
    ("h200x2", "ep2lo-poisson-r30-short", "ttft_p50_s"): +0.310,
    ("h200x2", "ep2lo-poisson-r30-short", "ttft_p99_s"): +0.246,
}


@functools.cache
def _rows(folder: str) -> dict:
    # validate_load's rows of the folder, as the session's one validate() of the committed records
    # computed them (its serve_load section, tests/committed.py)
    return {r["run_id"]: r for r in validation()["serve_load"][folder]["runs"]}


def _held_out_cases():
    import csv
    for folder in FOLDERS:
        with open_csv(rec.MEASUREMENTS_DIR / folder / "serve_load.csv") as f:
            for run in csv.DictReader(f):
                if run["split"] != "holdout":
                    continue
                for k in FIGURES:
                    marks = []
                    if (folder, run["run_id"], k) in NOT_MET:
                        marks = [pytest.mark.xfail(strict=True, reason=f"not met: {NOT_MET[folder, run['run_id'], k]:+.0%} "
                                                                       f"against {TARGETS[k]:.0%} (issue 15 open)")]
                    yield pytest.param(folder, run["run_id"], k, marks=marks, id=f"{folder}-{run['run_id']}-{k}")


@pytest.mark.parametrize("folder,run_id,figure", list(_held_out_cases()))
def test_held_out_load_run_within_target(folder, run_id, figure):
    row = _rows(folder)[run_id]
    assert row["split"] == "holdout"
    err = row[f"{figure}_rel_error"]
    assert abs(err) <= TARGETS[figure], f"{run_id} {figure}: {err:+.1%} (target {TARGETS[figure]:.0%})"


def test_every_gpu_folder_has_held_out_runs():
    assert FOLDERS, "no serving load records committed"
    for folder in FOLDERS:
        assert any(r["split"] == "holdout" for r in _rows(folder).values()), folder


def test_rebuild_splits_each_iterations_prompt_tokens_and_decode_contexts():
    # request 0 (300 tokens) chunked over iterations 0-1 by a budget that request 1 (100) shares
    its = pd.DataFrame({"iteration": [0, 1, 2], "prefill_tokens": [200, 200, 0], "decode_seqs": [0, 0, 2],
                        "start_s": [0, 1, 2], "duration_s": [1, 1, 1], "idle": [0, 0, 0]})
    reqs = pd.DataFrame({"request_id": [0, 1], "input_len": [300, 100], "first_token_iteration": [1, 1],
                         "num_chunks": [2, 1], "finish_iteration": [2, 2]})
    rb = rebuild(its, reqs)
    assert rb.chunks.tolist() == [[(200, 0)], [(100, 200), (100, 0)], []]
    assert rb.decode_ctx_max.tolist() == [0, 0, 301] and rb.rebuilt_decode.tolist() == [0, 0, 2]


def test_graph_bucket_pads_rows_and_width_like_real_serve():
    # 5 rows -> bucket 8; the longest context 130 tokens = 3 pages of 64 -> width bucket 4 pages
    assert graph_bucket(5, 130, False, 64, [1, 2, 4, 8], [1, 2, 4, 8]) == (8, 256.0)
    assert graph_bucket(5, 130, True, 64, [1, 2, 4, 8], [1, 2, 4, 8]) == (0, 192.0)    # a prompt: eager
    assert graph_bucket(9, 130, False, 64, [1, 2, 4, 8], [1, 2, 4, 8])[0] == 0        # beyond the buckets
    assert graph_bucket(2, 600, False, 64, [1, 2, 4, 8], [1, 2, 4, 8])[0] == 0        # 10 pages > 8


def test_committed_engine_costs_are_the_fit_of_the_fit_runs_only():
    """twin/data/serve_engines.toml is what calibration/serve_engine_fit.py gives on the committed
    records (regenerate with `python -m calibration.serve_engine_fit`), and no held-out run was in it."""
    import csv

    from calibration.serve_engine_fit import EXTRA_TERMS, TERMS, engine_key, fit_folder
    from calibration.serve_host_speed import references
    from twin.core.specs import serve_engines
    table = serve_engines()
    folder = FOLDERS[0]
    r = fit_folder(rec.MEASUREMENTS_DIR / folder)
    key = engine_key(r["gpu"], r["ep"], r["pin"])
    r.update(references().get(key, {}))   # the host-speed reference, as serve_engine_fit.main sets it
    entry = table[key]
    for k in (*TERMS, *EXTRA_TERMS):
        assert entry[k] == pytest.approx(r[k], rel=1e-4, abs=1e-12), k
    # the per-iteration spread comes from the same fit iterations
    for k in ("edges_s", "probs", "decode_iterations", "prompt_iterations"):
        assert entry["spread"][k] == pytest.approx(r["spread"][k], rel=1e-5), k
    for kind in ("decode", "prompt"):
        assert entry["spread"][kind] == [pytest.approx(q, rel=1e-5) for q in r["spread"][kind]], kind
    with open_csv(rec.MEASUREMENTS_DIR / folder / "serve_load.csv") as f:
        held = {run["run_id"] for run in csv.DictReader(f) if run["split"] == "holdout"}
    assert held and not held & set(r["fit_runs"])
    assert not held & set(entry["source"].split(": ")[1].split(", "))


def test_spread_keeps_quantiles_by_kind_and_predicted_duration():
    """calibration.serve_engine_fit.spread on made-up iterations (engine terms all zero, so the
    prediction is the kernel physics): 41 decode iterations of 2 ms (bin 0) measured 1.00..1.40x,
    30 prompt iterations of 10 ms (bin 2) measured 1.0x or 2.0x, and 5 of 50 ms (bin 4: too few,
    so it repeats bin 2, its nearest with data)."""
    from calibration.serve_engine_fit import SPREAD_PROBS, TERMS, spread
    rows = [{"physics_s": 0.002, "measured_s": 0.002 * (1 + i / 100), "prompt_iteration_s": 0.0} for i in range(41)]
    rows += [{"physics_s": 0.010, "measured_s": 0.010 * (2.0 if i % 3 == 0 else 1.0), "prompt_iteration_s": 1.0} for i in range(30)]
    rows += [{"physics_s": 0.050, "measured_s": 0.050, "prompt_iteration_s": 1.0} for _ in range(5)]
    df = pd.DataFrame(rows).assign(run_id="r", prefill_ok=True, decode_ok=True)
    for k in TERMS:
        df[k] = df.get(k, 0.0)
    sp = spread(df, {k: 0.0 for k in TERMS})
    assert sp["decode_iterations"] == [41, 0, 0, 0, 0] and sp["prompt_iterations"] == [0, 0, 30, 0, 5]
    dec = sp["decode"][0]
    assert dec[0] == pytest.approx(1.0) and dec[-1] == pytest.approx(1.4)
    assert dec[SPREAD_PROBS.index(0.5)] == pytest.approx(1.2, abs=0.01)
    assert all(row == dec for row in sp["decode"][1:])          # no decode data above 4 ms: bin 0's
    pro = sp["prompt"][2]
    assert pro[0] == pytest.approx(1.0) and pro[-1] == pytest.approx(2.0)
    assert pro[SPREAD_PROBS.index(0.5)] == pytest.approx(1.0)  # two in three iterations took the predicted time
    assert sp["prompt"][4] == pro and sp["prompt"][0] == pro


def test_mark_new_sizes_fades_a_new_bin_with_the_bins_each_rank_met():
    """(s11srv2) With fade_bins h a new bin's feature is h / (h + m), m the bins its rank met before
    (sizes_before included); under EP the largest over the ranks meeting one; graph replays none."""
    from calibration.serve_engine_fit import mark_new_sizes
    rows = [((300,), False), ((310,), False), ((305,), False), ((200,), True), ((200,), False)]
    df = pd.DataFrame([{"run_id": "a", "rank_sizes": s, "sizes_before": frozenset({(0, 40)}), "graph_rows": 8 if g else 0}
                       for s, g in rows])
    assert mark_new_sizes(df, fade_bins=2.0).new_bin_s.tolist() == pytest.approx([2 / 3, 2 / 4, 0.0, 0.0, 2 / 5])
    assert mark_new_sizes(df).new_bin_s.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]   # no fade: 0/1 as before
    # EP: rank 1 has met no bin (weight 1) where rank 0 met one: the slower rank sets the pace
    ep = pd.DataFrame([{"run_id": "b", "rank_sizes": (300, 20), "sizes_before": frozenset({(0, 40)}), "graph_rows": 0}])
    assert mark_new_sizes(ep, fade_bins=2.0).new_bin_s.tolist() == [1.0]

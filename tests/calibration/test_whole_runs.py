"""Issue 13: the twin predicts whole runs of real/ (whole steps, layers, pipelines) on the
committed records, per GPU and per kind, and the pipeline predictor's mechanics on fixtures.

The targets are the issue's (held-out): whole steps (train_step, prefill, decode, pipeline_step,
ep_step) and layers (mla_layer, moe_layer): median |error| <= 5% and P90 <= 10% on the H100 and
the H200 separately; pipelines: each rank's idle within 10% of the measured, schedules ranked as
measured. They are asserted as stated, never loosened; a target the records miss is a strict
expected failure listed below (NOT_MET, MULTI_NOT_MET, IDLE_NOT_MET, RANK_NOT_MET) with its measured
figure, and it fails the day it starts passing."""

import copy
import functools
import json

import numpy as np
import pandas as pd
import pytest

from calibration import interleaved
from calibration import pipeline as pipe
from calibration import pipeline_judgement as judgement
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.records_io import csv_exists, read_csv
from calibration.validate import LAYER_KINDS, WHOLE_STEP_KINDS, multi_gpu_dirs, validate
from tests.calibration import pipeline_fixture as fx
from tests.committed import validation
from twin.costs.profile import profile_from_json

MEDIAN, P90 = 0.05, 0.10
IDLE_TOL, IDLE_FLOOR_OF_STEP = 0.10, 0.01
GPUS = ("h100", "h200")


@functools.cache
def committed() -> dict:
    # the session's one validate() of the committed records (tests/committed.py); read-only here
    return validation()


def _kind_summary(gpu: str, kind: str):
    return committed()["by_gpu_kind"].get(gpu, {}).get(kind)


# (gpu, kind) -> (held-out median, P90) when last run: issue 13's targets (median 5%, P90 10%) are
# not met for these. Strict xfails: listed with their figures, never loosened, and the test fails
# the day one passes. The serve and MLA-layer records of both GPUs were re-taken beside their host
# calibration (s7dec, calibration/measurements/README.md). MLA layers: the small v2-lite shapes are
# host-bound; since s8mla the host time per kernel is taken by op class (an FP8 layer's kernels inside
# real/fp8.py's autograd.Functions at the no-grad rate, the rest at the BF16 layers' recording /
# engine rates: calibration.layer_gaps.measured_host_s), which meets the H200's (2.9% / 9.3%); the
# H100's misses P90 on three records against host noise and the FP8 forward's kernels (v2-lite BF16
# forward at 1,024 x 4 +14.5%: the fitting row's 25.1 us a kernel where the record ran at <= 21.9;
# FP8 backward at 4,096 x 1 -22%, its record's P10-P90 4.6-7.2 ms; the FP8 forward at 4,096 x 4
# -8.6%, its quantization kernels ~6% above the twin's kernel sum; a clean re-run alone on one H100,
# h100/s8mla_clean, failed its criterion set beforehand, the no-grad probe spreading 2.02x across
# rounds, and stays a diagnostic; s9mla put a host probe block right before and after every
# record, h100/s9mla_paired: the probes fail the criterion set beforehand (fitting rows' rate over
# their probes 1.71-2.07x across rounds, calibration.host_probe), each record's own probes give
# 9.4% / 22.5% on its median round against the profile's 9.7% / 23.0%, the host-bound records
# spreading 1.5-1.9x over 8 rounds alone on the machine: host noise faster than a record lasts;
# the quiet rounds' host time follows aten ops rather than kernels, the V2-Lite BF16 backward
# 1.15x V3's per kernel, 1.04x per op; the H200's s8mla and s9mla runs, 2026-11-26 20:25, beside
# another campaign on the same CPUs, fail the same criteria (no-grad probe 2.29x, TRACK_SPREAD
# 1.43-1.90x) and stay diagnostics, h200/s8mla_campaign and h200/s9mla_paired). s10mla took the host time per dispatched aten operator for
# BF16 MLA layers (rates from the fitting split's BF16 MLA host_dispatch rows, each configuration's
# CUDA operator count; real/bench/aten_count.py counts them off CUDA too), under a rule stated
# before the held-out figures: H100 3.1% / 15.2% -> 5.2% / 14.9%, H200 2.9% / 9.3% -> 3.6% / 10.3%,
# so it is not adopted (calibration.layer_gaps ADOPT_HOST_PER_OP): the twin's per-kernel host
# already charged V2-Lite's layer 1.19x V3's per real kernel (its op list carries V3-slice's
# missing kernels), and the -15% backward at 1 x 4,096 is predicted GPU-bound (1.19 ms of kernels
# over ~1.0 ms of host) where it ran 1.41 ms: where the host time falls in the op sequence, not
# how much of it. s11mla took the s10mla Chrome traces apart (h100/s10mla_traces,
# calibration.mla_traces): per component, that backward's kernels sum 1,236 us traced against the
# twin's 1,193 (cuDNN's SDPA backward at B x H = 16, 624 vs 528 us, its dO.O preprocessing and dQ
# conversion included; GEMMs 321 vs 338, other kernels 291 vs 309, launches 0 vs 17); at the
# unprofiled host speed the call idles 160 us before its first kernel (the autograd engine's start
# and the first node's dispatch: 7.1 kernels' worth of host on the fitting traces, where the twin
# puts one) and 60 us between kernels (49 us before the SDPA backward's first launch); the twin
# idles 0, its backward starting behind the setup forward's GPU tail. A rule putting each call's
# measured host edges (before its first and after its last launch) at the call's edges, fitted on
# the fitting traces and stated first, fixed the fitting split's cold host rows (V3-slice BF16
# backward H100 -6.1% -> +1.0%, H200 -13.6% -> -3.7%) but not the records: H100 3.1% / 15.2% ->
# 4.3% / 14.4%, H200 2.9% / 9.3% -> 3.6% / 9.5%, not adopted (calibration.layer_gaps
# ADOPT_CALL_EDGES): in back-to-back repetitions the forward's GPU tail (~0.15 ms) hides the start
# edge, and ~0.1 ms of the -15% stays unexplained by the traces, within the host-bound records'
# 1.5-1.9x spread across rounds. s11mla's loop run (h100/mla_loop.csv) then measured inside the
# records' own loop that the GPU waits 191-312 us at every V2-Lite backward's start (the engine's
# start, 148-245 us of host unprofiled) and never at V3-slice's; the edges with the engine's start
# from the loop's fitting rows (layer_gaps.loop_call_edges, stated before the run) give H100 3.1% /
# 15.2% -> 3.4% / 14.4%, H200 2.9% / 9.3% -> 3.6% / 9.4%, not adopted: the twin's wait matches the loop's at three of the
# four V2-Lite backwards but not at BF16 1 x 4,096, whose setup forward's GPU tail (SDPA forward,
# output projection) the twin still runs after the host's return. s12mla timed SDPA at the small
# calls (h100/s12mla, h200/s12mla: 32K-2M head-rows): the twin's attention error follows batch x
# heads x seq (forward -31% at 32K, -14% at 65K; the 1 x 4,096 backward 629 us against 528), and a
# tail term (SeqCurve.rows_half) fits it (new held-out rows 4.0% / 9.1%) and takes that backward
# -15.3% -> -2.7%, H100 mla_layer to 2.61% / 13.84%; not adopted under the rule stated before
# (calibration/attn_small.py: new rows 4.3% from the committed ones, another board; cp_block 6.4%
# median); nor s12mla2's second rule (both grids from one H100 board, h100/s12mla_full_round1:
# the committed core rows replaced, tail term: kernels median 2.83% -> 2.91%, cp_block 6.4%; mla_layer
# P90 13.87%); what stays above 10% is host: the FP8 backward at 1 x 4,096 -21% (its P10-P90 4.6-7.2
# ms) and the BF16 forward at 4 x 1,024 +14.5%. s13mla: the host rates are already the median over
# every fitting host_dispatch row of their op class (3 BF16 rows a direction, V3-slice only); taking
# every fitting row (FP8 ones too) was tested under a rule committed first and not adopted (H100
# 8.8% / 40.3% and 7.0% / 19.3%, docs/notes/s13mla_rule.md), and no host rate reaches the P90: the
# held-out FP8 and BF16 backwards at 4 x 1,024 and 1 x 4,096, host-bound with one op list, differ
# 1.33x and 1.27x in the records, which bounds the P90 at >= 10.5% (a scan of rates: 14.35%). s14mla
# (docs/notes/s14mla_rule.md): those pairs are the host's fast and slow states (their fastest rounds
# in h100/s9mla_paired 1.04x apart); under the rule committed before the run the 12 held-out records
# were re-timed in 23 rotated rounds beside the fitting MLA host rows (real/campaigns/s14mla.sh, GPU 0
# of a 4xH100 host), each side at its fastest round (calibration.mla_rounds), and replace the old ones
# whichever way: H100 3.1% / 15.2% -> 5.2% / 10.4%, now the median missed too (the four host-bound
# backwards -5% to -11%; that host's records spread 1.4-2.3x over the rounds). s14mla2
# (docs/notes/s14mla2_rule.md): a per-operator backward host rate was judged on a NEW run of the same
# campaign (a one-GPU H100 host, 21 rounds), whose records replace s14mla's whichever way: without
# the term 4.6% / 20.8% (its fastest-round fitting `infer` rate 31.4 us a kernel, the FP8 forwards
# +14% and +31%), with it 5.5% / 13.4%: not adopted (calibration.mla_rounds.ADOPT_ROUNDS_PER_OP).
# s15mla (docs/notes/s15mla_rule.md): a ROUND-PAIRED estimator (each round's records predicted with
# that round's fitting-row rates, each record's case its round at the median per-round error),
# judged on a THIRD run (real/campaigns/s15mla.sh, a one-GPU H100 host, 23 rounds) whose records
# replace s14mla2's whichever way: round-paired 3.0% / 9.7% (fastest rounds on it 5.5% / 15.6%;
# per half of its rounds P90 11.3% and 8.2%): adopted, the H100 MLA layers met (ADOPT_ROUND_PAIRED).
# Decode met on the H100 since
# s8dec (median 3.3%, P90 9.2%; was 5.3% / 28.2%): the batched GEMMs over the cache under measured
# curves per einsum and alignment (cuBLAS's unaligned fallback kernels), cuBLAS's split-K
# reductions and memsets in the op list, the attention's elementwise rates (decode_gemm.csv); its
# batch-1 V3 step stays -22% (the host's dispatch speed drifted 3.7-8.0 ms a step between rounds of
# one run, decode_drift.csv). Decode met on the H200 since s12h200 (median 3.1%, P90 5.3%; was 6.4% /
# 11.9% under the streaming costs, the V3 slice at batch 256 -33.5% -> -5.3%): the same terms fitted
# from the H200's own decode_gemm.csv (real/campaigns/s8dec.sh, 2026-11-26 20:25 UTC).
NOT_MET: dict = {}
# the kinds of several GPUs of one host exist where such records do: 2xH200, 2xH100 and, for
# PP2 x EP2, 4xH100 (real/campaigns/s9ep.sh; asked as 4xH200, lent as 4xH100) and 4xH200; judged per
# GPU count (calibration.validate.by_gpu_kind_gpus). 4xH200 is judged as 4xH100 is: host rates from
# the same run's fitting split (4 and 16 micro-batches), the held-out 8 judged. Since s13pp its
# records are real/campaigns/s13pp.sh's (2026-11-26 22:50-22:53 UTC) with the probe of the same host
# and minute (device gap 1.23 us a kernel; the s10pp records of 20:44 had none and took 0, now in
# h200x4/s10pp_20261126_2044): pipeline_step held out median 4.2%, P90 7.5%, all four fast
# (DualPipe -8.8%, DualPipeV -4.4%, 1F1B -4.1%, ZB1P -3.8%; the fitting rows -2.3% to -5.2%: the
# H200's backward input-gradient ops run ~1.16x the twin's, docs/notes/s13pp_rule.md); 3.8% / 7.2%
# without the stage-role forward rates adopted by s13pp's rule (the s10pp records: 3.1% / 5.7%).
MULTI_GPU_KINDS = {("h200", 2): ("pipeline_step", "ep_step", "moe_layer"), ("h100", 2): ("pipeline_step", "ep_step"),
                   ("h100", 4): ("pipeline_step",), ("h200", 4): ("pipeline_step",)}
# (gpu, kind, GPUs) -> (held-out median, P90) when last run, where not met (strict xfails as above).
# None since s9ep. EP2 on 2xH100 had missed (5.4% / 6.2%, all three steps slow): its forward is
# host-paced (a synchronising dispatch in each MoE layer) and took the host's time per launch from
# the s7pipe probe, run a minute after the bench beside other helpers' campaigns, whose host-paced
# forwards ran 1.13-1.46x the bench's (GPU-bound ops within 1%). The 2xH100 and 4xH100 records are
# now real/campaigns/s9ep.sh's (12:00-12:07 UTC, alone on the host), whose bench writes the host's
# issue marks of its timed steps: the rates come from the fitting split of the same run
# (calibration.pipeline.host_marks) and only the held-out split is judged (2xH100: EP2 at 2
# micro-batches +0.8% (all three steps: median 0.9%, P90 2.1%), PP2 at 8 median 0.6%, P90 0.8%;
# 4xH100 PP2 x EP2 at 8 median 0.9%, P90 1.8%; the s10pp run of the same configurations at 14:39,
# h100x4/s10pp_20261126_1439, kept out of validation: median 1.5%, P90 3.6%; since s13pp4 the 4xH100
# folder is real/campaigns/s13pp.sh's run of 2026-11-27 00:18-00:21 UTC with its own host's probe,
# device gap 1.51 us a kernel: held out median 3.1%, P90 5.4%, DualPipe -5.1%, ZB1P -5.5%, 1F1B
# +0.4%, DualPipeV +1.0% on its one step; the s9ep folder moved to h100x4/s9ep_20261126_1206). A second run on the
# same host 2 min later
# (h100x2/s9ep_round2/run2) predicts alike (EP2 median 0.4%, P90 0.8%; PP2 within 1%).
# 2xH200 since s12ep (real/campaigns/s12ep.sh, 20:23-20:25 UTC: ep.csv's configurations re-timed,
# within 2% of the 2026-11-24 records but the host-bound 1,024-token dispatch and forward; EP2 and
# PP2 steps with the host's issue marks, so only their held-out split is judged):
# - EP2 MoE layers (24 held-out cases; judged per GPU count since s12ep): median 3.8%, P90 11.4%
#   (3.6% / 11.4% since s15gg: the backward's dgrad / wgrad grouped GEMMs at their measured layout
#   factors, docs/notes/s15gg_rule.md; 3.4% / 11.8% since s16epa: the rows take the folder's EP host
#   terms, (a) below, adopted as a code correction by docs/notes/s16epa_rule.md; A, which would bring
#   the P90 to 7.1% (6.3% with (a)), loses the 4xH200 n4 ranking pair there and stays off; re-judged by
#   docs/notes/s17alt_rule.md on the interleaved 4xH200 steps: 2.8% / 6.7% with (a), n4 met either way,
#   but at 8 the steps resolve DualPipe ahead of DualPipeV (+1.30%) and the twin under A orders them the
#   other way (-1.11%; -0.81% without A), which the rule names: A stays off; re-judged again by
#   docs/notes/s17pair2_rule.md (-0.93%) and docs/notes/s18gap_rule.md (-0.70%; -0.30% without A): off)
#   (5.3% / 11.2% on the old records): the forward at 4,096 and 16,384 tokens a rank +5% to +12%,
#   the backward at 16,384 -6% to -7%. The EP forward counts the local layer's sort and un-sort
#   beside dispatch's and combine's, and costs their row gathers at the blended gather_eff where the
#   profiler times them near the streaming rate (docs/notes/s12ep_rule.md); corrected, the layers
#   meet (median 5.2% / 2.2%, P90 8.2% / 6.9%, with / without the gather rate) but the EP2 steps
#   fall to -7.5% / -7.4%, so by the rule committed before, not adopted. s13epl
#   (docs/notes/s13epl_rule.md) gave the layer rows the step's measured EP host terms (the same
#   real/ep.py calls on the same host): the host-paced rows come right (dispatch at 1,024 tokens
#   -27% -> -3%), the P90 does not (11.8%: its cases are GPU-paced); with A or B re-judged on
#   today's main (P90 5.9% / 4.6%) the 2xH100 EP2 step or the PP2 x EP2 pipelines move beyond
#   the rule's bounds, so nothing adopted.
# - EP2 steps: met since s13ep (docs/notes/s13ep_rule.md): held out at 2 micro-batches -5.2% ->
#   -2.4% (fitting -7.3% -> -4.6% at 1, -5.3% -> -2.5% at 4). real/ep.py's host marks (s13ep.sh,
#   22:54 UTC) showed the step paced by the slower rank's host, whose forward spends ~0.43 ms a MoE
#   layer in the three all-to-all calls (140-180 us each, where the twin charged one launch, 28 us)
#   and ~0.1 ms in the .tolist() round trips; those host costs, measured on the pacing rank of the
#   run's fitting split, are the twin's since (calibration.pipeline.ADOPT_EP_HOST_TERMS). On 2xH100
#   since s14ep (the same campaign on a 2xH100 machine, 01:34 UTC, its marks in h100x2/: 157.5 / 194.2
#   us a counts / token call): held out -0.86% -> +0.58% (all three steps: median 0.9% -> 2.2%, P90
#   2.1% -> 3.5%; fitting +0.8% -> +2.2% at 1, +2.4% -> +3.9% at 4).
# 2xH200 EP2 moe_layer met since s21ep2 (docs/notes/s21ep2_rule.md: A, the EP forward as real/ runs it,
# 3.4% / 11.8% -> 2.8% / 6.7%; judged blind on 36 fresh rows, 6.2% / 13.7% -> 2.8% / 5.5%)
MULTI_NOT_MET: dict = {}


def _target_params():
    for gpu in GPUS:
        for kind in LAYER_KINDS + ("train_step", "prefill", "decode"):
            marks = []
            if (gpu, kind) in NOT_MET:
                med, p90 = NOT_MET[gpu, kind]
                marks = [pytest.mark.xfail(strict=True, reason=f"not met: median {med:.1%}, P90 {p90:.1%} (issue 13 open)")]
            yield pytest.param(gpu, kind, marks=marks, id=f"{kind}-{gpu}")


def _multi_target_params():
    for (gpu, n), kinds in MULTI_GPU_KINDS.items():
        for kind in kinds:
            marks = []
            if (gpu, kind, n) in MULTI_NOT_MET:
                med, p90 = MULTI_NOT_MET[gpu, kind, n]
                marks = [pytest.mark.xfail(strict=True, reason=f"not met: median {med:.1%}, P90 {p90:.1%} (issue 13 open)")]
            yield pytest.param(gpu, kind, n, marks=marks, id=f"{kind}-{gpu}x{n}")


def _assert_meets(gpu: str, kind: str, s: dict | None) -> None:
    assert s is not None, f"{gpu}: no {kind} case predicted"
    h = s["held_out"]
    assert h["num_cases"] > 0
    assert h["median_abs_rel_error"] <= MEDIAN and h["p90_abs_rel_error"] <= P90, (
        f"{gpu} {kind}: held-out median {h['median_abs_rel_error']:.1%} (target {MEDIAN:.0%}), "
        f"P90 {h['p90_abs_rel_error']:.1%} (target {P90:.0%}), signed median {s['signed_median_rel_error']:+.1%}, "
        f"n={h['num_cases']}")


@pytest.mark.parametrize("gpu,kind", list(_target_params()))
def test_whole_steps_and_layers_meet_the_targets(gpu, kind):
    if gpu not in rec.gpu_dirs():
        pytest.skip(f"no committed {gpu} records")
    _assert_meets(gpu, kind, _kind_summary(gpu, kind))


@pytest.mark.parametrize("gpu,kind,num_gpus", list(_multi_target_params()))
def test_multi_gpu_steps_meet_the_targets(gpu, kind, num_gpus):
    """Pipelines and EP steps, per GPU count: the records of 2 and of 4 GPUs are different hosts and
    layouts (PP2 or EP2 against PP2 x EP2), each held to the issue's targets on its own."""
    s = next((v for v in committed()["by_gpu_kind_gpus"]
              if (v["gpu"], v["kind"], v["num_gpus"]) == (gpu, kind, num_gpus)), None)
    _assert_meets(f"{gpu}x{num_gpus}", kind, s)


def _pipelines(num_gpus: int | None = None):
    return [p for p in committed()["pipelines"] if num_gpus is None or p["num_gpus"] == num_gpus]


HOSTS = [pytest.param(gpu, n, id=f"{gpu}x{n}") for gpu, n in MULTI_GPU_KINDS]


# (gpu, GPUs) -> why the ranking target is not met there, with the figures when last run
# 2xH100's DualPipe / DualPipeV swap at 8 micro-batches is ranked as measured since s9ep. 4xH200 was
# met from s15rank (docs/notes/s15rank_rule.md) to s17alt: at 4 and 8 on its ranking folder
# (h200x4/s15rank_20261127_0408, 22 steps a schedule in two reversed rounds) every one of the 12
# pairs is resolved and ordered as the twin orders it (DualPipe < DualPipeV < ZB1P < 1F1B at both;
# DualPipeV over DualPipe +1.9% [0.3, 3.7] p 0.02 at 4, +3.4% [2.2, 4.5] at 8, the twin +0.2% / +2.7%).
# Since s17alt (docs/notes/s17alt_rule.md) 4 and 8 are judged on steps interleaved with the other
# schedules (h200x4/s17alt_20261127_0941), which reverse the pair at 4 and miss it at 8 (below); on
# 2xH200 likewise (h200x2/s17alt_20261127_0948), which missed the same pair at 8 (the twin -0.14%
# against DualPipe 0.59% [0.16, 0.99] ahead) until s17pair (docs/notes/s17pair_rule.md): each of
# DualPipe's two stage copies accumulates over n / 2 micro-batches, and the twin now puts DualPipe
# ahead by 0.17% (431.4 vs 432.1 ms): 2xH200 met, 3 of 3 (at 4 the twin 5.53% against 5.20% [4.26, 6.23]).
# Since s18gap (docs/notes/s18gap_rule.md) the interleaved and ranking folders take their host folder's
# device gap and AccumulateGrad rates: 2xH200 at 8 the twin +0.14% (440.4 vs 441.1 ms), at 4 5.31%.
RANK_NOT_MET: dict = {
    ("h200", 4): "not met: 2 of 3 configurations ranked as measured (rule s17alt, docs/notes/s17alt_rule.md: 4 and 8 "
                 "judged on the four schedules' steps interleaved cycle by cycle, h200x4/s17alt_20261127_0941, 4xH200 "
                 "2026-11-27 09:41 UTC, 20 / 24 cycles; each pair's paired log differences, Hodges-Lehmann with Tukey's "
                 "95% interval): at 8 micro-batches DualPipe ran 1.30% [0.46, 1.82] faster than DualPipeV, resolved "
                 "(19 of 24 cycles, p 0.010), the twin puts DualPipeV first (-0.98%; 473.3 vs 468.8 ms against 455.2 "
                 "vs 460.6 measured, held out; -0.70% (468.2 vs 464.9) before s22epq's routed rows R, "
                 "docs/notes/s22epq_rule.md; -0.30% before s21ep2's A, docs/notes/s21ep2_rule.md, whose rule did "
                 "not carry s17alt's sentence on this pair; -0.81% before s17pair's DualPipe copy accumulation, "
                 "docs/notes/s17pair_rule.md, -0.61% before s17pair2's first-backward placement, "
                 "docs/notes/s17pair2_rule.md, -0.62% before s18gap's host folder inputs, docs/notes/s18gap_rule.md); "
                 "its other 5 pairs met. At 4 all 6 pairs met (DualPipeV 1.71% [0.64, "
                 "2.92] ahead of DualPipe, the twin 3.10%: the order s15rank's two rounds had the other way, +1.87%). "
                 "At 16 all four as measured by median order on h200x4/. s15rank's two-round folder, reported beside: "
                 "met at 4 and 8 (12 of 12 pairs); issue 13 open",
    ("h100", 4): "not met: 1 of 3 configurations ranked as measured (s13pp records on 4xH100, 2026-11-27 00:19 UTC; "
                 "the s9ep records of 12:06, h100x4/s9ep_20261126_1206: 3 of 3): at 4 micro-batches DualPipeV ran "
                 "faster than DualPipe (258.5 vs 261.0 ms, DualPipe's steps p10-p90 253.2-265.9), the twin ranks "
                 "DualPipe first (259.0 vs 264.1, s16rx); at 8 DualPipeV 497.4 (one step, the budget spent) vs DualPipe "
                 "511.4 (502.4-555.2) and 1F1B 590.4 vs ZB1P 597.2 (577.3-655.2, 573.0-631.7), the twin DualPipe "
                 "488.6, DualPipeV 505.2, ZB1P 567.7, 1F1B 596.0; at 16 (DualPipeV not run) all three as measured. "
                 "No missed pair is resolved by the records' own steps (exact rank-sum p 1.00, 0.33, 1.00; every "
                 "resolved pair ranked as measured: calibration.pipeline_judgement.ranking_noise, docs/notes/s14dp_rule.md). "
                 "A fresh run with 10 steps a schedule in two reversed rounds (h100x4/s14dp_rank_20261127_0147, "
                 "01:47 UTC, kept out of validation) orders 8 as the twin does in both rounds and ties DualPipe / "
                 "DualPipeV at 4 (each round the opposite way). Rule s15rank (docs/notes/s15rank_rule.md) judges 4 and 8 "
                 "pair by pair on a two-round folder of real/campaigns/s15rank.sh; none delivered for 4xH100 yet "
                 "(calibration.pipeline_judgement.RANKING_FOLDERS), so these are still judged by median order here; issue 13 open",
}


@pytest.mark.parametrize("gpu,num_gpus", [pytest.param(*p.values, marks=[pytest.mark.xfail(
    strict=True, reason=RANK_NOT_MET[tuple(p.values)])] if tuple(p.values) in RANK_NOT_MET else [], id=p.id)
    for p in HOSTS])
def test_committed_pipelines_rank_the_schedules_as_measured(gpu, num_gpus):
    """Median order on the host's validation folder; where the host has a ranking folder
    (calibration.pipeline_judgement.RANKING_FOLDERS, docs/notes/s15rank_rule.md), its configurations are
    judged on it pair by pair instead (resolved pairs by order, unresolved ones by the measured gap's
    95% interval); where the host has an interleaved folder (calibration.interleaved.INTERLEAVED_FOLDERS,
    docs/notes/s17alt_rule.md), the configurations it holds complete are judged on its steps paired by
    cycle in place of either; the rest by median order as before."""
    pipes = [p for p in _pipelines(num_gpus) if p["gpu"] == gpu]
    assert pipes, f"no pipeline_step.csv / pipeline_ops.csv under calibration/measurements/{gpu}x{num_gpus}/"
    host = f"{gpu}x{num_gpus}"
    side = committed().get("ranking_interleaved", {}).get(host)
    side_configs = [g for g in side["configs"] if g["complete"]] if side else []
    on_side = {int(g["config"]) for g in side_configs}
    judged = committed().get("ranking", {}).get(host)
    judged_configs = [g for g in judged["configs"] if int(g["config"]) not in on_side] if judged else []
    on_ranking_folder = {int(g["config"]) for g in judged["configs"]} if judged else set()
    for ranking in _rankings(pipes):
        if int(ranking["num_microbatches"]) not in on_ranking_folder | on_side:
            assert ranking["predicted"] == ranking["measured"], ranking
    for g in judged_configs:
        assert g["met"], judgement.format_ranking_judgement(f"{host}/{judged['folder']}", [g])
    for g in side_configs:
        assert g["met"], interleaved.format_interleaved_judgement(f"{host}/{side['folder']}", [g])


# (gpu, GPUs) -> why the idle target is not met there, with the figures when last run.
# 2xH200 is met since s16idle (docs/notes/s16idle_rule.md): on its idle folders (h200x2/s16idle_20261127_0654
# at 4 and 8, h200x2/s16idle16_20261127_0729 at 16: two reversed rounds of 11 timed steps each, pooled)
# 24 of 24 GPUs within, held out 8 of 8, and the ep_step rows on h200x2/ 6 of 6; h200x2/'s one pass
# alone (3-4 steps, one at 16) misses 3 of 30 (DualPipe rank 1 at 4 and 8: 0.2 / 0.4 vs 5.8 / 11.3 ms,
# rank 0 at 16: 0.7 vs 19.6), which validation still reports.
IDLE_NOT_MET = {
    ("h100", 4): "not met: 12 of 44 GPUs beyond 10% (14 before s22epq's routed rows R, docs/notes/s22epq_rule.md; "
                 "the per-GPU figures below are from before R), held-out split 6 of 16 (s13pp records on 4xH100, "
                 "2026-11-27 00:19 UTC, host rates and device gap from the same run, EP host terms from h100x2 since s15dp, index_put_ at its measured rate since s15bw, backward grouped GEMM layout factors since s15gg, index_put_'s radix passes since s16rx; "
                 "DualPipeV at 16 not run, at 8 one "
                 "step): held out, 1F1B at 8 stage 0 twin 222.5 vs measured 181.3 ms (its steps 168.0-192.0) and "
                 "stage 1 47.0 vs 54.0 (49.1-105.4), ZB1P at 8 stage 0 194.4 vs 219.0 (206.3-265.8); fitting, ZB1P "
                 "at 4 106.3 vs 91.3 (80.8-130.7) and 18.9 vs 22.8 (21.7-83.5), DualPipe's GPUs 1/3 at 16 0.6 vs "
                 "32.6 / 33.3 (4.0-39.7), DualPipeV's GPUs 0/2 at 4 20.2 vs 17.6 / 17.5 (19.8 and 12 of 44 before s17pair2's "
                 "first-backward placement, docs/notes/s17pair2_rule.md: a twin 0.1-0.4 ms up, past the 2.5 ms floor). Single steps of this run idle 2-4x their medians (stage 1 up to 105 ms). "
                 "The pinned part of the same run (h100x4/pinned) is kept out by rule P (docs/notes/s13pp_rule.md): "
                 "DualPipe at 8 was skipped (its 8 steps did not fit the budget), and its per-GPU idle spread was "
                 "13.3 ms against 5.0 unpinned. The s9ep records of 12:06 (h100x4/s9ep_20261126_1206, kept out of "
                 "validation since) met 38 of 48 (held out 12 of 16); s8ppep of 09:00 "
                 "(h100x4/s8ppep_20261126_0900) and s10pp of 14:39 (h100x4/s10pp_20261126_1439) idled other "
                 "DualPipe GPUs: which rank waits is a property of the run; issue 13 open)",
    ("h200", 4): "not met (rule s16idle, docs/notes/s16idle_rule.md: 4 and 8 micro-batches judged on the idle "
                 "folder h200x4/s15rank_20261127_0408, two reversed rounds of 11 steps pooled, each round's twin from "
                 "its own fitting split; 16 on h200x4/): idle folder 28 of 32 GPUs within, held out 14 of 16: DualPipe "
                 "at 8 (held out) GPUs 0/2 twin 0.4 vs measured 5.5 / 5.6 ms (band 4.4; round medians 0.5 / 7.5: in "
                 "round a GPUs 1/3 waited, 15.3 ms), ZB1P at 4 stage 1 (GPUs 1/3) 16.8 vs 19.6 / 19.9 (band 2.7; rounds "
                 "15.2 / 20.2); at 16 on h200x4/ 16 of 16. The host folder alone (s13pp records, 22:51 UTC, one pass of "
                 "5 steps, EP host terms from h200x2 since s15dp, index_put_ at its measured rate since s15bw) meets 46 "
                 "of 48: DualPipe GPUs 0/2 at 8, 0.4 vs 8.6 / 8.7 ms (its steps 1.7-33.4). In the steps where they "
                 "idle, the other stage pair's GPU-bound FB ops (host ~20 ms ahead) run 4-10 ms over their medians: "
                 "neither host issue order nor the OS's placement of the host thread (pinned, 8 steps, h200x4/pinned: "
                 "0.4-34.0 ms on GPUs 0/2, 0.4-34.6 on 1/3). The s10pp records of 20:45 (h200x4/s10pp_20261126_2044, no "
                 "probe of their host) missed 14 of 44; issue 13 open)",
}


@pytest.mark.parametrize("gpu,num_gpus", [pytest.param(*p.values, marks=[pytest.mark.xfail(
    strict=True, reason=IDLE_NOT_MET[tuple(p.values)])] if tuple(p.values) in IDLE_NOT_MET else [], id=p.id)
    for p in HOSTS])
def test_committed_pipelines_idle_within_10_percent(gpu, num_gpus):
    """Every GPU's idle within 10% of the measured (or 1% of the step). Where the host has an idle
    folder (calibration.pipeline_judgement.IDLE_FOLDERS, docs/notes/s16idle_rule.md), its configurations are
    judged there (the pooled median of two reversed rounds against the mean of the rounds' twin) and
    the host folder's other configurations as before; nothing is judged on neither."""
    pipes = [p for p in _pipelines(num_gpus) if p["gpu"] == gpu]
    assert pipes, f"no pipeline_step.csv / pipeline_ops.csv under calibration/measurements/{gpu}x{num_gpus}/"
    judged = committed().get("idle", {}).get(f"{gpu}x{num_gpus}")
    on_idle_folder = {c["config"] for c in judged["configs"]} if judged else set()
    misses = idle_misses([p for p in pipes if judgement.config_key(p["config"]) not in on_idle_folder])
    for c in judged["configs"] if judged else []:
        misses += [f"{c['folder']} {c['config']} GPU {g}: twin {v['twin_s'] * 1e3:.1f} ms, measured "
                   f"{v['measured_s'] * 1e3:.1f} ms (band {v['band_s'] * 1e3:.1f})" if v["decided"] else
                   f"{c['folder']} {c['config']} GPU {g}: undecided (steps {v['steps']})"
                   for g, v in c["gpus"].items() if not v["met"]]
    assert not misses, "idle beyond 10%: " + "; ".join(misses)


@pytest.mark.parametrize("host", sorted(judgement.IDLE_FOLDERS))
def test_idle_folders_are_complete_and_hold_only_the_host_folders_configurations(host):
    """Rule s16idle: each idle folder is a complete delivery (both rounds; the four schedules at 4 and
    8 micro-batches, the 8-micro-batch rows held out, or at 16 under addendum A; >= 10 timed steps a
    round), each configuration judged once and one the host folder holds, so the idle folders and
    the host folder together judge every configuration once."""
    judged = committed()["idle"][host]
    assert judged["folders"] == list(judgement.IDLE_FOLDERS[host])
    gpu, n = judged["gpu"], judged["num_gpus"]
    host_configs = {judgement.config_key(p["config"]) for p in _pipelines(n) if p["gpu"] == gpu}
    configs = [c["config"] for c in judged["configs"]]
    assert len(configs) == len(set(configs)) and set(configs) <= host_configs
    for folder in judged["folders"]:
        mine = [c for c in judged["configs"] if c["folder"] == folder]
        counts = sorted({int(c["config"].split()[4][1:]) for c in mine})
        assert counts in ([4, 8], [16]), (folder, counts)
        assert len(mine) == 4 * len(counts) and {c["config"].split()[1] for c in mine} == {"1f1b", "zb1p", "dualpipe", "dualpipev"}
        assert all(c["held_out"] == (" n8 " in c["config"]) for c in mine)
        for c in mine:
            assert len(c["gpus"]) == n
            assert all(v["decided"] and min(v["steps"]) >= judgement.IDLE_MIN_STEPS_A_ROUND for v in c["gpus"].values())


def idle_misses(pipes: list[dict]) -> list[str]:
    """Ranks whose twin idle is beyond 10% of the measured; a rank whose measured idle is under 1% of
    the step (an EP-only step has none) is judged against 1% of the step instead (a relative error
    of ~0 is noise)."""
    misses = []
    for p in pipes:
        for r, meas in p["idle_measured_s"].items():
            # global rank = dp_rank * pp + pp_rank (real/pipeline/engine.py): the simulated pipeline
            # rank it stands for (an EP-only step simulates its one stage once for every EP rank;
            # PP2 x EP2 its two stages once for both replicas)
            sim = p["idle_simulated_s"][int(r) % p["pp"]]
            if abs(sim - meas) > max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * p["measured_s"]):
                steps = p.get("idle_measured_by_rep_s", {}).get(r, [])
                spread = f" (its steps {min(steps) * 1e3:.1f}-{max(steps) * 1e3:.1f})" if steps else ""
                misses.append(f"{p['name']} rank {r}: twin {sim * 1e3:.1f} ms, measured {meas * 1e3:.1f} ms{spread}")
    return misses


def test_pinned_part_is_set_beside_the_same_runs_prediction():
    """4xH200's pinned part (h200x4/pinned: s13pp, DualPipe and 1F1B at 8 and 4, DualPipeV at 8, each
    rank's main thread on its own 16 CPUs, 8 timed steps each; kept out of validation by rule P of
    docs/notes/s13pp_rule.md: pinned, the per-step idle spread was no smaller) against the unpinned
    rows of the same run: every pinned configuration ran unpinned too, the twin's figures for it are
    validation's (one set of host rates for the run, from its fitting split), and every GPU's idle
    is taken for each timed step. The figures (calibration/measurements/README.md, s13pp on
    4xH200): DualPipe at 8 idled 0.4-34.6 ms a step pinned against 0.5-33.4 unpinned, the twin 0.4;
    1F1B's stage 1 41.6-45.1 pinned, 41.3-44.6 unpinned, the twin 38.8."""
    folder = rec.MEASUREMENTS_DIR / "h200x4"
    if not csv_exists(folder / "pinned" / "pipeline_step.csv"):
        pytest.skip("no committed 4xH200 pinned part")
    prof = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    comparison = pipe.pinned_comparison(folder, folder / "pinned", "h200", prof)
    pinned_steps = read_csv(folder / "pinned" / "pipeline_step.csv")
    assert sorted((c["schedule"], c["num_microbatches"]) for c in comparison) == sorted(
        zip(pinned_steps["schedule"], pinned_steps["num_microbatches"].astype(int)))
    validated = {(p["schedule"], int(p["config"]["num_microbatches"])): p for p in _pipelines(4) if p["gpu"] == "h200"}
    for c in comparison:
        v = validated[c["schedule"], c["num_microbatches"]]
        assert c["predicted_s"] == pytest.approx(v["predicted_s"], rel=1e-9)
        assert c["idle_simulated_s"] == pytest.approx(v["idle_simulated_s"], rel=1e-9)
        assert sorted(c["pinned_idle_by_rep_s"]) == [0, 1, 2, 3]
        assert {len(x) for x in c["pinned_idle_by_rep_s"].values()} == {c["pinned_reps"]}


def _rankings(pipes: list[dict]) -> list[dict]:
    """Per GPU and configuration (all but the schedule), the schedules fastest first, twin and measured."""
    groups: dict = {}
    for p in pipes:
        key = (p["gpu"],) + tuple(str(v) for k, v in p["config"].items() if k != "schedule")
        groups.setdefault(key, []).append(p)
    return [{"config": k, "num_microbatches": g[0]["config"]["num_microbatches"],
             "predicted": [p["schedule"] for p in sorted(g, key=lambda p: p["predicted_s"])],
             "measured": [p["schedule"] for p in sorted(g, key=lambda p: p["measured_s"])]}
            for k, g in groups.items() if len(g) > 1]


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("kind", WHOLE_STEP_KINDS + LAYER_KINDS)
def test_every_case_of_a_kind_carries_its_gpu_count(gpu, kind):
    for c in committed()["cases"]:
        if c["gpu"] == gpu and c["kind"] == kind:
            assert c["num_gpus"] >= 1 and c["held_out"] in (True, False)


def test_measured_idle_is_span_minus_compute_per_rank():
    # two ranks, one repetition: span 0..10; rank 0 computes 1 + 2 + 3, rank 1 computes 4 + 1;
    # sends and receives count for the span, not as compute
    ops = pd.DataFrame([(0, 0, "F", 0.0, 1.0), (0, 0, "send", 1.0, 1.5), (0, 0, "B", 5.0, 7.0),
                        (0, 0, "BW", 7.0, 10.0), (0, 1, "recv", 0.5, 1.5), (0, 1, "F", 1.5, 5.5),
                        (0, 1, "W", 6.0, 7.0), (0, 1, "optimizer", 10.0, 20.0)],
                       columns=["rep", "rank", "kind", "start_s", "end_s"])
    assert pipe.measured_idle_s(ops) == {0: 4.0, 1: 5.0}
    # a second repetition, rank 1 computing 2 more: the median of each rank's idle over the steps
    again = ops.assign(rep=1, end_s=np.where((ops["rank"] == 1) & (ops["kind"] == "W"), 9.0, ops["end_s"]))
    both = pd.concat([ops, again])
    assert pipe.measured_idle_by_rep_s(both) == {0: [4.0, 4.0], 1: [5.0, 3.0]}
    assert pipe.measured_idle_s(both) == {0: 4.0, 1: 4.0}


def test_stage_layers_cut_in_order_as_evenly_as_possible():
    assert [list(r) for r in pipe.stage_layers(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [list(r) for r in pipe.stage_layers(4, 4)] == [[0], [1], [2], [3]]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    """TEST FIXTURE records (not measurements): three schedules on 2 GPUs of an h100x2 folder,
    ZB1P's ops stretched by 10%, so it measures slower than the twin says."""
    root = tmp_path_factory.mktemp("records")
    fx.write(root / "h100x2", [fx.config(s) for s in ("1f1b", "zb1p", "dualpipev")], stretch={"zb1p": 1.1})
    return root


@pytest.fixture(scope="module")
def _fixture_validation_once(fixture_root):
    return validate(fixture_root)


@pytest.fixture
def fixture_validation(_fixture_validation_once):
    """validate(fixture_root), computed once for the module's four tests that judge it, a fresh copy
    for each (a test that edits it cannot change what the next one judges)."""
    return copy.deepcopy(_fixture_validation_once)


def test_pipeline_fixture_cases_are_predicted_per_rank(fixture_root, fixture_validation):
    assert multi_gpu_dirs(fixture_root) == {"h100x2": ("h100", 2)}
    result = fixture_validation
    s = result["multi_gpu"]["h100x2"]
    assert s["by_kind"]["pipeline_step"]["held_out"]["num_cases"] == 3 and s["num_gpus"] == 2
    pipes = {p["schedule"]: p for p in result["pipelines"]}
    assert set(pipes) == {"1f1b", "zb1p", "dualpipev"}
    for name, p in pipes.items():
        assert len(p["idle_simulated_s"]) == 2 and set(p["idle_measured_s"]) == {"0", "1"}
        assert p["simulated_op_spans"] and p["measured_ops"]
        expect = 0.0 if name != "zb1p" else 1 / 1.1 - 1
        for err in p["idle_rel_error"].values():
            assert err == pytest.approx(expect, abs=1e-9)
    case = {c["name"].split()[2]: c for c in result["cases"] if c["kind"] == "pipeline_step"}
    assert case["zb1p"]["rel_error"] == pytest.approx(1 / 1.1 - 1)
    assert case["1f1b"]["rel_error"] == pytest.approx(0.0) and case["1f1b"]["num_gpus"] == 2
    # the fixture's measured ranking (ZB1P stretched) against the twin's
    (ranking,) = _rankings(result["pipelines"])
    measured_s = {n: p["measured_s"] for n, p in pipes.items()}
    assert ranking["measured"] == sorted(measured_s, key=measured_s.get)
    assert measured_s["zb1p"] == pytest.approx(pipes["zb1p"]["predicted_s"] * 1.1)


def test_dualpipe_v_has_less_bubble_than_1f1b_in_the_twin(fixture_validation):
    result = fixture_validation
    idle = {p["schedule"]: max(p["idle_simulated_s"]) for p in result["pipelines"]}
    assert idle["dualpipev"] < idle["1f1b"]


def test_report_shows_kinds_and_the_pipeline_timelines(fixture_validation, tmp_path):
    from reports.validation_report import write_report
    paths = {p.name for p in write_report(fixture_validation, tmp_path)}
    assert {"validation_by_kind.png", "pipeline_0.png", "pipeline_1.png", "pipeline_2.png"} <= paths
    html = (tmp_path / "report.html").read_text()
    assert "Per kind of case" in html and "each rank&#x27;s idle" in html.lower() or "each rank's idle" in html.lower()


def test_a_measured_host_time_per_kernel_reaches_host_bound_steps():
    """Decode is host-bound in eager mode: a measured host time per kernel (Profile.eager host_s,
    from host_dispatch.csv) sets its prediction; a compute-bound training step barely moves."""
    import dataclasses

    from calibration.predict import gpu_spec
    from calibration.whole_step import predict_model_row, train_step_ops
    from twin.costs.profile import fitted_profile
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    fast = dataclasses.replace(prof, eager={**prof.eager, "host_s": {"fwd": 5e-6, "bwd": 5e-6}})
    decode = pd.Series({"bench": "decode", "model": "v2-lite-slice", "batch": 8, "prompt_len": 1024, "gen_len": 32})
    assert predict_model_row(decode, spec, fast) < 0.5 * predict_model_row(decode, spec, prof)
    step = pd.Series({"bench": "train_step", "model": "v3-slice-1l", "batch": 4, "seq_len": 4096, "precision": "bf16"})
    assert predict_model_row(step, spec, fast) == pytest.approx(predict_model_row(step, spec, prof), rel=0.05)
    from twin.core.specs import get_model
    ops = train_step_ops(get_model("v3-slice-1l"), 1, 512, "bf16", spec, prof).ops
    assert sum(1 for h, _ in ops if h is None) == 1     # loss.item(): the one host synchronisation


def test_new_validation_plots_have_no_overlapping_text(fixture_validation):
    import matplotlib.pyplot as plt

    from reports.validation_report import plot_by_kind, plot_pipeline
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reports"))
    from plot_checks import overlapping_texts  # tests/reports/plot_checks.py
    result = fixture_validation
    figs = [plot_by_kind(pd.DataFrame(result["cases"]))] + [plot_pipeline(p) for p in result["pipelines"]]
    for fig in figs:
        assert not overlapping_texts(fig)
        plt.close(fig)


def test_expert_parallel_and_one_stage_rows_are_simulated():
    """An EP-only step (pp 1, ep 2) runs as one stage; with EP the MoE layers pay their
    all-to-alls and hold half the experts."""
    from calibration.predict import gpu_spec
    from twin.costs.profile import fitted_profile
    prof, spec = fitted_profile("h200"), gpu_spec("h200")
    row = {**fx.config("none", model="v3-slice-1l", pp=1, n=2, num_layers=1), "ep": 2, "dp": 2, "bench": "ep_step"}
    result, pred, detail = pipe.simulate_row(pd.Series(row), spec, prof)
    assert detail["schedule"] == "1f1b" and result.num_ranks == 1 and pred > result.makespan_s
    local = pipe.simulate_row(pd.Series({**row, "ep": 1}), spec, prof)[0]
    assert result.makespan_s != local.makespan_s


def _v2_stage_w_s(label: str, measured=None, frac: float = 0.5) -> float:
    from calibration.predict import Eager, gpu_spec
    from twin.costs.profile import fitted_profile
    e = Eager(gpu_spec("h200"), fitted_profile("h200"))
    pipe.accumulate_grads(e, pipe._spec_of({"model": "v2-lite-slice"}), range(1, 3), False, False, 1, label, frac,
                          measured)
    return sum(g for _, g in e.ops)


def test_pipeline_expert_grads_accumulate_through_the_transposed_layout():
    """real/wgrad.py's BF16 grouped dW (and real/fp8.py's FP8 one) reaches .grad through the
    transposed view: a copy even on the first micro-batch, where dense weights are stolen."""
    bf16_first, fp8_first = _v2_stage_w_s("bf16", frac=0.0), _v2_stage_w_s("fp8-blockwise", frac=0.0)
    assert bf16_first == pytest.approx(fp8_first) and bf16_first > 1e-3
    assert _v2_stage_w_s("bf16", frac=1.0) > bf16_first      # later micro-batches also read .grad
    # measured seconds per element replace the fallback, weighted by the share of later micro-batches
    routed = pipe.routed_params(pipe._spec_of({"model": "v2-lite-slice"}), range(1, 3))
    slow, fast = {"first": 2e-12, "add": 4e-12}, {"first": 1e-12, "add": 3e-12}
    assert _v2_stage_w_s("bf16", slow, frac=0.25) - _v2_stage_w_s("bf16", fast, frac=0.25) == pytest.approx(
        routed * 1e-12, rel=1e-6)


def test_measured_accumulate_reads_the_records_beside_the_folder(tmp_path):
    assert pipe.measured_accumulate(tmp_path / "h200x2", "h200") is None
    (tmp_path / "h200").mkdir()
    pd.DataFrame({"op": ["first", "add", "first", "add"], "elements": [100, 100, 200, 200],
                  "time_s": [1e-9, 2e-9, 4e-9, 6e-9]}).to_csv(tmp_path / "h200" / "wgrad_accum.csv", index=False)
    got = pipe.measured_accumulate(tmp_path / "h200x2", "h200")
    assert got["first"] == pytest.approx(1.5e-11) and got["add"] == pytest.approx(2.5e-11)


def test_pipeline_step_has_no_optimizer_unless_the_run_used_sgd():
    from calibration.predict import gpu_spec
    from twin.costs.profile import fitted_profile
    prof, spec = fitted_profile("h200"), gpu_spec("h200")
    row = fx.config("1f1b", n=2)
    _, plain, d = pipe.simulate_row(pd.Series(row), spec, prof)
    _, sgd, d_sgd = pipe.simulate_row(pd.Series({**row, "sgd_lr": 0.1}), spec, prof)
    assert d["after_s"] == 0.0 and d_sgd["after_s"] > 0 and sgd > plain


def test_two_gpu_all_to_all_takes_the_measured_nccl_floor(tmp_path):
    """A small all_to_all pays NCCL's measured latency floor (the host's nccl.csv fit), not the
    catalog's NVLink latency; without a sweep the catalog stays."""
    from calibration.predict import gpu_spec
    from calibration.whole_step import predict_ep_row, with_measured_collectives
    import dataclasses

    from twin.costs.profile import fitted_profile
    # the committed profile carries the 2xH200 sweep already: take it off to test the fallback
    prof, spec = dataclasses.replace(fitted_profile("h200"), collectives={}), gpu_spec("h200")
    rows = [{"bench": "nccl", "op": "all_to_all", "message_bytes": b, "world_size": 2, "bus_factor": 0.5,
             "split": "fit", "time_s": 40e-6 + 0.5 * b / 300e9} for b in (4096, 2**20, 2**24, 2**28)]
    (tmp_path / "h200x2").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "h200x2" / "nccl.csv", index=False)
    measured = with_measured_collectives(prof, tmp_path / "h200x2")
    assert measured.collectives["all_to_all"]["latency_s"] == pytest.approx(40e-6, rel=1e-3)
    assert with_measured_collectives(prof, tmp_path) is prof
    row = pd.Series({"bench": "all_to_all", "world_size": 2, "bytes_per_rank": 2**19})
    assert predict_ep_row(row, spec, measured) > 40e-6
    assert predict_ep_row(row, spec, measured) != predict_ep_row(row, spec, prof)


def test_inference_steps_take_the_no_grad_host_time_where_measured():
    """real/infer.py runs under torch.no_grad: decode and prefill take host_s["infer"] (layer
    forwards timed under no_grad) where measured, else the autograd-recording forward's."""
    import dataclasses

    from calibration.predict import gpu_spec
    from calibration.whole_step import predict_model_row
    from twin.costs.profile import fitted_profile
    prof, spec = fitted_profile("h200"), gpu_spec("h200")
    fwd_only = dataclasses.replace(prof, eager={**prof.eager, "host_s": {"fwd": 30e-6, "bwd": 30e-6}})
    with_infer = dataclasses.replace(prof, eager={**prof.eager, "host_s": {"fwd": 30e-6, "bwd": 30e-6, "infer": 10e-6}})
    decode = pd.Series({"bench": "decode", "model": "v2-lite-slice", "batch": 1, "prompt_len": 1024, "gen_len": 32})
    assert predict_model_row(decode, spec, with_infer) < 0.5 * predict_model_row(decode, spec, fwd_only)
    step = pd.Series({"bench": "train_step", "model": "v2-lite-slice", "batch": 1, "seq_len": 2048, "precision": "bf16"})
    assert predict_model_row(step, spec, with_infer) == predict_model_row(step, spec, fwd_only)


def test_back_to_back_decode_steps_take_the_longer_of_host_and_gpu():
    """Decode steps never synchronise (real/infer.py): repeated back to back, a step lasts as long
    as the slower of the host's dispatch of its ops and the GPU's kernels (per-repetition events in
    steady state, timed_window_s), not their sum: host-bound at small batches, GPU-bound where the
    kernels outgrow the dispatch."""
    import dataclasses

    from calibration.predict import gpu_spec, timed_window_s
    from calibration.whole_step import decode_ops
    from twin.costs.profile import fitted_profile
    from twin.core.specs import get_model
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    for host_s, B in ((20e-6, 1), (1e-6, 256)):
        p = dataclasses.replace(prof, eager={**prof.eager, "host_s": {"fwd": host_s, "bwd": host_s, "infer": host_s}})
        ops = decode_ops(get_model("v3-slice-2l"), B, 1040, spec, p).ops
        host, gpu = sum(h for h, _ in ops), sum(g for _, g in ops)
        longest = max(max(h, g) for h, g in ops)
        assert max(host, gpu) * (1 - 1e-9) <= timed_window_s([], ops) <= max(host, gpu) + longest
        if B == 1:   # host and GPU of the same order: the sum would be far off
            assert timed_window_s([], ops) < 0.9 * (host + gpu)
    # the two regimes: 20 us a kernel leaves the GPU waiting at batch 1, 1 us leaves the host ahead
    p_slow = dataclasses.replace(prof, eager={**prof.eager, "host_s": {"infer": 20e-6}})
    ops = decode_ops(get_model("v3-slice-2l"), 1, 1040, spec, p_slow).ops
    assert sum(h for h, _ in ops) > sum(g for _, g in ops)


@pytest.fixture(scope="module")
def four_gpu_root(tmp_path_factory):
    """TEST FIXTURE records (not measurements): PP2 x EP2 on 4 GPUs of an h200x4 folder, both
    data-parallel replicas running the twin's own op spans, DualPipeV's stretched by 25%."""
    root = tmp_path_factory.mktemp("records4")
    fx.write(root / "h200x4", [fx.config(s, ep=2, dp=2) for s in ("1f1b", "dualpipev")], gpu="h200",
             stretch={"dualpipev": 1.25})
    return root


def test_four_gpu_pipelines_are_predicted_for_every_rank(four_gpu_root, tmp_path):
    assert multi_gpu_dirs(four_gpu_root) == {"h200x4": ("h200", 4)}
    result = validate(four_gpu_root)
    assert result["multi_gpu"]["h200x4"]["num_gpus"] == 4
    pipes = {p["schedule"]: p for p in result["pipelines"]}
    for name, p in pipes.items():
        # four measured GPUs, each judged against the twin's pipeline rank of its stage (rank % pp)
        assert p["num_gpus"] == 4 and len(p["idle_simulated_s"]) == 2 and set(p["idle_measured_s"]) == {"0", "1", "2", "3"}
        expect = 0.0 if name == "1f1b" else 1 / 1.25 - 1
        assert all(err == pytest.approx(expect, abs=1e-9) for err in p["idle_rel_error"].values())
        assert p["idle_measured_s"]["0"] == pytest.approx(p["idle_measured_s"]["2"])
    assert not idle_misses([pipes["1f1b"]]) and len(idle_misses([pipes["dualpipev"]])) == 4
    # the residual per GPU and op kind: GPU 3 against the twin's pipeline rank 1, 25% apart under DualPipeV
    for name, k in (("1f1b", 1.0), ("dualpipev", 1.25)):
        f3 = next(o for o in pipes[name]["op_seconds"] if o["rank"] == 3 and o["kind"] == "F")
        assert f3["measured_s"] == pytest.approx(k * f3["twin_s"])
    cases = [c for c in result["cases"] if c["kind"] == "pipeline_step"]
    assert {c["num_gpus"] for c in cases} == {4}
    (s,) = [v for v in result["by_gpu_kind_gpus"] if v["kind"] == "pipeline_step"]
    assert (s["gpu"], s["num_gpus"], s["held_out"]["num_cases"]) == ("h200", 4, 2)
    # the report draws a row per measured GPU above the twin's two pipeline ranks
    from reports.validation_report import write_report
    paths = {p.name for p in write_report(result, tmp_path)}
    assert {"pipeline_0.png", "pipeline_1.png"} <= paths
    assert "GPU 3 (stage rank 1)" in [t.get_text() for t in _pipeline_axes_labels(pipes["1f1b"])]


def _pipeline_axes_labels(p: dict) -> list:
    import matplotlib.pyplot as plt

    from reports.validation_report import plot_pipeline
    fig = plot_pipeline(p)
    labels = fig.axes[0].get_yticklabels()
    plt.close(fig)
    return labels


def test_rank_finish_adds_the_gradient_reductions_of_each_layout():
    """real/pipeline/engine.py's _reduce after the program: the dense gradients over the dp replicas
    of a stage, the expert gradients over the dp / ep replicas holding the same experts (none for
    PP2 x EP2, where ep = dp), DualPipe's copies over the rank pair once both have ended."""
    from calibration.predict import gpu_spec
    from twin.core.schedules import build_schedule
    from twin.costs.profile import fitted_profile
    prof, gpu = fitted_profile("h200"), gpu_spec("h200")
    spec = pipe._spec_of({"model": "v2-lite-slice", "num_layers": 4})
    sched = build_schedule("1f1b", 2, 4)
    stages = pipe.stage_layers(4, sched.num_model_stages)
    ends = [1.0, 0.9]
    params = [pipe.rank_params(spec, sched, stages, r, ep=2) for r in range(2)]
    # every routed expert once over the pipeline ranks, halved by EP2
    assert sum(e for _, e in params) == pytest.approx(pipe.routed_params(spec, range(4), 2))
    assert pipe.rank_finish_s(spec, sched, stages, ends, 1, 1, gpu, prof) == ends
    pp2ep2 = pipe.rank_finish_s(spec, sched, stages, ends, 2, 2, gpu, prof)
    for r in range(2):
        assert pp2ep2[r] == pytest.approx(ends[r] + pipe.reduce_s(params[r][0], 2, gpu, prof))
    # plain DP2 (ep 1): the experts are replicas too and are reduced as well
    full = [pipe.rank_params(spec, sched, stages, r, ep=1) for r in range(2)]
    dp2 = pipe.rank_finish_s(spec, sched, stages, ends, 2, 1, gpu, prof)
    assert dp2[1] == pytest.approx(ends[1] + pipe.reduce_s(full[1][0], 2, gpu, prof) + pipe.reduce_s(full[1][1], 2, gpu, prof))
    dual = build_schedule("dualpipe", 2, 4)
    dstages = pipe.stage_layers(4, dual.num_model_stages)
    got = pipe.rank_finish_s(spec, dual, dstages, ends, 1, 1, gpu, prof)
    both = sum(pipe.rank_params(spec, dual, dstages, 1, 1))
    assert got[1] == pytest.approx(1.0 + pipe.reduce_s(both, 2, gpu, prof))


def test_probe_host_rate_takes_out_the_waits_of_ops_that_synchronise_the_host(tmp_path):
    """An EP forward waits for the GPU in its dispatches: its host interval is the issue plus those
    waits, so its time per launch is the rate at which the twin's issue model gives the measured
    interval (solved_host_rate_s), below the interval over its launches; ops without a
    synchronisation take the interval over their launches, as before."""
    from twin.costs.profile import fitted_profile
    prof = fitted_profile("h200")
    cfg = fx.config("1f1b", ep=2, dp=2)
    rows = []
    for kind, op_index, chunk, mb in (("F", 0, 0, 0), ("B", 1, 0, 0)):
        rows.append({**{k: cfg[k] for k in pipe.CONFIG_KEYS}, "split": "fit", "rep": 0, "rank": 0,
                     "op_index": op_index, "kind": kind, "microbatch": mb, "chunk": chunk,
                     "start_s": 0.05 * op_index, "end_s": 0.05 * op_index + 0.045,
                     "host_start_s": 0.05 * op_index, "host_end_s": 0.05 * op_index + 0.04})
    got = {}
    for ep in (2, 1):
        folder = tmp_path / f"ep{ep}"
        folder.mkdir()
        pd.DataFrame([{**r, "ep": ep} for r in rows]).to_csv(folder / "pipeline_host.csv", index=False)
        pd.DataFrame([{**cfg, "ep": ep}]).to_csv(folder / "pipeline_step.csv", index=False)
        got[ep] = pipe.measured_host_s(folder, "h200", prof)
        assert "bwd" in got[ep] and "fwd" in got[ep]
    spec = pipe._spec_of({"model": cfg["model"], "num_layers": cfg["num_layers"]})
    stages = pipe.stage_layers(spec.num_layers, 2)
    from calibration.predict import gpu_spec
    f = pipe.stage_ops(spec, stages[0], True, False, cfg["micro_batch_seqs"], cfg["seq_len"], cfg["precision"],
                       gpu_spec("h200"), prof, 2, 0.0).f
    launches = sum(1 for h, _ in f if h is not None)
    assert any(h is None for h, _ in f)                                   # EP2's forward synchronises
    assert got[2]["fwd"] < 0.04 / launches
    # the solved rate gives back the measured interval through the issue model
    host_s = pipe.issue(pipe._with_host(f, got[2]["fwd"]), 0.0)[1]
    assert host_s == pytest.approx(0.04, rel=1e-6)


def test_solved_host_rate_is_the_interval_less_the_waits():
    """Three 1 ms kernels, a synchronisation, three more, issued from level at 10 us a launch: the
    host waits at the synchronisation until the GPU has run the first three (~3 ms), so it ends
    issuing ~3.04 ms after the start; the rate solved from that interval is 10 us, where the
    interval over the six launches would say ~0.5 ms."""
    ops = [(1.0, 1e-3)] * 3 + [(None, 0.0)] + [(1.0, 1e-3)] * 3
    interval = pipe.issue(pipe._with_host(ops, 10e-6), 0.0)[1]
    assert 3.0e-3 < interval < 3.1e-3
    assert pipe.solved_host_rate_s(ops, 0.0, interval) == pytest.approx(10e-6, rel=1e-6)
    plain = [(1.0, 1e-3)] * 6
    assert pipe.solved_host_rate_s(plain, 0.0, 60e-6) == pytest.approx(10e-6)
    # an interval shorter than the waits alone: no rate gives it
    assert pipe.solved_host_rate_s(ops, 0.0, 1e-3) is None


def test_host_rate_comes_from_the_timed_steps_where_the_bench_marked_the_host(tmp_path):
    """s9ep: pipeline_ops.csv with the host's issue marks of the timed steps (and the split) is the
    host rate's source, ahead of the probe's pipeline_host.csv of another minute; records without
    them keep the probe's."""
    from twin.costs.profile import fitted_profile
    prof = fitted_profile("h200")
    cfg = fx.config("zb1p")
    base = {**{k: cfg[k] for k in pipe.CONFIG_KEYS}, "split": "fit", "rep": 0, "rank": 0, "op_index": 0,
            "kind": "B", "microbatch": 0, "chunk": 0, "start_s": 0.0, "end_s": 0.02, "host_start_s": 0.0}
    pd.DataFrame([cfg]).to_csv(tmp_path / "pipeline_step.csv", index=False)
    pd.DataFrame([{**base, "host_end_s": 0.010}]).to_csv(tmp_path / "pipeline_host.csv", index=False)
    probe = pipe.measured_host_s(tmp_path, "h200", prof)["bwd"]
    old_ops = {k: v for k, v in base.items() if k not in ("split", "host_start_s")}
    pd.DataFrame([old_ops]).to_csv(tmp_path / "pipeline_ops.csv", index=False)
    assert pipe.measured_host_s(tmp_path, "h200", prof)["bwd"] == pytest.approx(probe)
    pd.DataFrame([{**base, "host_end_s": 0.005}]).to_csv(tmp_path / "pipeline_ops.csv", index=False)
    assert pipe.measured_host_s(tmp_path, "h200", prof)["bwd"] == pytest.approx(probe / 2)


def test_op_components_split_each_ops_time_into_kernels_and_the_rest(tmp_path):
    """The per-component residual: each op kind's seconds in a step, measured and twin, split into
    kernels per component and the rest (the op's time outside kernels); the twin's components and
    rest add up to its op seconds, the measured ones to the measured op seconds."""
    folder = tmp_path / "h100x2"
    fx.write(folder, [fx.config("zb1p")])
    cfg = fx.config("zb1p")
    kern = [{**{k: cfg[k] for k in pipe.CONFIG_KEYS}, "rank": 0, "op_index": 0, "kind": "F", "kernel": name,
             "calls": 1, "time_s": t}
            for name, t in (("nvjet_sm90_tst_256x128_TNT", 1e-3), ("ncclDevKernel_SendRecv", 5e-4),
                            ("vectorized_elementwise_kernel", 2e-4))]
    pd.DataFrame(kern).to_csv(folder / "pipeline_op_kernels.csv", index=False)
    from twin.costs.profile import fitted_profile
    (case,) = pipe.predict_folder(folder, "h100", fitted_profile("h100"))
    rows = pipe.op_components(case)
    f0 = {r["component"]: r for r in rows if r["rank"] == 0 and r["kind"] == "F"}
    assert set(f0) == {"op", "rest", *pipe.COMPONENTS}
    assert (f0["gemm"]["measured_s"], f0["nccl"]["measured_s"], f0["memory"]["measured_s"]) == (1e-3, 5e-4, 2e-4)
    for side in ("measured_s", "twin_s"):
        assert sum(f0[c][side] for c in pipe.COMPONENTS + ("rest",)) == pytest.approx(f0["op"][side])
    assert f0["gemm"]["twin_s"] > 0 and f0["attention"]["twin_s"] > 0 and f0["nccl"]["twin_s"] == 0.0
    # a kind without profiled kernels: only its op row
    assert {r["component"] for r in rows if r["rank"] == 1} == {"op"}
    assert "0 F" in pipe.format_components(rows)


def test_only_the_held_out_split_is_held_out_where_the_bench_marked_the_host(tmp_path):
    """A folder whose host rates come from its bench's own timed steps (pipeline_ops.csv with the
    host's issue marks and the split) holds out only the held-out split's configurations; one
    without (the rates from the probe, another run) holds out every row, as before."""
    folder = tmp_path / "h100x2"
    fx.write(folder, [fx.config("zb1p", n=4), fx.config("zb1p", n=8)])
    steps = pd.read_csv(folder / "pipeline_step.csv").assign(split=["fit", "holdout"])
    steps.to_csv(folder / "pipeline_step.csv", index=False)
    assert {c["held_out"] for c in validate(tmp_path)["cases"] if c["kind"] == "pipeline_step"} == {True}
    ops = pd.read_csv(folder / "pipeline_ops.csv")
    ops.assign(host_start_s=ops["start_s"], host_end_s=ops["end_s"],
               split=np.where(ops["num_microbatches"] == 8, "holdout", "fit")).to_csv(folder / "pipeline_ops.csv", index=False)
    assert pipe.bench_host_marks(folder)
    held = {c["name"].split()[5]: c["held_out"] for c in validate(tmp_path)["cases"] if c["kind"] == "pipeline_step"}
    assert held == {"n4": False, "n8": True}


def test_each_pipeline_rank_takes_its_own_host_rate_from_the_fitting_split(tmp_path):
    """s10pp: where the bench marked the host in its timed steps, each pipeline rank's host rates
    come from its own GPUs' fitting-split ops (global rank % pp), the rest pooled; a folder with
    only a probe of another run gets none. Rank 1 issuing its forwards at twice rank 0's interval
    solves to twice the rate, and a rank's own rate paces that rank's ops alone."""
    from calibration.predict import gpu_spec
    from twin.costs.profile import fitted_profile
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    folder = tmp_path / "h100x2"
    fx.write(folder, [fx.config("1f1b", n=4)])
    ops = pd.read_csv(folder / "pipeline_ops.csv")

    def marked(rank1_factor):
        # issued level with the GPU (a clean op), the host's interval the op's span (x the factor on rank 1)
        k = np.where(ops["rank"] == 1, rank1_factor, 1.0)
        ops.assign(host_start_s=ops["start_s"], host_end_s=ops["start_s"] + k * (ops["end_s"] - ops["start_s"]),
                   split="fit").to_csv(folder / "pipeline_ops.csv", index=False)
        return pipe.measured_host_by_rank(folder, "h100", prof)
    even, by_rank = marked(1.0), marked(2.0)
    assert set(by_rank) == {0, 1}
    assert by_rank[0]["fwd"] == pytest.approx(even[0]["fwd"])
    assert by_rank[1]["fwd"] == pytest.approx(2 * even[1]["fwd"])
    gap = pipe.measured_host_s(folder, "h100", prof).get("device_gap")
    assert by_rank[0].get("device_gap") == by_rank[1].get("device_gap") == gap     # a GPU figure: pooled
    ops = pd.read_csv(folder / "pipeline_ops.csv")
    ops.drop(columns="split").to_csv(folder / "pipeline_ops.csv", index=False)     # no bench marks: the probe's
    assert pipe.measured_host_by_rank(folder, "h100", prof) is None
    # a slow host on rank 1 alone: rank 1's forwards take longer, rank 0's first forward does not move
    row = pd.Series(fx.config("1f1b", n=4))
    host = {"fwd": 1e-6, "bwd": 1e-6}
    base = pipe.simulate_row(row, spec, prof, host=host)[0]
    mixed = pipe.simulate_row(row, spec, prof, host=host, host_by_rank={0: host, 1: {**host, "fwd": 1e-3}})[0]

    def f_spans(result, rank):
        return [e - s for r, label, s, e in result.op_spans if r == rank and label.startswith("F")]
    assert f_spans(mixed, 0)[0] == pytest.approx(f_spans(base, 0)[0])
    assert min(f_spans(mixed, 1)) > 2 * max(f_spans(base, 1))
    # a diagnostic: validation's prediction keeps one set of rates for all ranks
    ops.to_csv(folder / "pipeline_ops.csv", index=False)
    assert pipe.predict_folder(folder, "h100", prof)[0]["detail"]["host_s_by_rank"] is None
    assert pipe.predict_folder(folder, "h100", prof, per_rank_host=True)[0]["detail"]["host_s_by_rank"]

#!/usr/bin/env bash
# s12ep (issue 13): the 2xH200 EP2 records again, with the current benches, so the twin's EP2 MoE
# layers (ep.csv) and EP2 steps (ep_step) on the H200 rest on a run of today's code with the host's
# own marks, as the 2xH100 ones have since s9ep.
#
# Why: `twin validate` reports the 2xH200 EP2 MoE layers at median 5.3% / P90 11.2% and the EP2
# steps at 5.0% / 5.6%, on records of 2026-11-24 (ep.csv) and 2026-11-26 06:41 (pipeline, host rates
# from the s7pipe probe, another run). The analysis (docs/notes/s12ep_rule.md) found the twin's
# EP forward counting the local layer's sort and un-sort beside dispatch's and combine's, and
# dispatch's and combine's row gathers costed at the blended gather_eff where the profiler times
# them near the streaming rate; both corrections leave the old H200 ep_step -7% to -8% (host rates
# of another run), so they were not adopted. What this run decides: with the H200's host rate
# taken from the fitting split of the same run (s9ep's rule), whether the EP2 steps and the EP2
# layers both stay within issue 13's targets with the corrected EP forward (then it is adopted by
# the rule written before), and whether the old ep.csv drifted (same configurations re-timed; each
# call's host interval recorded beside its event time: host_s).
#
# Run it alone on a 2-GPU host (an H200 pair: its records go to calibration/measurements/h200x2;
# an H100 pair adds nothing this session needs: the lead does not run it there).
#   bash real/campaigns/s12ep.sh OUTDIR
# Parts (GPUs 0 and 1; <= 120 s in all: timeouts 42 + 20 + 58 s; the H200 ran the ep section in 27 s on
# 2026-11-24, s9ep.sh's EP2 and PP2 parts took 15 and 55 s on 2xH100):
#   ep     real.bench --only ep on 2 ranks: all_to_all 1 MiB-1 GiB, dispatch, combine, MoE layer
#          forward and backward at 1,024 / 4,096 / 16,384 tokens a rank, skew 0 and 1, BF16 and FP8
#          (exactly the committed h200x2/ep.csv configurations; every row held out)  -> OUTDIR/s12ep/ep/
#   ep2    EP2 steps (pp 1, dp 2) at 1, 2, 4 micro-batches (2 held out), host marks -> OUTDIR/s12ep/x2/
#   pp2    PP2 under 1f1b, zb1p, dualpipev, dualpipe at 4, 8, 16 (8 held out)       -> OUTDIR/s12ep/x2/
# (ep2 and pp2 are s9ep.sh's 2-GPU part: the pipeline folder's host rates come from its own
# fitting split only where every row of it carries host marks, so PP2 is re-timed beside EP2.)
# Model and shapes of ep2/pp2 as s9ep.sh: v2-lite-slice, 8 layers, seq 4096, one sequence per
# micro-batch, BF16, warm-up 2, >= 3 timed steps. Each part runs under `timeout`; rows are written
# per configuration, so a part cut short keeps what it measured.
# Env: PY (python3), S12EP_PARTS (the parts to run, default "ep ep2 pp2"), S12EP_TINY (1: the CPU dry run on gloo ranks, tiny shapes), S12EP_PIPE_ARGS
# (appended to the pipeline runs in the dry run), S12EP_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s12ep.sh OUTDIR}/s12ep
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S12EP_TINY:-0}
pipe_extra=${S12EP_PIPE_ARGS:-}
scale=${S12EP_TIMEOUT_SCALE:-1}
parts=" ${S12EP_PARTS:-ep ep2 pp2} "
campaign=s12ep
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)
mkdir -p "$root/ep"
part ep 42 "${torchrun[@]}" -m real.bench --out "$root/ep" --only ep "${quick[@]}"

common=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --precision bf16
        --warmup 2 --min-time-s 1.0 --reps-min 3 --reps-max 8)
mkdir -p "$root/x2"
# shellcheck disable=SC2086
part ep2 20 "${torchrun[@]}" -m real.pipeline --out "$root/x2" "${common[@]}" \
  --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 2 --budget-s 12 $pipe_extra
# shellcheck disable=SC2086
part pp2 58 "${torchrun[@]}" -m real.pipeline --out "$root/x2" "${common[@]}" \
  --layouts pp2 --schedules 1f1b,zb1p,dualpipev,dualpipe --microbatches 4,8,16 \
  --holdout 8 --trace-microbatches 8 --budget-s 42 --append $pipe_extra
echo "s12ep done $(date -u +%FT%TZ)" | tee -a "$log"

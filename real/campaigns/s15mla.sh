#!/usr/bin/env bash
# s15mla (issue 13): a third fresh run of the H100's 12 held-out V2-Lite MLA layer records beside the
# fitting MLA host rows of the same process, judged under docs/notes/s15mla_rule.md, written and
# committed BEFORE this run (its records replace the committed h100/mla_rounds.csv.gz whichever way).
#
# Why: two runs of real/campaigns/s14mla.sh (s14mla, s14mla2) showed this GPU's host switching its
# dispatch speed between rows a second apart (the fitting rows' per-round rates 26-84 us a kernel),
# and the estimator "each side at its fastest round" gave held-out P90 10.4% and 20.8%: an extreme of
# each side is fragile. The rule's estimator is ROUND-PAIRED (calibration.mla_rounds): each record of
# a round is predicted with the host rates of that same round's fitting rows, and the record's error
# is the median over rounds of those per-round errors. This run gives it fresh records; the protocol
# is s14mla's, unchanged, with a longer budget for more rounds (the median's noise falls with them).
#
# One part, GPU 0, <= 150 s in all: real/bench/mla_paired.py under REAL_MLA_PAIRED_LAYOUT=rotated
# (a probe block opens and closes each round; the fitting V3-slice b1 s1024 host rows (fwd, infer,
# bwd; BF16 and FP8) and the 6 V2-Lite record pairs (1,024 x 4, 4,096 x 1, 4,096 x 4; BF16 and FP8;
# forward and backward each) in an order rotated by one item each round), at most 40 rounds, the
# section's budget 120 s inside `timeout 135` (a round starts only if the last one's time fits;
# every row is flushed as written, so a cut run keeps its rounds).
# Writes OUTDIR/s15mla/mla_paired.csv (every row: round, pair, GPU name, SM clock, torch/CUDA),
# env.json, log.txt (nvidia-smi, load average and the CPU's model and frequency governor before
# and after). Stops cleanly (exit 0, nothing run) on a GPU that is not an H100: the rule replaces
# only the H100's records, an H200 run of this is not used.
#   bash real/campaigns/s15mla.sh OUTDIR        (S15MLA_QUICK=1: tiny shapes on the CPU, a dry run)
set -u
OUT="${1:?usage: real/campaigns/s15mla.sh OUTDIR}/s15mla"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
export REAL_MLA_PAIRED_LAYOUT=rotated REAL_MLA_PAIRED_MODELS=v2-lite-slice REAL_MLA_PAIRED_ROUNDS=40
QUICK=()
[ "${S15MLA_QUICK:-0}" = "1" ] && QUICK=(--quick)
host_state() {
  echo "load average: $(cat /proc/loadavg 2>/dev/null)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2) x $(nproc 2>/dev/null);" \
       "governor $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
}
{
  echo "s15mla campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} ($(nvidia-smi -L 2>/dev/null | wc -l) GPU(s) seen; one used)"
  nvidia-smi 2>/dev/null | head -20
  host_state
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -1)
  if [ "${S15MLA_QUICK:-0}" != "1" ] && [[ "$gpu" != *H100* ]]; then
    echo "GPU 0 is '${gpu:-none}', not an H100: nothing run (the rule replaces the H100's records only)"
  else
    timeout -k 5 135 python3 -m real.bench --out "$OUT" --only mla_paired --budget-s 120 --min-time-s 0.05 "${QUICK[@]}"
    echo "mla_paired exit $?"
  fi
  host_state
  echo "s15mla campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

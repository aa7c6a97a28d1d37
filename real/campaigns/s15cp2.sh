#!/usr/bin/env bash
# s15cp2 (issue 14): the TP2/CP2 block rows in three rotated rounds, so each record is the block at the
# host's fast state (docs/notes/s15cp2_rule.md, written before any record of this campaign).
#
# Why: s15cp's two rounds a minute apart on one 2xH200 host (h200x2/s15cp_round2/) put the host-bound
# v2-lite rows up to 30% apart (MoE 2K SP 4.00 / 5.19 ms, MLA 4K 2.96 / 3.81 ms), more than the 10%
# target, and the 20 ms launch probe beside each row did not track it (candidate P failed,
# docs/notes/s15cp_rule.md). s14mla met the same spread on the one-GPU MLA records and re-timed them in
# rotated rounds, each configuration at its fastest round (calibration.mla_rounds); this does that for
# the block rows, fitting and held-out alike.
#
# Run it alone on a 2-GPU host (2xH100 and 2xH200 both wanted):
#   bash real/campaigns/s15cp2.sh OUTDIR
# One part, GPUs 0 and 1, <= ~150 s: real.bench's parallel_blocks section under torchrun with
# REAL_BENCH_ROUNDS=3 (the committed grid, repetitions and timing; each round's cases rotated by one;
# the collective host and the CP self-checks in round 0), REAL_BENCH_HOST_PROBE_S=0.02 (the launch probe
# before and after each row), REAL_BENCH_TP_EXTRA=1 (s15cp's fitting v2-lite MoE rows at 3072/6144);
# timeout 170 s, bench budget 125 s (no case starts after it) -> OUTDIR/s15cp2/: parallel_blocks.csv
# (tp_block rows of every round, column `round`), parallel_blocks_cp.csv (cp_block rows), collective_host.csv,
# env.json (GPU name, clocks, torch / CUDA / NCCL versions; every row carries them too). Rows are flushed
# one at a time: a cut run keeps every round it measured. Stops cleanly (exit 0) on fewer than 2 GPUs.
# Env: PY (python3), S15CP2_PARTS (default "rounds"), S15CP2_TINY (1: CPU dry run on gloo ranks, the tiny
# model), S15CP2_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s15cp2.sh OUTDIR}/s15cp2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
export REAL_BENCH_HOST_PROBE_S=0.02 REAL_BENCH_TP_EXTRA=1 REAL_BENCH_ROUNDS=3
PY=${PY:-python3}
tiny=${S15CP2_TINY:-0}
scale=${S15CP2_TIMEOUT_SCALE:-1}
parts=" ${S15CP2_PARTS:-rounds} "
campaign=s15cp2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)
d="$root/raw"
mkdir -p "$d"
part rounds 170 "${torchrun[@]}" -m real.bench --out "$d" --only parallel_blocks --budget-s 125 \
  ${quick[@]+"${quick[@]}"}
if [ -e "$d/parallel_blocks.csv" ]; then   # bench is the first column, never quoted
  awk -F, 'NR == 1 || $1 == "tp_block"' "$d/parallel_blocks.csv" > "$root/parallel_blocks.csv"
  awk -F, 'NR == 1 || $1 == "cp_block"' "$d/parallel_blocks.csv" > "$root/parallel_blocks_cp.csv"
  echo "$campaign: $(( $(wc -l < "$root/parallel_blocks.csv") - 1 )) TP rows," \
    "$(( $(wc -l < "$root/parallel_blocks_cp.csv") - 1 )) CP rows" | tee -a "$log"
fi
for f in collective_host.csv env.json; do [ -e "$d/$f" ] && mv "$d/$f" "$root/$f"; done
rm -rf "$d"
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s15cp (issue 14): the TP2/CP2 block rows again, each beside a measure of the host's speed.
#
# Why: the held-out TP2/CP2 rows still outside 10% (2xH100 4 of 20, 2xH200 6 of 20) are all v2-lite
# rows whose host issues most of the time, and the host's speed moves from row to row and run to run
# (the same block's host beyond its one-GPU reference moves by 0.5-1 ms between sizes:
# docs/notes/s14cp2_rule.md). Issue 15 made the host's speed an input measured beside each run
# (real/serve/hostspeed.py); this campaign measures it beside each block row, so the twin can scale
# its host terms by it (docs/notes/s15cp_rule.md, written before any held-out figure under it).
#
# Run it alone on a 2-GPU host (2xH100 and 2xH200 both wanted: each GPU's records are replaced):
#   bash real/campaigns/s15cp.sh OUTDIR
# Two parts, GPUs 0 and 1, <= ~130 s in all (each part one torchrun of real.bench's parallel_blocks
# section: collective_host, the TP rows, then the CP rows, the committed grid with the committed
# repetitions, timed exactly as the committed records; REAL_BENCH_HOST_PROBE_S=0.02: the launch probe
# before and after each row, ~4 s a part; REAL_BENCH_TP_EXTRA=1: fitting v2-lite MoE TP rows at 3072
# and 6144 tokens, ~3 s):
#   round1  timeout 80 s (bench budget 60 s: no case starts after it) -> OUTDIR/s15cp/round1/
#   round2  timeout 70 s (budget 50 s), the same again: the run-to-run check -> OUTDIR/s15cp/round2/
# Each round writes parallel_blocks.csv (tp_block rows), parallel_blocks_cp.csv (cp_block rows),
# collective_host.csv, env.json (GPU name, clocks, torch / CUDA / NCCL versions; every row carries
# gpu_name, clocks and the versions too). Rows are flushed one at a time, so a part cut short keeps
# the rows it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs.
# Env: PY (python3), S15CP_PARTS (default "round1 round2"), S15CP_TINY (1: CPU dry run on gloo ranks,
# the tiny model), S15CP_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s15cp.sh OUTDIR}/s15cp
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
export REAL_BENCH_HOST_PROBE_S=0.02 REAL_BENCH_TP_EXTRA=1
PY=${PY:-python3}
tiny=${S15CP_TINY:-0}
scale=${S15CP_TIMEOUT_SCALE:-1}
parts=" ${S15CP_PARTS:-round1 round2} "
campaign=s15cp
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)

round() {  # name, timeout (s), bench budget (s)
  local d="$root/$1"
  mkdir -p "$d/raw"
  part "$1" "$2" "${torchrun[@]}" -m real.bench --out "$d/raw" --only parallel_blocks --budget-s "$3" \
    ${quick[@]+"${quick[@]}"}
  if [ -e "$d/raw/parallel_blocks.csv" ]; then   # bench is the first column, never quoted
    awk -F, 'NR == 1 || $1 == "tp_block"' "$d/raw/parallel_blocks.csv" > "$d/parallel_blocks.csv"
    awk -F, 'NR == 1 || $1 == "cp_block"' "$d/raw/parallel_blocks.csv" > "$d/parallel_blocks_cp.csv"
  fi
  for f in collective_host.csv env.json; do [ -e "$d/raw/$f" ] && mv "$d/raw/$f" "$d/$f"; done
  rm -rf "$d/raw"
  [ -e "$d/parallel_blocks.csv" ] && echo "$campaign $1: $(( $(wc -l < "$d/parallel_blocks.csv") - 1 )) TP rows," \
    "$(( $(wc -l < "$d/parallel_blocks_cp.csv") - 1 )) CP rows" | tee -a "$log"
}
round round1 80 60
round round2 70 50
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

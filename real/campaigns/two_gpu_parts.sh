# Sourced by a multi-GPU campaign (s12ep.sh, s12ep2.sh; s13pp.sh with gpus=4) after it sets `campaign`
# (its name), `root` (its output folder), `tiny` (1: the CPU dry run on gloo ranks), `scale` (timeout
# multiplier), `parts` (" name name ... ": the parts to run) and optionally `gpus` (the GPUs it needs,
# 2 unless set). Logs to $root/$campaign.log, writes the host's state to $root/host_$campaign.txt,
# exits 0 where fewer than `gpus` GPUs exist, and defines
#   part NAME TIMEOUT_S CMD...   one command under `timeout`, its rc and wall time logged
# and `torchrun` (`gpus` ranks of this host, GPUs 0..gpus-1).
gpus=${gpus:-2}
log="$root/$campaign.log"
echo "$campaign campaign $(date -u +%FT%TZ)" | tee -a "$log"
{ date -u +%FT%TZ; nvidia-smi 2>/dev/null; nvidia-smi topo -m 2>/dev/null; nproc; cat /proc/loadavg; } \
  > "$root/host_$campaign.txt" 2>&1
if [ "$tiny" = "1" ]; then
  ngpu=$gpus   # CPU dry run: gloo ranks
else
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
fi
if [ "$ngpu" -lt "$gpus" ]; then
  echo "$campaign: $ngpu GPUs, needs $gpus: nothing run" | tee -a "$log"
  echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"
  exit 0
fi
[ "$tiny" = "1" ] || export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $(( gpus - 1 )))}
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "$campaign: $ngpu GPUs ($gpu_name)" | tee -a "$log"

part() {
  local name=$1 limit=$(( $2 * scale ))
  shift 2
  [[ "$parts" == *" $name "* ]] || return 0
  local start
  start=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
  echo "$campaign part $name rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
}
torchrun=("$PY" -m torch.distributed.run --standalone --nproc-per-node "$gpus")

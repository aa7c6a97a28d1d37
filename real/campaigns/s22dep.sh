#!/usr/bin/env bash
# s22dep (issue 15): DeepEP's low-latency send and receive kernels timed apart, on one 2-GPU host.
#
# Why: DeepSeek's decode runs each dispatch and combine with return_recv_hook as a send kernel and a
# receive kernel on the compute stream; the twin books their SM time at zero (docs/notes/s20srv2.md,
# "Where the remaining 7.9 ms can be"). docs/notes/s22dep_rule.md says how these rows may enter the
# decode step. DeepEP is not part of this repository: it is built for the lent image by
# _camp_deepep/build.sh (git-ignored, carried) and found here through DEEPEP_DIR.
#
# Run it alone on a 2-GPU host (2xH200 or 2xH100, the same script):
#   bash real/campaigns/s22dep.sh OUTDIR
# One part, GPUs 0 and 1, <= 150 s in all (timeout 100 s, and 45 s for the fallback below):
#   ll     real.bench.deepep_ll on 2 ranks: tokens a rank 32, 64, 96, 128 (buffer for 128), hidden
#          7168, top-8 of 256 experts (128 local a rank; the kernels' grid as at DeepSeek's EP128
#          profile: 128 blocks) and of 288 (144 local; grid 96 blocks as EP144's 256 + 32 redundant),
#          FP8 dispatch; modes hook at gap 0 and 300 us, and nohook; 5 warm-up and 20 profiled rounds
#          each -> OUTDIR/s22dep/x2/rank*/deepep_ll.csv
#   ll_novmm  only where ll measured nothing: the same at 256 experts with NVSHMEM_DISABLE_CUDA_VMM=1
#          -> OUTDIR/s22dep/x2_novmm/
# Rows are written per configuration, so a part cut short keeps what it measured. Stops cleanly
# (exit 0, nothing run) on fewer than 2 GPUs; where deep_ep does not import, the harness writes one
# status row (deep_ep_absent) and exits 0.
# Env: PY (python3), DEEPEP_DIR (_camp_deepep/built: deep_ep/ and deep_ep_cpp*.so), S22DEP_PARTS
# (default "ll ll_novmm"), S22DEP_GPUS (2; 1 -> OUTDIR/s22dep/x1/), S22DEP_TINY (1: CPU dry run, one process,
# no deep_ep), S22DEP_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s22dep.sh OUTDIR}/s22dep
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S22DEP_TINY:-0}
scale=${S22DEP_TIMEOUT_SCALE:-1}
parts=" ${S22DEP_PARTS:-ll ll_novmm} "
campaign=s22dep
gpus=${S22DEP_GPUS:-2}   # 1: the same on one GPU (every expert local; a check of how the kernels scale by GPU)
deepep_dir=${DEEPEP_DIR:-_camp_deepep/built}
if [ "$tiny" != "1" ] && [ -d "$deepep_dir" ]; then
  export PYTHONPATH="$(cd "$deepep_dir" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
  export DEEPEP_COMMIT=${DEEPEP_COMMIT:-$(cat "$deepep_dir/DEEPEP_COMMIT" 2>/dev/null)}
fi
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun
$PY -c "import importlib.metadata as m; print('nvshmem', m.version('nvidia-nvshmem-cu13'))" >> "$root/host_$campaign.txt" 2>&1

x="x$gpus"
mkdir -p "$root/$x"
if [ "$tiny" = "1" ]; then
  part ll 60 "$PY" -m real.bench.deepep_ll --out "$root/$x" --tokens 32 --iters 2 --warmup 1
else
  part ll 100 "${torchrun[@]}" -m real.bench.deepep_ll --out "$root/$x" --experts 256,288 --tokens 32,64,96,128 \
    --max-tokens 128 --gaps-us 0,300 --warmup 5 --iters 20
  # NVSHMEM maps the peer's buffer through CUDA VMM handles by default; where that fails in a container
  # (no row measured), once more with the legacy CUDA IPC handles, 256 experts only
  if [ "$(grep -c ',ok,' "$root/$x/rank0/deepep_ll.csv" 2>/dev/null)" = "0" ] || [ ! -f "$root/$x/rank0/deepep_ll.csv" ]; then
    (export NVSHMEM_DISABLE_CUDA_VMM=1; part ll_novmm 45 "${torchrun[@]}" -m real.bench.deepep_ll \
      --out "$root/${x}_novmm" --experts 256 --tokens 32,64,128 --max-tokens 128 --gaps-us 0,300 --warmup 5 --iters 20)
  fi
fi
echo "s22dep done $(date -u +%FT%TZ)" | tee -a "$log"

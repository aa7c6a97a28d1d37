# Sourced by campaign scripts: the GPUs a campaign may use.
#   NGPU     the host's GPUs (nvidia-smi -L), never more than CUDA_VISIBLE_DEVICES names where the
#            caller set it (a lane of a shared host); 0 without nvidia-smi
#   ONE_GPU  the first GPU the caller gave the campaign (GPU 0 where unset), for one-GPU parts
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  _nvis=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
  [ "$_nvis" -lt "$NGPU" ] && NGPU=$_nvis
fi
ONE_GPU="${CUDA_VISIBLE_DEVICES:-0}"
ONE_GPU="${ONE_GPU%%,*}"

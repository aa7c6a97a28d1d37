#!/usr/bin/env bash
# What stops the serving engine's eager iterations for 10-30 ms on some H100 hosts (issue 15, branch s24stall; one GPU,
# about 80 s, hard cap 3 x 34 s + 8 s): s23srvh's Poisson loads (real/serve/plans.py S23_PLANS: Poisson 12/s and 28/s
# and a closed loop of 20, seeds 71-73, prompts 192-768, outputs 32-160; the main thread pinned to one CPU of its GPU's)
# with every iteration's host counters recorded (--stall-trace, real/serve/stalltrace.py: thread CPU time, scheduler
# run delay, context switches, page faults, the CPU's steal / irq time, Python GC collections, the CUDA caching
# allocator's segment allocations; per run every CPU, thread and process), each run after a 1 s pause probe.
# Parts, one engine process each:
#   hiccup-start  the hiccup meter (python -m real.serve.stalltrace): a busy Python loop that launches nothing, 1 s on
#                 the engine's pinned CPU, then 1 s on CPU 0 and on a middle CPU: does the host pause a thread with no
#                 GPU work at all (steal, another task, interrupts)?
#   qwen3moe      gpu1-s23-qwen3moe, the stall trace, Python's GC as it comes (the engine as s23srvh ran it)
#   qwen3moe_gcfreeze  the same plan and seeds with --gc-freeze (gc.collect() + gc.freeze() before each run's load,
#                 as vLLM and SGLang do after warm-up): the GC hypothesis' A/B on the same host
#   qwen2moe      gpu1-s23-qwen2moe, the stall trace, GC as it comes (a second model's stalls)
#   hiccup-end    the hiccup meter on the pinned CPU again (3 s), then on CPU 0 (1 s)
# From round 3: during the parts named in S24_GAPS_PARTS (default qwen3moe_gcfreeze and qwen2moe) the hiccup meter
# also runs as a process of its own on the CPU below the pinned one for the whole part, every gap of 0.5 ms or more
# written with its CLOCK_MONOTONIC time (gaps.csv; python -m real.serve.stalltrace --gaps), so an engine stall can be
# lined up with what a thread that launches nothing saw at the same moment (serve_load run_t0_monotonic_s).
#   real/campaigns/s24stall.sh OUTDIR
# Writes OUTDIR/s24stall/<part>/serve_{load,requests,iterations,stalls,hostrun}.csv + env.json (GPU name, clocks,
# torch / CUDA / NCCL versions in every load row and env file), OUTDIR/s24stall/hiccups.csv, host.txt (CPUs, kernel,
# the process table, interrupts, nvidia-smi) and log.txt. Exits 0 doing nothing without a GPU.
# CPU dry run: S24_DEVICE=cpu S24_PLANS=tiny-new S24_PART_S=60 (tests/real/test_real_campaign_s24stall.py).
set -u
OUT=${1:?usage: real/campaigns/s24stall.sh OUTDIR}
DIR="$OUT/s24stall"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S24_DEVICE:-auto}
PART_S=${S24_PART_S:-34}
PAUSE_S=${S24_PAUSE_S:-1}
HICCUP_S=${S24_HICCUP_S:-1}
HICCUP_END_S=${S24_HICCUP_END_S:-3}   # the closing meter on the pinned CPU
GAPS_PARTS=${S24_GAPS_PARTS:-qwen3moe_gcfreeze qwen2moe}
# part = outdir:plan:extra options (',' for spaces)
PARTS=${S24_PARTS:-qwen3moe:gpu1-s23-qwen3moe: qwen3moe_gcfreeze:gpu1-s23-qwen3moe:--gc-freeze qwen2moe:gpu1-s23-qwen2moe:}
if [ -n "${S24_PLANS:-}" ]; then   # the dry run: one plan, with and without the freeze
  PARTS="$S24_PLANS:$S24_PLANS: ${S24_PLANS}_gcfreeze:$S24_PLANS:--gc-freeze"
  GAPS_PARTS=${S24_GAPS_PARTS:-${S24_PLANS}_gcfreeze}
fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
PIN_CPU=$("$PY" -c "from real.serve.hostpin import pin_cpus; import sys; print(pin_cpus('core', 0, 1, None if sys.argv[1] == 'cpu' else 0)[-1])" "$DEVICE" 2>/dev/null || echo 0)
NCPU=$(nproc)
GAP_CPU=$(( PIN_CPU > 0 ? PIN_CPU - 1 : 0 ))   # beside the engine's CPU, never on it
{
  echo "== date"; date -u +%FT%TZ; echo "== uptime"; uptime
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== uname"; uname -a
  echo "== cpufreq"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed"
  echo "== thp"; cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
  echo "== clocksource"; cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== pinned cpu"; echo "$PIN_CPU"
  echo "== ps"; ps -eo pid,psr,ni,pcpu,cputime,comm --sort=-pcpu 2>/dev/null | head -40
  echo "== interrupts"; cat /proc/interrupts 2>/dev/null | head -80
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode,pci.bus_id --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s24stall start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, pinned CPU $PIN_CPU, parts $PARTS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    timeout -k 2 20 "$PY" -m real.serve.stalltrace "$DIR/hiccups.csv" "$HICCUP_S" "$PIN_CPU" 0 $((NCPU / 2))
    echo "hiccup-start exit $? (${SECONDS} s)"
    for part in $PARTS; do
      name=${part%%:*}; rest=${part#*:}; plan=${rest%%:*}; extra=${rest#*:}; extra=${extra//,/ }
      gap_pid=""
      if [[ " $GAPS_PARTS " == *" $name "* ]]; then
        timeout -k 2 $((PART_S + 5)) "$PY" -m real.serve.stalltrace --gaps "$DIR/$name.gaps.csv" "$PART_S" "$GAP_CPU" &
        gap_pid=$!
      fi
      # no run starts after --budget-s; the hard timeout leaves the finished runs' rows
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$DIR/$name" --plan "$plan" \
        --device "$DEVICE" --budget-s $((PART_S - 12)) --timing --host-probe --pause-probe "$PAUSE_S" --stall-trace $extra
      echo "$name ($plan $extra) exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
      if [ -n "$gap_pid" ]; then kill "$gap_pid" 2>/dev/null; wait "$gap_pid" 2>/dev/null; echo "$name gap meter on CPU $GAP_CPU stopped"; fi
    done
    timeout -k 2 20 "$PY" -m real.serve.stalltrace "$DIR/hiccups.csv" "$HICCUP_END_S" "$PIN_CPU"
    timeout -k 2 15 "$PY" -m real.serve.stalltrace "$DIR/hiccups.csv" "$HICCUP_S" 0
    echo "hiccup-end exit $? (${SECONDS} s)"
    { echo "== ps (end)"; ps -eo pid,psr,ni,pcpu,cputime,comm --sort=-pcpu 2>/dev/null | head -40
      echo "== interrupts (end)"; cat /proc/interrupts 2>/dev/null | head -80; } >> "$DIR/host.txt" 2>&1
  else
    echo "skipped: no GPU"
  fi
  echo "s24stall end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

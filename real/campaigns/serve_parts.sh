# Sourced by the serving campaigns after gpus.sh (s33dedup: until then each wrote these lines again): the host's record,
# the part loop and the campaign's log. Every function writes what the scripts wrote before it, line for line.
#   serve_host FILE [SECTION...]   host.txt: the named sections in order (default: nproc lscpu loadavg smi clock
#                                  topology); each section is "== <title>" then its command's output, errors included
#   serve_model PLAN               prints the model of real/serve/plans.py's PLANS[PLAN] (through $PY)
#   serve_parts "PARTS"            runs each part "kind:plan" (or a bare plan) in turn through the caller's function
#                                  `serve_part KIND PLAN CAP_S` (KIND empty for a bare plan; its status is the part's)
#                                  and logs "<kind plan> exit <status> at <time> (<s> s)"; CAP_S is PART_S, or with
#                                  TOTAL_S set the smaller of PART_S and what is left of TOTAL_S since SECONDS=0, a
#                                  part skipped ("... skipped: ...") when under 20 s is left
#   serve_campaign NAME LOG DETAIL BODY...   SECONDS=0, then the log: "NAME start <time>, DETAIL", BODY... run where
#                                  NGPU >= SERVE_NEED_GPUS (default 1) or DEVICE is cpu (else "skipped: ..."), "NAME
#                                  end <time> after <s> s"; stdout and stderr together, USDT: lines dropped, into LOG
#                                  and stdout
# Uses the caller's PY, DEVICE, PART_S, TOTAL_S (optional) and gpus.sh's NGPU, ONE_GPU.

# the query every host.txt since s30 takes (s24-s29: without driver_version, section smi-nodriver)
SERVE_SMI_FIELDS=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode

serve_host() {
  local file=$1 section
  shift
  [ $# -gt 0 ] || set -- nproc lscpu loadavg smi clock topology
  {
    for section in "$@"; do
      case $section in
        nproc) echo "== nproc"; nproc ;;
        lscpu) echo "== lscpu"; lscpu 2>/dev/null ;;
        cpufreq) echo "== cpufreq"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed" ;;
        loadavg) echo "== loadavg"; cat /proc/loadavg ;;
        smi) echo "== nvidia-smi"; nvidia-smi --query-gpu=$SERVE_SMI_FIELDS,driver_version --format=csv 2>/dev/null ;;
        smi-nodriver) echo "== nvidia-smi"; nvidia-smi --query-gpu=$SERVE_SMI_FIELDS --format=csv 2>/dev/null ;;
        clock) echo "== nvidia-smi -q -d CLOCK"; nvidia-smi -q -d CLOCK 2>/dev/null ;;
        performance) echo "== nvidia-smi -q -d PERFORMANCE"; nvidia-smi -q -d PERFORMANCE 2>/dev/null ;;
        topology) echo "== topology"; nvidia-smi topo -m 2>/dev/null ;;
        governor) echo "== cpufreq governor"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null ;;
        cpuidle) echo "== cpuidle states"; cat /sys/devices/system/cpu/cpu0/cpuidle/state*/name 2>/dev/null ;;
        *) echo "serve_host: unknown section $section" >&2; return 2 ;;
      esac
    done
  } > "$file" 2>&1
}

serve_model() {
  "$PY" -c "from real.serve.plans import PLANS; print(PLANS['$1'].model)"
}

serve_parts() {
  local part kind plan label left cap
  for part in $1; do
    kind=${part%%:*}; plan=${part#*:}
    if [ "$part" = "$plan" ]; then kind=""; label=$plan; else label="$kind $plan"; fi
    cap=$PART_S
    if [ -n "${TOTAL_S:-}" ]; then
      left=$((TOTAL_S - SECONDS))
      if [ "$left" -lt 20 ]; then echo "$label skipped: ${SECONDS} s of ${TOTAL_S} spent"; continue; fi
      cap=$(( left < PART_S ? left : PART_S ))
    fi
    serve_part "$kind" "$plan" "$cap"
    echo "$label exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
  done
}

serve_campaign() {
  local name=$1 log=$2 detail=$3 need=${SERVE_NEED_GPUS:-1}
  shift 3
  SECONDS=0
  {
    echo "$name start $(date -u +%FT%TZ), $detail"
    if [ "$NGPU" -ge "$need" ] || [ "$DEVICE" = cpu ]; then
      "$@"
    elif [ "$need" = 1 ]; then
      echo "skipped: no GPU"
    else
      echo "skipped: $NGPU GPU(s), needs $need"
    fi
    echo "$name end $(date -u +%FT%TZ) after ${SECONDS} s"
  } 2>&1 | grep -v '^USDT:' | tee "$log"
}

"""The request simulation against real/'s serving engine: each recorded load run replayed.

real/serve's load generator writes (real/serve/records.py) serve_load.csv (one row per run: the
engine's settings, the load, throughput and latency percentiles, fit or holdout) and
serve_requests.csv (one row per request: arrival, lengths, first token, finish). `scenario_for`
turns a run's settings into a serving scenario (the model by its catalog name, the GPU from the
environment's GPU name, EP over the run's GPUs with DP attention, the engine's token budget, running
cap, CUDA-graph buckets and paged-cache size), `predict_run` replays exactly its requests (Poisson:
their arrival times; closed loop: the same concurrency, each next request released by a finish) and
reduces the twin's per-request records the way the load generator does (throughput = tokens over
the run, percentiles linear between order statistics), and `validate_load` compares every run.

With the engine's measured iteration spread (serve.iteration_spread, the default) a replay is one
draw: the twin's figure is then the median over SPREAD_SEEDS replays (traffic seeds 0..N-1), each
of the measured run's size, so a P99 of 87 requests is compared with the twin's P99 of 87.

Targets (issue 15, held-out runs): throughput within 5%, TTFT and TPOT P50 within 10%, P99 within 20%.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
from pathlib import Path

import numpy as np

from twin.core.scenario import SERVING, from_dict
from twin.core.specs import serve_engines
from twin.serving import engine
from twin.serving.simulate import simulate
from twin.serving.timing import engine_spread, sharing_grids, sharing_iterations
from twin.serving.workload import from_records
from calibration.records_io import csv_exists, json_exists, open_csv, read_json

FIGURES = ("output_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")
SPREAD_SEEDS = 8   # replays per run when iterations are drawn from the measured spread
SPREAD_SEED_BASE = 0   # their first traffic seed (0: seeds 0..7; s28serve's seed_noise moves it to measure the draw's noise)
TARGETS = {"output_tokens_per_s": 0.05, "ttft_p50_s": 0.10, "tpot_p50_s": 0.10, "ttft_p99_s": 0.20, "tpot_p99_s": 0.20}


def gpu_key(gpu_name: str) -> str:
    """'NVIDIA H200' -> 'h200' (the catalog's names)."""
    name = gpu_name.lower()
    for key in ("h200", "h100", "h800", "b200"):
        if key in name:
            return key
    raise ValueError(f"no catalog GPU for {gpu_name!r}")


def pin_suffix(pin: str | None) -> str:
    """'' for an unpinned engine (no pin column, '' or 'none'), else '-pin<mode>' (real/serve --pin):
    a pinned engine is a deployment of its own, with its own fitted table."""
    return "" if pin in (None, "", "none") else f"-pin{pin}"


def engine_name(run: dict) -> str:
    """The serve_engines.toml table of a run's engine: real/serve on its GPU at its EP size (and
    its host-thread pinning, when pinned)."""
    return f"real-serve-{gpu_key(run['gpu_name'])}-ep{max(1, int(run['ep_size'] or 1))}{pin_suffix(run.get('pin'))}"


def record_host_launch_s(run: dict) -> float:
    """The host's measured speed beside a run (real/serve --host-probe: the mean of the launch probe
    right before and right after it, host seconds per small kernel launch); 0 for a record without
    it (the engine table's fit host, serve.host_launch_s's default)."""
    try:
        v = [float(run.get(f"probe_{w}_launch_s") or "nan") for w in ("before", "after")]
    except ValueError:
        return 0.0
    v = [x for x in v if math.isfinite(x) and x > 0]
    return sum(v) / len(v) if v else 0.0


def record_host_stalls(run: dict) -> dict:
    """The host's measured pauses a run's row carries (host_stall_rate_per_s, and host_stall_sizes_s as
    ';'-joined seconds or a sequence; set by calibration.serve_host_stalls.with_host_pauses from the pause probe):
    the serve keys, {} without (no pauses given: none simulated)."""
    rate = float(run.get("host_stall_rate_per_s") or 0.0)
    sizes = run.get("host_stall_sizes_s") or ()
    if isinstance(sizes, str):
        sizes = [float(x) for x in sizes.split(";") if x]
    if not (rate > 0 and len(sizes)):
        return {}
    return {"host_stall_rate_per_s": rate, "host_stall_sizes_s": [float(x) for x in sizes]}


def timed_run_ids(iterations: list[dict]) -> frozenset[str]:
    """The runs whose engine ran with real/serve --timing: their per-iteration rows carry the instrument's columns
    (host_s, the host's time to the launch, and gpu_s, the CUDA-event time; empty or nan without it; on a CPU dry run
    host_s alone) (twin.serving.timing.ADOPT_TIMING_INSTRUMENT)."""
    return frozenset(r["run_id"] for r in iterations
                     if any(str(r.get(k, "")).strip().lower() not in ("", "nan", "none") for k in ("host_s", "gpu_s")))


def scenario_for(run: dict, engine_costs: bool = True, spread: bool = True, engine: str | None = None):
    """The serving scenario of one serve_load row (scenario_tables_for's tables, validated)."""
    return from_dict(scenario_tables_for(run, engine_costs, spread, engine), f"serve_load.csv run {run['run_id']}", SERVING)


def scenario_tables_for(run: dict, engine_costs: bool = True, spread: bool = True, engine: str | None = None) -> dict:
    """The raw tables of the serving scenario of one serve_load row: real/serve's policy (its token budget counting
    the decode rows, admission reserving pages for the whole context, its running cap, CUDA-graph
    buckets - real/serve captures graphs only without EP - and under EP request i on rank i mod 2,
    the ranks stepping in lockstep) and, with `engine_costs`, its fitted engine
    terms (twin/data/serve_engines.toml; none when the table has no entry for the run's GPU and EP)
    and, with `spread`, iteration times drawn from their measured spread; the host's measured
    speed where the record has it (record_host_launch_s), and the host's pauses where the row is given them
    (record_host_stalls)."""
    gpus = max(1, int(run["num_gpus"] or 1))
    ep = int(run["ep_size"] or 1)
    dp = run.get("attention_parallel", "dp") == "dp"
    buckets = [int(b) for b in str(run.get("graph_batch_buckets") or "").split()]
    pages = [int(b) for b in str(run.get("graph_page_buckets") or "").split()]
    graphs = str(run.get("cuda_graphs", "1")).lower() in ("1", "true") and bool(buckets) and ep == 1
    name = (engine or engine_name(run)) if engine_costs else ""
    if name and name not in serve_engines():
        name = ""
    raw = {
        "name": f"real-serve-{run['run_id']}",
        "model": {"name": run["model"]},
        "cluster": {"gpu": gpu_key(run["gpu_name"]), "num_gpus": gpus},
        "serve": {"ep": ep, "tp": 1 if dp else ep, "dp_attention": dp,
                  "weight_precision": "fp8" if "fp8" in str(run.get("precision", "")).lower() else "bf16",
                  "kv_precision": "bf16", "num_microbatches": 1, "batch": int(run["max_running"]) * (ep if dp else 1),
                  "max_batch_tokens": int(run["token_budget"]), "token_budget_counts_decode": True,
                  "dp_routing": "round_robin",
                  "kv_admission": "reserve", "cuda_graphs": graphs,
                  "cuda_graph_max_batch": max(buckets) if graphs else 0,
                  "graph_batch_buckets": buckets if graphs else [], "graph_page_buckets": pages if graphs else [],
                  "kv_page_size": int(run["page_size"]), "engine_costs": name, "iteration_spread": spread,
                  "host_launch_s": record_host_launch_s(run),
                  "engine_timing": bool(run.get("engine_timing", False)),
                  **record_host_stalls(run),
                  "kv_capacity_tokens": (int(run["num_pages"]) - 1) * int(run["page_size"]) * (ep if dp else 1),
                  "disaggregated": False},
        "traffic": {"arrival": "closed" if run["arrival"] == "closed" else "trace",
                    "concurrency": int(float(run.get("concurrency") or 0))},
    }
    if raw["traffic"]["arrival"] == "trace":
        raw["traffic"] = {"arrival": "poisson", "rate_per_s": float(run.get("rate_per_s") or 1.0)}
    return raw


def _pct(x, q) -> float:
    x = np.asarray([v for v in x if math.isfinite(v)])
    return float(np.percentile(x, q)) if len(x) else math.nan


def loadgen_figures(per: dict) -> dict:
    """The load generator's figures from per-request columns (real/serve/records.py summarize)."""
    done = np.isfinite(per["finish_s"])
    start = float(np.nanmin(per["arrival_s"])) if np.isfinite(per["arrival_s"]).any() else 0.0
    duration = float(np.nanmax(per["finish_s"])) - min(start, 0.0)
    out_tokens = float(per["output_len"][done].sum())
    tpot = per["tpot_s"][done]
    return {"output_tokens_per_s": out_tokens / duration if duration > 0 else math.nan,
            "ttft_p50_s": _pct(per["ttft_s"], 50), "ttft_p99_s": _pct(per["ttft_s"], 99),
            "tpot_p50_s": _pct(tpot, 50), "tpot_p99_s": _pct(tpot, 99)}


SESSION_GAP_S = 120.0   # runs of one records folder written this close together ran in one engine process
# ... or, where a run has its duration, within that plus this: a run's row is written when it ends,
# so the next run of the same process ends its own duration (and its records' gathering) later; a
# new process first builds its model and runs its warm-up (the h100x2 EP2 plans, two processes 72 s
# apart, the second's first run 6.4 s long)
SESSION_SLACK_S = 15.0


def _new_session(last_s: float | None, t_s: float, run: dict) -> bool:
    return last_s is None or t_s - last_s > _session_gap_s(run)


def sessions(runs: list[dict]) -> dict[str, str]:
    """run_id -> its engine process (session): the first run's timestamp as YYYYmmddTHHMMSS (the
    rule of sizes_run_before); '' for every run when some run has no timestamp."""
    if not all(r.get("timestamp_utc") for r in runs):
        return {r["run_id"]: "" for r in runs}
    out, label, last = {}, "", None
    for run in sorted(runs, key=lambda r: _utc_s(r["timestamp_utc"])):
        t = _utc_s(run["timestamp_utc"])
        if _new_session(last, t, run):
            label = run["timestamp_utc"].replace("-", "").replace(":", "").rstrip("Z")
        out[run["run_id"]] = label
        last = t
    return out


def session_engine_name(run: dict, session: str) -> str:
    """The serve_engines.toml table of a run's engine fitted on its session's fit runs alone (see
    calibration/serve_engine_fit.py SESSION_TABLES), when there is one: `<engine_name>@<session>`."""
    name = engine_name(run)
    key = f"{name}@{session}" if session else ""
    return key if key in serve_engines() else name


def _session_gap_s(run: dict) -> float:
    """Longest time from the previous run's timestamp to this one's within one engine process."""
    try:
        return float(run["duration_s"]) + SESSION_SLACK_S
    except (KeyError, TypeError, ValueError):
        return SESSION_GAP_S


def _utc_s(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


# (s17srv2, docs/notes/s17srv2_rule.md, stated before any held-out figure under it) real/serve runs its plan's
# warm-up loads (cli.py: after the graph capture, before the first run; untimed, unrecorded) in the same
# process: the kernels of the sizes they ran are launched before any recorded iteration. Under the switch a
# session's sizes run before start with the warm-up's (WARMUP_SIZES, per rank), and the engine fit counts
# kernels first launched at the measured cost (serve_engine_fit.counts_kernels, as ADOPT_KERNEL_FIRST_LAUNCH).
# Outcome (s17srv2): committed held out 69 of 80 (66), median 2.85% -> 2.67%, every GPU folder met; fit runs 216 of
# 250 (216); with the input 144 of 190 (142); s13srv held out H200 25 (27); s13srv fit 80 of 120 (80); never fitted
# 102 of 145 (98): not adopted (h100 c1-short TTFT P50 +3.3% -> +32.4%: the warm-up explains part of the over-charge)
ADOPT_KERNEL_WARMUP = False
# (s22ttft, docs/notes/s22ttft_rule.md, committed before any held-out figure under it) a run whose process ran
# Engine.warm_shapes (an eager forward of every flat size 1..W) after the plan's warm-up loads (full-budget
# prompt iterations) pays no first-met stall on a size above W: under the switch every size up to the run's
# token budget counts as run before it. Measured (seen, held out: docs/notes/s22ttft.md): the s21srvnew and
# s21srvnew2 processes' first-met sizes above 832 ran 0.5-2 ms off the table without any stall, where the
# table charged 8-12 ms (new_size_s + new_bin_s at the host factor). Outcome (s22ttft, fresh runs on one H100 and one
# H200, docs/notes/s22ttft.md): 48 -> 51 of 90 checks, median 11.5% -> 9.9%, neither GPU worse, the committed sets
# unmoved: adopted.
ADOPT_WARM_PASS_COVERS_BUDGET = True
# ep size -> per rank, the flat sizes the v3-slice-2l plans' warm-up (gpu1*: warmup-short c64 seed 99 and
# warmup-long c8 seed 98; ep2*: the same at c32) certainly ran eagerly: real/serve/warmup.py common_sizes, the
# replays whose warm-up-short finished as many requests as the campaigns' logs say (one GPU 64..92, EP2 rank 0:
# 16; calibration/measurements/*/log_serve*.txt, */log.txt), iteration_s on WARMUP_GRID; one GPU: the
# iterations with a prompt (decode-only ones replay graphs, whose buckets are counted apart). Checked against
# the replay by tests/real/test_serve_warmup_sizes.py.
WARMUP_SIZES = {1: ((142, 1775, 2048),),
                2: ((1, 2, 3, 4, 6, 11, 16, 74, 1163, 2048), (1, 2, 3, 4, 9, 16, 603, 1124, 2048))}
WARMUP_MODEL = "v3-slice-2l"
WARMUP_FINISHED = {1: (64, 92), 2: (16, 16)}   # the logged warm-up-short counts (rank 0)
WARMUP_GRID = tuple(0.005 * (40.0 ** (i / 39)) for i in range(40))   # iteration_s 5..200 ms, geometric


def warmup_sizes(run: dict) -> set[tuple[int, int]]:
    """(rank, size) the run's engine process ran in its start-up warm-up (ADOPT_KERNEL_WARMUP; else none)."""
    ep = int(float(run.get("ep_size") or 1))
    if not ADOPT_KERNEL_WARMUP or run.get("model") != WARMUP_MODEL or ep not in WARMUP_SIZES:
        return set()
    return {(g, n) for g, sizes in enumerate(WARMUP_SIZES[ep]) for n in sizes}


def warm_pass_tokens(run: dict) -> int:
    """The flat sizes 1..this a run's process ran before it through Engine.warm_shapes: its warm_shapes, or under
    ADOPT_WARM_PASS_COVERS_BUDGET (a warmed process) its token budget where that is larger (0: no warm pass)."""
    warm = int(float(run.get("warm_shapes") or 0))
    if not ADOPT_WARM_PASS_COVERS_BUDGET or warm <= 0:
        return warm
    return max(warm, int(float(run.get("token_budget") or 0)))


# (s28serve round 2, docs/notes/s28serve2_rule.md; off until that rule adopts it) A warmed process has met the flat
# sizes 1..warm_shapes and its token budget's size (the plan warm-up's closed loop of 64 fills the budget: WARMUP_SIZES,
# 2048 on every one-GPU plan), not every size between them: a first-met size above the warm pass and under the budget
# pays the table's first-met terms. The fresh H200 sets' first closed-loop iterations: 1063-1700 flat tokens, first met,
# 34.2 / 24.8 / 34.7 ms measured (bench-small c3, v2-lite-slice c3 of set M; bench-small c5 of set L) against 18.4 /
# 13.9 / 22.9 priced with the pass covering the budget, 31.5 / 25.4 / 36.1 charged the first-met terms; at the
# budget's own size (2048, sets J-L) 14-20 ms against 15-19 without the terms (calibration.serve_ttft_parts).
ADOPT_WARM_PASS_AND_BUDGET = False


def warm_pass_sizes(run: dict) -> range | set[int]:
    """The flat sizes a run's process ran before it in its warm pass: 1..warm_pass_tokens, or under
    ADOPT_WARM_PASS_AND_BUDGET 1..warm_shapes and the token budget's size (none without a warm pass)."""
    warm = int(float(run.get("warm_shapes") or 0))
    if not ADOPT_WARM_PASS_AND_BUDGET or warm <= 0:
        return range(1, warm_pass_tokens(run) + 1)
    budget = int(float(run.get("token_budget") or 0))
    return set(range(1, warm + 1)) | ({budget} if budget > 0 else set())


# (s30serve, docs/notes/s30serve_rule.md) the first-met probe's charges per card and model (calibration.serve_first_met
# fit, from real/serve/firstmet.py's fitting records), read under twin.serving.engine.ADOPT_PROBED_FIRST_MET only
FIRST_MET_FIT = Path(__file__).resolve().parent / "s30serve_fit.json"
_FIRST_MET_CACHE: dict = {}


def first_met_charges(gpu_name: str, model: str, path: Path | None = None) -> dict | None:
    """The probe's fitted charges (busy_s, idle_s, post_idle_prompt_s) of a model on a card (`path`: FIRST_MET_FIT);
    None without a probe."""
    path = FIRST_MET_FIT if path is None else path
    if path not in _FIRST_MET_CACHE:
        _FIRST_MET_CACHE[path] = read_json(path).get("charges", {}) if json_exists(path) else {}
    try:
        card = gpu_key(gpu_name or "")
    except ValueError:
        return None
    return _FIRST_MET_CACHE[path].get(card, {}).get(model)


# (s31look, docs/notes/s31look_rule.md) candidate L's inputs: the look-up's cost per card (calibration.serve_lookup fit,
# from the first-met probe's fitting records) and each model's count of size-dependent dense GEMM shapes
# (real/serve/gemmshapes.py), read under twin.serving.engine.ADOPT_LOOKUP_PER_SHAPE only
LOOKUP_FIT = Path(__file__).resolve().parent / "s31look_fit.json"
_LOOKUP_CACHE: dict = {}


def lookup_charges(gpu_name: str, model: str, path: Path | None = None) -> dict | None:
    """Candidate L's charges for a model on a card: busy_s = idle_s = the model's GEMM shapes x the card's lookup_s,
    post_idle_prompt_s 0; None without a fitted look-up for the card or a shape count for the model."""
    path = LOOKUP_FIT if path is None else path
    if path not in _LOOKUP_CACHE:
        _LOOKUP_CACHE[path] = read_json(path) if json_exists(path) else {}
    fit = _LOOKUP_CACHE[path]
    try:
        card = gpu_key(gpu_name or "")
    except ValueError:
        return None
    lookup_s, shapes = fit.get("lookup_s", {}).get(card), fit.get("shapes", {}).get(model)
    if lookup_s is None or shapes is None:
        return None
    charge_s = float(shapes) * float(lookup_s)
    return {"busy_s": charge_s, "idle_s": charge_s, "post_idle_prompt_s": 0.0}


# (s32cold, docs/notes/s32cold_rule.md) candidate K's inputs: per card the cost per GEMM shape of a process's first size
# above its warm pass and the sizes over which it fades (calibration.s32cold fit, from the s32cold probe's fitting
# records), and the shape counts (s31look's), read under twin.serving.engine.ADOPT_COLD_SIZES only
COLD_FIT = Path(__file__).resolve().parent / "s32cold_fit.json"
_COLD_CACHE: dict = {}


def cold_charges(gpu_name: str, model: str, ep_size: int = 1, path: Path | None = None) -> dict | None:
    """Candidate K's charges for a model on a card, one GPU: busy_s = idle_s = shapes x shape_s, fade_sizes;
    None under EP, without a fit for the card or a shape count for the model."""
    path = COLD_FIT if path is None else path
    if path not in _COLD_CACHE:
        _COLD_CACHE[path] = read_json(path) if json_exists(path) else {}
    fit = _COLD_CACHE[path]
    try:
        card = gpu_key(gpu_name or "")
    except ValueError:
        return None
    shape_s, fade = fit.get("shape_s", {}).get(card), fit.get("fade_sizes", {}).get(card)
    shapes = fit.get("shapes", {}).get(model)
    if ep_size != 1 or shape_s is None or fade is None or shapes is None:
        return None
    charge_s = float(shapes) * float(shape_s)
    return {"busy_s": charge_s, "idle_s": charge_s, "post_idle_prompt_s": 0.0, "fade_sizes": float(fade)}


# (s32kern, docs/notes/s32kern_rule.md) candidate C: a warmed one-GPU H200 process's first-used GEMM kernels counted on
# its model's kernel map (real/serve/kernelmap.py, the s32kern campaign's fitting records), kernel_s and lookup_s and the
# warm-up loads' sizes from calibration/s32kern_fit.json (the s32cold probe alone); read under ADOPT_COLD_KERNELS only
COLD_KERNEL_FIT = Path(__file__).resolve().parent / "s32kern_fit.json"
COLD_KERNEL_MAPS = Path("h200") / "s32kern" / "kmap"   # <model>/kernelmap.csv under the records root
# the flat-size weights (calibration.kernel_regions.FLAT_WEIGHTS) and the query projection of a model without a query
# low rank (wq_XD: qwen2moe, qwen3moe, mixtral, v2-lite): run at M = the flat batch size
COLD_KERNEL_WEIGHTS = ("attn.wq_a", "attn.wq_b", "attn.wkv_a", "attn.wo", "ffn.w13_2FD", "ffn.w2_DF", "ffn.gate",
                       "ffn.shared.w13", "ffn.shared.w2", "attn.wq_XD")
COLD_KERNEL_MAX = 2048   # a complete map: every flat-size weight at M = 1..2048
_CK_CACHE: dict = {}


def cold_kernel_map(model: str, root: Path | None = None) -> tuple | None:
    """kernels[M] (M = 0..COLD_KERNEL_MAX): the ids of the kernels the model's flat-size weights launch at M on the
    H200 (the s32kern map); None without a complete map."""
    from calibration import records as rec   # lazy: the records root only under ADOPT_COLD_KERNELS

    path = Path(rec.records_root() if root is None else root) / COLD_KERNEL_MAPS / model / "kernelmap.csv"
    key = str(path)
    if key not in _CK_CACHE:
        _CK_CACHE[key] = None
        if csv_exists(path):
            with open_csv(path) as f:
                rows = [r for r in csv.DictReader(f) if any(w in r["weight"] for w in COLD_KERNEL_WEIGHTS)]
            weights = {r["weight"] for r in rows}
            by_m: dict[int, set] = {}
            got = set()
            for r in rows:
                m = int(r["m"])
                got.add((r["weight"], m))
                by_m.setdefault(m, set()).update(k for k in (r["kernels"] or "").split(";") if k)
            if weights and got >= {(w, m) for w in weights for m in range(1, COLD_KERNEL_MAX + 1)}:
                ids = {k: i for i, k in enumerate(sorted(set().union(*by_m.values())))}
                _CK_CACHE[key] = tuple(frozenset(ids[k] for k in by_m.get(m, ())) for m in range(COLD_KERNEL_MAX + 1))
    return _CK_CACHE[key]


def cold_kernel_fit(path: Path | None = None) -> dict:
    path = COLD_KERNEL_FIT if path is None else path
    key = ("fit", str(path))
    if key not in _CK_CACHE:
        _CK_CACHE[key] = read_json(path) if json_exists(path) else {}
    return _CK_CACHE[key]


# (s33cold, docs/notes/s33cold_rule.md) candidate S: the same charges per step, kernel_s and lookup_s from
# calibration/s33cold_fit.json (calibration.s33cold fit); read under twin.serving.engine.ADOPT_COLD_STEPS only
COLD_STEP_FIT = Path(__file__).resolve().parent / "s33cold_fit.json"


def cold_kernels(run: dict, met) -> "engine.ColdKernels | None":
    """Candidate C's (or, under ADOPT_COLD_STEPS, S's) charges for a run whose process met the flat sizes `met` before
    it (the warm pass, its earlier runs'; the warm-up loads' are added here): None off the H200, under EP, without a fit
    or a complete map."""
    fit = cold_kernel_fit(COLD_STEP_FIT if engine.ADOPT_COLD_STEPS else None)
    try:
        card = gpu_key(run.get("gpu_name") or "")
    except ValueError:
        return None
    ks, ls = fit.get("kernel_s", {}).get(card), fit.get("lookup_s", {}).get(card)
    if int(float(run.get("ep_size") or 1)) != 1 or ks is None or ls is None:
        return None
    kmap = cold_kernel_map(run.get("model", ""))
    if kmap is None:
        return None
    return engine.ColdKernels(kmap, set(met) | set(fit.get("warmup_sizes", ())), ks, ls)


def warm_pass_pairs(run: dict) -> set[tuple]:
    """(rank, size) pairs a run's warm pass ran (warm_pass_sizes on every rank); under twin.serving.engine.ADOPT_IDLE_WAKE
    (s29serve) the sizes between warm_shapes and the token budget as (rank, size, engine.BUSY_MET): met only where first
    met mid-stream (charged the first-met terms when first met after an idle)."""
    ranks = range(max(1, int(float(run.get("ep_size") or 1))))
    warm = int(float(run.get("warm_shapes") or 0))
    charges = (first_met_charges(run.get("gpu_name", ""), run.get("model", ""))
               if engine.ADOPT_PROBED_FIRST_MET and warm > 0 and not engine.ADOPT_IDLE_WAKE else None)
    if charges is None and engine.ADOPT_LOOKUP_PER_SHAPE and warm > 0 and not engine.ADOPT_IDLE_WAKE:
        charges = lookup_charges(run.get("gpu_name", ""), run.get("model", ""))   # (s31look) candidate L
    if charges is None and engine.ADOPT_COLD_SIZES and warm > 0 and not engine.ADOPT_IDLE_WAKE:   # (s32cold) K
        charges = cold_charges(run.get("gpu_name", ""), run.get("model", ""), len(ranks))
    if charges is not None:   # (s30serve) the pass and the budget met; the sizes between pay the probe's charges
        budget = int(float(run.get("token_budget") or 0))
        met = set(range(1, warm + 1)) | ({budget} if budget > 0 else set())
        between = frozenset((g, n) for g in ranks for n in range(warm + 1, budget))
        return ({(g, n) for g in ranks for n in met}
                | {engine.FirstMetProbe(between, charges["busy_s"], charges["idle_s"], charges["post_idle_prompt_s"],
                                        charges.get("fade_sizes", 0.0))})
    if not engine.ADOPT_IDLE_WAKE or warm <= 0:
        return {(g, n) for g in ranks for n in warm_pass_sizes(run)}
    budget = int(float(run.get("token_budget") or 0))
    met = set(range(1, warm + 1)) | ({budget} if budget > 0 else set())
    return ({(g, n) for g in ranks for n in met}
            | {(g, n, engine.BUSY_MET) for g in ranks for n in range(warm + 1, max(budget, warm + 1))})


def plain_sizes(sizes) -> frozenset:
    """sizes_run_before's pairs with the warm pass's mid-stream-only sizes (ADOPT_IDLE_WAKE) counted as met: (rank, size)."""
    return frozenset(x[:2] for x in sizes if isinstance(x, tuple))


def sizes_run_before(runs: list[dict], iterations: list[dict]) -> dict[str, frozenset]:
    """Per run: (rank, flat batch size) pairs (prefill tokens + decode rows; an EP rank's padding
    step is a size of 1) of the eager iterations (no CUDA graph) that earlier runs of its session
    ran, on each rank (a session: runs whose timestamps follow each other within the later run's
    duration + SESSION_SLACK_S, or SESSION_GAP_S without one: one engine process, which keeps what it has run; without
    timestamps every run stands alone), and every size up to a run's `warm_shapes` (Engine.
    warm_shapes ran them before it: on 2xH100 s8srv round 2 such prompt iterations took 0.95x the
    fit without new_size_s, first-met ones of the unwarmed pass 1.42x). The engine's warm-up and
    graph capture are not recorded: not counted (under ADOPT_KERNEL_WARMUP a session starts with the
    warm-up's sizes, warmup_sizes)."""
    sizes: dict[str, set] = {}
    for it in iterations:
        if int(float(it.get("graph_batch") or 0)) == 0:
            idle = str(it.get("idle", "0")) not in ("0", "False", "")
            size = 1 if idle else int(float(it["prefill_tokens"])) + int(float(it["decode_seqs"]))
            sizes.setdefault(it["run_id"], set()).add((int(float(it.get("rank") or 0)), size))
    warmed = warm_pass_pairs
    if not all(r.get("timestamp_utc") for r in runs):   # no times: no session known, every run alone
        return {r["run_id"]: frozenset(warmed(r) | warmup_sizes(r)) for r in runs}
    out, seen, last = {}, set(), None
    cold_met: set | None = None   # (ADOPT_COLD_KERNELS) a warmed process's sizes run so far: the pass, its runs'
    for run in sorted(runs, key=lambda r: _utc_s(r["timestamp_utc"])):
        t = _utc_s(run["timestamp_utc"])
        if _new_session(last, t, run):
            seen = warmup_sizes(run)
            cold_met = None
        seen |= warmed(run)   # warmed before this run
        out[run["run_id"]] = frozenset(seen)
        warm = int(float(run.get("warm_shapes") or 0))
        if ((engine.ADOPT_COLD_KERNELS or engine.ADOPT_COLD_KERNELS_EXPOSED or engine.ADOPT_COLD_STEPS)
                and (warm > 0 or cold_met is not None)):
            cold_met = (cold_met or set()) | set(range(1, warm + 1))
            ck = cold_kernels(run, cold_met)
            if ck is not None:
                out[run["run_id"]] = out[run["run_id"]] | {ck}
        seen |= sizes.get(run["run_id"], set())
        if cold_met is not None:
            cold_met |= {n for g, n in sizes.get(run["run_id"], set()) if g == 0}
        last = t
    return out


def predict_run(run: dict, requests: list[dict], spread: bool = True, run_batch_sizes=(), engine: str | None = None,
                prompts_before: int = 0) -> dict:
    """The twin's figures for one recorded run, replaying its requests (the median over
    SPREAD_SEEDS replays when iteration times are drawn from the engine's spread), the engine
    having run `run_batch_sizes` before (sizes_run_before) and `prompts_before` host-bound prompt
    iterations (calibration.serve_engine_fit.prompts_run_before); `engine`: its engine table (default
    engine_name(run))."""
    sc = scenario_for(run, spread=spread, engine=engine)
    rows = sorted(requests, key=lambda r: float(r["arrival_s"]))
    isl = [int(r["input_len"]) for r in rows]
    osl = [int(r["output_len"]) for r in rows]
    arrival = None if run["arrival"] == "closed" else [float(r["arrival_s"]) for r in rows]
    seeds = SPREAD_SEEDS if sc.serve.iteration_spread and engine_spread(sc.serve.engine_costs) else 1
    figs = []
    # the seeds' replays of one scenario: each iteration-time grid point computed once, and (s32ci) each engine-table
    # iteration priced once
    with sharing_grids(), sharing_iterations():
        for seed in range(SPREAD_SEED_BASE, SPREAD_SEED_BASE + seeds):
            one = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed))
            figs.append(loadgen_figures(simulate(one, requests=from_records(arrival, isl, osl, one.traffic),
                                                 run_batch_sizes=run_batch_sizes, prompts_before=prompts_before).per_request()))
    return {k: float(np.median([f[k] for f in figs])) for k in FIGURES}


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def validate_load(records_dir: str | Path, spread: bool = True, prompts_before: dict[str, int] | None = None) -> list[dict]:
    """One row per recorded run: measured and predicted figures, relative errors, within target
    (`spread`: iteration times drawn from the engine's measured spread, the median of seeded replays;
    `prompts_before`: run id -> the host-bound prompt iterations its engine process ran before it,
    calibration.serve_engine_fit.prompts_run_before, none where not given)."""
    prompts_before = prompts_before or {}
    d = Path(records_dir)
    runs = _read(d / "serve_load.csv")
    reqs = _read(d / "serve_requests.csv")
    its_path = d / "serve_iterations.csv"
    its = _read(its_path) if csv_exists(its_path) else []
    before = sizes_run_before(runs, its)
    timed = timed_run_ids(its)
    sess = sessions(runs)
    out = []
    with sharing_grids():   # (s32ci) a folder's runs are a few scenarios: each grid point once
        for run in runs:
            run = {**run, "engine_timing": run["run_id"] in timed}
            # every rank's requests: with DP attention each EP rank admits its own, one instance in all;
            # the engine as fitted on the run's session when the folder holds several (EP)
            pred = predict_run(run, [r for r in reqs if r["run_id"] == run["run_id"]], spread, before[run["run_id"]],
                               session_engine_name(run, sess[run["run_id"]]), prompts_before.get(run["run_id"], 0))
            row = {"run_id": run["run_id"], "split": run.get("split", ""), "gpu": gpu_key(run["gpu_name"]),
                   "arrival": run["arrival"]}
            for k in FIGURES:
                meas = float(run[k]) if run.get(k) not in (None, "") else math.nan
                row[f"{k}_measured"], row[f"{k}_predicted"] = meas, pred[k]
                err = pred[k] / meas - 1.0 if meas and math.isfinite(meas) and math.isfinite(pred[k]) else math.nan
                row[f"{k}_rel_error"] = err
                row[f"{k}_within_target"] = bool(math.isfinite(err) and abs(err) <= TARGETS[k])
            out.append(row)
    return out


def serve_load_dirs(root: str | Path) -> list[Path]:
    """Records folders holding a serving load campaign (serve_load.csv and serve_requests.csv)."""
    root = Path(root)
    return sorted(d for d in root.iterdir() if csv_exists(d / "serve_load.csv") and csv_exists(d / "serve_requests.csv"))


def summarize_load(rows: list[dict]) -> dict:
    """Per split ('holdout', 'fit'): per figure the median and P90 of |relative error|, the worst
    run, and how many runs meet the figure's target."""
    out = {}
    for split in ("holdout", "fit"):
        sub = [r for r in rows if r["split"] == split]
        figs = {}
        for k in FIGURES:
            errs = np.array([abs(r[f"{k}_rel_error"]) for r in sub if math.isfinite(r[f"{k}_rel_error"])])
            figs[k] = {"target": TARGETS[k], "num_runs": int(len(errs)),
                       "median_abs_rel_error": float(np.median(errs)) if len(errs) else None,
                       "p90_abs_rel_error": float(np.percentile(errs, 90)) if len(errs) else None,
                       "max_abs_rel_error": float(errs.max()) if len(errs) else None,
                       "runs_within_target": int(sum(r[f"{k}_within_target"] for r in sub))}
        out[split] = {"num_runs": len(sub), "figures": figs,
                      "meets_targets": bool(sub) and all(r[f"{k}_within_target"] for r in sub for k in FIGURES)}
    return out


def validate_serve_load(root: str | Path, prompts_before_of=None) -> dict:
    """`twin validate`'s serving-load section: every records folder with load runs, its runs'
    errors and their summary (targets judged on the held-out runs); `prompts_before_of(folder)`: run id
    -> host-bound prompt iterations run before (calibration.serve_engine_fit.prompts_run_before; it
    reads the engine fit's design, which imports this module)."""
    out = {}
    for d in serve_load_dirs(root):
        rows = validate_load(d, prompts_before=prompts_before_of(d) if prompts_before_of else None)
        out[d.name] = {"gpu": rows[0]["gpu"] if rows else "", "runs": rows, **summarize_load(rows)}
    return out


def format_serve_load(section: dict) -> list[str]:
    lines = []
    for folder, s in section.items():
        h = s["holdout"]
        for k, v in h["figures"].items():
            if not v["num_runs"]:
                continue
            lines.append(f"serve_load {folder:7} {k:20} held-out {v['num_runs']} runs: median {v['median_abs_rel_error']:.1%}, "
                         f"P90 {v['p90_abs_rel_error']:.1%}, within {v['target']:.0%}: {v['runs_within_target']}/{v['num_runs']}"
                         f"   (fit median {s['fit']['figures'][k]['median_abs_rel_error'] or 0:.1%})")
        figs = [v for v in h["figures"].values() if v["num_runs"]]
        lines.append(f"serve_load {folder:7} held-out targets: {'met' if h['meets_targets'] else 'NOT met'} "
                     f"({sum(v['runs_within_target'] for v in figs)} of {sum(v['num_runs'] for v in figs)} figures within target)")
    return lines

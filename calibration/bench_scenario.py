"""The twin scenario of a configuration `real/` ran (`twin scenario from-bench SOURCE`).

A source is what a bench run left in its folder:
  pipeline_step.csv     real/pipeline's steps (`torchrun ... -m real.pipeline --out DIR`): one configuration a row
                        (model, layers, schedule, pp, ep, dp, GPUs, micro-batches, sequence, precision, the GPU);
  env_pipeline_*.json   the same run's environment and its command line (layouts x schedules x micro-batch
                        counts): every configuration it asked for, timed or not (a run cut short, a CPU dry run);
  serve_load.csv        real/serve's load runs: one run a row (its engine's settings and its load).
or the folder holding one of them (pipeline_step.csv first). `where` (column=value pairs, e.g.
schedule=dualpipev, num_microbatches=8, run_id=...) picks one configuration; several left are refused,
naming the columns that still tell them apart and their values.

A pipeline configuration becomes a training scenario of the same shape, with the settings real/pipeline
runs: eager PyTorch (plan.kernels "eager"), no recomputation, torch autograd's AccumulateGrad after each
backward (plan.grad_accumulate "autograd"), gradients summed by real/'s all-reduces after the last backward
(ZeRO 0, not overlapped; plan.grad_reduce_groups "by_group": DualPipe's copy pairs, dense over dp, routed
experts over dp / ep), no optimizer timed unless the run had --sgd-lr (plan.optimizer_kernel "none"), the
schedule's model stages cut evenly; routing is taken as balanced (the record's measured loads are not carried).
What the scenario cannot say is written above it as comments: under EP real/ runs NCCL's all-to-all, where the
twin's plan holds SMs for DeepEP-style kernels (plan.comm_sms, its default kept); and calibration.pipeline, which
predicts these records in `twin validate`, prices real/'s eager op lists issued by its measured host:
step_comparison gives both predictions, part by part, in the header (s26unify). A serve_load run becomes the serving scenario that replays it in
validation (calibration.serve_load_validation.scenario_tables_for) with its load's length distributions.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pandas as pd

from calibration import pipeline as pipe
from calibration import prereg
from calibration import records as rec
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, open_csv, resolve_csv, unpacked_name
from calibration.serve_load_validation import engine_name, gpu_key, scenario_tables_for
from twin.core.scenario import from_dict
from twin.core.specs import serve_engines
from twin.training.step import simulate_step

PIPELINE_CSV, SERVE_CSV = "pipeline_step.csv", "serve_load.csv"
PIPELINE, SERVE = "pipeline", "serve"
# the columns that make a pipeline configuration (a row's times, loss and clocks do not)
PIPELINE_KEYS = ("model", "num_layers", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches",
                 "micro_batch_seqs", "seq_len", "precision", "gpu_name")
INT_KEYS = ("num_layers", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs", "seq_len")


class BenchSourceError(ValueError):
    """A source this module cannot turn into a scenario: `option` names the argument, `value` what was
    given, `allowed` what would do (the CLI turns it into its one-line refusal, exit 2)."""

    def __init__(self, option: str, value, allowed: str):
        super().__init__(f"{option}: got {value!r}; allowed: {allowed}")
        self.option, self.value, self.allowed = option, value, allowed


def _kind_of_file(path: Path) -> str | None:
    name = unpacked_name(path.name)
    if name == PIPELINE_CSV:
        return PIPELINE
    if name == SERVE_CSV:
        return SERVE
    if path.suffix == ".json" and path.name.startswith("env_pipeline"):
        return "env"
    return None


def locate(source: Path) -> tuple[str, Path]:
    """(kind, file) of a source: a file by its name, a folder by what it holds (pipeline_step.csv, then
    serve_load.csv, then a single env_pipeline_*.json)."""
    source = Path(source)
    if source.is_file():
        kind = _kind_of_file(source)
        if kind is None:
            raise BenchSourceError("SOURCE", str(source), f"{PIPELINE_CSV}, {SERVE_CSV} (or .csv.xz / .csv.gz), "
                                                          "env_pipeline_*.json, or a bench folder holding one")
        return kind, source
    if not source.is_dir():
        raise BenchSourceError("SOURCE", str(source), "an existing file or folder")
    for name, kind in ((PIPELINE_CSV, PIPELINE), (SERVE_CSV, SERVE)):
        if csv_exists(source / name):
            return kind, resolve_csv(source / name)
    envs = sorted(source.glob("env_pipeline_*.json"))
    if len(envs) == 1:
        return "env", envs[0]
    raise BenchSourceError("SOURCE", str(source), f"a bench folder holding {PIPELINE_CSV}, {SERVE_CSV} or one "
                                                  f"env_pipeline_*.json (this one holds {len(envs)} of those and neither CSV)")


def _read_rows(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def _pipeline_config(row: dict) -> dict:
    cfg = {k: row.get(k, "") for k in PIPELINE_KEYS}
    for k in INT_KEYS:
        try:
            cfg[k] = int(float(cfg[k]))
        except (TypeError, ValueError):
            raise BenchSourceError(f"{PIPELINE_CSV} column {k}", cfg[k], "a whole number") from None
    return cfg


def _layout(text: str) -> tuple[int, int]:
    """real/pipeline's layout names (real/pipeline/bench.py parse_layout): 'pp2' -> (2, 1), 'ep2' -> (1, 2),
    'pp2ep2' -> (2, 2)."""
    m = re.fullmatch(r"(?:pp(\d+))?(?:ep(\d+))?", text.strip())
    if not m or not text.strip():
        raise ValueError(f"layout {text!r}")
    return int(m.group(1) or 1), int(m.group(2) or 1)


def _ints(text) -> list[int]:
    return [int(x) for x in str(text or "").split(",") if x.strip()]


def _env_configs(path: Path) -> list[dict]:
    """Every configuration an env_pipeline_*.json's command line asked for (real/pipeline/bench.py's loops:
    each layout that fits the run's ranks, its schedules - 1f1b alone without a pipeline - and its counts)."""
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
        cfg = env["config"]
        world = int(env["num_gpus"])
        layouts = [_layout(x) for x in str(cfg["layouts"]).split(",") if x]
        by_layout = {}
        for part in str(cfg.get("layout_microbatches") or "").split(","):   # 'pp4=8/16,pp2ep2=4'
            if "=" in part:
                name, counts = part.split("=", 1)
                by_layout[_layout(name)] = _ints(counts.replace("/", ","))
        num_layers = cfg.get("num_layers")
        if not num_layers:
            raise BenchSourceError("SOURCE", str(path), "an env_pipeline JSON whose config names num_layers "
                                                        "(a run of the catalog model's own depth: use its pipeline_step.csv)")
        out = []
        for pp, ep in layouts:
            if world % pp or (world // pp) % ep:
                continue
            schedules = str(cfg["schedules"]).split(",") if pp > 1 else ["1f1b"]
            counts = by_layout.get((pp, ep)) or (_ints(cfg["microbatches"]) if pp > 1 else _ints(cfg["ep_microbatches"]))
            for name in schedules:
                for n in counts:
                    out.append({"model": cfg["model"], "num_layers": int(num_layers), "schedule": name, "pp": pp, "ep": ep,
                                "dp": world // pp, "num_gpus": world, "num_microbatches": n,
                                "micro_batch_seqs": int(cfg["mb_seqs"]), "seq_len": int(cfg["seq_len"]),
                                "precision": cfg["precision"], "gpu_name": env.get("gpu_name", ""),
                                **({"sgd_lr": cfg["sgd_lr"]} if cfg.get("sgd_lr") is not None else {})})
        return out
    except BenchSourceError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchSourceError("SOURCE", str(path), "an env_pipeline_*.json as real/pipeline writes it "
                                                    f"({type(exc).__name__}: {str(exc)[:120]})") from None


def configurations(source: Path) -> tuple[str, Path, list[dict]]:
    """(kind, the file read, its configurations): pipeline ones de-duplicated (a configuration timed in two
    rounds is one), serve runs one a row."""
    kind, path = locate(source)
    if kind == "env":
        return PIPELINE, path, _env_configs(path)
    try:
        rows = _read_rows(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BenchSourceError("SOURCE", str(path), f"a readable {kind} record ({type(exc).__name__}: {str(exc)[:120]})") from None
    if kind == SERVE:
        missing = [k for k in ("run_id", "model", "gpu_name", "num_gpus", "ep_size") if rows and k not in rows[0]]
        if missing:
            raise BenchSourceError("SOURCE", str(path), f"a {SERVE_CSV} as real/serve writes it (missing {', '.join(missing)})")
        return SERVE, path, rows
    missing = [k for k in PIPELINE_KEYS if rows and k not in rows[0]]
    if missing:
        raise BenchSourceError("SOURCE", str(path), f"a {PIPELINE_CSV} as real/pipeline writes it (missing {', '.join(missing)})")
    seen = {}
    for row in rows:
        cfg = _pipeline_config(row)
        key = tuple(cfg[k] for k in PIPELINE_KEYS)
        if key not in seen:
            seen[key] = {**cfg, "time_s": [], "split": row.get("split", "")}
        if row.get("time_s"):
            seen[key]["time_s"].append(float(row["time_s"]))
    return PIPELINE, path, list(seen.values())


def pick(configs: list[dict], where: list[str], kind: str) -> dict:
    """The one configuration that `where` ("column=value" each) leaves; refused naming what still varies."""
    left = configs
    for item in where:
        if "=" not in item:
            raise BenchSourceError("--where", item, "COLUMN=VALUE, e.g. schedule=dualpipev or num_microbatches=8")
        col, value = (x.strip() for x in item.split("=", 1))
        if configs and col not in configs[0]:
            cols = [k for k in configs[0] if k not in ("time_s",)]
            raise BenchSourceError("--where", item, "a column of the source: " + ", ".join(cols))
        left = [c for c in left if str(c[col]) == value]
    if len(left) == 1:
        return left[0]
    if not left:
        raise BenchSourceError("--where", " ".join(where) or "(none)",
                               f"values the source holds: {_varying(configs, kind) or 'it holds no configuration'}")
    raise BenchSourceError("--where", " ".join(where) or "(none)",
                           f"one configuration of {len(left)}: add --where with {_varying(left, kind)}")


def _varying(configs: list[dict], kind: str) -> str:
    cols = ("run_id",) if kind == SERVE else [k for k in PIPELINE_KEYS]
    parts = []
    for col in cols:
        values = sorted({str(c[col]) for c in configs}, key=lambda v: (len(v), v))
        if len(values) > 1 or kind == SERVE:
            shown = ", ".join(values[:12]) + (f", ... ({len(values)} values)" if len(values) > 12 else "")
            parts.append(f"{col} in {{{shown}}}")
    return "; ".join(parts)


def _catalog_gpu(gpu_name: str, gpu: str | None) -> str:
    if gpu:
        return gpu
    try:
        return gpu_key(gpu_name)
    except ValueError:
        raise BenchSourceError("--gpu", None, f"a catalog GPU for a record that ran on {gpu_name or 'no GPU'!r} "
                                              "(a CPU dry run): --gpu h100 or h200") from None


def pipeline_tables(cfg: dict, gpu: str | None = None) -> dict:
    """The training scenario's tables of one real/pipeline configuration (see the module docstring)."""
    n, mb, dp = cfg["num_microbatches"], cfg["micro_batch_seqs"], cfg["num_gpus"] // cfg["pp"]
    precision = "fp8" if "fp8" in str(cfg["precision"]).lower() else "bf16"
    return {
        "name": f"bench-{cfg['model']}-pp{cfg['pp']}ep{cfg['ep']}-{cfg['schedule']}-n{n}",
        "model": {"name": cfg["model"], "num_layers": cfg["num_layers"], "num_mtp_modules": 0},
        "cluster": {"gpu": _catalog_gpu(cfg["gpu_name"], gpu), "num_gpus": cfg["num_gpus"]},
        "plan": {"tp": 1, "cp": 1, "pp": cfg["pp"], "ep": cfg["ep"], "schedule": cfg["schedule"], "micro_batch_seqs": mb,
                 "zero_stage": 0, "recompute": "none", "gemm_precision": precision, "kernels": "eager",
                 "overlap_dp_comm": False, "stage_cut": "even",
                 # real/pipeline times no update unless run with --sgd-lr (plain SGD, which the twin has no kernel for)
                 **({} if cfg.get("sgd_lr") else {"optimizer_kernel": "none"}),
                 # real/'s eager autograd adds each micro-batch's weight gradients (AccumulateGrad; routed experts' dW transposed)
                 "grad_accumulate": "autograd",
                 # its all-reduces: DualPipe's copy pairs, then dense over dp and routed experts over dp / ep
                 "grad_reduce_groups": "by_group"},
        "workload": {"seq_len": cfg["seq_len"], "global_batch_seqs": n * mb * dp, "routing_imbalance": 1.0},
    }


def _lengths(spec: str, column: str) -> dict:
    """real/serve's length spec as the traffic table's distribution: 'fixed:N' -> fixed N; 'uniform:LO-HI' ->
    uniform around the mean (LO + HI) / 2 with the coefficient of variation that gives the same half-width
    (twin.serving.workload: mean x (1 +- sqrt(3) cv))."""
    kind, _, value = str(spec).partition(":")
    try:
        if kind == "fixed":
            return {"len": int(value), "dist": "fixed"}
        if kind == "uniform":
            lo, hi = (int(x) for x in value.split("-"))
            mean = (lo + hi) / 2
            return {"len": round(mean), "dist": "uniform", "cv": (hi - lo) / (2 * math.sqrt(3) * mean)}
    except ValueError:
        pass
    raise BenchSourceError(f"{SERVE_CSV} column {column}", spec, "'fixed:N' or 'uniform:LO-HI' (a 'list:' spec has "
                                                                "no distribution of the twin's)")


def serve_tables(run: dict, gpu: str | None = None) -> dict:
    """The serving scenario's tables of one real/serve load run: validation's (engine settings, fitted engine
    costs, the host's measured speed) with the load's length distributions and request count."""
    run = dict(run)
    if gpu:
        run["gpu_name"] = gpu
    else:
        _catalog_gpu(run["gpu_name"], None)
    engine = engine_name(run)
    if engine not in serve_engines():   # a pinned engine without its own table: the unpinned engine's of that GPU and EP
        engine = f"real-serve-{gpu_key(run['gpu_name'])}-ep{max(1, int(float(run['ep_size'] or 1)))}"
    raw = scenario_tables_for(run, engine=engine)
    inp, out = _lengths(run.get("input_len_spec", ""), "input_len_spec"), _lengths(run.get("output_len_spec", ""), "output_len_spec")
    raw["serve"].update({"input_len": inp["len"], "output_len": out["len"]})
    raw["traffic"].update({"input_dist": inp["dist"], "output_dist": out["dist"],
                           **({"input_cv": inp["cv"]} if "cv" in inp else {}),
                           **({"output_cv": out["cv"]} if "cv" in out else {})})
    if str(run.get("num_requests") or "").strip():
        raw["traffic"]["num_requests"] = int(float(run["num_requests"]))
    raw["name"] = f"bench-{run['run_id']}"
    return raw


def notes(kind: str, cfg: dict, raw: dict, comparison: dict | None = None) -> list[str]:
    """What the scenario cannot say, for its header: the configuration and its measured figures, and where
    the twin's run of it differs from real/'s; a pipeline configuration's `comparison` (step_comparison): both
    predictions of it, part by part."""
    if kind == SERVE:
        return [f"real/serve load run {cfg['run_id']} ({cfg.get('split', '')}): {cfg.get('arrival')} "
                f"{'at ' + str(cfg.get('rate_per_s')) + '/s' if cfg.get('arrival') != 'closed' else 'concurrency ' + str(cfg.get('concurrency'))}, "
                f"lengths {cfg.get('input_len_spec')} / {cfg.get('output_len_spec')}, on {cfg.get('gpu_name')}",
                f"measured: {float(cfg.get('output_tokens_per_s') or 'nan'):,.0f} output tok/s, TTFT P50 "
                f"{float(cfg.get('ttft_p50_s') or 'nan') * 1e3:.3g} ms, TPOT P50 {float(cfg.get('tpot_p50_s') or 'nan') * 1e3:.3g} ms",
                "validation replays the run's own requests (serve_requests.csv), with the engine table fitted on its "
                "session where there is one; this scenario draws lengths from the load's distributions",
                f"engine costs: {raw['serve']['engine_costs'] or 'none (no table fitted for this GPU and EP: kernels only)'}"
                + (f" (the run's engine {engine_name(cfg)} has no table of its own)"
                   if raw['serve']['engine_costs'] and raw['serve']['engine_costs'] != engine_name(cfg) else "")]
    shape = ", ".join(f"{k}={cfg[k]}" for k in PIPELINE_KEYS)
    lines = [f"real/pipeline configuration: {shape}"]
    if cfg.get("time_s"):
        times = sorted(cfg["time_s"])
        lines.append(f"measured step: {times[len(times) // 2]:.6g} s (median of {len(times)} record row"
                     f"{'s' if len(times) > 1 else ''}, split {cfg.get('split') or '-'})")
    if cfg["ep"] > 1:
        lines.append("plan.comm_sms left at the twin's default with EP (20 SMs held for DeepEP-style all-to-all kernels, "
                     "compute told the rest): real/ runs NCCL's all-to-all between its ops, which the twin's plan cannot say")
    lines += ["real/pipeline times no optimizer step (unless run with --sgd-lr): plan.optimizer_kernel = 'none'"
              if not cfg.get("sgd_lr") else "the run timed a plain SGD update (--sgd-lr); the twin's step ends with its "
              "fused Adam (no plain-SGD kernel of its own)",
              "routing taken as balanced (workload.routing_imbalance = 1): the record's measured loads are not carried",
              "`twin validate` predicts such records with calibration.pipeline (real/'s eager op lists issued by the host "
              "as measured); `twin step` of this scenario prices real/'s engine terms (AccumulateGrad, its all-reduces, no "
              "optimizer) with the twin's own op costs: both below, part by part"]
    return lines + comparison_lines(comparison, cfg)


_INPUTS: dict = {}   # (gpu, records root, GPUs) -> prereg.two_gpu_inputs, for step_comparison


def step_comparison(cfg: dict, raw: dict, root: Path | str | None = None) -> dict | None:
    """A pipeline configuration priced both ways (s26unify, docs/notes/s26unify.md): `twin step` of its scenario
    (`raw`) and calibration.pipeline's prediction of it as `twin validate` prices a row of the folder `<gpu>x<n>`
    (calibration.prereg.two_gpu_inputs: the GPU's fitted profile with that folder's NCCL fits, its AccumulateGrad
    rates and fitting-split host rates; balanced routing), each split into the parts that differ: the pipeline's
    makespan, the compute seconds of its busiest rank, and the tail after it (the twin's gradient reduction and
    optimizer; real/'s reductions and no optimizer). None where `<gpu>x<n>` holds no pipeline records. Nothing is
    fitted here: both sides are the committed models as they stand."""
    root = rec.records_root() if root is None else root
    gpu, n = raw["cluster"]["gpu"], int(cfg["num_gpus"])
    folder = Path(root) / f"{gpu}x{n}"
    if n not in (2, 4) or not csv_exists(folder / PIPELINE_CSV):
        return None
    key = (gpu, str(root), n)
    if key not in _INPUTS:   # ~1.7 s a folder (the fitted profile, its host rates): once a process
        _INPUTS[key] = prereg.two_gpu_inputs(gpu, root, n)
    profile, accumulate, host, hold_s = _INPUTS[key]
    row = pd.Series({**{k: cfg[k] for k in PIPELINE_KEYS}, "bench": "pipeline_step" if cfg["pp"] > 1 else "ep_step",
                     **({"sgd_lr": cfg["sgd_lr"]} if cfg.get("sgd_lr") else {})})
    result, step_s, detail = pipe.simulate_row(row, gpu_spec(gpu), profile, accumulate, host, None, {}, hold_s)
    # the W ops' memory kernels of every model stage a micro-batch: AccumulateGrad's copies and adds (real/'s
    # eager layout: BF16 routed experts' dW arrives transposed), which the twin's step does not price
    w_memory_s = sum(k.get("W", {}).get("memory", 0.0) for k in detail["stage_kernel_s"].values())
    res = simulate_step(from_dict(raw))
    twin_tail = {k: float(res.op_time_s.get(k, 0.0)) for k in ("dp_reduce_scatter", "optimizer")}
    return {"folder": f"{gpu}x{n}",
            "calibration": {"step_s": float(step_s), "makespan_s": float(result.makespan_s),
                            "busiest_compute_s": float(max(result.busy_s)), "after_s": float(detail["after_s"]),
                            "w_memory_per_microbatch_s": float(w_memory_s)},
            "twin_step": {"step_s": float(res.step_time_s), "makespan_s": float(res.pipeline_time_s),
                          "busiest_compute_s": float(max(res.pipeline.busy_s)) if res.pipeline is not None else math.nan,
                          "after_s": float(res.step_time_s - res.pipeline_time_s), **{f"{k}_s": v for k, v in twin_tail.items()}}}


def comparison_lines(cmp: dict | None, cfg: dict) -> list[str]:
    """step_comparison as the scenario header's lines (ms)."""
    if cmp is None:
        return [f"calibration.pipeline's prediction: none here ({cfg.get('gpu_name') or 'the GPU'} x {cfg['num_gpus']}: "
                "no committed <gpu>x<n> pipeline records to take host inputs from)"]
    c, t = cmp["calibration"], cmp["twin_step"]
    ms = lambda s: f"{s * 1e3:.1f}"   # noqa: E731
    return [f"calibration.pipeline predicts {ms(c['step_s'])} ms ({cmp['folder']}'s inputs, as `twin validate`): makespan "
            f"{ms(c['makespan_s'])}, busiest rank's compute {ms(c['busiest_compute_s'])} (of it W's AccumulateGrad memory "
            f"{ms(c['w_memory_per_microbatch_s'])} a micro-batch over the stages), after it {ms(c['after_s'])} (reductions, no optimizer)",
            f"`twin step` of this scenario gives {ms(t['step_s'])} ms: makespan {ms(t['makespan_s'])}, busiest rank's compute "
            f"{ms(t['busiest_compute_s'])}, after it {ms(t['after_s'])} (gradient reduction {ms(t['dp_reduce_scatter_s'])}, "
            f"optimizer {ms(t['optimizer_s'])}); what differs still: the twin's own eager op costs against calibration's op "
            "lists, real/'s host-led issue and EP host terms, AccumulateGrad at the profile's rate, not the measured one "
            "(docs/notes/s26unify.md)"]

"""`twin`: one command, subcommands, few options, `--set a.b=value` everywhere.

Exit status: 0 ok, 2 invalid input (one line, no traceback), 3 infeasible plan (reason printed and,
with --json, written as {"feasible": false, ...}), 4 `twin sweep` ran but some points raised an
error (rows with status 'error', counted in the summary; a re-run tries them again).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.metadata
import json
import math
import re
import sys
import tomllib
from pathlib import Path

from twin.cli import summary
from twin.cli.calibration import add_commands as add_calibration_commands
from twin.cli.prefork import prepared
from twin.core.arg_errors import OneLineParser
from twin.core.atomic import check_output, write_bytes, write_text
from twin.core.journal import Journal, clean_stale_tmp, iter_rows, read_rows
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.fields import check_value, to_dict
from twin.core.results import to_json
from twin.core.scenario import (PLAN, SERVING, TRAINING, _load_model, apply_overrides, blamed_on_overrides, from_dict,
                                _searched_axes, kind_of, load_scenario, parse_toml, read_raw,
                                v3_defaults_assumed, v3_defaults_note)
from twin.core.schedules import SCHEDULE_NAMES, check_virtual_stages
from twin.core.serve_specs import MAX_SIM_REQUESTS
from twin.core.specs import MAX_DEGREE, ClusterSpec, Workload, model_names
from twin.costs.flops import forward_flops_per_token, kv_cache_bytes_per_token, param_counts, train_flops_per_token
from twin.planning.executor import DASK_CONNECT_TIMEOUT_S, check_dask_address, probe_dask_address
from twin.planning.sweep import (GRID, LHS, MAX_POINTS, RANDOM, check_keys, done_ids, parse_axis, points, result_of,
                                 run_sweep)
from twin.serving.run import serve
from twin.training.replay.run import replay
from twin.training.step import simulate_step
from twin.training.trace import GRANULARITIES, step_trace

# reports/ (matplotlib, pandas), twin.api and the modules of one command (the plan search, the
# scenario reference, expert balance, ideal schedules) are imported inside the commands that use
# them: a command pays only for what it runs (`twin replay` starts in well under half a second)

EXIT_INVALID = 2
EXIT_INFEASIBLE = 3
EXIT_POINT_ERRORS = 4   # twin sweep: the sweep ran, some points raised an error (their rows say which)
# `twin step` simulates the scenario's plan as written; the commands that look for one that fits
STEP_PLAN_HINT = ("hint: `twin replay` runs the fastest fallback plan that fits (TP x CP x recomputation; "
                  "run.plan_search), `twin plan --tokens N` searches clusters and plans")

# `twin schedule` simulates pp x micro-batches ops of ~50 us each: 50,000 is a few seconds
MAX_SCHEDULE_MICROBATCHES = 100_000
MAX_SCHEDULE_RANK_MICROBATCHES = 50_000
MAX_OP_TIME_S = 1e6


def _say(args, text: str) -> None:
    """The command's human summary: on stdout, unless stdout carries the JSON (--json -)."""
    stream = sys.stderr if getattr(args, "json", None) == "-" else sys.stdout
    print(text, file=stream)


def _write_json(target: str | None, payload) -> None:
    """--json FILE writes atomically; --json - prints to stdout. Results go through to_json."""
    if target is None:
        return
    text = json.dumps(to_json(payload), indent=2, allow_nan=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return
    write_text(target, text)


def _resolved_beside(target: str | None, sc) -> None:
    """The resolved scenario beside an output FILE (FILE's stem + .scenario.resolved.toml), as an --out
    DIR holds scenario.resolved.toml; none for stdout (--json -). `twin serve --json F`, `twin balance
    --json F` and `twin replay --json F` wrote none beside F until s21walk."""
    if target is None or target == "-":
        return
    from reports.page import to_toml  # lazy: matplotlib
    write_text(resolved_path(target), to_toml(sc.to_dict()))


def resolved_path(target: str) -> Path:
    """FILE's resolved scenario: FILE less its last suffix (and a .gz under it) + .scenario.resolved.toml.
    'r1.h200.json' -> 'r1.h200.scenario.resolved.toml', 'run.json.gz' -> 'run.scenario.resolved.toml'. Until
    s24srvwalk the name was cut at its first dot, so r1.h200.json and r1.b200.json shared r1.scenario.resolved.toml
    and the second run's scenario replaced the first's."""
    path = Path(target)
    name = path.name[:-len(".gz")] if path.name.endswith(".gz") else path.name
    return path.parent / (Path(name).stem + ".scenario.resolved.toml")


def _from_dict(args, raw: dict, source: str, kind=None):
    """from_dict of tables the command's --set overrides were applied to: a bad value is named as the --set
    that gave it (load_scenario's rule, scenario.blamed_on_overrides)."""
    try:
        return from_dict(raw, source, kind)
    except ScenarioError as exc:
        raise blamed_on_overrides(exc, source, list(args.set or [])) from None


def _scenario(args, kind: str = TRAINING):
    overrides = list(args.set or [])
    if getattr(args, "schedule", None):
        overrides.append(f'plan.schedule="{args.schedule}"')
    sc = load_scenario(args.scenario, overrides, kind)
    if kind != SERVING:
        _note_v3_defaults(args, v3_defaults_assumed(_given(args.scenario, overrides), sc))
    return sc


def _given(path: str | None, overrides: list[str]) -> dict:
    """The tables the user gave: the file's with the overrides, or the overrides alone on the embedded default
    scenario (V3's own: its plan is V3's layout, assumed for another model named with --set model.name=...)."""
    return apply_overrides(read_raw(path)[0] if path is not None else {}, overrides)


def _note_v3_defaults(args, assumed: dict) -> None:
    """A scenario of another model that leaves DeepSeek-V3's plan defaults in place is told so on stderr once the
    command has run (main), and the command's --json carries them (args.v3_assumed): until s27walk round 2 a llama
    ran FP8, DualPipe and V3's batch without a word."""
    args.v3_assumed = assumed


def _with_assumed(args, payload):
    """A command's JSON payload with the fields assumed from V3's defaults, where there are any."""
    assumed = getattr(args, "v3_assumed", None)
    return {**to_json(payload), "assumed_from_deepseek_v3": assumed} if assumed else payload


# --- subcommands ---------------------------------------------------------------------------------

MODELS_SOURCE = "twin/data/models.toml"   # `twin model`'s source: the catalog


def cmd_model(args) -> int:
    if args.list or not args.name:
        print("\n".join(model_names()))
        return 0
    for text in args.set or []:   # only [model] is read here: another table's key was ignored without a word (until s21walk)
        if not text.strip().startswith("model."):
            raise ScenarioError("--set", text, "model.FIELD=VALUE: `twin model` reads only [model], e.g. model.num_layers=4")
    raw = apply_overrides({"model": {"name": args.name}}, args.set or [])
    if args.name not in model_names():
        raise ScenarioError("NAME", args.name, "one of " + ", ".join(model_names()))
    try:
        m = _load_model(raw["model"], MODELS_SOURCE)
    except ScenarioError as exc:   # a --set value named as the catalog's until s28prod
        raise blamed_on_overrides(exc, MODELS_SOURCE, list(args.set or [])) from None
    counts = param_counts(m)
    out = {
        "name": m.name,
        **counts,
        "train_flops_per_token": train_flops_per_token(m, args.seq_len),
        "forward_flops_per_token": forward_flops_per_token(m, args.seq_len),
        "seq_len": args.seq_len,
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(m),
        "spec": _spec_dict(m),
    }
    _say(args, summary.model_summary(out))
    _write_json(args.json, out)
    return 0


def _spec_dict(spec) -> dict:
    return to_dict(spec)


def cmd_step(args) -> int:
    sc = _scenario(args)
    try:
        res = simulate_step(sc, record_events=False)   # the event log is only for traces and timelines
    except InfeasiblePlan as exc:
        _write_json(args.json, {"feasible": False, "reason": exc.reason, "memory_breakdown_bytes": exc.breakdown,
                                "scenario": sc.to_dict()})
        _resolved_beside(args.json, sc)   # none beside a step's --json F until s28prod
        _say(args, summary.infeasible_summary(exc.reason, exc.breakdown))
        print(STEP_PLAN_HINT, file=sys.stderr)
        return EXIT_INFEASIBLE
    out = {"feasible": True, **to_json(res), "scenario": sc.to_dict()}
    _say(args, summary.step_summary(summary.titled(sc), res, args.breakdown))
    _write_json(args.json, _with_assumed(args, out))
    _resolved_beside(args.json, sc)
    return 0


# the fields the schedule registry and the ideal pipeline name, as `twin schedule` spells them
SCHEDULE_OPTIONS = {"plan.pp": "--pp", "plan.num_microbatches": "--microbatches", "plan.virtual_stages": "--virtual-stages",
                    "schedule.f_s": "--f", "schedule.b_s": "--b", "schedule.w_s": "--w", "schedule.fb_s": "--fb"}


def _as_options(exc: ScenarioError) -> ScenarioError:
    """A refusal of the ideal pipeline, naming the options the user gave (plan.pp -> --pp, b_s -> --b:
    `twin schedule dualpipe --pp 3` named plan.pp, a field of no file, until s21walk)."""
    allowed = exc.allowed
    for field, option in SCHEDULE_OPTIONS.items():
        allowed = allowed.replace(field.split(".")[1], option) if field.startswith("schedule.") else allowed
    allowed = re.sub(r"(?<![\w-])pp\b", "--pp", allowed).replace("2*--pp", "2 x --pp")
    return ScenarioError(SCHEDULE_OPTIONS.get(exc.field, exc.field), exc.value, allowed)


def cmd_schedule(args) -> int:
    from twin.sim.ideal import ideal_schedule  # lazy: only `twin schedule` draws ideal pipelines
    try:
        out = ideal_schedule(args.name, args.pp, args.microbatches, args.f, args.b, args.w, args.fb, args.virtual_stages)
    except ScenarioError as exc:
        raise _as_options(exc) from None
    _say(args, summary.schedule_summary(out))
    _write_json(args.json, out)
    return 0


def cmd_trace(args) -> int:
    sc = _scenario(args)
    window = _window(args.window) if args.window else None
    try:
        res = simulate_step(sc)
    except InfeasiblePlan as exc:
        _say(args, summary.infeasible_summary(exc.reason, exc.breakdown))
        return EXIT_INFEASIBLE
    if window and window[0] >= res.step_time_s:   # an empty trace, written without a word (until s19ux)
        raise ScenarioError("--window", args.window, f"START before the step's end ({res.step_time_s:.3f} s)")
    trace = step_trace(sc, res, window, args.granularity, progress=not args.quiet)
    out = Path(args.out)
    write_bytes(out, trace_bytes(trace, out))
    _resolved_beside(args.out, sc)
    _say(args, f"wrote {out} ({len(trace['traceEvents']):,} events, {out.stat().st_size / 1e6:.1f} MB); "
               "open it in https://ui.perfetto.dev")
    return 0


def trace_bytes(trace: dict, path: Path) -> bytes:
    """A Chrome trace as compact JSON, gzipped when the name ends in .gz (any case: T.JSON.GZ too)."""
    data = json.dumps(trace, separators=(",", ":")).encode()
    return gzip.compress(data, mtime=0) if path.suffix.lower() == ".gz" else data


def _window(text: str) -> tuple[float, float]:
    """'9.0:9.3' -> (9.0, 9.3) seconds of the step."""
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise ScenarioError("--window", text, "START:END in seconds of the step, e.g. 9.0:9.3") from None
    if not (0 <= start < end < float("inf")):
        raise ScenarioError("--window", text, "0 <= START < END, finite seconds")
    return start, end


def cmd_replay(args) -> int:
    sc = _scenario(args)
    # the report's plotting stack (matplotlib, ~0.6 s) is imported in a forked process, which
    # draws what it can ahead (reports.replay_report.prepare) while the replay simulates and then
    # writes the report
    with prepared("reports.replay_report", "write_report", enabled=bool(args.out),
                  warm="reports.replay_report.prepare", warm_args=(sc,)) as report:
        result = replay(sc, progress=not args.quiet)
        if report is not None:
            report.call(result, sc, args.out, getattr(args, "v3_assumed", None))
    _say(args, summary.replay_summary(sc, result, args.out))
    _write_json(args.json, _with_assumed(args, result))
    _resolved_beside(args.json, sc)
    if not result.complete:   # a run with stages that cannot run has no total: infeasible, as a plan with none that fits
        for stage in (s for s in result.stages if not s.feasible):
            print(f"infeasible: stage {stage.name}: {stage.plan_note.removeprefix('infeasible: ')}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def cmd_balance(args) -> int:
    from reports.load_report import build as write_load_report  # lazy: matplotlib
    from reports.load_report import measured_model  # lazy: matplotlib
    from twin.training.balance import LOADS_GPU, run_balance  # lazy: only `twin balance`
    sc = _scenario(args)
    out = run_balance(sc, progress=not args.quiet)
    if args.out:
        write_load_report(args.out, sc=sc, balance=out)
    # the measured cases' loads are another model's where the scenario's is not the one real/ trained: the report
    # said so, the terminal's "measured_no_bias rank max/mean 2.09" did not (until s27walk)
    m = measured_model(LOADS_GPU)
    carried = (f"\nnote: the measured cases carry {m['model']}'s loads ({m['num_experts']} experts, trained by real/ on "
               f"{m['gpu'].upper()}) to {sc.model.name}'s {sc.model.num_routed_experts} experts; they are not "
               f"{sc.model.name}'s own" if m["model"] != sc.model.name else "")
    _say(args, summary.balance_summary(out) + carried + (f"\nreport: {args.out}/report.html" if args.out else ""))
    _write_json(args.json, out)
    _resolved_beside(args.json, sc)
    return 0


def cmd_serve(args) -> int:
    from reports.serve_report import serve_trace  # lazy: matplotlib
    from reports.serve_report import write_outputs as write_serve_report  # lazy: matplotlib
    sc = _scenario(args, SERVING)
    try:
        out = serve(sc, args.requests, progress=not args.quiet)
    except InfeasiblePlan as exc:   # as `twin step`: --json says why (it wrote nothing until s21walk)
        _write_json(args.json, {"feasible": False, "reason": exc.reason, "memory_breakdown_bytes": exc.breakdown,
                                "scenario": sc.to_dict()})
        _resolved_beside(args.json, sc)
        _say(args, summary.infeasible_summary(exc.reason, exc.breakdown))
        return EXIT_INFEASIBLE
    if args.out:
        write_serve_report(out, sc, args.out)
    wrote = ""
    if args.trace:
        trace = serve_trace(out)
        target = Path(args.trace)
        write_bytes(target, trace_bytes(trace, target))
        _resolved_beside(args.trace, sc)
        # where it went and whether traffic.trace_iterations cut it (nothing was said until s21walk)
        kept, total = trace["otherData"]["iterations_in_trace"], trace["otherData"]["iterations_total"]
        cut = f", the first {kept:,} of {total:,} (traffic.trace_iterations)" if kept < total else ""
        wrote = f"\ntrace: {args.trace} ({kept:,} iterations{cut}); open it in https://ui.perfetto.dev"
    _say(args, summary.serve_summary(sc, out, args.requests) + (f"\nreport: {args.out}/report.html" if args.out else "") + wrote)
    _write_json(args.json, out)
    _resolved_beside(args.json, sc)
    return 0


def _values(text: str, field: str) -> list:
    """'1,2' -> [1, 2]; 'fp8,bf16' -> ['fp8', 'bf16']; each value read as TOML, else as a bare string."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            values.append(parse_toml(f"v = {item}", field)["v"])
        except tomllib.TOMLDecodeError:
            values.append(item)
    if not values:
        raise ScenarioError(field, text, "at least one value, comma-separated, e.g. 1,2")
    return values


# `twin plan` list options and the [search] list each sets
PLAN_LIST_FLAGS = (("gpu", "gpu"), ("num_gpus", "num_gpus"), ("tp", "tp"), ("pp", "pp"), ("ep", "ep"),
                   ("schedules", "schedule"), ("micro_batch", "micro_batch_seqs"))


def _search_flags(args) -> dict:
    """The search table entries that `twin plan`'s options set (they override a plan scenario's [search])."""
    table = {}
    for flag, key in (("tokens", "tokens"), ("days", "days"), ("budget", "budget_usd"), ("simulate", "simulate")):
        if getattr(args, flag) is not None:
            table[key] = getattr(args, flag)
    if args.full_space:
        table["full_space"] = True
    for flag, key in PLAN_LIST_FLAGS:
        if getattr(args, flag):
            table[key] = _values(getattr(args, flag), "--" + flag.replace("_", "-"))
    for item in args.vary or []:
        name, eq, text = item.partition("=")
        if not eq or not name.strip():
            raise ScenarioError("--vary", item, "FIELD=V1,V2 with a [search] list name, e.g. zero_stage=1,2")
        if name.strip() in table:   # one list would silently replace the other
            raise ScenarioError("--vary", item, f"a list not already given (search.{name.strip()} is set by another option)")
        table[name.strip()] = _values(text, f"--vary {name.strip()}")
    return table


def _search_options(args) -> dict[str, str]:
    """[search] key -> the option of `twin plan` that set it (--tokens, --vary recompute, ...)."""
    named = {key: "--" + flag for flag, key in (("tokens", "tokens"), ("days", "days"), ("budget", "budget_usd"),
                                                ("simulate", "simulate")) if getattr(args, flag) is not None}
    named.update({key: "--" + flag.replace("_", "-") for flag, key in PLAN_LIST_FLAGS if getattr(args, flag)})
    named.update({item.partition("=")[0].strip(): f"--vary {item.partition('=')[0].strip()}" for item in args.vary or []})
    return named


@contextlib.contextmanager
def _named_as_typed(options: dict[str, str]):
    """A bad value of a search key that an option set is named by that option: "search.tokens in f.toml: got -1.0",
    of `--tokens -1` on a file with no [search] table, named the file as its source (until s26walk)."""
    try:
        yield
    except ScenarioError as exc:
        m = re.fullmatch(r"search\.(\w+)(\[\d+\])?", exc.field)
        if not m or m.group(1) not in options:
            raise
        raise ScenarioError(options[m.group(1)], exc.value, exc.allowed) from None


def _prices(args, sc) -> dict:
    from twin.planning.search import catalog_prices  # lazy: the plan search loads its screen
    prices = catalog_prices(sc)
    for item in args.price or []:
        gpu, _, value = item.partition("=")
        if gpu.strip() not in prices:   # a misspelt GPU's price was silently never used (until s21ux)
            raise ScenarioError("--price", item, "GPU=USD_PER_GPU_HOUR with a catalog GPU: " + ", ".join(sorted(prices)))
        try:
            prices[gpu.strip()] = float(value)
        except ValueError:
            raise ScenarioError("--price", item, "GPU=USD_PER_GPU_HOUR, e.g. h200=3.5") from None
        check_value("--price", prices[gpu.strip()], like=(ClusterSpec, "price_usd_per_gpu_hour"))
    return prices


SERVING_FLAGS = ("rate", "ttft", "tpot")
# options only one of `twin plan`'s two questions reads: given to the other, they were ignored without a
# word (until s22walk: `--rate 2 ... --gpu h100 --tokens 1e12` answered for the scenario's H200s)
SERVING_ONLY = ("percentile", "requests", "layout")
TRAINING_ONLY = ("tokens", "days", "budget", "gpu", "num_gpus", "pp", "ep", "tp", "schedules", "micro_batch", "vary",
                 "full_space", "simulate", "exhaustive", "price", "workers", "dask")


def _refuse_other_questions_options(args, serving_question: bool) -> None:
    """A ScenarioError naming the first option the asked question does not read."""
    unread = TRAINING_ONLY if serving_question else SERVING_ONLY
    for attr in unread:
        value = getattr(args, attr)
        if value not in (None, False, []):
            option = "--" + attr.replace("_", "-")
            asked = ("the serving question (--rate, --ttft, --tpot) does not read it: it sizes deployments of the serving "
                     "scenario (GPU type and instance by --set, e.g. --set cluster.gpu=h100 --set serve.ep=16), one after "
                     "another" if serving_question else
                     "the training question (--tokens, --days): " + option + " belongs to the serving question (--rate, --ttft, --tpot)")
            raise ScenarioError(option, value, "not given: " + asked)


def cmd_plan(args) -> int:
    from reports.plan_report import PLAN_JOURNAL, write_plan_json, write_plan_report  # lazy: matplotlib
    from twin.planning.search import journal_row, question_key, resumed_rows, search  # lazy: the plan search loads its screen
    serving_question = any(getattr(args, f) is not None for f in SERVING_FLAGS)
    _refuse_other_questions_options(args, serving_question)
    raw, source = read_raw(args.scenario, SERVING if serving_question else TRAINING)
    raw = apply_overrides(raw, args.set or [])
    if kind_of(raw) == SERVING and serving_question:
        return _plan_serving(args, raw, source)
    if serving_question:
        raise ScenarioError("--rate", args.rate, "a serving scenario (one with a [serve] table) for --rate/--ttft/--tpot")
    if kind_of(raw) == SERVING and args.tokens is None and args.days is None:
        # no question asked: the wrong-kind error below said "`twin serve` takes serving scenarios" (until s22walk)
        raise ScenarioError("--rate", "<missing>", "--rate, --ttft and --tpot with a serving scenario (one with a [serve] "
                            "table): the fewest GPUs that serve a request rate; --tokens and --days take a training or "
                            "plan scenario", source)
    if kind_of(raw) == SERVING:
        _from_dict(args, raw, source, (TRAINING, PLAN))   # raises the wrong-kind error naming [serve]
    if not isinstance(raw.get("search", {}), dict):
        raise ScenarioError("search", raw["search"], "a [search] table", source)
    raw["search"] = {**raw.get("search", {}), **_search_flags(args)}
    for key, flag in (("tokens", "--tokens"), ("days", "--days")):   # the question's two numbers, by option or by file
        if key not in raw["search"]:
            raise ScenarioError(f"search.{key}", "<missing>", f"a number: {flag} on the command line, or {key} in "
                                "the scenario's [search] table", source)
    with _named_as_typed(_search_options(args)):
        sc = _from_dict(args, raw, source, PLAN)   # checks the search like any scenario values (NaN, <= 0, unknown GPUs)
    _note_v3_defaults(args, v3_defaults_assumed(_given(args.scenario, args.set or []), sc, tuple(_searched_axes(raw))))
    prices = _prices(args, sc)
    if not args.out:
        with _named_as_typed(_search_options(args)):
            out = search(sc.base(), sc.search, prices, workers=args.workers, dask=args.dask, progress=not args.quiet,
                         exhaustive=args.exhaustive)
        _say(args, summary.plan_summary(out))
    else:   # rows journaled as they arrive: a re-run into the same folder resumes (until s20ux a kill lost them all)
        clean_stale_tmp(args.out)   # staging a killed run left behind
        journal, key = Path(args.out) / PLAN_JOURNAL, question_key(sc.base(), sc.search.tokens, prices)
        done = resumed_rows(iter_rows(journal), key)   # a line at a time: the journal is never held whole
        num_resumed = sum(map(len, done.values()))
        with Journal(journal) as j, _named_as_typed(_search_options(args)):
            out = search(sc.base(), sc.search, prices, workers=args.workers, dask=args.dask, progress=not args.quiet,
                         exhaustive=args.exhaustive, done=done,
                         on_rows=lambda phase, rows: j.append_many([journal_row(key, phase, r) for r in rows]))
        write_plan_report(out, sc, args.out, args.v3_assumed)
        resumed = f"\nresumed {num_resumed:,} rows of an earlier run from {journal}" if num_resumed else ""
        _say(args, summary.plan_summary(out) + resumed + f"\nreport: {args.out}/report.html")
    if args.json is not None:   # streamed a row at a time, the same text as _write_json (s21ux)
        write_plan_json(out, args.json, args.v3_assumed)
        _resolved_beside(args.json, sc)   # none beside a plan's --json F until s22walk
    if out.no_answer:   # no candidate can run, or none of the simulated is within the question's bounds (F says so too)
        print(f"infeasible: {out.no_answer}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def _plan_serving(args, raw: dict, source: str) -> int:
    from reports.plan_report import write_serving_plan_report  # lazy: matplotlib
    from twin.planning.serving import (LAYOUTS, SLO_PERCENTILE, check_steady_load, one_deployment_cluster,  # lazy: only
                                       size_serving)                                                       # serving sizing
    missing = [f"--{f}" for f in SERVING_FLAGS if getattr(args, f) is None]
    if missing:
        raise ScenarioError(missing[0], "<missing>", "a positive number: the serving question needs --rate, --ttft and --tpot")
    rates = _rates(args.rate)
    sc = _from_dict(args, one_deployment_cluster(raw), source, SERVING)   # the question sizes the cluster itself
    for rate in rates:   # every rate judged before the first is simulated
        check_steady_load(sc, rate, args.tpot, field="--rate")
    layouts = LAYOUTS if args.layout in (None, "both") else (args.layout,)
    if len(rates) > 1:
        return _serving_capacity(args, sc, rates, layouts)
    out = size_serving(sc, rates[0], args.ttft, args.tpot, num_requests=args.requests,
                       percentile=args.percentile or SLO_PERCENTILE, progress=not args.quiet, layouts=layouts)
    if args.out:
        write_serving_plan_report(out, sc, args.out)
    _say(args, summary.serving_plan_summary(out) + (f"\nreport: {args.out}/report.html" if args.out else ""))
    _write_json(args.json, out)
    _resolved_beside(args.json, sc)
    if out.best is None:
        print(f"infeasible: no deployment serves {rates[0]:g} requests/s within the targets: {summary.serving_reasons(out)}",
              file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


MAX_RATES = 64   # rates of one capacity curve (each a bisection of request-level simulations)


def _rates(text: str) -> list[float]:
    """--rate R or R1,R2,...: each a number > 0, each once, at most MAX_RATES."""
    rates = _values(text, "--rate")
    for rate in rates:
        check_value("--rate", rate, gt=0, le=1e9)
    if len(rates) > MAX_RATES or len(set(rates)) < len(rates):
        raise ScenarioError("--rate", text, f"at most {MAX_RATES} rates, each once")
    return [float(r) for r in rates]


def _serving_capacity(args, sc, rates: list[float], layouts: tuple[str, ...]) -> int:
    """The serving question at several rates: one answer a rate, in one table, report and JSON."""
    from reports.plan_report import write_serving_capacity_report  # lazy: matplotlib
    from twin.planning.serving import SLO_PERCENTILE, serving_capacity  # lazy: only serving sizing
    out = serving_capacity(sc, rates, args.ttft, args.tpot, num_requests=args.requests,
                           percentile=args.percentile or SLO_PERCENTILE, progress=not args.quiet, layouts=layouts)
    if args.out:
        write_serving_capacity_report(out, sc, args.out)
    _say(args, summary.serving_capacity_summary(out) + (f"\nreport: {args.out}/report.html" if args.out else ""))
    _write_json(args.json, out)
    _resolved_beside(args.json, sc)
    unserved = [p for p in out.plans if p.best is None]
    if unserved:
        for p in unserved:
            print(f"infeasible: no deployment serves {p.rate_per_s:g} requests/s within the targets: "
                  f"{summary.serving_reasons(p)}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def _sweep_question(args, sc):
    """--rate, --ttft and --tpot: the serving question at every point (all three, on a serving scenario)."""
    from twin.planning.sweep import ServingQuestion  # lazy: beside the sweep's other names
    given = [f for f in SERVING_FLAGS if getattr(args, f) is not None]
    if not given:
        if args.percentile is not None:   # the percentile of a question not asked
            raise ScenarioError("--percentile", args.percentile, "given with --rate, --ttft and --tpot (the serving question)")
        return None
    if len(given) < len(SERVING_FLAGS) or sc.kind != SERVING:
        missing = next((f for f in SERVING_FLAGS if getattr(args, f) is None), given[0])
        raise ScenarioError(f"--{missing}", getattr(args, missing) if missing in given else "<missing>",
                            "--rate, --ttft and --tpot together, on a serving scenario (one with a [serve] table)")
    return ServingQuestion(args.rate, args.ttft, args.tpot, *([args.percentile] if args.percentile is not None else []))


def _repeats_note(axes, asked: int | None, num_points: int) -> str:
    """'; 10 drawn, 8 repeats dropped: the axes hold 2' where random or LHS draws repeated a point
    (`--random 10` over two schedules ran 2 points with no word of the 10, until s23walk)."""
    if asked is None or num_points >= asked:
        return ""
    note = f"; {asked:,} drawn, {asked - num_points:,} repeats dropped"
    if any(a.is_range and not a.integer for a in axes):   # a float range: no count of distinct points
        return note
    return note + f": the axes hold {math.prod(len(a.values) if not a.is_range else a.high - a.low + 1 for a in axes):,}"


def cmd_sweep(args) -> int:
    from reports.sweep_report import JOURNAL, RESULTS_CSV, RESULTS_PARQUET, best_line, write_sweep_report  # lazy: matplotlib
    raw, source = read_raw(args.scenario)
    raw = apply_overrides(raw, args.set or [])
    sc = _from_dict(args, raw, source)   # the base must be valid; its points are checked one by one
    axes = [parse_axis(text) for text in args.grid]
    check_keys(axes, sc.kind)
    # the fields taken from V3's defaults (s27walk round 3: said by step, replay and plan, not by sweep); the swept
    # keys are left out: each point sets them
    swept = tuple(name for table, _, name in (a.key.partition(".") for a in axes) if table in ("plan", "workload"))
    _note_v3_defaults(args, v3_defaults_assumed(_given(args.scenario, args.set or []), sc, swept))
    question = _sweep_question(args, sc)
    mode, n = (RANDOM, args.random) if args.random else (LHS, args.lhs) if args.lhs else (GRID, None)
    pts = points(axes, mode, n, args.seed)
    out = Path(args.out)
    clean_stale_tmp(out)   # staging a killed run left behind
    journal = out / JOURNAL
    done = read_rows(journal)
    with Journal(journal) as j:
        def keep(row: dict) -> None:
            j.append(row)
            done[row["candidate_id"]] = row
        evaluated = run_sweep(raw, source, pts, done_ids(done), keep, workers=args.workers, dask=args.dask, question=question,
                              progress=not args.quiet)
    result = result_of(axes, mode, pts, raw, done, evaluated, question)
    write_sweep_report(result, sc, out, args.v3_assumed)
    errors = f", {result.num_error:,} failed with an error" if result.num_error else ""
    _say(args, f"{result.num_points:,} points ({mode}{_repeats_note(axes, n, result.num_points)}): {result.num_ok:,} ran, {result.num_invalid:,} invalid, "
               f"{result.num_infeasible:,} infeasible{errors} ({evaluated:,} computed now, "
               f"{result.num_points - evaluated:,} resumed)"
               + (f"\n{best_line(to_json(result))}" if result.num_ok else "")
               + f"\nresults: {out / RESULTS_CSV}, {out / RESULTS_PARQUET}; report: {out / 'report.html'}")
    _write_json(args.json, _with_assumed(args, result))
    _resolved_beside(args.json, sc)   # none beside a sweep's --json F until s23walk
    if result.num_error:   # the others ran; these are a twin bug (or a passing fault): a re-run retries them
        print(f"error: {result.num_error:,} of {result.num_points:,} points raised an error (status 'error' in "
              f"{out / RESULTS_CSV}; a re-run into {out} tries them again)", file=sys.stderr)
        return EXIT_POINT_ERRORS
    if result.num_ok == 0:
        first = result.rows[0] if result.rows else None   # the reasons were only in the files (until s23walk)
        example = (": e.g. " + ", ".join(f"{k}={first[k]}" for k in result.axes) + f": {first['status']}: {first['reason']}"
                   if first else "")
        print(f"infeasible: no point of the sweep can run{example} (every reason in {out / RESULTS_CSV})", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


REPORT_RESULT = "result.json"   # the result an --out DIR holds (reports.page.RESULT_JSON)
REPORT_SCENARIO = "scenario.resolved.toml"   # beside it (reports.page.RESOLVED_SCENARIO)


def _saved_result(text: str, allowed: str) -> tuple[Path, Path, dict]:
    """(result file, its resolved scenario, its JSON) of `twin report RESULT`: an --out DIR's result.json (or the
    DIR) with DIR/scenario.resolved.toml, or an --json FILE with FILE's stem + .scenario.resolved.toml."""
    path = Path(text)
    if path.is_dir():
        path = path / REPORT_RESULT
    if not path.is_file():
        raise ScenarioError("RESULT", text, allowed + " (no such file)")
    beside = path.parent / REPORT_SCENARIO if path.name == REPORT_RESULT else resolved_path(str(path))
    if not beside.is_file():
        raise ScenarioError("RESULT", text, allowed + f" (no {beside.name} beside it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ScenarioError("RESULT", text, allowed + f" (not JSON: {exc})") from None
    return path, beside, data


def cmd_report(args) -> int:
    """A saved result's report drawn again: what the command's --out DIR held, from its result.json."""
    from reports import saved  # lazy: matplotlib
    from twin.training.replay.stages import saved_gantt_step  # lazy: only a replay's Gantt needs it
    path, beside, data = _saved_result(args.result, saved.ALLOWED)
    kind = saved.result_kind(data)
    if kind is None:
        raise ScenarioError("RESULT", args.result, saved.ALLOWED + " (the fields of none of them)")
    sc = load_scenario(str(beside), [], saved.scenario_kind(kind))
    try:
        gantt = saved_gantt_step(sc, data["stages"]) if kind == "replay" else None
        saved.write(kind, data, sc, args.out, gantt)
    except (KeyError, TypeError, StopIteration) as exc:   # a result cut or edited by hand, or of another scenario
        raise ScenarioError("RESULT", args.result, f"a whole {saved.KINDS[kind][2]} result of the scenario beside it "
                            f"({type(exc).__name__}: {exc})") from None
    _say(args, f"report: {Path(args.out) / 'report.html'} ({saved.KINDS[kind][2]}'s result {path}, scenario {beside})")
    return 0


def cmd_docs(args) -> int:
    from twin.api import result_schemas  # lazy: twin.api loads every product; only `twin docs --schemas` needs it
    if args.schemas:
        for name, schema in result_schemas().items():
            write_text(Path(args.schemas) / name, json.dumps(schema, indent=2) + "\n")
        _say(args, f"wrote {len(result_schemas())} result schemas to {args.schemas}")
        if not args.out:   # --schemas with --out writes both (the reference was dropped without a word until s21walk)
            return 0
    from twin.core.docs import scenario_reference  # lazy: only `twin docs` walks every field
    text = scenario_reference()
    if args.out:
        write_text(args.out, text)
        _say(args, f"wrote the scenario reference to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


EXECUTOR_NUMBERS = (("workers", "--workers", {"integer": True, "ge": 1, "le": 1024}),)


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="worker processes (default: the CPUs this process may use)")
    p.add_argument("--dask", metavar="local|tcp://HOST:PORT", help="run candidates on Dask distributed: 'local' starts a "
                   "LocalCluster on the loopback interface, an address joins that scheduler (pip install -e .[dask])")
    p.add_argument("--dask-connect-timeout", type=float, default=DASK_CONNECT_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the --dask scheduler to accept a connection, checked before any work "
                        f"(default {DASK_CONNECT_TIMEOUT_S:g})")


# what each command runs without a scenario (twin/data's embedded defaults)
TRAINING_DEFAULT = "DeepSeek-V3 pre-training on 2,048 H800"
SERVING_DEFAULT = "R1 served on one HGX H200"


def _add_scenario_args(p: argparse.ArgumentParser, schedule: bool = False, default: str = TRAINING_DEFAULT) -> None:
    p.add_argument("scenario", nargs="?", default=None, help=f"scenario TOML (default: {default})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario field, e.g. --set cluster.gpu=h200")
    p.add_argument("--quiet", action="store_true", help="no progress bars (results are still printed)")
    if schedule:
        p.add_argument("--schedule", choices=SCHEDULE_NAMES, help="override plan.schedule")


# --- argument checks: numbers like scenario fields, output paths, all before any work -------------

FILE, DIR = "file", "dir"
JSON_OUT = (("json", "--json", FILE),)


def _check_args(args) -> None:
    """Check the parsed options before the command runs: each number finite and in range, and each
    output path writable (`outputs`: (attribute, option, file or dir) set by its subparser); a
    ScenarioError names the option. --json - (stdout) is not a path."""
    for attr, option, bounds in getattr(args, "numbers", ()):
        check_value(option, getattr(args, attr), **bounds)
    extra = getattr(args, "check", None)
    if extra is not None:
        extra(args)
    if getattr(args, "dask", None) is not None:
        check_dask_address(args.dask)
        check_value("--dask-connect-timeout", args.dask_connect_timeout, gt=0, le=600)
        probe_dask_address(args.dask, args.dask_connect_timeout)
    for attr, option in getattr(args, "inputs", ()):
        source = getattr(args, attr, None)
        if source is not None and not Path(source).is_dir():
            raise ScenarioError(option, source, "an existing directory")
    written = {}
    for attr, option, kind in getattr(args, "outputs", ()):
        target = getattr(args, attr, None)
        if target is not None and not (attr == "json" and target == "-"):
            check_output(option, target, kind)
            # one path for two outputs: the second write would fail after all the work (a file onto
            # the report's folder) or replace the first
            path = Path(target).absolute()
            if path in written:
                raise ScenarioError(option, target, f"a path other than {written[path]}'s")
            written[path] = option


def _check_schedule_args(args) -> None:
    """`twin schedule` simulates pp x micro-batches ops: bound their product too."""
    ops = args.pp * args.microbatches * args.virtual_stages
    if ops > MAX_SCHEDULE_RANK_MICROBATCHES:
        v = args.virtual_stages
        raise ScenarioError("--microbatches", args.microbatches,
                            f"--pp x --microbatches{' x --virtual-stages' if v > 1 else ''} <= {MAX_SCHEDULE_RANK_MICROBATCHES:,} "
                            f"(now {args.pp:,} x {args.microbatches:,}{f' x {v:,}' if v > 1 else ''} = {ops:,})")
    try:
        check_virtual_stages(args.name, args.virtual_stages)
    except ScenarioError as exc:
        raise ScenarioError("--virtual-stages", exc.value, exc.allowed) from None


def _version() -> str:
    try:
        return importlib.metadata.version("moe-twin")
    except importlib.metadata.PackageNotFoundError:   # run from a source tree that was never installed
        return "unknown (not installed)"


class TwinParser(OneLineParser):
    """argparse's parser whose refusals are one line, as a scenario's are: "error: FLAG: got VALUE; allowed: WHAT",
    exit 2. argparse's own printed the usage (3-4 lines) above the error (until s27walk); --help is unchanged."""

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but arguments no command takes are refused by the command's parser, which names it
        ("twin plan: got '--bogus'"), not by twin's ("twin: unrecognized arguments")."""
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = self
            while True:
                sub = next((a for a in owner._actions if isinstance(a, argparse._SubParsersAction)), None)
                nested = sub.choices.get(getattr(ns, sub.dest, None)) if sub is not None else None
                if nested is None:
                    break
                owner = nested
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns


def build_parser() -> argparse.ArgumentParser:
    ap = TwinParser(prog="twin", description="Calibrated digital twin of MoE training and inference clusters")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("model", help="parameter, FLOP and KV-cache accounting of a catalog model")
    p.add_argument("name", nargs="?", help="a catalog model, e.g. deepseek-v3 (twin model --list)")
    p.add_argument("--list", action="store_true", help="list catalog models")
    p.add_argument("--seq-len", type=int, default=4096, help="sequence length for FLOPs per token (default 4096)")
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model field, e.g. --set model.num_layers=4")
    p.set_defaults(func=cmd_model, outputs=JSON_OUT, numbers=(("seq_len", "--seq-len", {"integer": True, "like": (Workload, "seq_len")}),))

    p = sub.add_parser("step", help="simulate one training step")
    _add_scenario_args(p, schedule=True)
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--breakdown", action="store_true", help="print the per-op time breakdown")
    p.set_defaults(func=cmd_step, outputs=JSON_OUT)

    p = sub.add_parser("schedule", help="idealised pipeline schedule with constant op times")
    p.add_argument("name", choices=SCHEDULE_NAMES)
    p.add_argument("--pp", type=int, required=True, help="pipeline ranks")
    p.add_argument("--microbatches", type=int, required=True, help="micro-batches per step (both directions for DualPipe)")
    p.add_argument("--f", type=float, default=1.0, help="forward chunk time F (s): one model stage's forward of one "
                   "micro-batch; DualPipeV cuts the model into 2 x --pp stages, each rank running two, so the same F "
                   "is twice the model of 1f1b's --pp stages (the summary's 'busy per rank')")
    p.add_argument("--b", type=float, default=2.0, help="full backward chunk time B (s)")
    p.add_argument("--w", type=float, default=1.0, help="weight-gradient part W of B (s)")
    p.add_argument("--fb", type=float, default=None, help="overlapped forward+backward pair F&B (s); default F+B")
    p.add_argument("--virtual-stages", type=int, default=1,
                   help="model chunks per rank V (interleaved-1f1b only, >= 2); --f/--b/--w are then a whole stage's times, split evenly over its V chunks")
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    op_s = {"gt": 0, "le": MAX_OP_TIME_S}
    p.set_defaults(func=cmd_schedule, outputs=JSON_OUT, check=_check_schedule_args, numbers=(
        ("pp", "--pp", {"integer": True, "ge": 1, "le": MAX_DEGREE}),
        ("microbatches", "--microbatches", {"integer": True, "ge": 1, "le": MAX_SCHEDULE_MICROBATCHES}),
        ("virtual_stages", "--virtual-stages", {"integer": True, "ge": 1, "le": MAX_DEGREE}),
        ("f", "--f", op_s), ("b", "--b", op_s), ("w", "--w", {**op_s, "gt": None, "ge": 0}), ("fb", "--fb", op_s)))

    p = sub.add_parser("trace", help="write the simulated step as a Chrome trace (Perfetto)")
    _add_scenario_args(p, schedule=True)
    p.add_argument("--out", required=True, metavar="FILE", help="trace JSON to write (a .gz name writes it gzipped; Perfetto opens both)")
    p.add_argument("--window", metavar="START:END", help="only the slices overlapping this time span of the step, in seconds (e.g. one chunk pair)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="op",
                   help="op: one slice per pipeline op and stream (default, ~1 MB for a V3 step); "
                        "layer: per layer and block part, named as DeepSeek's trace (attn(F), mlp(W), dispatch(B), ...)")
    p.set_defaults(func=cmd_trace, outputs=(("out", "--out", FILE),))

    p = sub.add_parser("replay", help="replay a whole training run and write the cost report")
    _add_scenario_args(p)
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--out", metavar="DIR", default="out/replay", help="write report.html, report.md, result.json, results.csv, the plots and scenario.resolved.toml here (default out/replay)")
    p.set_defaults(func=cmd_replay, outputs=(*JSON_OUT, ("out", "--out", DIR)))

    p = sub.add_parser("balance", help="what expert-load balancing buys: step time and GPU-hours under measured and fitted skew, EPLB")
    _add_scenario_args(p)
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--out", metavar="DIR", help="write report.html, report.md, result.json, the expert-load heatmap, step time vs imbalance, EPLB before/after and scenario.resolved.toml here")
    p.set_defaults(func=cmd_balance, outputs=(*JSON_OUT, ("out", "--out", DIR)))

    p = sub.add_parser("serve", help="serving throughput and latency of a deployment, beside published serving claims (default: R1 on one HGX H200)")
    _add_scenario_args(p, default=SERVING_DEFAULT)
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--out", metavar="DIR", help="write report.html, report.md, result.json, serve_sweep.csv, the throughput plots and scenario.resolved.toml here")
    p.add_argument("--requests", type=int, metavar="N", help="requests to simulate (default: traffic.num_requests)")
    p.add_argument("--trace", metavar="FILE", help="write the simulated iterations as a Chrome trace (Perfetto; .gz gzips it)")
    p.set_defaults(func=cmd_serve, outputs=(*JSON_OUT, ("out", "--out", DIR), ("trace", "--trace", FILE)),
                   numbers=(("requests", "--requests", {"integer": True, "ge": 1, "le": MAX_SIM_REQUESTS}),))

    p = sub.add_parser("plan", help="search clusters and parallel plans: the cheapest within a deadline, the fastest within a budget, "
                                     "the front of cost against time; or size a serving deployment (--rate, --ttft, --tpot)")
    _add_scenario_args(p, default=TRAINING_DEFAULT + "; with --rate/--ttft/--tpot, " + SERVING_DEFAULT)
    p.add_argument("--tokens", type=float, help="tokens to train, e.g. 14.8e12 (overrides search.tokens of a plan scenario)")
    p.add_argument("--days", type=float, help="wall-clock deadline in days, met by a plan's days with the expected failure downtime of its cluster (overrides search.days)")
    p.add_argument("--budget", type=float, metavar="USD", help="the fastest plan costing at most this (search.budget_usd)")
    p.add_argument("--gpu", help="GPU types to consider, comma-separated (no list option at all: every catalog type and "
                                 "every plan axis, twin.planning.space.DEFAULT_VALUES)")
    p.add_argument("--num-gpus", help="GPU counts, comma-separated")
    p.add_argument("--pp", help="pipeline degrees, comma-separated")
    p.add_argument("--ep", help="expert-parallel degrees, comma-separated")
    p.add_argument("--tp", help="tensor-parallel degrees, comma-separated")
    p.add_argument("--schedules", help="pipeline schedules, comma-separated")
    p.add_argument("--micro-batch", help="sequences per micro-batch, comma-separated")
    p.add_argument("--vary", action="append", metavar="FIELD=V1,V2", help="values of any plan axis, by its [search] name, "
                   "e.g. --vary zero_stage=1,2 --vary recompute=selective,full --vary gemm_precision=fp8,bf16")
    p.add_argument("--full-space", action="store_true", help="axes without a list take the default values (not the base plan's): "
                   "twin.planning.space.DEFAULT_VALUES, with EP degrees and communication SMs the model can take "
                   "(a dense model: EP 1)")
    p.add_argument("--simulate", type=int, metavar="K", help="candidates simulated after the screen (search.simulate, default 100)")
    p.add_argument("--exhaustive", action="store_true", help="simulate every candidate that fits (measures the screen)")
    p.add_argument("--price", action="append", metavar="GPU=USD", help="rental price per GPU-hour of a GPU type (default: the catalog price, twin/data/hardware.toml)")
    p.add_argument("--rate", metavar="R[,R2,...]", help="serving question: requests per second to serve (with a serving "
                   "scenario); several, comma-separated: the answer at each (a capacity curve: GPUs and cost against the rate)")
    p.add_argument("--ttft", type=float, metavar="S", help="serving question: time-to-first-token target at --percentile, seconds")
    p.add_argument("--tpot", type=float, metavar="S", help="serving question: time-per-output-token target at --percentile, seconds")
    p.add_argument("--percentile", type=float, metavar="P", help="serving question: the percentile held to the targets (default 90)")
    p.add_argument("--layout", choices=("both", "co-located", "disaggregated"), help="serving question: instances that "
                   "prefill and decode, separate prefill and decode pools, or both searched and the fewer GPUs answered (default)")
    p.add_argument("--requests", type=int, metavar="N", help="serving question: requests simulated per deployment (default: enough that the arrivals span three "
                   "lifetimes of a request at a full decode instance's pace, at least 2,000)")
    _add_executor_args(p)
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--out", metavar="DIR", help="write report.html, report.md, result.json, plan.csv, the cost-vs-days front and "
                   "scenario.resolved.toml here, and the rows journal rows.jsonl as they arrive: a re-run into the same DIR resumes")
    # --tokens, --days, --budget and --simulate are checked as search fields, with the rest of [search]
    p.set_defaults(func=cmd_plan, outputs=(*JSON_OUT, ("out", "--out", DIR)), numbers=(
        *EXECUTOR_NUMBERS, ("ttft", "--ttft", {"gt": 0, "le": 1e6}),
        ("tpot", "--tpot", {"gt": 0, "le": 1e6}), ("percentile", "--percentile", {"gt": 0, "le": 100}),
        ("requests", "--requests", {"integer": True, "ge": 1, "le": MAX_SIM_REQUESTS})))

    p = sub.add_parser("sweep", help="sweep any scenario keys (grid, random, Latin hypercube); one row per point, "
                                      "streamed to disk and resumed after a kill; CSV, Parquet, plots. A point that "
                                      "raises is a row with status 'error' and the sweep goes on (exit 4; a re-run "
                                      "retries those points)")
    _add_scenario_args(p)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2|KEY=LOW:HIGH",
                   help="an axis: a dotted scenario key and its values (a LOW:HIGH range with --random or --lhs), e.g. "
                        "--grid plan.pp=8,16 --grid cluster.gpu=h800,h200")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--random", type=int, metavar="N", help="N points drawn uniformly from the axes (default: every combination)")
    how.add_argument("--lhs", type=int, metavar="N", help="N points of a Latin hypercube over the axes")
    p.add_argument("--seed", type=int, default=0, help="seed of --random and --lhs (default 0)")
    p.add_argument("--out", metavar="DIR", default="out/sweep", help="results.csv, results.parquet, sweep.png, report.html, "
                   "result.json, scenario.resolved.toml and the rows journal rows.jsonl (default out/sweep); a re-run into "
                   "the same DIR resumes")
    _add_executor_args(p)
    p.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    p.add_argument("--rate", type=float, help="with --ttft and --tpot, on a serving scenario: each point's row is the fewest "
                   "GPUs that serve this many requests/s within the targets (as twin plan --rate answers it)")
    p.add_argument("--ttft", type=float, metavar="S", help="the serving question's time-to-first-token target at --percentile, seconds")
    p.add_argument("--tpot", type=float, metavar="S", help="the serving question's time-per-output-token target at --percentile, seconds")
    p.add_argument("--percentile", type=float, metavar="P", help="the serving question's percentile held to the targets (default 90)")
    p.set_defaults(func=cmd_sweep, outputs=(*JSON_OUT, ("out", "--out", DIR)), numbers=(
        ("rate", "--rate", {"gt": 0, "le": 1e9}), ("ttft", "--ttft", {"gt": 0, "le": 1e6}), ("tpot", "--tpot", {"gt": 0, "le": 1e6}),
        ("percentile", "--percentile", {"gt": 0, "le": 100}),
        *EXECUTOR_NUMBERS, ("random", "--random", {"integer": True, "ge": 1, "le": MAX_POINTS}),
        ("lhs", "--lhs", {"integer": True, "ge": 1, "le": MAX_POINTS}), ("seed", "--seed", {"integer": True, "ge": 0, "le": 2**32 - 1})))

    p = sub.add_parser("report", help="draw a saved result's report again: the result.json of replay, serve or plan "
                                       "--out DIR (or their --json FILE) -> report.html, report.md, plots and tables")
    p.add_argument("result", metavar="RESULT", help="DIR/result.json of `twin replay|serve|plan --out DIR` (or the DIR), "
                   "or their --json FILE; its resolved scenario beside it (DIR/scenario.resolved.toml, FILE's stem + "
                   ".scenario.resolved.toml)")
    p.add_argument("--out", required=True, metavar="DIR", help="write the report here (the same files the command's "
                   "--out wrote; other files in DIR are left alone, so DIR may be the result's own folder)")
    p.set_defaults(func=cmd_report, outputs=(("out", "--out", DIR),))

    p = sub.add_parser("docs", help="print the scenario reference (docs/scenario.md), or write the results' JSON schemas")
    p.add_argument("--out", metavar="FILE", help="write the scenario reference here")
    p.add_argument("--schemas", metavar="DIR", help="write the JSON schema of every result type here (docs/results)")
    p.set_defaults(func=cmd_docs, outputs=(("out", "--out", FILE), ("schemas", "--schemas", DIR)))

    add_calibration_commands(sub, _write_json)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_args(args)
        code = args.func(args)
        if getattr(args, "v3_assumed", None):   # after the command's answer: a refusal above stays its first line
            print(v3_defaults_note(args.v3_assumed), file=sys.stderr)
        return code
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except InfeasiblePlan as exc:
        print(f"infeasible: {exc.reason}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except KeyboardInterrupt:
        print("interrupted; earlier outputs are intact (writes are atomic)", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `twin step | head`: the reader left; nothing more to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

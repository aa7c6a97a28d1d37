"""Fuzz the `twin` command in-process: mutated scenarios, overrides and options through step,
replay, serve and plan; prints how every input ended.

Every input must end in exit 0 (ran), 2 (refused: one line `error: FIELD ...: got VALUE; allowed:
...`, or an argparse usage error naming the argument) or 3 (infeasible plan), with no exception
escaping `twin.cli.main.main`, within a time limit, and with valid JSON (no NaN or Infinity)
wherever --json was given. Inputs are mostly invalid: a field of any section set to a boundary,
huge, non-finite, wrongly typed or over-long value; sections deleted, replaced or unknown; TOML
nested hundreds deep, truncated or not UTF-8; --set syntax errors; unwritable output paths; bad
plan options. Valid inputs start from small scenarios (a 3-layer model on 8 GPUs) so they run
quickly; step also mutates the DeepSeek-V3 default, so valid-but-heavy inputs meet the work
limit of Scenario.check.

Run: .venv/bin/python benchmarks/fuzz_cli.py [--n 10000] [--seed 0] [--limit-s 30]
tests/test_fuzz_cli.py draws inputs from the same generator (`make_case`) with hypothesis.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
import types
import typing
from pathlib import Path

from twin.cli.main import main as twin_main
from twin.core.scenario import KINDS, PLAN, SERVING, TRAINING
from twin.core.specs import ModelSpec
from twin.core.run_specs import StageSpec

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("step", "replay", "serve", "plan")
KIND = {"step": TRAINING, "replay": TRAINING, "serve": SERVING, "plan": PLAN}
# an exit-2 line that names what was refused: "error: FIELD[ in SOURCE]: got VALUE; allowed: TEXT"
# the value's source: "in FILE" (or "in FILE with --set ..."), or "(--set KEY=VALUE)" where an override gave it (s27walk)
NAMED = re.compile(r"^error: (?P<field>[A-Za-z_-][\w.\[\]-]*)(?: in .+?| \(--set .+?\))?: got .*; allowed: .+$")

# --- small scenarios: valid inputs run in well under a second (replay ~1.5 s) --------------------

TINY_TRAIN = {
    "name": "tiny-train",
    "model": {"name": "tiny"},
    "cluster": {"gpu": "h800", "num_gpus": 8},
    "plan": {"tp": 1, "pp": 2, "ep": 4, "schedule": "dualpipe"},
    "workload": {"seq_len": 512, "global_batch_seqs": 32},
}
TINY_REPLAY = {
    **TINY_TRAIN,
    "run": {"ramp_knots": 2, "stages": [{"name": "pretrain", "tokens": 1e9, "seq_len": 512, "global_batch_seqs": 32}]},
    "cost": {"size_sweep_gpus": [8, 16]},
    "uncertainty": {"num_samples": 100},
}
# lists keep the search small: a [search] with none walks the whole default space (thousands of candidates)
TINY_PLAN = {**TINY_TRAIN, "search": {"tokens": 1e9, "days": 1, "pp": [1, 2], "micro_batch_seqs": [1, 2]}}
TINY_SERVE = {
    "name": "tiny-serve",
    "model": {"name": "tiny"},
    "cluster": {"gpu": "h200", "num_gpus": 8},
    "serve": {"tp": 1, "ep": 8, "batch": 4, "input_len": 128, "output_len": 128},
}
BASES = {"step": TINY_TRAIN, "replay": TINY_REPLAY, "serve": TINY_SERVE, "plan": TINY_PLAN}


# --- the fields of every section, from the spec metadata ------------------------------------------

@dataclasses.dataclass(frozen=True)
class Field:
    path: tuple[str, ...]   # ("plan", "pp"), ("run", "stages", 0, "seq_len")
    hint: typing.Any
    meta: dict


def _fields_of(cls, prefix: tuple) -> list[Field]:
    hints = typing.get_type_hints(cls)
    return [Field(prefix + (f.name,), hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls) if f.init]


def fields_for(command: str) -> list[Field]:
    """Every field a scenario of this command's kind has, [model] and run.stages[0] included."""
    _, sections = KINDS[KIND[command]]
    out = _fields_of(ModelSpec, ("model",))
    for name, cls in sections.items():
        out += _fields_of(cls, (name,))
    if "run" in sections:
        out += _fields_of(StageSpec, ("run", "stages", 0))
    return out


# --- values -------------------------------------------------------------------------------------

HUGE = (10**6, 10**7 + 1, 10**9, 10**12, 2**31, 2**63 - 1, -(2**63), 1e308, -1e308, 1e300, 1e-308, 5e-324)
SPECIAL = (math.inf, -math.inf, math.nan, -0.0, 0, -1, 1, 2, 3, 0.5)
WRONG = ("x", "", "inf", "1e9", True, False, [], [1, 2], {"a": 1}, datetime.date(1979, 5, 27),
         datetime.datetime(1979, 5, 27, 7, 32), "\u00e9\u4e2d\U0001f600", "a" * 10_000)


def _scalar_type(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _scalar_type(next(a for a in typing.get_args(hint) if a is not type(None)))
    return hint


def value_for(rng: random.Random, field: Field):
    """A value for `field`: mostly at or past its bounds, non-finite, huge or of the wrong type;
    sometimes a valid one (within its range, or one of its choices)."""
    hint, m = field.hint, field.meta
    if typing.get_origin(_scalar_type(hint)) is tuple:
        item = typing.get_args(_scalar_type(hint))[0]
        roll = rng.random()
        if roll < 0.15:
            return [1] * rng.choice((17, 65, 1000, 100_000))           # over max_items
        if roll < 0.25:
            return []
        if roll < 0.35:
            return [[[1]]]
        if dataclasses.is_dataclass(item):
            return [{"name": "s", **{f.path[-1]: value_for(rng, f) for f in rng.sample(_fields_of(item, ()), 2)}}]
        return [value_for(rng, Field(field.path, item, m)) for _ in range(rng.randint(1, 4))]
    tp = _scalar_type(hint)
    roll = rng.random()
    if m.get("choices") and roll < 0.4:
        return rng.choice(m["choices"])
    if roll < 0.55:
        bounds = [b for b in (m.get("ge"), m.get("gt"), m.get("le")) if b is not None]
        if bounds:
            b = rng.choice(bounds)
            v = rng.choice((b, b - 1, b + 1, b * 10, b / 2))
            return int(v) if tp is int and float(v).is_integer() else v
    if roll < 0.65 and tp in (int, float):                          # valid, log-uniform in range
        lo = max(m.get("ge") or 0, (m.get("gt") or 0) + 1e-3, 1e-3)
        hi = m.get("le") or 10 * max(1.0, lo)
        v = math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo))))
        return int(v) if tp is int else v
    if roll < 0.8:
        return rng.choice(HUGE + SPECIAL)
    return rng.choice(WRONG)


def toml_value(v) -> str:
    """TOML text of a value (inline tables and arrays; inf and nan as TOML spells them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_text(raw: dict) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(k)}]")
            lines += [f"{json.dumps(kk)} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _set(raw: dict, path: tuple, value) -> None:
    node = raw
    for part in path[:-1]:
        if isinstance(node, list):
            node = node[part] if isinstance(part, int) and part < len(node) else {}
            continue
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    if isinstance(node, dict):
        node[path[-1]] = value


# --- cases --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    command: str
    argv: list[str]
    json_target: str | None = None   # None, "-" or a path
    note: str = ""


def _deep_toml(rng: random.Random, depth: int) -> str:
    kind = rng.choice(("array", "inline", "header", "dotted"))
    if kind == "array":
        return "a = " + "[" * depth + "]" * depth + "\n"
    if kind == "inline":
        return "a = " + "{b = " * depth + "1" + "}" * depth + "\n"
    if kind == "header":
        return "[" + ".".join(["t"] * depth) + "]\nx = 1\n"
    return ".".join(["k"] * depth) + " = 1\n"


def make_case(rng: random.Random, command: str, workdir: Path, heavy: bool = True) -> Case:
    """One fuzzed invocation of `command`, its files written under `workdir`. `heavy` lets step
    start from the DeepSeek-V3 default (valid mutations of it can be large)."""
    raw = json.loads(json.dumps(BASES[command]))
    argv: list[str] = [command]
    note = []
    scenario_path = workdir / f"s{rng.randrange(10**9)}.toml"
    use_default = command == "step" and heavy and rng.random() < 0.15
    n_mut = rng.choice((0, 1, 1, 1, 2, 2, 3))
    overrides: list[str] = []
    file_text = None
    for _ in range(n_mut):
        roll = rng.random()
        if roll < 0.55:                                    # a field, in the file or by --set
            f = rng.choice(fields_for(command))
            v = value_for(rng, f)
            if rng.random() < 0.5 and "stages" not in f.path:
                overrides.append(".".join(map(str, f.path)) + "=" + toml_value(v))
            else:
                _set(raw, f.path, v)
            note.append(f"{'.'.join(map(str, f.path))}={str(v)[:40]}")
        elif roll < 0.62:                                  # a section deleted, replaced or unknown
            sec = rng.choice(list(raw))
            what = rng.choice(("del", "scalar", "list", "unknown", "unknown-key"))
            if what == "del":
                raw.pop(sec, None)
            elif what == "scalar":
                raw[sec] = rng.choice((5, "x", 1.5))
            elif what == "list":
                raw[sec] = [1, 2]
            elif what == "unknown":
                raw["bogus"] = {"a": 1}
            elif isinstance(raw.get(sec), dict):
                raw[sec]["bogus_key"] = 1
            note.append(f"section {sec}: {what}")
        elif roll < 0.72:                                  # the TOML text itself
            what = rng.choice(("deep", "deep", "truncated", "bytes", "empty", "dir", "missing", "bom", "dup", "big"))
            note.append(f"file: {what}")
            depth = rng.choice((33, 100, 500, 3000))
            if what == "deep":
                file_text = toml_text(raw) + _deep_toml(rng, depth)
            elif what == "truncated":
                text = toml_text(raw)
                file_text = text[: rng.randrange(1, len(text))]
            elif what == "bytes":
                file_text = bytes(rng.randrange(256) for _ in range(200))
            elif what == "empty":
                file_text = ""
            elif what == "dir":
                scenario_path = workdir
            elif what == "missing":
                scenario_path = workdir / "missing" / "x.toml"
            elif what == "bom":
                file_text = "\ufeff" + toml_text(raw)
            elif what == "dup":
                file_text = toml_text(raw) + toml_text(raw)
            elif what == "big":   # past the loader's size limit (twin.core.scenario.MAX_SCENARIO_BYTES)
                file_text = toml_text(raw) + "# " + "x" * (1 << 20) + "\n"
        elif roll < 0.82:                                  # --set syntax
            what = rng.choice(("noeq", "emptykey", "deepkey", "deepvalue", "bare", "dots", "table"))
            note.append(f"--set: {what}")
            overrides.append({
                "noeq": "plan.pp",
                "emptykey": "=3",
                "deepkey": ".".join(["a"] * rng.choice((33, 300))) + "=1",
                "deepvalue": "plan.pp=" + "[" * rng.choice((33, 300, 3000)) + "]" * 3000,
                "bare": "plan.schedule=dual pipe",
                "dots": "plan..pp=2",
                "table": "plan=5",
            }[what])
        elif roll < 0.9:                                   # output paths
            bad = rng.choice(("/proc/x/y.json", "/dev/null/x", str(workdir), str(workdir / "afile" / "x"), "", "/", "same"))
            (workdir / "afile").write_text("a file\n")
            opt = "--json" if command == "step" or rng.random() < 0.5 else "--out"
            if bad == "same" and command != "step":   # --out and --json on one path
                argv += ["--out", str(workdir / "same"), "--json", str(workdir / "same")]
                note.append("--out and --json on one path")
            else:
                bad = "/" if bad == "same" else bad
                argv += [opt, bad]
                note.append(f"{opt} {bad!r}")
        else:                                              # command options
            note.append("options")
            if command == "plan":
                opt = rng.choice(("--tokens", "--days", "--num-gpus", "--pp", "--ep", "--tp", "--micro-batch", "--gpu",
                                  "--schedules", "--price"))
                val = {"--price": lambda: rng.choice(("h800=nan", "h800=-1", "h800=inf", "h800=x", "=3", "h800=1e308")),
                       "--gpu": lambda: rng.choice(("tpu", "h800," * 100, "")),
                       "--schedules": lambda: rng.choice(("gpipe", "1f1b," * 70, "dualpipe,1f1b"))}.get(
                    opt, lambda: str(rng.choice(HUGE + SPECIAL + ("x", "1,2,x", ",".join(["1"] * 65), "9" * 5000))))()
                argv += [opt, val]
            elif command == "step":
                argv += ["--schedule", rng.choice(("1f1b", "zb1p", "dualpipev", "gpipe"))]
            else:
                argv += [rng.choice(("--bogus", "--set"))]
    generated = scenario_path.parent == workdir and scenario_path.suffix == ".toml"
    if not generated:                                      # a directory, or a file that does not exist
        argv.insert(1, str(scenario_path))
    elif file_text is not None:
        if isinstance(file_text, bytes):
            scenario_path.write_bytes(file_text)
        else:
            scenario_path.write_text(file_text, encoding="utf-8")
        argv.insert(1, str(scenario_path))
    elif not use_default:
        scenario_path.write_text(toml_text(raw), encoding="utf-8")
        argv.insert(1, str(scenario_path))
    for o in overrides:
        argv += ["--set", o]
    if command in ("replay", "plan"):
        argv.append("--quiet")
    if command == "replay" and "--out" not in argv:
        argv += ["--out", str(workdir / "replay")]
    json_target = None
    if "--json" not in argv and rng.random() < 0.5:
        json_target = "-" if rng.random() < 0.5 else str(workdir / "out.json")
        argv += ["--json", json_target]
    return Case(command, argv, json_target, "; ".join(note) or "valid base")


# --- running ------------------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the alarm when an input runs past the limit (BaseException: nothing swallows it)."""


def _on_alarm(signum, frame):
    raise Hang()


@dataclasses.dataclass
class Outcome:
    status: str              # "0", "2", "3", "argparse", "traceback", "hang", "other exit"
    named: bool = True       # an exit-2 line named what it refused
    json_ok: bool = True     # --json output parsed as strict JSON (or none was due)
    wall_s: float = 0.0
    detail: str = ""


def _strict_json(text: str) -> None:
    def no_constant(name):
        raise ValueError(f"non-JSON constant {name}")
    json.loads(text, parse_constant=no_constant)


def run_case(case: Case, limit_s: float = 30.0) -> Outcome:
    """Run one case through twin.cli.main.main in this process, with stdout and stderr captured
    and an alarm after `limit_s` seconds."""
    out, err = io.StringIO(), io.StringIO()
    if case.json_target not in (None, "-"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(case.json_target)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    outer_s, _ = signal.setitimer(signal.ITIMER_REAL, limit_s)   # a caller's own alarm (pytest-timeout) resumes after
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = twin_main(case.argv)
            except SystemExit as exc:   # argparse: usage errors exit 2
                code = ("argparse", exc.code)
    except Hang:
        return Outcome("hang", wall_s=time.perf_counter() - t0, detail=f"ran past {limit_s:g} s")
    except Exception:   # an exception escaped main: the bug this harness looks for
        return Outcome("traceback", wall_s=time.perf_counter() - t0, detail=traceback.format_exc(limit=-4))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer_s:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_s - (time.perf_counter() - t0)))
    wall = time.perf_counter() - t0
    stderr = err.getvalue()
    if isinstance(code, tuple):
        lines = stderr.strip("\n").split("\n")   # one named line, as a scenario's refusal (twin.cli.main.TwinParser)
        ok = code[1] == 2 and len(lines) == 1 and bool(NAMED.match(lines[0]))
        return Outcome("argparse" if ok else "other exit", named=ok, wall_s=wall, detail=stderr[-300:])
    if code not in (0, 2, 3):
        return Outcome("other exit", wall_s=wall, detail=f"exit {code}: {stderr[-300:]}")
    o = Outcome(str(code), wall_s=wall)
    if code == 2:
        lines = stderr.strip("\n").split("\n")
        o.named = len(lines) == 1 and bool(NAMED.match(lines[0]))
        o.detail = stderr[-300:]
    if case.json_target is not None and code in (0, 3):
        try:
            if case.json_target == "-":
                if code == 0 or out.getvalue():
                    _strict_json(out.getvalue())
            elif code == 0 or os.path.exists(case.json_target):
                _strict_json(Path(case.json_target).read_text())
        except (ValueError, OSError) as exc:
            o.json_ok, o.detail = False, f"--json {case.json_target}: {exc}"
    return o


# --- the benchmark ------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="inputs in all, spread evenly over the four commands")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-s", type=float, default=30.0, help="per-input time limit (a longer run counts as a hang)")
    ap.add_argument("--only", default=",".join(COMMANDS),
                    help="run only these commands' inputs (the others are still drawn, so the inputs are those of a full run)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rng = random.Random(args.seed)
    counts: dict[str, collections.Counter] = {c: collections.Counter() for c in COMMANDS}
    slowest: dict[str, tuple[float, str]] = {c: (0.0, "") for c in COMMANDS}
    failures = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="twin-fuzz-") as tmp:
        workdir = Path(tmp)
        cwd = os.getcwd()
        os.chdir(workdir)   # replay's default out/replay and relative paths land here
        try:
            for i in range(args.n):
                command = COMMANDS[i % len(COMMANDS)]
                case = make_case(rng, command, workdir)
                if command not in only:
                    continue
                o = run_case(case, args.limit_s)
                c = counts[command]
                c["total"] += 1
                c[o.status] += 1
                c["exit 2 named"] += o.status in ("2", "argparse") and o.named
                c["bad json"] += not o.json_ok
                if o.wall_s > slowest[command][0]:
                    slowest[command] = (o.wall_s, " ".join(case.argv)[:160])
                if o.status in ("traceback", "hang", "other exit") or not o.named or not o.json_ok:
                    failures.append((command, o.status, case.note, " ".join(case.argv)[:300], o.detail[-600:]))
                if (i + 1) % 500 == 0:
                    print(f"  {i + 1:,} inputs, {time.perf_counter() - t_start:,.0f} s", file=sys.stderr)
        finally:
            os.chdir(cwd)
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    cols = ("total", "0", "2", "argparse", "3", "traceback", "hang", "other exit", "exit 2 named", "bad json")
    print(f"twin CLI fuzz: {args.n:,} inputs, seed {args.seed}, limit {args.limit_s:g} s per input, "
          f"{time.perf_counter() - t_start:,.0f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    print(f"{'command':<8}" + "".join(f"{h:>13}" for h in cols) + f"{'slowest s':>11}")
    for command in COMMANDS:
        print(f"{command:<8}" + "".join(f"{counts[command][h]:>13,}" for h in cols) + f"{slowest[command][0]:>11.2f}")
    print(f"{'all':<8}" + "".join(f"{total[h]:>13,}" for h in cols))
    refused = total["2"] + total["argparse"]
    print(f"exit 2: {refused:,}, of which {total['exit 2 named']:,} named the field or option "
          f"({total['argparse']:,} by argparse usage errors)")
    for command in COMMANDS:
        print(f"slowest {command}: {slowest[command][0]:.2f} s: {slowest[command][1]}")
    for f in failures[:20]:
        print("FAIL", *f, sep="\n  ")


if __name__ == "__main__":
    main()

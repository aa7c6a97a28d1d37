"""The serving engine's eager iteration host time, per model, at the shapes the engine runs (issue 15, s24eager).

    python -m real.serve.eagerhost --out DIR [--models a,b] [--device cpu] [--reps 4] [--budget-s 40]

Why: the models real/serve never fitted (qwen3moe-, qwen2moe-, mixtral-mla-slice) run host-bound eager prompt
iterations whose host time (`host_s`: an iteration's start to its last kernel launched) exceeds the one-GPU tables'
host terms by 1.5-3.2 ms (docs/notes/s23closed_rule.md); the tables were fitted additively on v3-slice-2l, whose
prompt iterations are mostly kernel-bound, so they hold only part of an eager forward's launch time. This measures
that host time directly, as the engine runs it: Engine.step on an engine of GPU1's settings (real/serve/plans.py),
timing on, the main thread pinned to one CPU of its GPU's (as every load run since s13srv), for each composition of
COMPOSITIONS (prompts x tokens each, beside decode rows):
  1. the engine reset; `decode_rows` requests of SETUP_PROMPT tokens added and one step run (their prompts: an
     iteration of that many 32-token chunks, recorded as composition 'setup-<d>'), so they decode next;
  2. `prompts` requests of `tokens` tokens added and one step run: the measured iteration (decode rows + chunks).
Each composition runs `reps` times in a row of rounds (round 0 meets every flat size first: `first_met`; the fit
reads the later rounds). The host probe (real/serve/hostspeed.probe) runs right before and right after each model's
rounds (the probe first, as on every serve campaign). Per composition the aten operators one step dispatches are
counted once (a TorchDispatchMode, outside the timed rounds): does a model's host time follow its operator count?

Rows (eager_host.csv): one per measured step: model, num_layers, num_heads, composition, prompts, tokens,
decode_rows, chunks, flat_tokens (prompt tokens + decode rows), round, first_met, host_s, duration_s, gpu_s,
ops (the composition's counted operators), cpu_id, cpu_mhz, the probe before / after (PROBE_KEYS), pin_cpus, and
the environment (ENV_COLS, nccl_version). env.json: the environment and the settings.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from real.bench.device import cuda_pci_bus_id, environment, nccl_version
from real.bench.records import ENV_COLS, log
from real.configs import get_spec
from real.model import build_model
from real.serve.engine import Engine, EngineConfig, Request
from real.serve.hostpin import apply_pin
from real.serve.hostspeed import PROBE_KEYS, probe
from real.serve.plans import GPU1, TINY
from real.telemetry import Telemetry

FIT_MODELS = ("v3-slice-2l", "qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice")
SETUP_PROMPT = 32       # tokens of each decode row's own prompt (its setup iteration: one 32-token chunk each)
SETUP_OUTPUT = 64       # its output length: it decodes through the measured step
TINY_SETUP = (4, 8)     # the CPU dry run's (TINY: 96-token context)
# (prompts, tokens each, decode rows): the engine's iterations in the load runs' mix (prompts 192-768) -- one prompt
# beside 0-48 decode rows (a Poisson run's), 2-6 prompts (a closed loop's start), every flat size within the budget
COMPOSITIONS = ((1, 192, 0), (1, 480, 0), (1, 768, 0), (1, 480, 16), (1, 480, 48), (2, 480, 0), (2, 480, 16),
                (4, 480, 0), (4, 480, 24), (6, 336, 0), (6, 336, 16))
TINY_COMPOSITIONS = ((1, 12, 0), (2, 8, 2), (3, 6, 0))   # the CPU dry run (TINY's budget 32, 96-token context)
COLS = ["bench", "model", "num_layers", "num_heads", "composition", "prompts", "tokens", "decode_rows", "chunks",
        "flat_tokens", "round", "first_met", "host_s", "duration_s", "gpu_s", "ops", "cpu_id", "cpu_mhz",
        *[f"probe_{w}_{k}" for w in ("before", "after") for k in PROBE_KEYS], "pin_cpus", *ENV_COLS, "nccl_version"]


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched inside it (each a kernel launch or a host-side op)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def label(prompts: int, tokens: int, decode_rows: int) -> str:
    return f"p{prompts}x{tokens}-d{decode_rows}"


class Driver:
    """Runs compositions through one engine, numbering the requests."""

    def __init__(self, engine: Engine, vocab: int, setup: tuple[int, int] = (SETUP_PROMPT, SETUP_OUTPUT)):
        self.engine, self.vocab, self.next_id = engine, vocab, 0
        self.setup_prompt, self.setup_output = setup
        self.gen = torch.Generator().manual_seed(0)

    def _add(self, n: int, tokens: int, output_len: int) -> None:
        for _ in range(n):
            prompt = torch.randint(0, self.vocab, (tokens,), generator=self.gen).tolist()
            self.engine.add(Request(self.next_id, 0.0, prompt, output_len))
            self.next_id += 1

    def _prepare(self, prompts: int, tokens: int, decode_rows: int):
        """The engine reset, `decode_rows` requests set decoding (their setup iteration run: its record, or None
        without decode rows), then `prompts` requests of `tokens` added: the next step is the composition's."""
        e = self.engine
        e.reset(e.clock())
        setup = None
        if decode_rows:
            self._add(decode_rows, self.setup_prompt, self.setup_output)
            setup = e.step()
        self._add(prompts, tokens, 2)
        return setup

    def run(self, prompts: int, tokens: int, decode_rows: int):
        """(setup iteration record or None, measured iteration record) of one composition."""
        setup = self._prepare(prompts, tokens, decode_rows)
        rec = self.engine.step()
        if rec.prefill_seqs != prompts or rec.decode_seqs != decode_rows:
            raise RuntimeError(f"{label(prompts, tokens, decode_rows)}: the engine scheduled {rec.prefill_seqs} "
                               f"chunks beside {rec.decode_seqs} decode rows")
        return setup, rec

    def count_ops(self, prompts: int, tokens: int, decode_rows: int) -> int:
        """The aten operators one measured step of the composition dispatches (not timed)."""
        self._prepare(prompts, tokens, decode_rows)
        with OpCounter() as c:
            self.engine.step()
        return c.count


def run_setup(device: str):
    """(use_cuda, device, plan, dtype, pinned CPUs) of a one-GPU engine measurement: the GPU1 settings on CUDA
    GPU 0 unless `device` is "cpu" or no GPU exists (then the tiny plan on CPU), the process pinned as every
    serve campaign pins it."""
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    plan = GPU1 if use_cuda else TINY
    dtype = getattr(torch, plan.dtype_gpu if use_cuda else plan.dtype_cpu)
    cpus = apply_pin("core", 0, 1, 0 if use_cuda else None)
    return use_cuda, dev, plan, dtype, cpus


def run_environment(dev: torch.device, use_cuda: bool):
    """(telemetry, environment dict with the NCCL version) recorded beside every row."""
    tel = Telemetry(0, cuda_pci_bus_id(dev) if use_cuda else None)
    env = environment(dev, tel)
    env["nccl_version"] = nccl_version() if use_cuda else ""
    return tel, env


def eager_engine(spec, dev: torch.device, dtype, plan) -> Engine:
    """The engine as the load runs build it (seed 0, eval), CUDA graphs off, iteration timing on."""
    torch.manual_seed(0)
    model = build_model(spec, dev, dtype, max_seq_len=plan.max_context)
    model.eval()
    engine = Engine(model, EngineConfig(page_size=plan.page_size, num_pages=plan.num_pages,
                                        token_budget=plan.token_budget, max_running=plan.max_running,
                                        max_context=plan.max_context, cuda_graphs=False))
    engine.timing = True
    return engine


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m real.serve.eagerhost", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default=",".join(FIT_MODELS))
    p.add_argument("--device", default="auto", choices=("auto", "cpu"))
    p.add_argument("--reps", type=int, default=4, help="rounds of every composition (round 0: sizes met first)")
    p.add_argument("--budget-s", type=float, default=1e9, help="no model starts after this many seconds")
    return p.parse_args(argv)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = _args(argv)
    use_cuda, dev, plan, dtype, cpus = run_setup(args.device)
    comps = COMPOSITIONS if use_cuda else TINY_COMPOSITIONS
    args.out.mkdir(parents=True, exist_ok=True)
    tel, env = run_environment(dev, use_cuda)
    f = (args.out / "eager_host.csv").open("w", newline="")
    w = csv.DictWriter(f, fieldnames=COLS)
    w.writeheader()
    done = []
    models = [m for m in args.models.split(",") if m]
    for name in models:
        if time.perf_counter() - t_start > args.budget_s:
            log(f"budget of {args.budget_s:.0f} s spent: {name} and the rest skipped")
            break
        t = time.perf_counter()
        spec = get_spec(name)
        engine = eager_engine(spec, dev, dtype, plan)
        drv = Driver(engine, spec.vocab_size, (SETUP_PROMPT, SETUP_OUTPUT) if use_cuda else TINY_SETUP)
        ops = {c: drv.count_ops(*c) for c in comps}   # also a first pass through every shape
        before = probe(dev)
        recs = []
        for rnd in range(args.reps):
            for c in comps:
                setup, rec = drv.run(*c)
                if setup is not None:
                    recs.append((rnd, (c[2], drv.setup_prompt, 0), setup))
                recs.append((rnd, c, rec))
        after = probe(dev)
        common = {"bench": "eager_host", "model": name, "num_layers": spec.num_layers, "num_heads": spec.num_heads,
                  **{f"probe_before_{k}": before[k] for k in PROBE_KEYS},
                  **{f"probe_after_{k}": after[k] for k in PROBE_KEYS}, "pin_cpus": " ".join(map(str, cpus)),
                  **{k: env.get(k, "") for k in ENV_COLS}, "nccl_version": env["nccl_version"],
                  "sm_clock_mhz": tel.sm_clock_mhz(), "mem_clock_mhz": tel.mem_clock_mhz(),
                  "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for rnd, (p, n, d), rec in recs:
            setup_row = n == drv.setup_prompt and d == 0 and (p, n, d) not in comps
            w.writerow({**common, "composition": f"setup-{p}" if setup_row else label(p, n, d), "prompts": p,
                        "tokens": n, "decode_rows": d, "chunks": rec.prefill_seqs,
                        "flat_tokens": rec.prefill_tokens + rec.decode_seqs, "round": rnd, "first_met": int(rnd == 0),
                        "host_s": rec.host_s, "duration_s": rec.duration_s, "gpu_s": rec.gpu_s,
                        "ops": "" if setup_row else ops[(p, n, d)], "cpu_id": rec.cpu_id, "cpu_mhz": rec.cpu_mhz})
        f.flush()
        done.append(name)
        log(f"{name}: {len(recs)} iterations in {time.perf_counter() - t:.1f} s, probe "
            f"{before['launch_s'] * 1e6:.2f} / {after['launch_s'] * 1e6:.2f} us a launch")
        del engine, drv
        if use_cuda:
            torch.cuda.empty_cache()
    f.close()
    env.update(models=done, compositions=[list(c) for c in comps], reps=args.reps, plan=plan.model if not use_cuda
               else "gpu1 settings, graphs off", pin_cpus=cpus, elapsed_s=time.perf_counter() - t_start)
    (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    return 0 if len(done) == len(models) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Measured pipeline steps: `torchrun --standalone --nproc-per-node 2 -m real.pipeline --out DIR`.

For each layout (`pp2`: two pipeline ranks; `ep2`: one stage, experts over two ranks, i.e. EP2 =
DP2; `pp2ep2`: both, on four ranks), each schedule (pipeline layouts; `1f1b` with pp=1 is plain
gradient accumulation) and each micro-batch count, it times warm steps of `real/pipeline/engine.py` and
writes, from rank 0:

  pipeline_step.csv   one row per configuration: median / p10 / p90 step time over the timed
                      steps (a step: from the barrier to the end of the last op of any rank,
                      gradient all-reduces included, no optimizer unless --sgd-lr), tokens/s,
                      loss, split (fit | holdout), the environment and nccl_version
  pipeline_ops.csv    every op of every rank of every timed step: kind F B W BW FB send recv
                      allreduce optimizer, start_s / end_s on the step's shared axis
  pipeline_routing.csv  each rank's routed tokens per MoE gate and expert, per timed step
                      (chunk, model stage and layer: the measured routing loads)
  pipeline_trace_<schedule>.json   (pipeline_trace_ep<E>.json for pp=1) a Chrome trace of the
                      median step of one configuration per schedule: one process per rank,
                      threads compute / comm / dp, compute slices named like the twin's op slices
                      (`F3.0`, `B1.1`, `F3.0&BW1.1`), opens in Perfetto beside `twin trace`
  env_pipeline_<layouts>.json   the environment and the resolved configuration

`--host-marks off,host,events` (s13ep) times each configuration once per mode, in that order:
`off` as above into --out; `host` (real/ep.py's perf_counter marks in dispatch, combine and their
backward) and `events` (the same plus a CUDA event at each mark) into --out/marks_<mode>/, the same
files plus
  ep_host_marks.csv   every mark of every rank of every timed step (EP layouts): label, MoE layer
                      within the op, host_s (and gpu_s: the event, events mode) on the ops' axis

`--interleave` (s17alt) times the schedules of each micro-batch count in turn, in one process group on
the same model, tokens and weights: cycle c runs one step of each schedule, in row c of a Williams design (position and predecessor balanced)
(engine.interleaved_steps), so two schedules' steps of one cycle are seconds apart and see the same
host pace, where the configurations one after another are a minute or more apart (s16dpv: the host's
forward issue rate jumps between two levels from one configuration's stretch of steps to the next).
--warmup and the timed steps count cycles. The same files, each configuration's rows from its own
steps, plus
  pipeline_interleaved.csv   one row per timed step: its time, loss, cycle, position in the cycle,
                      step index and pair_key (layout, count, cycle: the steps measured side by side)
With `--host-probe` (s18probe) every rank also probes its host's pace before each timed cycle, between
the steps (real/pipeline/hostpace.py: small kernel launches issued behind a sleeping stream, and a
pure-Python loop); without --interleave (s26eprate) before each timed step of each configuration
(`cycle` = the step's rep), into
  pipeline_host_probe.csv    one row per probe, cycle and rank: us a launch / a pass, the GPU's clocks
With `--pace-sampler` (s26eprate round 2; configurations alone) a companion thread on every rank times a
fixed pure-Python loop every ~2 ms *during* each timed step (real/pipeline/hostpace.PaceSampler), into
  pipeline_host_pace.csv     one row per sample: rep, rank, t_s on the step's shared axis, its wall, duty

Rows are written as each configuration ends, so a run cut short keeps what it measured. All
ranks take every decision alike (rank 0's clock decides repetitions and the budget).
`--tiny` is the CPU dry run (gloo, the catalog's tiny model with 4 layers, seq 16).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench.device import environment, free_memory, nccl_version
from real.bench.records import (ENV_COLS, EP_HOST_MARKS_COLS, PIPELINE_HOST_PACE_COLS, PIPELINE_HOST_PROBE_COLS,
                                PIPELINE_INTERLEAVED_COLS,
                                PIPELINE_OPS_COLS, PIPELINE_ROUTING_COLS, PIPELINE_STEP_COLS, log)
from real.configs import get_spec
from real.fp8 import BF16, best_fp8
from real.model import build_model
from real.serve.hostpin import PIN_MODES, apply_pin
from real.pipeline.hostpace import SAMPLE_LOOPS, PaceSampler, host_probe
from real.pipeline.engine import (HOST_MARK_MODES, PipelineRunner, StepTimeline, build_mesh, flow_orders,
                                  interleaved_steps, on_shared_axis)
from real.telemetry import Telemetry
from twin.core.schedules import build_schedule

COMPUTE_KINDS = ("F", "B", "W", "BW", "FB")
TRACK = {**{k: 0 for k in COMPUTE_KINDS}, "send": 1, "recv": 1, "allreduce": 2, "optimizer": 2}


def parse_layout(text: str) -> tuple[int, int]:
    """'pp2' -> (2, 1), 'ep2' -> (1, 2), 'pp2ep2' -> (2, 2)."""
    pp = ep = 1
    rest = text
    for key in ("pp", "ep"):
        if rest.startswith(key):
            digits = ""
            rest = rest[2:]
            while rest[:1].isdigit():
                digits, rest = digits + rest[0], rest[1:]
            if not digits:
                break
            pp, ep = (int(digits), ep) if key == "pp" else (pp, int(digits))
    if rest or text in ("", "pp", "ep"):
        raise SystemExit(f"--layouts: {text!r} is not a layout like pp2, ep2 or pp2ep2")
    return pp, ep


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def layout_counts(text: str) -> dict[tuple[int, int], list[int]]:
    """'pp4=8/16,pp2ep2=4' -> {(4, 1): [8, 16], (2, 2): [4]} (--layout-microbatches)."""
    out = {}
    for item in (x for x in text.split(",") if x):
        layout, _, counts = item.partition("=")
        if not counts:
            raise SystemExit(f"--layout-microbatches: {item!r} is not like pp2ep2=4 or pp4=8/16")
        out[parse_layout(layout)] = [int(c) for c in counts.split("/") if c]
    return out


def timed_reps(step_s: float, left_s: float, min_time_s: float, reps_min: int, reps_max: int,
               whole: bool = False) -> int:
    """How many steps to time after the warm-up (step_s a warm step): enough for `min_time_s`,
    within [reps_min, reps_max], cut to what the budget left holds (at least 1); with `whole`
    (--whole-reps), 0 where reps_min steps do not fit: the configuration is skipped rather than
    timed on fewer steps than asked."""
    reps = min(reps_max, max(reps_min, math.ceil(min_time_s / max(step_s, 1e-6))))
    fits = int(max(left_s, 0.0) / max(step_s, 1e-6))
    if whole and fits < reps_min:
        return 0
    return max(1, min(reps, fits))


def _quantiles(times: list[float]) -> tuple[float, float, float]:
    med = statistics.median(times)
    if len(times) < 2:
        return med, med, med
    q = statistics.quantiles(times, n=10, method="inclusive")
    return med, q[0], q[-1]


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.9g}"
    return v


class CsvFamily:
    """DIR/<name>.csv with a fixed header, one flush per batch of rows; `append` adds to an
    existing file of the same columns (a second torchrun of one campaign)."""

    def __init__(self, path: Path, cols: list[str], append: bool = False):
        exists = append and path.exists() and path.stat().st_size > 0
        if exists:
            with open(path, newline="") as f:
                header = next(csv.reader(f))
            if header != cols:
                raise SystemExit(f"{path}: columns {header} differ from {cols}; not appending")
        self.f = open(path, "a" if exists else "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=cols, extrasaction="raise")
        if not exists:
            self.w.writeheader()

    def rows(self, rows: list[dict]) -> None:
        for r in rows:
            self.w.writerow({k: _fmt(v) for k, v in r.items()})
        self.f.flush()

    def close(self):
        self.f.close()


def chrome_trace(steps: list[StepTimeline], meta: dict) -> dict:
    """One measured step (all ranks, shared axis) as Chrome-trace JSON, times in microseconds."""
    out = []
    for t in steps:
        # every event names its pid and tid, the process-wide metadata too (tid 0), as Trace Event Format lists them
        out.append({"ph": "M", "name": "process_name", "pid": t.rank, "tid": 0,
                    "args": {"name": f"PP rank {t.pp_rank} (GPU {t.rank}, dp {t.dp_rank})"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": t.rank, "tid": 0, "args": {"sort_index": t.rank}})
        for name, tid in (("compute", 0), ("comm", 1), ("dp", 2)):
            out.append({"ph": "M", "name": "thread_name", "pid": t.rank, "tid": tid, "args": {"name": name}})
        for o in t.ops:
            if o.end_s <= o.start_s:
                continue
            out.append({"ph": "X", "name": o.name, "pid": t.rank, "tid": TRACK[o.kind],
                        "ts": round(o.start_s * 1e6, 3), "dur": round((o.end_s - o.start_s) * 1e6, 3),
                        "args": {"mb": o.microbatch, "chunk": o.chunk, "op": o.kind, "op_index": o.op_index}})
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {**meta, "rank_offsets_s": {t.rank: t.host_start_s for t in steps},
                          "time_axis": "seconds from the earliest rank's step start (after a barrier)"}}


def _agree(value: float) -> float:
    """Rank 0's value on every rank (decisions that change what the ranks run must match)."""
    t = torch.tensor([value], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return float(t.item())



def mark_rows(step: StepTimeline) -> list[dict]:
    """One rank's host marks of one step, each with the compute op whose host interval holds it
    (op_index, kind, microbatch) and its MoE layer within that op (0 = the op's first dispatch)."""
    compute = [o for o in step.ops if o.kind in COMPUTE_KINDS]
    rows = []
    for label, call, host_s, gpu_s, main in step.marks:
        op = next((o for o in compute if o.host_start_s <= host_s <= o.host_end_s), None)
        rows.append(dict(op_index=op.op_index if op else -1, kind=op.kind if op else "",
                         microbatch=op.microbatch if op else -1, call=call, mark=label,
                         thread="main" if main else "autograd", host_s=host_s, gpu_s=gpu_s))
    first: dict = {}
    for r in rows:
        first[r["op_index"]] = min(first.get(r["op_index"], r["call"]), r["call"])
    for r in rows:
        r["layer"] = r.pop("call") - first[r["op_index"]]
    return rows


class Outputs:
    """The CSV families of one host-marks mode (off: --out; else --out/marks_<mode>/), rank 0."""

    def __init__(self, out: Path, mode: str, append: bool, interleaved: bool = False, probed: bool = False,
                 paced: bool = False):
        self.dir = out if mode == "off" else out / f"marks_{mode}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.steps = CsvFamily(self.dir / "pipeline_step.csv", PIPELINE_STEP_COLS, append)
        self.ops = CsvFamily(self.dir / "pipeline_ops.csv", PIPELINE_OPS_COLS, append)
        self.routing = CsvFamily(self.dir / "pipeline_routing.csv", PIPELINE_ROUTING_COLS, append)
        self.marks = None if mode == "off" else CsvFamily(self.dir / "ep_host_marks.csv", EP_HOST_MARKS_COLS,
                                                          append)
        self.each = (CsvFamily(self.dir / "pipeline_interleaved.csv", PIPELINE_INTERLEAVED_COLS, append)
                     if interleaved else None)
        self.probe = (CsvFamily(self.dir / "pipeline_host_probe.csv", PIPELINE_HOST_PROBE_COLS, append)
                      if probed else None)
        self.pace = CsvFamily(self.dir / "pipeline_host_pace.csv", PIPELINE_HOST_PACE_COLS, append) if paced else None

    def close(self):
        for f in (self.steps, self.ops, self.routing, self.marks, self.each, self.probe, self.pace):
            if f is not None:
                f.close()


def gather_all(obj) -> list:
    """Every rank's `obj`, in rank order (all_gather_object over the default group)."""
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone


def release(model) -> None:
    """Drops the model's gradients and returns the allocator's cache, so the next configuration
    starts from the same memory (the runner holding its activations must be gone first)."""
    for p in model.parameters():
        p.grad = None
    free_memory()


def _trace_now(traced: set, mode: str, key: str, n: int, trace_microbatches: int, counts: list[int]) -> str | None:
    """`key` where this configuration's median step is to be traced (the first of `key` at the traced
    count, or at the last count), else None; marks it traced."""
    if (mode, key) in traced or (n != trace_microbatches and n != counts[-1]):
        return None
    traced.add((mode, key))
    return key


def _device_segments(dev: torch.device) -> int:
    """How many device segments the caching allocator has cudaMalloc'ed so far on `dev` (0 on CPU)."""
    if dev.type != "cuda":
        return 0
    return int(torch.cuda.memory_stats(dev).get("segment.all.allocated", 0))


class Bench:
    """One layout's model and mesh: times configurations alone (`alone`) or interleaved (`interleaved`,
    s17alt) and writes their rows from rank 0 (`write`, `step_rows`)."""

    def __init__(self, args, model, mesh, dev, spec, precision, tel, t_start: float):
        self.args, self.model, self.mesh, self.dev = args, model, mesh, dev
        self.spec, self.precision, self.tel, self.t_start = spec, precision, tel, t_start
        self.world = dist.get_world_size()
        self.new_segments: dict[int, int] = {}   # --interleave: count -> cudaMallocs in its timed cycles
        self.probe_rows: dict[int, list] = {}     # --host-probe: count -> every rank's probe rows (rank 0)
        self.pace_rows: dict[int, list] = {}      # --pace-sampler: count -> every rank's sample rows (rank 0)

    def tokens(self, n: int) -> int:
        """Tokens of one step at n micro-batches, over the data-parallel replicas."""
        return n * self.args.mb_seqs * self.args.seq_len * self.mesh.dp

    def _inputs(self, n: int):
        gen = torch.Generator().manual_seed(1 + self.mesh.dp_rank)
        tokens = torch.randint(0, self.spec.vocab_size, (n, self.args.mb_seqs, self.args.seq_len),
                               generator=gen).to(self.dev)
        return tokens, torch.roll(tokens, -1, -1)

    def _runner(self, schedule, mode: str = "off") -> PipelineRunner:
        return PipelineRunner(self.model, schedule, self.mesh, self.dev,
                              (self.args.mb_seqs, self.args.seq_len, self.spec.hidden_size), self.precision,
                              sgd_lr=self.args.sgd_lr, host_marks=mode)

    def _reps(self, step_s: float) -> int:
        left_s = self.args.budget_s - (time.perf_counter() - self.t_start)
        a = self.args
        return int(_agree(timed_reps(step_s, left_s, a.min_time_s, a.reps_min, a.reps_max, a.whole_reps)))

    def _budget_spent(self, label: str) -> bool:
        if _agree(time.perf_counter() - self.t_start) > self.args.budget_s:
            log(f"skip {label}: budget spent")
            return True
        return False

    def alone(self, name: str, n: int, mode: str, label: str):
        """One configuration's warm-up and timed steps on their own: (every rank's timelines, every rank's
        routed tokens per step, (sm MHz, mem MHz, power W)), or None where it is skipped."""
        if self._budget_spent(label):
            return None
        try:
            schedule = build_schedule(name, self.mesh.pp, n)
        except ValueError as e:  # twin's ScenarioError: e.g. dualpipe with too few micro-batches
            log(f"skip {label}: {e}")
            return None
        runner = self._runner(schedule, mode)
        tokens, targets = self._inputs(n)
        t0 = time.perf_counter()
        for _ in range(self.args.warmup):
            runner.step(tokens, targets)
        step_s = _agree((time.perf_counter() - t0) / max(1, self.args.warmup))
        reps = self._reps(step_s)
        if not reps:   # --whole-reps (rank 0's figure: every rank skips alike)
            log(f"skip {label}: {self.args.reps_min} timed steps of {step_s * 1e3:.0f} ms do not fit "
                "the budget left")
            del runner
            release(self.model)
            return None
        gates = list(runner.moe_gates())
        for *_, gate in gates:
            gate.tokens_per_expert_E.zero_()
        if self.args.host_probe or self.args.pace_sampler:
            mine, wall_s, energy_j = self._probed_steps(runner, tokens, targets, reps, n)
        else:
            e0, w0 = self.tel.energy_j(), time.perf_counter()
            mine = [runner.step(tokens, targets) for _ in range(reps)]
            wall_s, energy_j = time.perf_counter() - w0, self.tel.energy_j() - e0
        routed = [(chunk, s, layer, e, float(c) / reps) for chunk, s, layer, gate in gates
                  for e, c in enumerate(gate.tokens_per_expert_E.tolist())]
        clocks = (self.tel.sm_clock_mhz(), self.tel.mem_clock_mhz(),
                  energy_j / wall_s if wall_s >= 0.5 else math.nan)
        del runner
        return gather_all(mine), gather_all(routed), clocks

    def _probed_steps(self, runner: PipelineRunner, tokens, targets, reps: int, n: int):
        """--host-probe without --interleave (s26eprate): the timed steps of one configuration, every rank
        probing its host's pace (hostpace.host_probe) right before each of them, outside the step: the probe
        synchronises the device at its end and the step then starts at its own barrier and synchronisation
        (PipelineRunner.step), so no step's op or sync point changes; the probes' wall time and energy are left
        out of the configuration's (summed over the steps alone). One untimed probe first (first calls).
        Probe row `cycle` k: the probe right before timed step (rep) k. Returns (this rank's timelines, the
        steps' wall seconds, their energy in joules); every rank's probe rows land in probe_rows[n] (rank 0).
        With --pace-sampler (s26eprate round 2) each timed step runs with a hostpace.PaceSampler on every rank
        (started before the step's barrier, stopped after its end); its samples inside the step land in
        pace_rows[n] (rank 0) on the step's shared axis (perf_counter is the host's monotonic clock, one for both
        ranks' processes: t_s = sample start - the earliest rank's step start, as on_shared_axis puts the ops).
        Without --host-probe no probe runs (the sampler alone)."""
        probe, paced = self.args.host_probe, self.args.pace_sampler
        if probe:
            host_probe(self.dev)
        mine, probes, samples, wall_s, energy_j = [], [], [], 0.0, 0.0
        for k in range(reps):
            if probe:
                probes += self._probe(k, n)
            e0, w0 = self.tel.energy_j(), time.perf_counter()
            if paced:
                with PaceSampler() as sampler:
                    mine.append(runner.step(tokens, targets))
                samples.append(sampler.samples)
            else:
                mine.append(runner.step(tokens, targets))
            wall_s, energy_j = wall_s + time.perf_counter() - w0, energy_j + self.tel.energy_j() - e0
        if probe:
            self.probe_rows[n] = [row for rows in gather_all(probes) for row in rows]
        if paced:
            self.pace_rows[n] = self._pace(mine, samples, n)
        return mine, wall_s, energy_j

    def _pace(self, mine: list[StepTimeline], samples: list[list], n: int) -> list[dict]:
        """Every rank's samples within its timed steps as rows (rank 0; [] elsewhere): rep, rank, t_s on the
        step's shared axis, sample_s, duty (the rank's sample walls in the step over the step's wall)."""
        sm, mem = self.tel.sm_clock_mhz(), self.tel.mem_clock_mhz()
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        ends = [max((o.host_end_s for o in t.ops), default=0.0) for t in mine]
        everyone = gather_all([(t.host_start_s, end, s) for t, end, s in zip(mine, ends, samples)])
        if dist.get_rank() != 0:
            return []
        rows = []
        for k in range(len(mine)):
            origin = min(everyone[r][k][0] for r in range(self.world))
            for r in range(self.world):
                start, end, got = everyone[r][k]
                inside = [(t - origin, w) for t, w in got if start <= t <= start + end]
                duty = sum(w for _, w in inside) / end if end > 0 else math.nan
                rows += [dict(num_microbatches=n, rep=k, rank=r, t_s=t, sample_s=w, loops=SAMPLE_LOOPS, duty=duty,
                              sm_clock_mhz=sm, mem_clock_mhz=mem, timestamp_utc=stamp) for t, w in inside]
        return rows

    def pace_csv_rows(self, n: int, is_holdout: bool, env: dict) -> list[dict]:
        """Rank 0: pipeline_host_pace.csv's rows of count n (--pace-sampler)."""
        fixed = dict(bench="pipeline_step" if self.mesh.pp > 1 else "ep_step", model=self.spec.name,
                     pp=self.mesh.pp, ep=self.mesh.ep, dp=self.mesh.dp, num_gpus=self.world,
                     split="holdout" if is_holdout else "fit", gpu_name=env["gpu_name"],
                     torch_version=env["torch_version"], cuda_version=env["cuda_version"],
                     nccl_version=env["nccl_version"])
        return [{**fixed, **row} for row in self.pace_rows.get(n, [])]

    def interleaved(self, names: list[str], n: int, label: str):
        """The configurations `names` at n micro-batches stepped in turn (engine.interleaved_steps: cycle
        c one step of each, in row c of a Williams design), the same tokens and weights, `--warmup` cycles
        first. Per name, rank 0 gets (its timed steps, every rank on the shared axis; every rank's routed
        tokens per step; (sm MHz, mem MHz, power W); (cycle, position, step_index, sm MHz, timestamp) of
        each step); the other ranks {}. None where skipped."""
        if self._budget_spent(label):
            return None
        runs = {}
        tokens, targets = self._inputs(n)
        for name in names:
            try:
                runs[name] = (self._runner(build_schedule(name, self.mesh.pp, n)), tokens, targets)
            except ValueError as e:  # twin's ScenarioError: a count this schedule can't run
                log(f"{label}: without {name}: {e}")
        if len(runs) < 2:
            log(f"skip {label}: fewer than two configurations to interleave")
            return None
        t0 = time.perf_counter()
        for _ in interleaved_steps(runs, self.args.warmup):
            pass
        cycle_s = _agree((time.perf_counter() - t0) / max(1, self.args.warmup))
        reps = self._reps(cycle_s)
        period = len(runs) if len(runs) % 2 == 0 else 2 * len(runs)   # cycle_order's design repeats
        if reps - reps % period >= max(period, self.args.reps_min):
            reps -= reps % period   # whole periods: every position and predecessor equally often
        if not reps:
            log(f"skip {label}: {self.args.reps_min} cycles of {cycle_s * 1e3:.0f} ms do not fit the budget left")
            return None
        probes = []   # --host-probe: this rank's probe rows of the timed cycles
        if self.args.host_probe:
            host_probe(self.dev)   # first calls (kernel load, allocator blocks) before the timed cycles
        gates = {name: list(run[0].moe_gates()) for name, run in runs.items()}
        for gate in {id(g): g for gs in gates.values() for *_, g in gs}.values():
            gate.tokens_per_expert_E.zero_()
        mine = {name: [] for name in runs}
        routed = {name: {} for name in runs}
        energy_j = {name: 0.0 for name in runs}
        wall_s = {name: 0.0 for name in runs}
        cycles = {name: [] for name in runs}
        segments0 = _device_segments(self.dev)
        last = len(runs) - 1
        if self.args.host_probe:
            probes += self._probe(0, n)
        e0, w0 = self.tel.energy_j(), time.perf_counter()
        for k, (c, pos, name, timeline) in enumerate(interleaved_steps(runs, reps)):
            e1, w1 = self.tel.energy_j(), time.perf_counter()
            energy_j[name] += e1 - e0
            wall_s[name] += w1 - w0
            mine[name].append(timeline)
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            cycles[name].append((c, pos, k, self.tel.sm_clock_mhz(), stamp))
            # the gates this step used hold its tokens only: every gate is zero before each step
            for chunk, s, layer, gate in gates[name]:
                for e, count in enumerate(gate.tokens_per_expert_E.tolist()):
                    key = (chunk, s, layer, e)
                    routed[name][key] = routed[name].get(key, 0.0) + count / reps
                gate.tokens_per_expert_E.zero_()
            # the probe runs here, between a cycle's last step and the next cycle's first, outside both:
            # every step still starts at its own barrier and synchronisation (PipelineRunner.step) after
            # the probe's own synchronisation, so no step's order, op or sync point changes; its energy
            # and wall time are outside every step's (e0, w0 are taken after it)
            if self.args.host_probe and pos == last and c + 1 < reps:
                probes += self._probe(c + 1, n)
            e0, w0 = self.tel.energy_j(), time.perf_counter()
        mem = self.tel.mem_clock_mhz()
        # the allocator's new device segments over the timed cycles (0: every step ran in memory the
        # warm-up had already reserved, as a configuration timed alone does)
        self.new_segments[n] = _device_segments(self.dev) - segments0
        log(f"{label}: {reps} cycles; new device segments during them: {self.new_segments[n]}")
        if self.args.host_probe:
            everyone = gather_all(probes)
            self.probe_rows[n] = [row for rows in everyone for row in rows]
        out = {}
        for name in runs:
            everyone = gather_all(mine[name])
            routed_by_rank = gather_all([(*key, t) for key, t in routed[name].items()])
            if dist.get_rank() != 0:
                continue
            steps = [on_shared_axis([everyone[r][k] for r in range(self.world)]) for k in range(reps)]
            power = energy_j[name] / wall_s[name] if wall_s[name] >= 0.5 else math.nan
            out[name] = (steps, routed_by_rank, (self.tel.sm_clock_mhz(), mem, power), cycles[name])
        del runs
        return out

    def _probe(self, cycle: int, n: int) -> list[dict]:
        """This rank's host-pace probe before cycle `cycle` (hostpace.host_probe), one row per measure
        without the environment's columns (rank 0 adds them)."""
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        sm, mem = self.tel.sm_clock_mhz(), self.tel.mem_clock_mhz()
        return [dict(num_microbatches=n, cycle=cycle, rank=dist.get_rank(), pp_rank=self.mesh.pp_rank, **row,
                     sm_clock_mhz=sm, mem_clock_mhz=mem, timestamp_utc=stamp) for row in host_probe(self.dev)]

    def probe_csv_rows(self, n: int, is_holdout: bool, env: dict) -> list[dict]:
        """Rank 0: pipeline_host_probe.csv's rows of count n, every rank's, in cycle and rank order."""
        fixed = dict(bench="pipeline_step" if self.mesh.pp > 1 else "ep_step", model=self.spec.name,
                     pp=self.mesh.pp, ep=self.mesh.ep, dp=self.mesh.dp, num_gpus=self.world,
                     split="holdout" if is_holdout else "fit", gpu_name=env["gpu_name"],
                     torch_version=env["torch_version"], cuda_version=env["cuda_version"],
                     nccl_version=env["nccl_version"])
        rows = sorted(self.probe_rows.get(n, []), key=lambda r: (r["cycle"], r["rank"], r["probe"]))
        return [{**fixed, **row} for row in rows]

    def _common(self, name: str, n: int) -> dict:
        a = self.args
        return dict(model=self.spec.name, schedule=name, pp=self.mesh.pp, ep=self.mesh.ep, num_microbatches=n,
                    micro_batch_seqs=a.mb_seqs, seq_len=a.seq_len, precision=self.precision.label)

    def write(self, out: Outputs, steps: list, routed_by_rank: list, name: str, n: int, is_holdout: bool,
              env: dict, clocks: tuple, trace_key: str | None) -> list[float]:
        """Rank 0: one configuration's rows (pipeline_step, pipeline_ops, pipeline_routing, the host marks)
        and, with `trace_key`, the Chrome trace of its median step. Returns its step times."""
        common = self._common(name, n)
        pp, dp, reps = self.mesh.pp, self.mesh.dp, len(steps)
        split = "holdout" if is_holdout else "fit"
        times = [max(o.end_s for t in step for o in t.ops) for step in steps]
        med, p10, p90 = _quantiles(times)
        loss = sum(t.loss for t in steps[-1])
        sm, mem, power = clocks
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        envcols = {k: env.get(k, "") for k in ENV_COLS}
        envcols.update(sm_clock_mhz=sm, mem_clock_mhz=mem, power_w=power, energy_j=power * med, timestamp_utc=stamp)
        out.steps.rows([dict(bench="pipeline_step" if pp > 1 else "ep_step", **common, dp=dp, num_gpus=self.world,
                             num_layers=self.spec.num_layers, time_s=med, time_p10_s=p10, time_p90_s=p90, reps=reps,
                             tokens_per_s=self.tokens(n) / med, loss=loss, split=split, **envcols,
                             nccl_version=env["nccl_version"])])
        out.ops.rows([dict(**common, rep=k, rank=t.rank, op_index=o.op_index, kind=o.kind,
                           microbatch=o.microbatch, chunk=o.chunk, start_s=o.start_s, end_s=o.end_s,
                           host_start_s=o.host_start_s, host_end_s=o.host_end_s, split=split,
                           gpu_name=env["gpu_name"], timestamp_utc=stamp)
                      for k, step in enumerate(steps) for t in step for o in t.ops])
        out.routing.rows([dict(**common, rank=r, chunk=chunk, stage=s, layer=layer, expert=e,
                               tokens_per_step=t, split=split, gpu_name=env["gpu_name"], timestamp_utc=stamp)
                          for r in range(self.world) for chunk, s, layer, e, t in routed_by_rank[r]])
        if out.marks is not None:
            out.marks.rows([dict(**common, rep=k, rank=t.rank, **m, split=split, gpu_name=env["gpu_name"],
                                 timestamp_utc=stamp)
                            for k, step in enumerate(steps) for t in step for m in mark_rows(t)])
        if trace_key is not None:
            k = sorted(range(reps), key=lambda i: times[i])[reps // 2]
            meta = dict(common, dp=dp, rep=k, step_time_s=times[k], num_layers=self.spec.num_layers,
                        gpu_name=env["gpu_name"])
            path = out.dir / f"pipeline_trace_{trace_key}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(chrome_trace(steps[k], meta), separators=(",", ":")))
            tmp.replace(path)
        return times

    def step_rows(self, steps: list, times: list[float], name: str, n: int, is_holdout: bool, env: dict,
                  mem_clock_mhz: float, cycles: list[tuple]) -> list[dict]:
        """Rank 0: pipeline_interleaved.csv's rows of one configuration, one per timed step."""
        layout = f"pp{self.mesh.pp}ep{self.mesh.ep}"
        return [dict(bench="pipeline_step" if self.mesh.pp > 1 else "ep_step", **self._common(name, n),
                     dp=self.mesh.dp, num_gpus=self.world, num_layers=self.spec.num_layers,
                     pair_key=f"{layout} n{n} c{c}", cycle=c, position=pos, step_index=k, time_s=t,
                     loss=sum(tl.loss for tl in step), split="holdout" if is_holdout else "fit",
                     gpu_name=env["gpu_name"], sm_clock_mhz=sm, mem_clock_mhz=mem_clock_mhz,
                     torch_version=env["torch_version"], cuda_version=env["cuda_version"], timestamp_utc=stamp,
                     nccl_version=env["nccl_version"])
                for step, t, (c, pos, k, sm, stamp) in zip(steps, times, cycles)]


def recorded_out(path: Path | str) -> str:
    """The --out folder as the environment record names it: a relative one as given; an absolute one (a campaign's
    temporary folder, /tmp/tmp.X/out/<lane>/<part>) as OUTDIR/<lane>/<part>, the campaign's OUTDIR argument in
    place of the machine's prefix, which no record keeps (s27walk: 57 committed env_pipeline JSONs named
    /tmp/tmp.* and /root/out folders until they were scrubbed the same way)."""
    p = Path(path)
    return p.as_posix() if not p.is_absolute() else "/".join(("OUTDIR", *p.parts[1:][-2:]))


def start_ranks(args):
    """This torchrun rank's device (GPU LOCAL_RANK, or the CPU with gloo under --tiny or without
    CUDA), its process group, telemetry and the environment record every row carries:
    (device, cuda, rank, world size, telemetry, env)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and not args.tiny
    dev = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    # the main thread's CPUs (real/serve/hostpin.py), before the process group, whose threads inherit them
    pinned = apply_pin(args.pin, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)), local_rank if cuda else None)
    # a rank that dies (out of memory) makes the others fail within a minute, not hang to the timeout
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=90))
    tel = Telemetry(local_rank)
    env = environment(dev, tel)
    env["nccl_version"] = nccl_version() if cuda else ""
    env["num_gpus"] = dist.get_world_size()
    env["config"] = vars(args) | {"out": recorded_out(args.out)}
    env["pinned_cpus_by_rank"] = gather_all(pinned if args.pin != "none" else [])
    return dev, cuda, dist.get_rank(), dist.get_world_size(), tel, env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="torchrun ... -m real.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: tiny model, seq 16, 2 sequences per micro-batch")
    ap.add_argument("--model", default="v2-lite-slice")
    ap.add_argument("--num-layers", type=int, default=0, help="override the catalog's layer count (0: keep)")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--mb-seqs", type=int, default=1, help="sequences per micro-batch")
    ap.add_argument("--layouts", default="pp2,ep2")
    ap.add_argument("--schedules", default="1f1b,zb1p,dualpipev,dualpipe")
    ap.add_argument("--microbatches", default="4,8,16", help="counts for pipeline layouts")
    ap.add_argument("--ep-microbatches", default="1,2,4", help="counts for pp=1 layouts")
    ap.add_argument("--layout-microbatches", default="",
                    help="per-layout counts that replace --microbatches / --ep-microbatches for that layout, "
                         "e.g. 'pp2ep2=4' or 'pp4=8/16,pp2ep2=4' (s21pp4: the deeper layout at more counts)")
    ap.add_argument("--holdout", default="8", help="micro-batch counts whose pipeline rows are split=holdout")
    ap.add_argument("--ep-holdout", default="2", help="the same for pp=1 layouts")
    ap.add_argument("--trace-microbatches", type=int, default=8, help="the count whose median step is traced")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp8"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-time-s", type=float, default=1.0, help="timed time per configuration")
    ap.add_argument("--reps-min", type=int, default=3)
    ap.add_argument("--reps-max", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=120.0, help="no configuration starts after this")
    ap.add_argument("--whole-reps", action="store_true",
                    help="skip a configuration whose --reps-min timed steps do not fit the budget left, "
                         "instead of timing fewer (s13pp: every pinned row with its 8 steps)")
    ap.add_argument("--append", action="store_true", help="add rows to existing CSVs in --out")
    ap.add_argument("--sgd-lr", type=float, default=None, help="add a plain SGD update to each step")
    ap.add_argument("--host-marks", default="off",
                    help=f"comma list of {','.join(HOST_MARK_MODES)}: each configuration timed once per mode "
                         "(marked modes into --out/marks_<mode>/ with ep_host_marks.csv)")
    ap.add_argument("--pin", default="none", choices=PIN_MODES,
                    help="CPU pinning of each rank's main thread (real/serve/hostpin.py; default: none)")
    ap.add_argument("--interleave", action="store_true",
                    help="s17alt: at each micro-batch count, step the schedules in turn (cycle c: one step of "
                         "each, in row c of a Williams design; warm-up and timed steps counted in cycles) instead of one "
                         "configuration after another; adds pipeline_interleaved.csv (one row per timed step)")
    ap.add_argument("--host-probe", action="store_true",
                    help="s18probe: every rank probes its host's pace before each timed cycle (--interleave) or "
                         "each timed step (s26eprate: configurations alone), outside the steps "
                         "(real/pipeline/hostpace.py); adds pipeline_host_probe.csv")
    ap.add_argument("--pace-sampler", action="store_true",
                    help="s26eprate round 2: configurations alone, a companion thread on every rank times a fixed "
                         "pure-Python loop every ~2 ms during each timed step (real/pipeline/hostpace.PaceSampler); "
                         "adds pipeline_host_pace.csv")
    args = ap.parse_args(argv)
    if args.pace_sampler and args.interleave:
        raise SystemExit("--pace-sampler: configurations alone only (not with --interleave)")
    if args.interleave and (args.sgd_lr is not None or args.host_marks != "off"):
        raise SystemExit("--interleave: steps must leave the weights as they are and run unmarked "
                         "(no --sgd-lr, --host-marks off)")
    if args.tiny:   # an explicit --num-layers stays (pp4 under DualPipeV needs 8 model stages)
        args.model, args.num_layers, args.seq_len, args.mb_seqs = "tiny", args.num_layers or 4, 16, 2
    t_start = time.perf_counter()
    layouts = [parse_layout(x) for x in args.layouts.split(",") if x]
    counts_by_layout = layout_counts(args.layout_microbatches)
    modes = [m for m in args.host_marks.split(",") if m]
    bad = [m for m in modes if m not in HOST_MARK_MODES]
    if bad or not modes or len(set(modes)) < len(modes):
        raise SystemExit(f"--host-marks: {args.host_marks!r}: distinct modes among {', '.join(HOST_MARK_MODES)}")

    dev, cuda, rank, world, tel, env = start_ranks(args)
    spec = get_spec(args.model)
    spec = dataclasses.replace(spec, num_mtp_modules=0,
                               num_layers=args.num_layers or spec.num_layers)
    precision = best_fp8(dev) if args.precision == "fp8" else BF16
    dtype = torch.bfloat16 if cuda else torch.float32
    S, B = args.seq_len, args.mb_seqs
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        env_path = args.out / f"env_pipeline_{args.layouts.replace(',', '_')}.json"
        env_path.write_text(json.dumps(env, indent=2, default=str))
        log(f"pipeline bench: world {world}, {spec.name} x{spec.num_layers} layers, seq {S}, "
            f"{B} seq/micro-batch, {precision.label}, layouts {args.layouts}")
        outputs = {mode: Outputs(args.out, mode, args.append, args.interleave, args.host_probe, args.pace_sampler)
                   for mode in modes}
    holdout, ep_holdout = set(_ints(args.holdout)), set(_ints(args.ep_holdout))
    failures = []
    traced: set = set()
    for pp, ep in layouts:
        if world % pp or (world // pp) % ep:
            log(f"skip layout pp{pp}ep{ep}: does not fit {world} ranks")
            continue
        schedules = args.schedules.split(",") if pp > 1 else ["1f1b"]
        counts = counts_by_layout.get((pp, ep)) or (_ints(args.microbatches) if pp > 1 else _ints(args.ep_microbatches))
        flows = set()  # the point-to-point flows these schedules use: one communicator each
        for name in schedules:
            for n in counts:
                with contextlib.suppress(ValueError):  # ScenarioError: a count this schedule can't run
                    flows |= set(flow_orders(build_schedule(name, pp, n))[0])
        mesh = build_mesh(pp, ep, pairs="dualpipe" in schedules and pp % 2 == 0, flows=flows)
        torch.manual_seed(0)  # replicated weights equal on every rank
        model = build_model(spec, dev, dtype, ep_group=mesh.ep_group, max_seq_len=S)
        bench = Bench(args, model, mesh, dev, spec, precision, tel, t_start)
        for n in (counts if args.interleave else []):
            label = f"pp{pp} ep{ep} dp{mesh.dp} n={n} interleaved {','.join(schedules)}"
            try:
                measured = bench.interleaved(schedules, n, label)
            except torch.OutOfMemoryError as e:
                failures.append(f"{label}: out of memory")
                log(f"{label}: out of memory: {str(e)[:200]}")
                raise
            release(model)
            if rank != 0 or measured is None:
                continue
            each_rows = []
            for name, (steps, routed_by_rank, clocks, cycles) in measured.items():
                trace = _trace_now(traced, "off", name, n, args.trace_microbatches, counts)
                times = bench.write(outputs["off"], steps, routed_by_rank, name, n, n in holdout, env, clocks,
                                    trace)
                each_rows += bench.step_rows(steps, times, name, n, n in holdout, env, clocks[1], cycles)
                log(f"{label}: {name} {statistics.median(times) * 1e3:.1f} ms over {len(times)} cycles")
            outputs["off"].each.rows(sorted(each_rows, key=lambda r: r["step_index"]))
            if args.host_probe:
                outputs["off"].probe.rows(bench.probe_csv_rows(n, n in holdout, env))
            env.setdefault("interleave_new_segments", {})[f"pp{pp}ep{ep} n{n}"] = bench.new_segments.get(n)
        for name in (schedules if not args.interleave else []):
            for n in counts:
                for mode in modes:
                    label = f"pp{pp} ep{ep} dp{mesh.dp} {name} n={n}" + (f" marks {mode}" if mode != "off" else "")
                    try:
                        measured = bench.alone(name, n, mode, label)
                    except torch.OutOfMemoryError as e:  # noted; the ranks are then likely out of step
                        failures.append(f"{label}: out of memory")
                        log(f"{label}: out of memory: {str(e)[:200]}")
                        raise
                    if measured is None:
                        continue
                    everyone, routed_by_rank, clocks = measured
                    release(model)
                    if rank != 0:
                        continue
                    reps = len(everyone[0])
                    steps = [on_shared_axis([everyone[r][k] for r in range(world)]) for k in range(reps)]
                    trace_key = name if pp > 1 else f"ep{ep}"
                    trace = _trace_now(traced, mode, trace_key, n, args.trace_microbatches, counts)
                    is_holdout = n in (holdout if pp > 1 else ep_holdout)
                    times = bench.write(outputs[mode], steps, routed_by_rank, name, n, is_holdout, env, clocks, trace)
                    if args.host_probe:
                        outputs[mode].probe.rows(bench.probe_csv_rows(n, is_holdout, env))
                    if args.pace_sampler:
                        outputs[mode].pace.rows(bench.pace_csv_rows(n, is_holdout, env))
                    med, p10, p90 = _quantiles(times)
                    loss = sum(t.loss for t in steps[-1])
                    log(f"{label}: {med * 1e3:.1f} ms (p10 {p10 * 1e3:.1f}, p90 {p90 * 1e3:.1f}, {reps} reps), "
                        f"{bench.tokens(n) / med:.0f} tok/s, loss {loss:.4f}")
        del model
        free_memory()
    if rank == 0:
        for out in outputs.values():
            out.close()
        env["failures"] = failures
        env["elapsed_s"] = time.perf_counter() - t_start
        env_path.write_text(json.dumps(env, indent=2, default=str))
        log(f"pipeline bench done in {env['elapsed_s']:.1f} s")
    dist.destroy_process_group()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

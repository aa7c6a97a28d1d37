"""Where a pipeline op's time goes, per rank: the host's issue marks and the kernels of every op.

    torchrun --standalone --nproc-per-node 2 -m real.pipeline.probe --out DIR [--tiny] ...

Issue 13 (s7pipe): the twin costs each op of a rank's program on its own (calibration.pipeline),
as if the host's lead over the GPU were that of the op repeated; the real host carries its lead
from op to op, starts the step level with the GPU (barrier, synchronize) and, with expert
parallelism, waits for the GPU in every dispatch (split sizes to the host). Two records say
which: for each configuration (`--configs`, layout:schedule:micro-batches),

  pipeline_host.csv        every op of every rank of `--reps` timed steps (after `--warmup`):
                           start_s / end_s on the compute stream (CUDA events, as
                           pipeline_ops.csv) and host_start_s / host_end_s, when the host began
                           and finished issuing it (perf_counter), on the same axis; the host is
                           ahead where host_end_s < end_s
  pipeline_op_kernels.csv  one further step under the torch profiler (configurations of at most
                           --profile-max-microbatches micro-batches): per op of every rank, each
                           kernel name's calls and GPU seconds (kernels are attributed to the op
                           during whose host interval they were launched, autograd's thread
                           included; op_index = program length for the gradient reduction,
                           -1 for launches outside any op)
  pipeline_kernel_events.csv  with --kernel-events (s12ep2), the same profiled step's every GPU
                           activity one row each: name, stream, start/end in us on the rank's
                           profiler axis, the host start of the CPU op that launched it and the
                           op it belongs to (as above); and each op's host range (event=op_host)
                           on that axis, so a forward's GPU tail past its host and the NCCL
                           kernels' waits can be told kernel by kernel

Rows carry split (fit | holdout, the rule of real/pipeline/bench.py: --holdout micro-batch
counts) and the environment; each configuration's rows are written when it ends, so a run cut
short keeps them. `--tiny` is the CPU dry run (gloo, the catalog's tiny model).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import datetime
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

from real.bench.device import free_memory
from real.bench.records import (ENV_COLS, PIPELINE_HOST_COLS, PIPELINE_KERNEL_EVENTS_COLS, PIPELINE_OP_KERNELS_COLS,
                                log)
from real.configs import get_spec
from real.fp8 import BF16
from real.model import build_model
from real.pipeline.bench import CsvFamily, _agree, gather_all, parse_layout, release, start_ranks
from real.pipeline.engine import PipelineRunner, build_mesh, flow_orders, on_shared_axis
from real.serve.hostpin import PIN_MODES
from twin.core.schedules import build_schedule

ANNOTATION = "pp_op/"
COMPUTE_KINDS = ("F", "B", "W", "BW", "FB", "allreduce")   # an op's own kind (not its sends / receives)
# EP first (its layout is one model build), DualPipeV at 16 last: a cut-short run loses the least
DEFAULT_CONFIGS = ("ep2:1f1b:1,ep2:1f1b:4,pp2:zb1p:4,pp2:dualpipev:4,pp2:dualpipe:4,pp2:1f1b:4,"
                   "pp2:dualpipev:16")


def parse_configs(text: str) -> list[tuple[int, int, str, int]]:
    """'pp2:zb1p:4,ep2:1f1b:1' -> [(pp, ep, schedule, micro-batches), ...]."""
    out = []
    for item in (x for x in text.split(",") if x):
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise SystemExit(f"--configs: {item!r} is not layout:schedule:microbatches (e.g. pp2:zb1p:4)")
        pp, ep = parse_layout(parts[0])
        out.append((pp, ep, parts[1] if pp > 1 else "1f1b", int(parts[2])))
    return out


class AnnotatedRunner(PipelineRunner):
    """A PipelineRunner whose ops, while `annotate` is set, run inside profiler ranges
    `pp_op/<op_index>` (the gradient reduction: the program's length)."""

    annotate = False

    def _run(self, i, op):
        ctx = torch.profiler.record_function(f"{ANNOTATION}{i}") if self.annotate else contextlib.nullcontext()
        with ctx:
            super()._run(i, op)

    def _reduce(self, n):
        ctx = torch.profiler.record_function(f"{ANNOTATION}{n}") if self.annotate else contextlib.nullcontext()
        with ctx:
            super()._reduce(n)


def _on_host(event) -> bool:
    """A CPU event (the profiler also mirrors record_function ranges on the GPU's timeline)."""
    return str(getattr(event, "device_type", "CPU")).rsplit(".", 1)[-1] == "CPU"


def kernels_by_op(events) -> dict[int, dict[str, list]]:
    """op_index -> kernel name -> [calls, GPU seconds], from the profiler's events: each kernel
    belongs to the op whose `pp_op/<i>` host range holds the start of the CPU op that launched it
    (any thread: autograd runs a backward's ops on its own thread while the caller waits); -1 for
    none."""
    ranges = sorted((e.time_range.start, e.time_range.end, int(e.name[len(ANNOTATION):]))
                    for e in events if e.name.startswith(ANNOTATION) and e.name[len(ANNOTATION):].isdigit()
                    and _on_host(e))
    starts = [r[0] for r in ranges]
    out: dict[int, dict[str, list]] = {}
    for e in events:
        kernels = getattr(e, "kernels", None)
        if not kernels or e.name.startswith(ANNOTATION):
            continue
        t = e.time_range.start
        k = bisect.bisect_right(starts, t) - 1
        op = ranges[k][2] if k >= 0 and t <= ranges[k][1] else -1
        for kern in kernels:
            slot = out.setdefault(op, {}).setdefault(kern.name, [0, 0.0])
            slot[0] += 1
            slot[1] += kern.duration * 1e-6
    return out


def _device_kind(event) -> str:
    return str(getattr(event, "device_type", "CPU")).rsplit(".", 1)[-1]


def kernel_events(events) -> list[dict]:
    """Every op's host range (event=op_host) and every GPU activity of a profiled step, one dict
    each: name, stream (the profiler's device_resource_id), start_us / end_us on the profiler's
    axis, launch_us (host start of the launching CPU op, the runtime call's correlation) and
    op_index, the op whose `pp_op/<i>` host range holds that launch (-1: none or unlinked)."""
    ranges = sorted((e.time_range.start, e.time_range.end, int(e.name[len(ANNOTATION):]))
                    for e in events if e.name.startswith(ANNOTATION) and e.name[len(ANNOTATION):].isdigit()
                    and _on_host(e))
    starts = [r[0] for r in ranges]
    out = [dict(op_index=i, event="op_host", name=f"{ANNOTATION}{i}", stream=-1, start_us=a, end_us=b, launch_us=a)
           for a, b, i in ranges]
    # CPU frontend ops by correlation id (a GPU activity's linked_correlation_id names its launcher)
    launchers = {e.id: e for e in events
                 if _on_host(e) and getattr(e, "linked_correlation_id", 0) == 0 and getattr(e, "id", None) is not None}
    for e in events:
        if _device_kind(e) not in ("CUDA", "HIP") or e.name.startswith(ANNOTATION):
            continue
        cpu = launchers.get(getattr(e, "linked_correlation_id", 0) or -1)
        launch = cpu.time_range.start if cpu is not None else float("nan")
        k = bisect.bisect_right(starts, launch) - 1 if cpu is not None else -1
        op = ranges[k][2] if k >= 0 and launch <= ranges[k][1] else -1
        activity = str(getattr(e, "activity_type", "") or "").lower()
        kind = "memcpy" if "memcpy" in activity or e.name.startswith("Memcpy") else \
            "memset" if "memset" in activity or e.name.startswith("Memset") else "kernel"
        out.append(dict(op_index=op, event=kind, name=e.name[:200], stream=getattr(e, "device_resource_id", -1),
                        start_us=e.time_range.start, end_us=e.time_range.end, launch_us=launch))
    return out


def linkable_events(prof, events) -> list:
    """The profiler's raw (kineto) events with the attributes kernel_events reads, on the same
    axis as prof.events(): a GPU activity's linked_correlation_id names its launching CPU op, which
    FunctionEvent keeps only in newer torch (on the GPU image's 2.11 every kernel came out unlinked:
    h100x4/s13pp_dp8_probe_20261127_0016). `events` where the raw results are not reachable."""
    try:
        results = prof.profiler.kineto_results
        t0_ns = results.trace_start_ns()
        raw = list(results.events())
    except Exception:   # noqa: BLE001 - a torch without them: FunctionEvents, links as they come
        return list(events)
    def optional(k, method: str, default):   # accessors that vary across torch releases
        get = getattr(k, method, None)
        return get() if get is not None else default

    return [SimpleNamespace(name=k.name(), device_type=k.device_type(), id=k.correlation_id(),
                            linked_correlation_id=k.linked_correlation_id(),
                            device_resource_id=optional(k, "device_resource_id", -1),
                            activity_type=optional(k, "activity_type", ""),
                            time_range=SimpleNamespace(start=(k.start_ns() - t0_ns) / 1e3,
                                                       end=(k.start_ns() + k.duration_ns() - t0_ns) / 1e3))
            for k in raw]


def _profiler_t0_ns(prof) -> int | str:
    """The zero of the profiler's axis on the host's clock (kineto's trace start), '' if hidden."""
    try:
        return int(prof.profiler.kineto_results.trace_start_ns())
    except Exception:   # noqa: BLE001 - a torch without it: the rows stay on their own axis
        return ""


def _profiled_step(runner: AnnotatedRunner, tokens, targets, cuda: bool, with_events: bool = False):
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    runner.annotate = True
    try:
        with torch.profiler.profile(activities=acts) as prof:
            timeline = runner.step(tokens, targets)
    finally:
        runner.annotate = False
    events = prof.events()
    detail = (kernel_events(linkable_events(prof, events)), _profiler_t0_ns(prof)) if with_events else ([], "")
    return timeline, kernels_by_op(events), detail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="torchrun ... -m real.pipeline.probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: tiny model, seq 16, 2 sequences per micro-batch")
    ap.add_argument("--model", default="v2-lite-slice")
    ap.add_argument("--num-layers", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--mb-seqs", type=int, default=1)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="layout:schedule:microbatches, comma separated")
    ap.add_argument("--holdout", default="8", help="pipeline micro-batch counts whose rows are split=holdout")
    ap.add_argument("--ep-holdout", default="2", help="the same for pp=1 layouts")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled step")
    ap.add_argument("--profile-max-microbatches", type=int, default=4,
                    help="profile only configurations with at most this many micro-batches (the "
                         "profiler's event parsing grows with the kernels of a step)")
    ap.add_argument("--kernel-events", action="store_true",
                    help="also write pipeline_kernel_events.csv: every GPU activity of the profiled step")
    ap.add_argument("--budget-s", type=float, default=100.0, help="no configuration starts after this")
    ap.add_argument("--pin", default="none", choices=PIN_MODES,
                    help="CPU pinning of each rank's main thread, as the bench's (real/serve/hostpin.py; default: none)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.model, args.num_layers, args.seq_len, args.mb_seqs = "tiny", 4, 16, 2
    t_start = time.perf_counter()
    configs = parse_configs(args.configs)

    dev, cuda, rank, world, tel, env = start_ranks(args)
    spec = get_spec(args.model)
    spec = dataclasses.replace(spec, num_mtp_modules=0, num_layers=args.num_layers or spec.num_layers)
    dtype = torch.bfloat16 if cuda else torch.float32
    S, B = args.seq_len, args.mb_seqs
    holdout = {int(x) for x in args.holdout.split(",") if x}
    ep_holdout = {int(x) for x in args.ep_holdout.split(",") if x}
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        env_path = args.out / "env_pipeline_probe.json"
        env_path.write_text(json.dumps(env, indent=2, default=str))
        log(f"pipeline probe: world {world}, {spec.name} x{spec.num_layers} layers, seq {S}, configs {args.configs}")
        host_csv = CsvFamily(args.out / "pipeline_host.csv", PIPELINE_HOST_COLS, append=True)
        kern_csv = CsvFamily(args.out / "pipeline_op_kernels.csv", PIPELINE_OP_KERNELS_COLS, append=True)
        if args.kernel_events:
            event_csv = CsvFamily(args.out / "pipeline_kernel_events.csv", PIPELINE_KERNEL_EVENTS_COLS, append=True)
    layouts = list(dict.fromkeys((pp, ep) for pp, ep, _, _ in configs))
    for pp, ep in layouts:
        if world % pp or (world // pp) % ep:
            log(f"skip layout pp{pp}ep{ep}: does not fit {world} ranks")
            continue
        mine = [(s, n) for p, e, s, n in configs if (p, e) == (pp, ep)]
        flows = set()
        for name, n in mine:
            with contextlib.suppress(ValueError):
                flows |= set(flow_orders(build_schedule(name, pp, n))[0])
        mesh = build_mesh(pp, ep, pairs=any(s == "dualpipe" for s, _ in mine) and pp % 2 == 0, flows=flows)
        torch.manual_seed(0)
        model = build_model(spec, dev, dtype, ep_group=mesh.ep_group, max_seq_len=S)
        for name, n in mine:
            label = f"pp{pp} ep{ep} dp{mesh.dp} {name} n={n}"
            if _agree(time.perf_counter() - t_start) > args.budget_s:
                log(f"skip {label}: budget spent")
                continue
            try:
                schedule = build_schedule(name, pp, n)
            except ValueError as e:
                log(f"skip {label}: {e}")
                continue
            runner = AnnotatedRunner(model, schedule, mesh, dev, (B, S, spec.hidden_size), BF16)
            gen = torch.Generator().manual_seed(1 + mesh.dp_rank)
            tokens = torch.randint(0, spec.vocab_size, (n, B, S), generator=gen).to(dev)
            targets = torch.roll(tokens, -1, -1)
            for _ in range(args.warmup):
                runner.step(tokens, targets)
            timed = [runner.step(tokens, targets) for _ in range(args.reps)]
            kernels: dict = {}
            detail: tuple = ([], "")
            if not args.no_profile and n <= args.profile_max_microbatches:
                _, kernels, detail = _profiled_step(runner, tokens, targets, cuda, args.kernel_events)
            everyone = gather_all((timed, kernels, mesh.rank, detail))
            del runner
            release(model)
            if rank != 0:
                continue
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            split = "holdout" if n in (holdout if pp > 1 else ep_holdout) else "fit"
            common = dict(model=spec.name, schedule=name, pp=pp, ep=ep, num_microbatches=n, micro_batch_seqs=B,
                          seq_len=S, precision=BF16.label, split=split)
            envcols = {k: env.get(k, "") for k in ENV_COLS}
            envcols.update(sm_clock_mhz=tel.sm_clock_mhz(), mem_clock_mhz=tel.mem_clock_mhz(), power_w="",
                           energy_j="", timestamp_utc=stamp, nccl_version=env["nccl_version"], num_gpus=world)
            rows = []
            for k in range(args.reps):
                for t in on_shared_axis([everyone[r][0][k] for r in range(world)]):
                    rows += [dict(**common, rep=k, rank=t.rank, op_index=o.op_index, kind=o.kind,
                                  microbatch=o.microbatch, chunk=o.chunk, start_s=o.start_s, end_s=o.end_s,
                                  host_start_s=o.host_start_s, host_end_s=o.host_end_s, **envcols)
                             for o in t.ops]
            host_csv.rows(rows)
            krows = []
            for timelines, by_op, grank, _ in everyone:
                kinds = {o.op_index: o for o in timelines[-1].ops if o.kind in COMPUTE_KINDS}
                for op_index, names in sorted(by_op.items()):
                    o = kinds.get(op_index)
                    for kname, (calls, secs) in sorted(names.items()):
                        krows.append(dict(**common, rank=grank, op_index=op_index, kind=o.kind if o else "",
                                          microbatch=o.microbatch if o else -1, chunk=o.chunk if o else -1,
                                          kernel=kname[:200], calls=calls, time_s=secs, **envcols))
            kern_csv.rows(krows)
            erows = []
            for timelines, _, grank, (events, t0_ns) in everyone:
                # an op index names a compute op and the sends / receives around it: the compute op's
                kinds = {o.op_index: o for o in timelines[-1].ops}
                kinds.update({o.op_index: o for o in timelines[-1].ops if o.kind in COMPUTE_KINDS})
                for ev in events:
                    o = kinds.get(ev["op_index"])
                    erows.append(dict(**common, rank=grank, kind=o.kind if o else "",
                                      microbatch=o.microbatch if o else -1, chunk=o.chunk if o else -1,
                                      profiler_t0_ns=t0_ns, **ev, **envcols))
            if args.kernel_events:
                event_csv.rows(erows)
            log(f"{label}: {len(rows)} op rows, {len(krows)} kernel rows, {len(erows)} kernel events")
        del model
        free_memory()
    if rank == 0:
        host_csv.close()
        kern_csv.close()
        if args.kernel_events:
            event_csv.close()
        env["elapsed_s"] = time.perf_counter() - t_start
        env_path.write_text(json.dumps(env, indent=2, default=str))
        log(f"pipeline probe done in {env['elapsed_s']:.1f} s")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

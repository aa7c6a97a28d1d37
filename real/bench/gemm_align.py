"""GEMMs whose dimensions are not multiples of 8 elements (s23align): the three GEMMs of a linear
layer (forward, input gradient, weight gradient) at aligned and misaligned widths, BF16, and the
forward in FP8 (torch._scaled_mm, tensor-wise and row-wise scales) where it accepts the shape.

cuBLAS / cutlass pick their kernel family by the 16-byte alignment of each operand's leading
dimension: a row of 5461 BF16 elements is only 2-byte aligned, so the "align1" / "align2" kernels
(older sm75/sm80 generations, narrow loads) run instead of the Hopper ones. This bench times each
case and names the kernels the profiler sees, so the twin can price the alignment class.

A linear layer y_TO = x_TI @ w_OI^T (T tokens, O outputs, I inputs) runs three GEMMs; each row
records the GEMM as m x n x k (output rows x output columns x contraction) and the leading
dimension (row length, elements) of its three row-major tensors:
  fwd    y_TO  = x_TI @ w_OI^T      m=T n=O k=I   lda=I ldb=I ldc=O
  dgrad  dx_TI = dy_TO @ w_OI       m=T n=I k=O   lda=O ldb=I ldc=I
  wgrad  dw_OI = dy_TO^T @ x_TI     m=O n=I k=T   lda=O ldb=I ldc=I
Layers (O, I) and token counts T are in LAYERS / TOKENS; the split (fit / heldout) is the one of
docs/notes/s23align_rule.md, stated before the run.

Timing: warm-up, then n calls captured in one CUDA graph (n such that a replay holds >= 5 ms,
at most 200 calls), replayed REPLAYS times with one event pair each (time = replay / n; eager
back-to-back calls between one event pair where capture fails). Outputs are preallocated (out=),
so every call runs the same kernel on the same buffers. Imports torch only (runs on the GPU image).

A layer row (pass "layer", set s24align3) times the three GEMMs of one linear layer back to back in
one call: its m, n, k and leading dimensions are the forward's, its FLOPs the three GEMMs'.

    python -m real.bench.gemm_align --out DIR [--budget-s 70] [--quick] [--set s23align|s23align2|s24align3]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

# (name, split, outputs O, inputs I). megatron-gpt-1.7b (hidden 2048, FFN 5461, fused gate/up
# 2 x FFN: real/model.py MLP.w13_2FD) and FFN widths around it of each alignment class; 7.1b
# (hidden 4096, FFN 10923) likewise; a 2049-wide square; GPT-2's vocabulary 50257 vs padded 50304.
LAYERS = [
    ("gpt1.7b_up_f5461", "fit", 10922, 2048), ("gpt1.7b_down_f5461", "fit", 2048, 5461),
    ("gpt1.7b_up_f5462", "fit", 10924, 2048), ("gpt1.7b_down_f5462", "fit", 2048, 5462),
    ("gpt1.7b_up_f5460", "fit", 10920, 2048), ("gpt1.7b_down_f5460", "fit", 2048, 5460),
    ("gpt1.7b_up_f5456", "fit", 10912, 2048), ("gpt1.7b_down_f5456", "fit", 2048, 5456),
    ("square_2048", "fit", 2048, 2048),
    ("square_out2049", "heldout", 2049, 2048), ("square_in2049", "heldout", 2048, 2049),
    ("gpt7.1b_up_f10923", "heldout", 21846, 4096), ("gpt7.1b_down_f10923", "heldout", 4096, 10923),
    ("gpt7.1b_up_f10922", "heldout", 21844, 4096), ("gpt7.1b_down_f10922", "heldout", 4096, 10922),
    ("gpt7.1b_up_f10924", "heldout", 21848, 4096), ("gpt7.1b_down_f10924", "heldout", 4096, 10924),
    ("gpt7.1b_up_f10920", "heldout", 21840, 4096), ("gpt7.1b_down_f10920", "heldout", 4096, 10920),
    ("vocab_50257", "heldout", 50257, 2048), ("vocab_50304", "heldout", 50304, 2048),
]
TOKENS = [3072, 8192, 768]          # 3072 first: megatron-gpt-1.7b prefill b4 x p768 (s23hrate)
PASSES = ["fwd", "dgrad", "wgrad"]
FP8_KINDS = ["fp8-tensor", "fp8-rowwise"]   # forward only
# s23align2 (docs/notes/s23align2_rule.md): fresh shapes never measured, every one held out, each
# misaligned layer beside its aligned neighbour (same role, nearest width that is a multiple of 8).
# A 32001 vocabulary head (hidden 4096) vs 32000; Qwen2's 151655-token head (hidden 1536) vs 151680;
# hidden 2560 with FFN 6827 (class 2 up, class 1 down) and 6828 (class 4 down) vs 6832; 3000 x 2049
# (input odd) and 2049 x 3000 (output odd) vs their 2048 neighbours; 2049 x 2049 (both odd) vs 2048;
# a TP-2 shard of FFN 13698 at hidden 5120 (6849 per rank) vs 6848. Tokens 3001: an odd M or K
# (never a row length: these GEMMs stay aligned).
LAYERS2 = [
    ("vocab_32001", "heldout", 32001, 4096), ("vocab_32000", "heldout", 32000, 4096),
    ("vocab_151655", "heldout", 151655, 1536), ("vocab_151680", "heldout", 151680, 1536),
    ("h2560_up_f6827", "heldout", 13654, 2560), ("h2560_down_f6827", "heldout", 2560, 6827),
    ("h2560_down_f6828", "heldout", 2560, 6828),
    ("h2560_up_f6832", "heldout", 13664, 2560), ("h2560_down_f6832", "heldout", 2560, 6832),
    ("rect_3000x2049", "heldout", 3000, 2049), ("rect_3000x2048", "heldout", 3000, 2048),
    ("rect_2049x3000", "heldout", 2049, 3000), ("rect_2048x3000", "heldout", 2048, 3000),
    ("square_2049", "heldout", 2049, 2049), ("square_2048", "heldout", 2048, 2048),
    ("tp2_up_f6849", "heldout", 13698, 5120), ("tp2_down_f6849", "heldout", 5120, 6849),
    ("tp2_up_f6848", "heldout", 13696, 5120), ("tp2_down_f6848", "heldout", 5120, 6848),
]
TOKENS2 = [3072, 3001, 768]
# s24align3 (docs/notes/s24align3_rule.md): fresh shapes again, every one held out, each misaligned
# layer beside its aligned neighbour. Vocabulary heads 50277 x 2560 (GPT-NeoX's unpadded tokenizer)
# vs 50280 and 64001 x 5120 vs 64000; hidden 3072 with FFN 8191 (up class 2, down class 1) and 8190
# (down class 2) vs 8192; hidden 1536 with FFN 4097 (up class 2, down class 1) vs 4096; a TP-2 shard
# 4097 of FFN 8194 at hidden 4096 vs 4096; a TP-4 shard 3586 of FFN 14344 at hidden 3584 (up 7172
# class 4, down class 2) vs 3584. Tokens 4096 and 1000 (never measured). Besides the three GEMMs
# alone, each layer's training triple (forward, input gradient, weight gradient back to back in one
# captured call, pass "layer"): the layer rows.
LAYERS3 = [
    ("vocab_50277", "heldout", 50277, 2560), ("vocab_50280", "heldout", 50280, 2560),
    ("vocab_64001", "heldout", 64001, 5120), ("vocab_64000", "heldout", 64000, 5120),
    ("h3072_up_f8191", "heldout", 16382, 3072), ("h3072_down_f8191", "heldout", 3072, 8191),
    ("h3072_down_f8190", "heldout", 3072, 8190),
    ("h3072_up_f8192", "heldout", 16384, 3072), ("h3072_down_f8192", "heldout", 3072, 8192),
    ("h1536_up_f4097", "heldout", 8194, 1536), ("h1536_down_f4097", "heldout", 1536, 4097),
    ("h1536_up_f4096", "heldout", 8192, 1536), ("h1536_down_f4096", "heldout", 1536, 4096),
    ("tp2_up_f4097", "heldout", 8194, 4096), ("tp2_down_f4097", "heldout", 4096, 4097),
    ("tp2_up_f4096", "heldout", 8192, 4096), ("tp2_down_f4096", "heldout", 4096, 4096),
    ("tp4_up_f3586", "heldout", 7172, 3584), ("tp4_down_f3586", "heldout", 3584, 3586),
    ("tp4_up_f3584", "heldout", 7168, 3584), ("tp4_down_f3584", "heldout", 3584, 3584),
]
TOKENS3 = [4096, 1000]
LAYER_PASS = "layer"   # the three GEMMs of a linear layer back to back (one training step of it)
# shape set -> (layers, tokens, FP8 forwards too, layer triples too); --set picks one, the campaign
# column names it
SETS = {"s23align": (LAYERS, TOKENS, True, False), "s23align2": (LAYERS2, TOKENS2, False, False),
        "s24align3": (LAYERS3, TOKENS3, False, True)}
QUICK_LAYERS = [("q_up_f21", "fit", 42, 16), ("q_down_f21", "fit", 16, 21), ("q_up_f24", "fit", 48, 16),
                ("q_vocab_33", "heldout", 33, 16)]
QUICK_TOKENS = [8]
REPLAY_WINDOW_S, MAX_GRAPH_CALLS, REPLAYS, WARMUP = 0.005, 200, 3, 2

COLUMNS = ["campaign", "timestamp_utc", "layer", "split", "pass", "precision", "tokens", "outputs", "inputs",
           "m", "n", "k", "lda", "ldb", "ldc", "align_a", "align_b", "align_c", "status", "time_s",
           "time_p10_s", "time_p90_s", "calls", "flops", "achieved_flops_per_s", "timing", "kernels",
           "kernel_align", "kernel_family", "error", "gpu_name", "sm_clock_mhz", "sm_clock_max_mhz",
           "mem_clock_mhz", "driver_version", "torch_version", "cuda_version", "hostname"]


def align_elements(ld: int) -> int:
    """Largest of 8, 4, 2, 1 elements dividing a leading dimension (8 BF16 elements = 16 bytes)."""
    return next(a for a in (8, 4, 2, 1) if ld % a == 0)


def gemm_dims(pass_: str, tokens: int, outputs: int, inputs: int) -> dict:
    """m, n, k and the three leading dimensions of one of a linear layer's GEMMs (module docstring);
    the layer triple (LAYER_PASS) records its forward's."""
    t, o, i = tokens, outputs, inputs
    pass_ = "fwd" if pass_ == LAYER_PASS else pass_
    dims = {"fwd": (t, o, i, i, i, o), "dgrad": (t, i, o, o, i, i), "wgrad": (o, i, t, o, i, i)}[pass_]
    return dict(zip(["m", "n", "k", "lda", "ldb", "ldc"], dims))


def kernel_align(names: list[str]) -> str:
    """The alignment the GEMM kernels' names state (cutlass 'align1/2/4/8'), '' where none does."""
    found = sorted({int(a) for n in names for a in re.findall(r"align(\d+)", n)})
    return ";".join(str(a) for a in found)


def kernel_family(names: list[str]) -> str:
    """A short family name per kernel: nvjet (Hopper cuBLAS), cutlass smXX, xmma/sm90 gemm, or the
    name's head."""
    out = []
    for n in names:
        low = n.lower()
        if "nvjet" in low:
            out.append("nvjet")
        elif "cutlass" in low or "sm80_" in low or "sm75_" in low or "sm90_" in low:
            sm = re.search(r"(?:sm|cutlass_)(\d\d)", low)
            out.append(f"cutlass_sm{sm.group(1)}" if sm else "cutlass")
        else:
            out.append(re.split(r"[<(]", n)[0][:40])
    return ";".join(out)


def operands(pass_: str, precision: str, tokens: int, outputs: int, inputs: int, dev) -> tuple:
    """(callable, flops) of one case; raises where the kernel refuses the shape."""
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(tokens, inputs, device=dev, dtype=torch.bfloat16, generator=g)
    w = torch.randn(outputs, inputs, device=dev, dtype=torch.bfloat16, generator=g)
    d = gemm_dims(pass_, tokens, outputs, inputs)
    flops = 2.0 * d["m"] * d["n"] * d["k"]
    if precision == "bf16" and pass_ == LAYER_PASS:   # forward, input and weight gradient: 3x the FLOPs
        y = torch.empty(tokens, outputs, device=dev, dtype=torch.bfloat16)
        dy = torch.randn(tokens, outputs, device=dev, dtype=torch.bfloat16, generator=g)
        dx = torch.empty(tokens, inputs, device=dev, dtype=torch.bfloat16)
        dw = torch.empty(outputs, inputs, device=dev, dtype=torch.bfloat16)

        def triple():
            torch.mm(x, w.t(), out=y)
            torch.mm(dy, w, out=dx)
            torch.mm(dy.t(), x, out=dw)
        return triple, 3.0 * flops
    if precision == "bf16":
        if pass_ == "fwd":
            y = torch.empty(tokens, outputs, device=dev, dtype=torch.bfloat16)
            return (lambda: torch.mm(x, w.t(), out=y)), flops
        dy = torch.randn(tokens, outputs, device=dev, dtype=torch.bfloat16, generator=g)
        if pass_ == "dgrad":
            dx = torch.empty(tokens, inputs, device=dev, dtype=torch.bfloat16)
            return (lambda: torch.mm(dy, w, out=dx)), flops
        dw = torch.empty(outputs, inputs, device=dev, dtype=torch.bfloat16)
        return (lambda: torch.mm(dy.t(), x, out=dw)), flops
    fp8 = torch.float8_e4m3fn
    if precision == "fp8-tensor":
        one = torch.ones((), device=dev, dtype=torch.float32)
        xq, wq, sa, sb = x.to(fp8), w.to(fp8), one, one
    else:   # row-wise scales: one per token row of x, one per output row of w
        xq, wq = x.to(fp8), w.to(fp8)
        sa = torch.ones(tokens, 1, device=dev, dtype=torch.float32)
        sb = torch.ones(1, outputs, device=dev, dtype=torch.float32)
    fn = lambda: torch._scaled_mm(xq, wq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)  # noqa: E731
    fn()   # refuses here (RuntimeError) where the shape is not accepted
    return fn, flops


def time_gpu(fn, dev) -> tuple[list[float], int, str]:
    """(per-call times of each replay, calls per replay, timing method) on a CUDA device."""
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize(dev)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    one_s = max(s.elapsed_time(e) * 1e-3, 1e-6)
    n = int(min(MAX_GRAPH_CALLS, max(1, math.ceil(REPLAY_WINDOW_S / one_s))))
    try:
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream(dev).wait_stream(stream)
        with torch.cuda.graph(graph):
            for _ in range(n):
                fn()
        run, timing = graph.replay, "cuda_graph"
        run()
    except Exception:   # not capturable: eager calls back to back
        torch.cuda.synchronize(dev)

        def run():
            for _ in range(n):
                fn()
        timing = "batched_events"
    torch.cuda.synchronize(dev)
    times = []
    for _ in range(REPLAYS):
        s.record()
        run()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e-3 / n)
    return times, n, timing


def time_cpu(fn) -> tuple[list[float], int, str]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPLAYS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times, 1, "host_clock"


def kernel_names(fn, dev) -> list[str]:
    """The GPU kernels one call launches, in order (the profiler's CUDA activity); [] on a CPU."""
    if dev.type != "cuda":
        return []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(dev)
    return [ev.name for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA]


class Nvml:
    """Clocks and driver through NVML where present; '' elsewhere."""

    def __init__(self, index: int):
        self.handle = None
        try:
            import pynvml   # lazy: nvidia-ml-py exists on the GPU image only
            pynvml.nvmlInit()
            self.nv, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            pass

    def clock(self, kind: str, max_: bool = False):
        if self.handle is None:
            return ""
        c = {"sm": self.nv.NVML_CLOCK_SM, "mem": self.nv.NVML_CLOCK_MEM}[kind]
        try:
            f = self.nv.nvmlDeviceGetMaxClockInfo if max_ else self.nv.nvmlDeviceGetClockInfo
            return f(self.handle, c)
        except Exception:
            return ""

    def driver(self) -> str:
        if self.handle is None:
            return ""
        try:
            v = self.nv.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        except Exception:
            return ""


def environment(dev, nvml: Nvml) -> dict:
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu-{platform.machine()}"
    return {"gpu_name": gpu, "sm_clock_max_mhz": nvml.clock("sm", max_=True), "driver_version": nvml.driver(),
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda or "",
            "hostname": platform.node(),
            **({"total_memory_bytes": torch.cuda.get_device_properties(dev).total_memory} if dev.type == "cuda" else {})}


def cases(quick: bool, shape_set: str = "s23align") -> list[tuple]:
    """(layer, split, outputs, inputs, tokens, pass, precision) in run order: token counts outermost
    (3072 first), BF16's three passes then (where the set has them) the FP8 forwards per layer."""
    layers, tokens, fp8, triples = SETS[shape_set]
    if quick:
        layers, tokens = QUICK_LAYERS, QUICK_TOKENS
    out = []
    for t in tokens:
        for name, split, o, i in layers:
            out += [(name, split, o, i, t, p, "bf16") for p in PASSES + ([LAYER_PASS] if triples else [])]
            out += [(name, split, o, i, t, "fwd", kind) for kind in (FP8_KINDS if fp8 else [])]
    return out


def run_case(case, dev, env, nvml, campaign: str = "s23align") -> dict:
    name, split, o, i, t, pass_, precision = case
    d = gemm_dims(pass_, t, o, i)
    row = {"campaign": campaign, "layer": name, "split": split, "pass": pass_, "precision": precision,
           "tokens": t, "outputs": o, "inputs": i, **d,
           **{f"align_{x}": align_elements(d[f"ld{x}"]) for x in "abc"}, **env, "error": ""}
    try:
        fn, flops = operands(pass_, precision, t, o, i, dev)
    except RuntimeError as e:
        return {**row, "status": "refused", "error": str(e).splitlines()[0][:160]}
    try:
        times, n, timing = time_gpu(fn, dev) if dev.type == "cuda" else time_cpu(fn)
        names = kernel_names(fn, dev)
    except RuntimeError as e:
        return {**row, "status": "error", "error": str(e).splitlines()[0][:160]}
    times = sorted(times)
    med = statistics.median(times)
    return {**row, "status": "ok", "time_s": med, "time_p10_s": times[0], "time_p90_s": times[-1],
            "calls": n * len(times), "flops": flops, "achieved_flops_per_s": flops / med, "timing": timing,
            "kernels": ";".join(names), "kernel_align": kernel_align(names), "kernel_family": kernel_family(names)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=70.0, help="no case starts after this")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a CPU dry run)")
    ap.add_argument("--set", default="s23align", choices=sorted(SETS), help="the shape set (campaign)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    nvml = Nvml(torch.cuda.current_device() if dev.type == "cuda" else 0)
    env = environment(dev, nvml)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    t0 = time.perf_counter()
    todo = cases(args.quick, args.set)
    done = 0
    with (out / "gemm_align.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for case in todo:
            if time.perf_counter() - t0 > args.budget_s:
                print(f"budget spent: {len(todo) - done} of {len(todo)} cases not run", flush=True)
                break
            row = run_case(case, dev, env, nvml, args.set)
            row.update(timestamp_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       sm_clock_mhz=nvml.clock("sm"), mem_clock_mhz=nvml.clock("mem"))
            writer.writerow(row)
            f.flush()   # a run cut by timeout keeps its rows
            done += 1
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    print(f"gemm_align: {done} cases in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

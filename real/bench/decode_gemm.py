"""Sections decode_gemm and decode_drift (issue 13, session s8dec): what real/'s eager decode step
spends on the GPU where the twin's op list is weakest.

decode_gemm (decode_gemm.csv): the five batched GEMMs (torch.einsum -> cuBLAS bmm) of real/model.py
MLA._attend_absorbed for one new token per sequence over L cached positions, on operands laid out
exactly as the model lays them out (q_nope a split view of the query projection, the cache a
[:B, :L] slice of a (B, max_len, C) buffer, the scores and probabilities contiguous with L as
their leading dimension), at the decode rows' batches and cache lengths (model.csv: B 1-256,
L = 1,024 + 1..32) and around them. L is the leading dimension of the scores and of the
probabilities: where L % 8 != 0 (7 of 8 decode steps) cuBLAS cannot use its 16-byte-aligned
Hopper kernels and falls back to Ampere-era CUTLASS `*_align1` / `*_align2` kernels, which the
2026-11-26 step_kernels.csv records found taking 1.6 of the 5.0 ms of the V3 slice's kernels at
batch 256 (H200). Each GEMM is timed alone in a CUDA graph (Timer.measure_batched, `cuda_graph`,
GPU time per call), and its kernels named by the torch profiler (one eager call; `kernels`
per call, the longest one's name in `kernel`, all of them in `kernel_names`, `split_k` where
cuBLAS split the reduction: a `splitK` main kernel or a separate `splitKreduce` kernel).

  op             einsum (real/model.py)   batched GEMM: batch x (m, n, k)
  q_abs          bshp,hpc->bshc           H x (B, C, P)   q_nope . W_k per head
  scores_latent  bshc,blc->bshl           B x (H, L, C)   q_abs . c over the cache
  scores_rope    bshr,blr->bshl           B x (H, L, R)   q_pe . k_pe over the cache
  p_c            bshl,blc->bshc           B x (H, C, L)   p . c over the cache
  o_v            bshc,hoc->bsho           H x (B, O, C)   . W_v per head

and `op` linear: the decode step's dense projections (F.linear, m = B rows: the MLA's, the dense
FFN's, the shared experts', the gate's and the head's weights, `weight` naming which) at the same
batches, below the 128 rows where gemm.csv's curves start, with their kernels (cuBLAS splits K at
small m and adds a `splitKreduce` kernel: the ~9 kernels a V3 step launches beyond its op list).

and `bench` decode_elementwise: the attention's elementwise kernels between the einsums, over the
B x H x L scores (V3 slice only): `add` (the two BF16 score einsums), `float` (the cast to FP32: a
casting copy), `masked_fill` (the FP32 scores, a broadcast (1, 1, 1, L) mask), `scale` (* the
softmax scale), `softmax`, `to_bf16`; `bytes` = each input read and the output written once.

`align_elems`: the largest of 8, 4, 2, 1 dividing every leading dimension the GEMM sees (L for
the three cache GEMMs, else 8). `split` fit|holdout by calibration/split.py's rule (batches
HOLDOUT_BATCHES and cache lengths HOLDOUT_CACHE_LENS are held out, whole families).

decode_drift (decode_drift.csv): real/'s whole decode step (v3-slice-2l, as model.csv's decode
rows time it: a 1,024-token prefill, then eager steps with CUDA events around each), one row per
step, each with the NVML SM and memory clocks, board power, temperature, performance state and
clock-event reasons read right after it, the host seconds of its dispatch, and the host CPU's
clock: why the H100's batch-1 V3 step measured 3.6, 4.8 and 6.0 ms in three rounds. Rounds under
three GPU conditions, interleaved: `back_to_back` (right after the previous round), `after_idle`
(IDLE_S of sleep first: clocks and power drop), `after_burst` (a second of large GEMMs first: the
board at its power limit).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from real.bench.device import free_memory
from real.bench.records import log
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import build_model
from real.sync import synchronize

# model.csv's decode rows: batches per model, prompt 1,024, 32 generated (L = 1,025..1,056)
MODEL_BATCHES = {"v3-slice-2l": [1, 8, 32, 64, 128, 256], "v2-lite-slice": [1, 8, 32, 128, 256]}
# held out (calibration/split.py HELD_OUT_DECODE_*; tests/real/test_bench_decode_gemm.py keeps them equal)
HOLDOUT_BATCHES = {16, 192}          # between the fitted batches (v3-slice-2l only)
# the decode rows' lengths by alignment (1025 odd, 1026 2-aligned, 1028 4-aligned, 1032 8-aligned),
# shorter and longer caches; 1041 (odd) and 4097 held out
FIT_CACHE_LENS = [1025, 1026, 1028, 1032, 513, 2049, 2056]
HOLDOUT_CACHE_LENS = {1041, 4097}
CACHE_LENS = FIT_CACHE_LENS + sorted(HOLDOUT_CACHE_LENS)
MAX_CACHE_ELEMS = 2 ** 31 // 2       # a cache buffer of at most 2 GiB (BF16)
OPS = ("q_abs", "scores_latent", "scores_rope", "p_c", "o_v")
CACHE_OPS = ("scores_latent", "scores_rope", "p_c")   # the ones over the cache (L-dependent)
# the elementwise kernels, (models, batches, cache lengths): where the scores are large enough to
# matter (V3's 128 heads, B >= 32)
ELEMENTWISE_CASES = ({"v3-slice-2l"}, {32, 64, 128, 192, 256}, {1025, 1032, 2049, 1041})
QUICK_ELEMENTWISE_CASES = ({"tiny"}, {3}, {16})
QUICK_CASES = {"tiny": [1, 3]}
QUICK_CACHE_LENS = [9, 16]
BF16 = 2


def align_elems(*dims: int) -> int:
    """Largest of 8, 4, 2, 1 elements dividing every dimension (16 / 8 / 4 / 2 bytes in BF16).
    E.g. (1025,) -> 1; (1026,) -> 2; (1028,) -> 4; (1032, 512) -> 8."""
    for a in (8, 4, 2):
        if all(d % a == 0 for d in dims):
            return a
    return 1


def gemm_shape(op: str, B: int, L: int, H: int, P: int, R: int, C: int, O: int) -> tuple[int, int, int, int]:
    """(batch count, m, n, k) of one of the absorbed attention's batched GEMMs (see the table above)."""
    return {"q_abs": (H, B, C, P), "scores_latent": (B, H, L, C), "scores_rope": (B, H, L, R),
            "p_c": (B, H, C, L), "o_v": (H, B, O, C)}[op]


def gemm_bytes(op: str, B: int, L: int, H: int, P: int, R: int, C: int, O: int) -> float:
    """BF16 bytes each operand and the output are read or written once."""
    b, m, n, k = gemm_shape(op, B, L, H, P, R, C, O)
    return BF16 * b * (m * k + k * n + m * n)


def is_holdout(batch: int, cache_len: int | None) -> bool:
    return batch in HOLDOUT_BATCHES or cache_len in HOLDOUT_CACHE_LENS


def linear_shapes(spec) -> list[tuple[str, int, int]]:
    """(weight, n, k) of the dense F.linear calls of one real/model.py decode step (each once)."""
    D, H, P, R = spec.hidden_size, spec.num_heads, spec.qk_nope_head_dim, spec.qk_rope_head_dim
    C, O, Q = spec.kv_lora_rank, spec.v_head_dim, spec.q_lora_rank
    shapes = [("wq_a", Q, D), ("wq_b", H * (P + R), Q)] if Q else [("wq", H * (P + R), D)]
    shapes += [("wkv_a", C + R, D), ("wo", D, H * O)]
    if spec.num_dense_layers:
        shapes += [("w13", 2 * spec.intermediate_size, D), ("w2", D, spec.intermediate_size)]
    if spec.num_routed_experts:
        shapes += [("gate", spec.num_routed_experts, D)]
        if spec.num_shared_experts:
            F_ = spec.moe_intermediate_size * spec.num_shared_experts
            shapes += [("shared_w13", 2 * F_, D), ("shared_w2", D, F_)]
    return shapes + [("head", spec.vocab_size, D)]


class AbsorbedOperands:
    """The absorbed attention's operands for B sequences over L cached positions, laid out as
    real/model.py lays them out (random values), and each einsum as a callable."""

    def __init__(self, spec, B: int, L: int, dev):
        H, P, R = spec.num_heads, spec.qk_nope_head_dim, spec.qk_rope_head_dim
        C, O = spec.kv_lora_rank, spec.v_head_dim
        kw = {"device": dev, "dtype": torch.bfloat16}
        q_B1X = torch.randn(B, 1, H * (P + R), **kw)              # the query projection's output
        self.q_nope_BSHP, self.q_pe_BSHR = q_B1X.view(B, 1, H, P + R).split([P, R], dim=-1)
        cache_c = torch.randn(B, L + 8, C, **kw)                  # a cache longer than L, sliced
        cache_kpe = torch.randn(B, L + 8, R, **kw)
        self.c_BLC, self.kpe_BLR = cache_c[:B, :L], cache_kpe[:B, :L]
        self.wkv_b_WC = torch.randn(H * (P + O), C, **kw)          # MLA.wkv_b_WC
        self.wk_HPC, self.wv_HOC = self.wkv_b_WC.view(H, P + O, C).split([P, O], dim=1)
        self.q_abs_BSHC = torch.einsum("bshp,hpc->bshc", self.q_nope_BSHP, self.wk_HPC)
        self.p_BSHL = torch.softmax(torch.randn(B, 1, H, L, device=dev, dtype=torch.float32), -1).to(torch.bfloat16)
        self.o_BSHC = torch.einsum("bshl,blc->bshc", self.p_BSHL, self.c_BLC)

    def call(self, op: str):
        return {"q_abs": lambda: torch.einsum("bshp,hpc->bshc", self.q_nope_BSHP, self.wk_HPC),
                "scores_latent": lambda: torch.einsum("bshc,blc->bshl", self.q_abs_BSHC, self.c_BLC),
                "scores_rope": lambda: torch.einsum("bshr,blr->bshl", self.q_pe_BSHR, self.kpe_BLR),
                "p_c": lambda: torch.einsum("bshl,blc->bshc", self.p_BSHL, self.c_BLC),
                "o_v": lambda: torch.einsum("bshc,hoc->bsho", self.o_BSHC, self.wv_HOC)}[op]

    def elementwise_calls(self, softmax_scale: float = 0.07) -> dict:
        """op -> (callable, bytes moved) of the kernels between the einsums (see attend), on score
        tensors of the einsums' own layout."""
        L = self.c_BLC.shape[1]
        lat, rope = self.call("scores_latent")(), self.call("scores_rope")()
        s32 = (lat + rope).float()
        future = torch.arange(L, device=s32.device)[None, :] > torch.arange(L - 1, L, device=s32.device)[:, None]
        mask = future[None, :, None, :]
        n = s32.numel()
        return {"add": (lambda: lat + rope, 3 * n * BF16), "float": (lambda: (lat).float(), n * (BF16 + 4)),
                "masked_fill": (lambda: s32.masked_fill(mask, float("-inf")), 2 * n * 4),
                "scale": (lambda: s32 * softmax_scale, 2 * n * 4),
                "softmax": (lambda: torch.softmax(s32, dim=-1), 2 * n * 4),
                "to_bf16": (lambda: s32.to(torch.bfloat16), n * (4 + BF16))}

    def attend(self, softmax_scale: float, start_pos: int):
        """The whole of MLA._attend_absorbed from these einsums (a test checks it is the model's)."""
        L = self.c_BLC.shape[1]
        scores = (self.call("scores_latent")() + self.call("scores_rope")()).float()
        future = torch.arange(L, device=scores.device)[None, :] > torch.arange(start_pos, start_pos + 1,
                                                                                device=scores.device)[:, None]
        scores = scores.masked_fill(future[None, :, None, :], float("-inf"))
        self.p_BSHL = torch.softmax(scores * softmax_scale, dim=-1).to(self.c_BLC.dtype)
        self.o_BSHC = self.call("p_c")()
        return self.call("o_v")()


def short_kernel_name(name: str, width: int = 90) -> str:
    return name if len(name) <= width else name[:width // 2 - 2] + "..." + name[-(width // 2 - 1):]


def kernels_by_range(ranges: list[tuple[str, float, float]], kernels: list[tuple[str, float, float]]) -> dict:
    """Assign each kernel (name, start_us, dur_us) to the labelled host range (label, start_us,
    end_us) holding its midpoint: each call's range ends with a device synchronisation, so its
    kernels run inside it. -> label -> [(name, dur_us)] in start order.
    E.g. ranges a [0, 10], b [10, 20]; kernels k1 at 2 for 3 us, k2 at 12 for 1 us -> {a: [k1], b: [k2]}."""
    out = {label: [] for label, _, _ in ranges}
    for name, start, dur in sorted(kernels, key=lambda k: k[1]):
        mid = start + dur / 2
        for label, r0, r1 in ranges:
            if r0 <= mid <= r1:
                out[label].append((name, dur))
                break
    return out


def profile_kernels(calls: dict, dev) -> dict:
    """label -> [(kernel name, GPU us)] of one eager call of each callable, in one profiler session
    (record_function ranges closed by a synchronisation). Empty lists on the CPU."""
    if dev.type != "cuda":
        return {label: [] for label in calls}
    torch.cuda.synchronize(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for label, fn in calls.items():
            with torch.profiler.record_function(f"s8dec::{label}"):
                fn()
                torch.cuda.synchronize(dev)
    ranges, kernels = [], []
    for e in prof.events():
        if e.device_type.name == "CUDA":
            if not e.name.startswith("s8dec::"):
                kernels.append((e.name, e.time_range.start, e.time_range.end - e.time_range.start))
        elif e.name.startswith("s8dec::"):
            ranges.append((e.name[len("s8dec::"):], e.time_range.start, e.time_range.end))
    return kernels_by_range(ranges, kernels)


GEMM_KERNEL = ("gemm", "nvjet", "cutlass", "splitk", "cublas")   # lower-case name parts of GEMM kernels


def is_gemm_kernel(name: str) -> bool:
    """A cuBLAS / CUTLASS GEMM kernel or cuBLAS's split-K reduction (not a copy or elementwise
    kernel the einsum launches to lay out an operand)."""
    low = name.lower()
    return any(part in low for part in GEMM_KERNEL) and "elementwise" not in low and not low.startswith("memcpy")


def kernel_columns(kernels: list[tuple[str, float]]) -> dict:
    """The profiler's kernels of one call as row columns: all of them (`kernels`, `kernel_s`,
    `kernel_names`), the GEMM kernels among them (`gemm_kernels`, `gemm_kernel_s`: what a GEMM
    cost model is fitted to; the rest are operand copies), the longest one (`kernel`), and
    whether cuBLAS split the reduction (`split_k`)."""
    if not kernels:
        return {"kernels": "", "kernel": "", "kernel_names": "", "kernel_s": "", "gemm_kernels": "",
                "gemm_kernel_s": "", "split_k": ""}
    main = max(kernels, key=lambda k: k[1])[0]
    gemm = [(n, d) for n, d in kernels if is_gemm_kernel(n)]
    return {"kernels": len(kernels), "kernel": short_kernel_name(main, 160),
            "kernel_names": " | ".join(short_kernel_name(n) for n, _ in kernels),
            "kernel_s": sum(d for _, d in kernels) * 1e-6,
            "gemm_kernels": len(gemm), "gemm_kernel_s": sum(d for _, d in gemm) * 1e-6,
            "split_k": any("splitk" in n.lower() for n, _ in kernels)}


def bench_decode_gemm(rec, timer, dev, deadline, quick, env):
    """decode_gemm.csv: each absorbed-attention GEMM at each (model, batch, cache length)."""
    cases = QUICK_CASES if quick else {"v3-slice-2l": sorted(MODEL_BATCHES["v3-slice-2l"] + list(HOLDOUT_BATCHES)),
                                       "v2-lite-slice": MODEL_BATCHES["v2-lite-slice"]}
    lens = QUICK_CACHE_LENS if quick else CACHE_LENS
    ew_models, ew_batches, ew_lens = QUICK_ELEMENTWISE_CASES if quick else ELEMENTWISE_CASES
    torch.manual_seed(0)
    # the decode rows' own batches of V3 first (largest first: the GPU-bound steps), then the rest
    order = [(m, b) for m in cases for b in sorted(cases[m], reverse=True)]
    for name, B in order:
        spec = get_spec(name)
        H, P, R = spec.num_heads, spec.qk_nope_head_dim, spec.qk_rope_head_dim
        C, O = spec.kv_lora_rank, spec.v_head_dim
        for i, L in enumerate(lens):
            if deadline.over():
                log("decode_gemm: time share spent, skipping the rest")
                return
            if B * (L + 8) * C > MAX_CACHE_ELEMS:
                continue
            ops = OPS if i == 0 else CACHE_OPS            # q_abs and o_v do not depend on L
            x = AbsorbedOperands(spec, B, L, dev)
            calls = {op: x.call(op) for op in ops}
            for fn in calls.values():                     # cuBLAS heuristics and workspaces first
                fn()
            named = profile_kernels(calls, dev)
            for op, fn in calls.items():
                nb, m, n, k = gemm_shape(op, B, L, H, P, R, C, O)
                r = timer.measure(fn, flops=2.0 * nb * m * n * k, bytes_=gemm_bytes(op, B, L, H, P, R, C, O),
                                  batched=not quick)
                rec.row("decode_gemm", bench="decode_bmm", op=op, weight="", model=name, batch=B,
                        cache_len=L if op in CACHE_OPS else "", num_heads=H, batch_count=nb, m=m, n=n, k=k,
                        align_elems=align_elems(L) if op in CACHE_OPS else 8,
                        split="holdout" if is_holdout(B, L) else "fit", **kernel_columns(named[op]), **r)
            if name in ew_models and B in ew_batches and L in ew_lens:
                bench_decode_elementwise(rec, timer, dev, x, spec, name, B, L, quick)
            log(f"decode_gemm {name} B={B} L={L}: " + ", ".join(
                f"{op} {(named[op][0][0][:28] if named[op] else '-')}" for op in ops))
            del x, calls
        if not deadline.over():
            bench_decode_linears(rec, timer, dev, spec, name, B, quick)
        free_memory()


def bench_decode_elementwise(rec, timer, dev, x: AbsorbedOperands, spec, name: str, B: int, L: int,
                             quick: bool = False) -> None:
    """decode_gemm.csv bench decode_elementwise: the attention's elementwise kernels at (B, L)."""
    calls = x.elementwise_calls()
    named = profile_kernels({op: fn for op, (fn, _) in calls.items()}, dev)
    for op, (fn, bytes_) in calls.items():
        r = timer.measure(fn, bytes_=bytes_, batched=not quick)
        rec.row("decode_gemm", bench="decode_elementwise", op=op, weight="", model=name, batch=B, cache_len=L,
                num_heads=spec.num_heads, batch_count="", m="", n="", k="", align_elems=align_elems(L),
                split="holdout" if is_holdout(B, L) else "fit", **kernel_columns(named[op]), **r)


def bench_decode_linears(rec, timer, dev, spec, name: str, B: int, quick: bool = False) -> None:
    """decode_gemm.csv op linear: each dense projection of a decode step at m = B rows."""
    D = spec.hidden_size
    x_BD = torch.randn(B, D, device=dev, dtype=torch.bfloat16)
    weights = {w: torch.randn(n, k, device=dev, dtype=torch.bfloat16) for w, n, k in linear_shapes(spec)}
    inputs = {w: (x_BD if k == D else torch.randn(B, k, device=dev, dtype=torch.bfloat16))
              for w, (n, k) in ((w, t.shape) for w, t in weights.items())}
    calls = {w: (lambda w=w: torch.nn.functional.linear(inputs[w], weights[w])) for w in weights}
    for fn in calls.values():
        fn()
    named = profile_kernels(calls, dev)
    for w, fn in calls.items():
        n, k = weights[w].shape
        r = timer.measure(fn, flops=2.0 * B * n * k, bytes_=BF16 * (B * k + n * k + B * n), batched=not quick)
        rec.row("decode_gemm", bench="decode_linear", op="linear", weight=w, model=name, batch=B, cache_len="",
                num_heads=spec.num_heads, batch_count=1, m=B, n=n, k=k, align_elems=align_elems(k, n),
                split="holdout" if is_holdout(B, None) else "fit", **kernel_columns(named[w]), **r)
    log(f"decode_gemm {name} B={B} linears: " + ", ".join(f"{w} {len(named[w])}k" for w in calls))


# ---------------------------------------------------------------------------------------------
# decode_drift

DRIFT_MODEL = "v3-slice-2l"
DRIFT_BATCHES = [1, 256]             # the drifting host-bound step and the GPU-bound one
QUICK_DRIFT = ("tiny", [1])
PROMPT_LEN, GEN_LEN = 1024, 32       # real/bench/whole_model.py bench_serve's
CONDITIONS = ("back_to_back", "after_idle", "after_burst")
IDLE_S = 2.0
BURST_S = 1.0


def cpu_clock_mhz() -> float:
    """Mean current clock of the host's CPUs (/proc/cpuinfo 'cpu MHz'), NaN where unreadable."""
    try:
        with open("/proc/cpuinfo") as fh:
            mhz = [float(line.split(":")[1]) for line in fh if line.startswith("cpu MHz")]
        return statistics.fmean(mhz) if mhz else float("nan")
    except OSError:
        return float("nan")


def _burst(dev, seconds: float) -> None:
    """Large BF16 GEMMs back to back for `seconds`: the board at its power limit."""
    if dev.type != "cuda":
        return
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize(dev)
    del a


def bench_decode_drift(rec, timer, dev, deadline, quick, env):
    """decode_drift.csv: rounds of timed decode steps under each condition, one row per step."""
    name, batches = QUICK_DRIFT if quick else (DRIFT_MODEL, DRIFT_BATCHES)
    P, G = (16, 6) if quick else (PROMPT_LEN, GEN_LEN)
    idle_s, burst_s = (0.01, 0.01) if quick else (IDLE_S, BURST_S)
    spec = get_spec(name)
    model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G)
    model.eval()
    tel = timer.tel
    prompts = {B: torch.randint(0, spec.vocab_size, (B, P), device=dev) for B in batches}
    rounds = 0
    while not deadline.over() and (not quick or rounds < len(CONDITIONS)):
        condition = CONDITIONS[rounds % len(CONDITIONS)]
        for B in batches:
            if deadline.over():
                break
            caches = model.new_caches(B, P + G)
            token = prefill(model, prompts[B], caches, max_batch=16)
            synchronize(dev)
            if condition == "after_idle":
                time.sleep(idle_s)
            elif condition == "after_burst":
                _burst(dev, burst_s)
            cpu_mhz, load1 = cpu_clock_mhz(), os.getloadavg()[0]
            # as model.csv's decode rows time (real/bench/timing.py Timer): CUDA events around each
            # step, no synchronisation between steps (the host may run ahead); NVML read after each
            steps = []
            for step, pos in enumerate(range(P, P + G - 1)):
                ev = ((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      if dev.type == "cuda" else None)
                if ev:
                    ev[0].record()
                h0, c0 = time.perf_counter(), time.thread_time()
                token = decode_step(model, token, caches, pos)
                host_s, host_cpu_s = time.perf_counter() - h0, time.thread_time() - c0
                if ev:
                    ev[1].record()
                steps.append({"step": step, "cache_len": pos + 1, "host_s": host_s, "host_cpu_s": host_cpu_s, "ev": ev,
                              "power_now_w": tel.power_w(), "temperature_c": tel.temperature_c(),
                              "pstate": tel.performance_state(), "clock_event_reasons": tel.clock_event_reasons(),
                              "sm_clock_mhz": tel.sm_clock_mhz(), "mem_clock_mhz": tel.mem_clock_mhz()})
            synchronize(dev)
            times = []
            for s in steps:
                ev = s.pop("ev")
                t = ev[0].elapsed_time(ev[1]) * 1e-3 if ev else s["host_s"]
                times.append(t)
                rec.row("decode_drift", bench="decode_step", model=name, batch=B, prompt_len=P, gen_len=G,
                        round=rounds, condition=condition, cpu_clock_mhz=cpu_mhz, load_avg_1m=load1,
                        split="holdout", time_s=t, reps=1,
                        timing="per_rep_events" if ev else "host_clock", **s)
            # the steps model.csv's decode rows time: 3 warm-ups, then the median of 28
            timed = sorted(times[3:3 + G - 4]) or times
            log(f"decode_drift round {rounds} {condition} B={B}: median {statistics.median(timed) * 1e3:.3f} ms, "
                f"SM {tel.sm_clock_mhz():.0f} MHz, {tel.power_w():.0f} W, CPU {cpu_mhz:.0f} MHz")
            del caches
        rounds += 1
    del model
    free_memory()

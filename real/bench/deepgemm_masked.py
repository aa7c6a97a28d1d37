"""DeepGEMM's masked grouped FP8 GEMM beside torch's grouped GEMMs at DeepSeek's decode shapes (s22dg).

Why: DeepSeek's serving decodes the routed experts with DeepGEMM's `m_grouped_gemm_fp8_fp8_bf16_nt_masked`
(groups = the GPU's local experts, each with up to m_max rows of which masked_m[g] are real; the kernel
config is chosen from `expected_m`, a host hint). The twin costs them with torch._grouped_mm's measured
row tile (docs/notes/s21dec.md §2); this bench measures the masked kernel, and torch's kernels at the
same groups and rows in one harness on one card.

DeepGEMM is third-party code and never in our tree: `--deepgemm DIR` names a directory holding its
`deep_gemm` package (the campaign's carried copy, see real/campaigns/s22dg.sh); without it (or where it
does not import or build) the DeepGEMM rows are skipped, logged, and the torch rows still run.

Rows (OUTDIR/deepgemm_masked.csv, one per kernel x shape x groups x rows x timing, written as they go):
  kernel     deepgemm_masked | torch_grouped_mm_bf16 | torch_scaled_grouped_mm_fp8 (row-wise scales)
  shape      gate_up (N 2x2048, K 7168) | down (N 7168, K 2048): DeepSeek-V3's routed expert
  layout     equal (every group expected_rows rows) | scatter (rows drawn Binomial around expected_rows,
             fixed seed; masked_rows_json holds them; expected_m = expected_rows)
  timing     graph (calls back to back in one CUDA graph, median over replays: warm L2, as the twin's
             torch grouped-GEMM records) | l2_flush (a 256 MiB write before each call, CUDA events
             around the call alone, median over reps: weights from HBM as in a decode step)
  block_m, block_n, num_stages: DeepGEMM's own choice (get_best_configs at the card's SM count)
Every row: GPU name, clocks, torch/CUDA/nvcc versions, DeepGEMM commit, timestamp.
`--precompile-only`: build the grid's DeepGEMM kernels into DG_CACHE_DIR (nvcc, no GPU needed; the
SM count given by --num-sms) so the GPU run finds them compiled.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from real.bench.timing import capture_graph
from real.telemetry import Telemetry

# DeepSeek-V3 routed expert (config.json: hidden_size 7168, moe_intermediate_size 2048): gate and up
# fused (N 2 x 2048, K 7168) and down (N 7168, K 2048)
SHAPES_NK = {"gate_up": (4096, 7168), "down": (7168, 2048)}
# local experts per GPU: (256 routed + 32 redundant) / EP: EP144 -> 2, EP72 -> 4, EP32 -> 9
GROUPS = (2, 4, 9)
# expected rows per group: fine steps around DeepGEMM's 64 (block_m switch) and 128-row tiles
EXPECTED_ROWS = (8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 120, 128, 136, 144, 160, 176, 192, 200, 208,
                 224, 240, 248, 256, 264, 272, 288, 320, 384, 448, 512)
SCATTER_ROWS = (32, 64, 96, 128, 192, 256)
SCATTER_GROUPS = (2, 4)
SCATTER_DRAWS = 2
SCATTER_SEED = 22
KERNELS = ("deepgemm_masked", "torch_grouped_mm_bf16", "torch_scaled_grouped_mm_fp8")
TIMINGS = ("graph", "l2_flush")
GRAPH_CALLS, GRAPH_REPLAYS = 20, 5
FLUSH_REPS = 15
FLUSH_BYTES = 256 * 2**20   # > the 50 MiB L2 of H100/H200 (datasheets)
HOST_LEAD_CYCLES = 1_000_000   # ~0.5 ms of GPU spin at ~2 GHz before each flushed call
SM90_NUM_SMS = 132          # H100 SXM and H200 (datasheets): the SM count DeepGEMM's configs are chosen for
QUICK_SHAPES_NK = {"gate_up": (256, 256), "down": (256, 128)}
QUICK_GROUPS, QUICK_ROWS = (2,), (8, 64)

COLUMNS = ["kernel", "shape", "n", "k", "groups", "expected_rows", "layout", "masked_rows_json", "rows_max",
           "rows_sum", "m_max", "block_m", "block_n", "num_stages", "timing", "time_s", "time_p10_s", "time_p90_s",
           "reps", "flops", "achieved_flops_per_s", "rel_error", "error", "gpu_name", "sm_clock_mhz",
           "mem_clock_mhz", "torch_version", "cuda_version", "nvcc_version", "deepgemm_commit", "timestamp_utc"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def scatter_rows(groups: int, expected_rows: int, draw: int) -> list[int]:
    """Rows per group drawn Binomial(n, p) with mean expected_rows (n = 64 x expected_rows tokens
    picking each expert with p = 1/64: the decode's routing draw), a fixed seed per (groups, rows, draw)."""
    rng = random.Random(SCATTER_SEED * 1_000_003 + groups * 10_007 + expected_rows * 101 + draw)
    trials = 64 * expected_rows
    return [max(1, sum(rng.random() < 1 / 64 for _ in range(trials))) for _ in range(groups)]


def cases(quick: bool) -> list[tuple]:
    """(shape, groups, expected_rows, layout, rows per group), most wanted first: EP144's two groups,
    then four and nine, then the scattered draws."""
    shapes = QUICK_SHAPES_NK if quick else SHAPES_NK
    groups, rows = (QUICK_GROUPS, QUICK_ROWS) if quick else (GROUPS, EXPECTED_ROWS)
    out = [(s, g, r, "equal", [r] * g) for g in groups for s in shapes for r in rows]
    if not quick:
        out += [(s, g, r, "scatter", scatter_rows(g, r, d)) for g in SCATTER_GROUPS for s in shapes
                for r in SCATTER_ROWS for d in range(SCATTER_DRAWS)]
    return out


def padded_m_max(rows: list[int]) -> int:
    """The masked layout's rows per group: the largest group's rows rounded up to 128 (DeepGEMM asserts
    m_max % block_m == 0 for several groups above one block)."""
    return max(128, -(-max(rows) // 128) * 128)


class DeepGemm:
    """The carried DeepGEMM package: import, config choice, kernel build (no GPU) and the masked call."""

    def __init__(self, path: str):
        sys.path.insert(0, path)
        import deep_gemm  # lazy: third-party, present only where the campaign carries it (on sys.path above)
        from deep_gemm.jit import build, cpp_format, generate  # lazy: as above
        from deep_gemm.jit_kernels import m_grouped_gemm  # lazy: as above
        from deep_gemm.jit_kernels.gemm import get_best_configs  # lazy: as above
        self.dg, self.mg, self.best = deep_gemm, m_grouped_gemm, get_best_configs
        self._build, self._fmt, self._gen = build, cpp_format, generate
        commit_file = Path(path) / "DEEPGEMM_COMMIT"
        self.commit = commit_file.read_text().strip() if commit_file.exists() else "unknown"

    def config(self, expected_rows: int, n: int, k: int, groups: int, num_sms: int):
        return self.best(expected_rows, n, k, groups, num_sms)

    def build(self, n: int, k: int, groups: int, cfg) -> float:
        """Compile (or find cached) the masked kernel of this config, as the JIT tuner would; seconds taken."""
        block_m, block_n, stages, multicast, _ = cfg
        keys = {"N": n, "K": k, "BLOCK_M": block_m, "BLOCK_N": block_n, "NUM_GROUPS": groups,
                "NUM_STAGES": stages, "NUM_TMA_MULTICAST": multicast, "GEMM_TYPE": "GroupedMasked"}
        keys = {key: keys[key] for key in sorted(keys)}
        arg_defs = (("lhs", torch.float8_e4m3fn), ("lhs_scales", torch.float), ("rhs", torch.float8_e4m3fn),
                    ("rhs_scales", torch.float), ("out", torch.bfloat16), ("grouped_layout", torch.int32),
                    ("m", int), ("stream", torch.cuda.Stream), ("num_sms", int), ("smem_size", int))
        t0 = time.perf_counter()
        self._build("m_grouped_gemm_fp8_fp8_bf16_nt", arg_defs,
                    self._gen(self.mg.includes, arg_defs, self._fmt(self.mg.template, keys)))
        return time.perf_counter() - t0

    def callable(self, lhs, rhs, out, masked_m, expected_rows: int):
        fn = self.dg.m_grouped_gemm_fp8_fp8_bf16_nt_masked
        return lambda: fn(lhs, rhs, out, masked_m, expected_rows)


def kernel_configs(dg: DeepGemm, quick: bool, num_sms: int) -> list[tuple]:
    """The distinct (n, k, groups, config) the grid's DeepGEMM rows need."""
    shapes = QUICK_SHAPES_NK if quick else SHAPES_NK
    seen = {}
    for shape, groups, expected, _, _ in cases(quick):
        n, k = shapes[shape]
        cfg = dg.config(expected, n, k, groups, num_sms)
        seen[(n, k, groups, cfg[:4])] = (n, k, groups, cfg)
    return list(seen.values())


def precompile(dg: DeepGemm, quick: bool, num_sms: int, workers: int) -> None:
    """Build every kernel of the grid (nvcc in parallel; cached ones return at once)."""
    todo = kernel_configs(dg, quick, num_sms)
    log(f"deepgemm: building {len(todo)} kernels with {workers} workers")
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(dg.build, n, k, g, cfg): (n, k, g, cfg[:4]) for n, k, g, cfg in todo}
        for f in concurrent.futures.as_completed(futures):
            log(f"deepgemm: built {futures[f]} in {f.result():.1f} s")


def nvcc_version() -> str:
    nvcc = os.environ.get("DG_NVCC_COMPILER", "nvcc")
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return text.strip().splitlines()[-1] if text.strip() else ""


def masked_operands(n: int, k: int, rows: list[int], dev: torch.device):
    """DeepGEMM's masked layout: lhs (G, m_max, K) FP8 with 1x128 scales (TMA-aligned column-major, so
    the call transposes nothing), rhs (G, N, K) FP8 with 128x128 scales, out (G, m_max, N) BF16."""
    g, m_max = len(rows), padded_m_max(rows)
    lhs = torch.randn(g, m_max, k, device=dev).to(torch.float8_e4m3fn)
    lhs_s = torch.rand(g, m_max, k // 128, device=dev) + 0.5
    rhs = torch.randn(g, n, k, device=dev).to(torch.float8_e4m3fn)
    rhs_s = torch.rand(g, n // 128, k // 128, device=dev) + 0.5
    out = torch.empty(g, m_max, n, device=dev, dtype=torch.bfloat16)
    masked_m = torch.tensor(rows, device=dev, dtype=torch.int32)
    return lhs, lhs_s, rhs, rhs_s, out, masked_m


def masked_reference(lhs, lhs_s, rhs, rhs_s, rows: list[int]) -> torch.Tensor:
    """Group 0's real rows dequantized and multiplied in FP32: the masked kernel's result to compare."""
    r = rows[0]
    a = lhs[0, :r].float() * lhs_s[0, :r].repeat_interleave(128, dim=1)
    b = rhs[0].float() * rhs_s[0].repeat_interleave(128, dim=0).repeat_interleave(128, dim=1)
    return a @ b.t()


def torch_callable(kernel: str, n: int, k: int, rows: list[int], dev: torch.device):
    """torch's grouped GEMM over the same groups and rows, contiguous (rows sorted by group, offs the
    cumulative ends), as real/bench/gemm.py bench_grouped runs it."""
    g = len(rows)
    x = torch.randn(sum(rows), k, device=dev, dtype=torch.bfloat16)
    w_EKN = torch.randn(g, n, k, device=dev, dtype=torch.bfloat16).transpose(-2, -1)
    offs = torch.tensor(rows, device=dev, dtype=torch.int32).cumsum(0).to(torch.int32)
    if kernel == "torch_grouped_mm_bf16":
        return lambda: torch._grouped_mm(x, w_EKN, offs=offs)
    xq = x.to(torch.float8_e4m3fn)
    sx = torch.rand(x.shape[0], device=dev) + 0.5
    wq = w_EKN.transpose(-2, -1).contiguous().to(torch.float8_e4m3fn).transpose(-2, -1)
    sw = torch.rand(g, n, device=dev) + 0.5
    return lambda: torch._scaled_grouped_mm(xq, wq, sx, sw, offs=offs, out_dtype=torch.bfloat16)


def time_graph(fn, dev: torch.device) -> tuple[list[float], int, str]:
    """GRAPH_CALLS calls in one CUDA graph, GRAPH_REPLAYS replays: per-call times (s), reps, the timing
    (eager_b2b where the calls do not capture); on the CPU the host clock around GRAPH_CALLS calls."""
    if dev.type != "cuda":
        times = []
        for _ in range(GRAPH_REPLAYS):
            t0 = time.perf_counter()
            for _ in range(GRAPH_CALLS):
                fn()
            times.append((time.perf_counter() - t0) / GRAPH_CALLS)
        return times, GRAPH_CALLS * GRAPH_REPLAYS, "graph"
    try:
        graph = capture_graph(fn, GRAPH_CALLS, dev)
        window, timing = graph.replay, "graph"
    except Exception as e:  # not capturable: the calls issued eagerly back to back, one event pair
        log(f"graph capture failed ({type(e).__name__}: {str(e)[:80]}); eager back-to-back calls")
        torch.cuda.synchronize(dev)
        graph, timing = None, "eager_b2b"

        def window():
            for _ in range(GRAPH_CALLS):
                fn()
    window()
    pairs = []
    for _ in range(GRAPH_REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        window()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize(dev)
    del graph
    return [s.elapsed_time(e) * 1e-3 / GRAPH_CALLS for s, e in pairs], GRAPH_CALLS * GRAPH_REPLAYS, timing


def time_flushed(fn, dev: torch.device, flush_buf) -> tuple[list[float], int]:
    """A write of FLUSH_BYTES before each call (evicts the weights from L2), then a GPU spin that lets the
    host issue the call, CUDA events around the call."""
    if dev.type != "cuda":
        times = []
        for _ in range(FLUSH_REPS):
            flush_buf.zero_()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times, FLUSH_REPS
    fn()
    pairs = []
    for _ in range(FLUSH_REPS):
        flush_buf.zero_()
        # the GPU waits here while the host issues the call, so the events time the kernel, not the
        # host's dispatch (DeepGEMM's wrapper is Python: tens of microseconds a call)
        torch.cuda._sleep(HOST_LEAD_CYCLES)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize(dev)
    return [s.elapsed_time(e) * 1e-3 for s, e in pairs], FLUSH_REPS


def stats(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [times[0]] * 9
    return {"time_s": statistics.median(times), "time_p10_s": q[0], "time_p90_s": q[-1]}


class Rows:
    """Appends rows to OUTDIR/deepgemm_masked.csv (header first), flushing each row."""

    def __init__(self, out_dir: Path, env: dict, tel: Telemetry):
        self.f = open(out_dir / "deepgemm_masked.csv", "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=COLUMNS, extrasaction="raise")
        self.w.writeheader()
        self.env, self.tel = env, tel

    def write(self, **values) -> None:
        row = {c: "" for c in COLUMNS}
        row.update(self.env)
        row.update(sm_clock_mhz=self.tel.sm_clock_mhz(), mem_clock_mhz=self.tel.mem_clock_mhz(),
                   timestamp_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        row.update(values)
        self.w.writerow({c: (f"{v:.6g}" if isinstance(v, float) else v) for c, v in row.items()})
        self.f.flush()

    def close(self):
        self.f.close()


def measure(fn, dev, flush_buf) -> dict:
    """Both timings of one callable: {timing: stats and reps}."""
    times, reps, how = time_graph(fn, dev)
    out = {"graph": {**stats(times), "reps": reps, "timing": how}}
    times, reps = time_flushed(fn, dev, flush_buf)
    out["l2_flush"] = {**stats(times), "reps": reps}
    return out


def run_case(rows_out: Rows, case: tuple, dev, dg: DeepGemm | None, num_sms: int, flush_buf, quick: bool,
             checked: set) -> None:
    shape, groups, expected, layout, rows = case
    n, k = (QUICK_SHAPES_NK if quick else SHAPES_NK)[shape]
    base = {"shape": shape, "n": n, "k": k, "groups": groups, "expected_rows": expected, "layout": layout,
            "masked_rows_json": json.dumps(rows), "rows_max": max(rows), "rows_sum": sum(rows),
            "flops": 2.0 * sum(rows) * n * k}
    kernels = [kk for kk in KERNELS if kk != "deepgemm_masked" or dg is not None]
    if dev.type != "cuda":
        kernels = [kk for kk in kernels if kk == "torch_grouped_mm_bf16"]   # the FP8 kernels are CUDA-only
    for kernel in kernels:
        extra, error = {}, ""
        try:
            if kernel == "deepgemm_masked":
                cfg = dg.config(expected, n, k, groups, num_sms)
                ops = masked_operands(n, k, rows, dev)
                lhs, lhs_s, rhs, rhs_s, out, masked_m = ops
                lhs_s = dg.dg.get_col_major_tma_aligned_tensor(lhs_s)
                fn = dg.callable((lhs, lhs_s), (rhs, rhs_s), out, masked_m, expected)
                extra = {"m_max": lhs.shape[1], "block_m": cfg[0], "block_n": cfg[1], "num_stages": cfg[2]}
                fn()
                if (shape, groups, cfg[:2]) not in checked:   # once per kernel config: the result is right
                    checked.add((shape, groups, cfg[:2]))
                    torch.cuda.synchronize(dev)
                    ref = masked_reference(lhs, lhs_s, rhs, rhs_s, rows)
                    got = out[0, :rows[0]].float()
                    extra["rel_error"] = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
            else:
                fn = torch_callable(kernel, n, k, rows, dev)
            results = measure(fn, dev, flush_buf)
        except Exception as e:  # a kernel that refuses a shape: the row says why, the grid goes on
            error = f"{type(e).__name__}: {str(e)[:200]}"
            results = {t: {} for t in TIMINGS}
            log(f"{kernel} {shape} g{groups} r{expected} {layout}: {error}")
        for timing, r in results.items():
            ach = base["flops"] / r["time_s"] if r.get("time_s") else ""
            rows_out.write(**{"kernel": kernel, "timing": timing, "error": error, "achieved_flops_per_s": ach,
                              **base, **extra, **r})
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def load_deepgemm(path: str | None) -> DeepGemm | None:
    if not path:
        log("deepgemm: no path given; DeepGEMM rows skipped")
        return None
    if not (Path(path) / "deep_gemm").is_dir():
        log(f"deepgemm: no deep_gemm package under {path}; DeepGEMM rows skipped")
        return None
    try:
        return DeepGemm(path)
    except Exception:
        log("deepgemm: import failed; DeepGEMM rows skipped\n" + traceback.format_exc())
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=False)
    p.add_argument("--deepgemm", default=os.environ.get("DEEPGEMM_DIR", ""))
    p.add_argument("--budget-s", type=float, default=180.0)
    p.add_argument("--quick", action="store_true", help="CPU-sized shapes (a dry run)")
    p.add_argument("--precompile-only", action="store_true")
    p.add_argument("--num-sms", type=int, default=SM90_NUM_SMS, help="with --precompile-only")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    dg = load_deepgemm(a.deepgemm)
    if a.precompile_only:
        if dg is None:
            return 1
        precompile(dg, a.quick, a.num_sms, a.workers)
        return 0
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else a.num_sms
    if dg is not None and dev.type != "cuda":
        log("deepgemm: no GPU; DeepGEMM rows skipped")
        dg = None
    if dg is not None:
        try:
            precompile(dg, a.quick, num_sms, a.workers)
        except Exception:
            log("deepgemm: build failed; DeepGEMM rows skipped\n" + traceback.format_exc())
            dg = None
    a.out.mkdir(parents=True, exist_ok=True)
    tel = Telemetry(dev.index or 0) if dev.type == "cuda" else Telemetry()
    env = {"gpu_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "torch_version": torch.__version__, "cuda_version": torch.version.cuda or "",
           "nvcc_version": nvcc_version(), "deepgemm_commit": dg.commit if dg else ""}
    memory = {"total_memory_bytes": torch.cuda.get_device_properties(dev).total_memory} if dev.type == "cuda" else {}
    (a.out / "env.json").write_text(json.dumps({**env, "num_sms": num_sms, **memory, **tel.static_info()}, indent=1,
                                               default=str))
    rows_out = Rows(a.out, env, tel)
    flush_buf = torch.empty(FLUSH_BYTES // 4 if dev.type == "cuda" else 1024, dtype=torch.int32, device=dev)
    checked, done, todo = set(), 0, cases(a.quick)
    for case in todo:
        if time.perf_counter() - t0 > a.budget_s:
            log(f"budget spent: {done} of {len(todo)} cases measured")
            break
        run_case(rows_out, case, dev, dg, num_sms, flush_buf, a.quick, checked)
        done += 1
    rows_out.close()
    log(f"deepgemm_masked: {done} of {len(todo)} cases in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark harness and calibration campaign for `real/`, one module per family of sections.

    python -m real.bench --out DIR [--quick] [--only gemm,grouped,...] [--budget-s 450]

Writes one CSV per family (gemm.csv, attention.csv, memory.csv, moe_layer.csv, model.csv,
expert_load.csv) plus env.json, appending and flushing row by row so a run cut short still leaves
its data. Every row: the shape columns of its bench, `time_s` (median), `time_p10_s`,
`time_p90_s`, `reps`, `flops`, `bytes`, achieved rates, and the environment (GPU name, SM and
memory clocks read right after the timed loop, average board power over the loop and the energy
of one timed repetition (= power_w * time_s), torch and CUDA versions, UTC timestamp). NVML's
energy counter advances in ~0.1 s steps, so power and energy are left empty for timed loops
shorter than ENERGY_MIN_WINDOW_S; the `power` section times a representative subset for >= 2 s
each to give reliable figures.

Timing (column `timing`): single kernels (gemm, grouped, memory, attention forward) are timed as
GPU time per call: n calls captured in one CUDA graph, replayed several times with one CUDA event
pair around each replay (`cuda_graph`; `batched_events` = n eager calls between one event pair
where capture fails), so host dispatch is not measured. Layers, steps and backward passes (which
need an untimed forward) keep warm-up calls, then CUDA events around each repetition
(`per_rep_events`): what eager PyTorch achieves, host dispatch included. On the CPU: the host
clock (`host_clock`). The repetition count is chosen so each configuration runs at least
`min_time_s`. Shapes come from the
DeepSeek-V3 / V2-Lite catalog entries; FLOP and byte formulas from `twin/costs/flops.py`.
`--quick` shrinks every shape so the whole campaign runs on a CPU in a minute (a dry run).
Sections outside the default list (`--only`): `power` (board power of representative kernels),
`sustained` (30 s of back-to-back replays per kernel with NVML clock, power and temperature:
sustained.csv), `kernels` (torch-profiler kernel times of MoE/MLA layers: kernels.csv) and `ep`
(expert parallelism under torchrun). `grouped_wgrad`, `grouped_small` and `topk` are in the
default list. `twin calibrate` runs every section but power, kernels and ep.
Targets printed (never asserted): FP8 expert GEMMs at V3 shapes >= 1000 TFLOP/s and BF16 dense
>= 650 TFLOP/s on an H100.

Layout: `sections.py` (section names and budget shares, torch-free), `records.py` (CSV columns,
Recorder, log; torch-free), `timing.py` (Timer, Deadline), `device.py` (env.json, peaks,
precisions), one module per family of sections (`gemm`, `memory`, `attention`, `moe_layer`,
`whole_model`, `power`, `kernels`, `fp8_stack`, `sm_reserve`, `ep`, `decode_gemm`: the decode step's
batched GEMMs, projections and elementwise kernels, and its drift), and `cli.py` (SECTIONS, main).
"""

from real.bench.records import ENERGY_MIN_WINDOW_S
from real.bench.sections import SECTION_NAMES, SECTION_SHARES

__all__ = ["ENERGY_MIN_WINDOW_S", "SECTIONS", "SECTION_NAMES", "SECTION_SHARES", "main"]


def __getattr__(name: str):
    # lazy: SECTIONS and main need torch, and importing this package must not (the twin's CLI
    # imports it for the section names and runs without torch)
    if name in ("SECTIONS", "main"):
        from real.bench import cli  # lazy: torch (see above)

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

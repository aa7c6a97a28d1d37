"""Figures (not a test): a Llama-3-405B-like dense plan (TP8/PP16 on 16,384 H100, 8K sequences,
its published layout; the twin's defaults otherwise) under the physics of issue 14: TP collectives
with and without sequence parallelism and overlap, and the pipeline bubble of plain 1F1B against
Megatron's interleaved 1F1B (V = 2, 4) at 16 and 32 micro-batches per pipeline, beside the
idealised schedule's (PP-1)(F+B)/V.

Usage: python benchmarks/bench_dense_layouts.py  (about 10 s on one core)
"""

from __future__ import annotations

from twin.core.scenario import from_dict
from twin.sim.ideal import ideal_schedule
from twin.training.step import simulate_step

BASE = {"name": "llama3-405b-tp8-pp16", "model": {"name": "llama3-405b"},
        "cluster": {"gpu": "h100", "num_gpus": 16384},
        "plan": {"tp": 8, "pp": 16, "ep": 1, "zero_stage": 1, "micro_batch_seqs": 1, "schedule": "1f1b",
                 "recompute": "selective", "gemm_precision": "bf16"},
        "workload": {"seq_len": 8192, "global_batch_seqs": 2048}}


def row(label: str, check_memory: bool = True, **changes) -> None:
    raw = {**BASE, "plan": {**BASE["plan"], **{k: v for k, v in changes.items() if k != "global_batch_seqs"}},
           "workload": {**BASE["workload"], **({"global_batch_seqs": changes["global_batch_seqs"]} if "global_batch_seqs" in changes else {})}}
    sc = from_dict(raw)
    r = simulate_step(sc, record_events=False, check_memory=check_memory)
    tp_s = sum(v for k, v in r.op_time_s.items() if k.startswith("tp_"))
    print(f"{label:44s} {sc.num_microbatches:4d} {r.step_time_s:8.2f} {r.bubble_frac:7.3f} {r.exposed_comm_frac:8.4f} "
          f"{r.mfu_frac:6.3f} {r.memory_per_gpu_bytes / 2**30:8.1f} {tp_s:8.3f}")


def main() -> None:
    print(f"{'plan':44s} {'mb':>4s} {'step s':>8s} {'bubble':>7s} {'exp.comm':>8s} {'MFU':>6s} {'GiB/GPU':>8s} {'TP s':>8s}")
    row("TP8/PP16, no SP (memory not checked)", check_memory=False)
    row("TP8/PP16, SP", sequence_parallel=True)
    row("TP8/PP16, SP, tp_comm_overlap", sequence_parallel=True, tp_comm_overlap=True)
    for batch in (2048, 4096):
        row("SP, 1f1b", sequence_parallel=True, global_batch_seqs=batch, check_memory=False)
        for v in (2, 4):
            row(f"SP, interleaved-1f1b V={v} (memory not checked)", sequence_parallel=True, schedule="interleaved-1f1b",
                virtual_stages=v, global_batch_seqs=batch, check_memory=False)
    print("\nidealised PP16, F=1 B=2 per stage: bubble / makespan (bubble s = (PP-1)(F+B)/V)")
    for n in (16, 32):
        for v in (1, 2, 4):
            o = ideal_schedule("1f1b" if v == 1 else "interleaved-1f1b", 16, n, 1.0, 2.0, 1.0, virtual_stages=v)
            print(f"  N={n:2d} V={v}: {o['bubble_s'] / o['makespan_s']:.3f}  ({o['bubble_s']:g} s)")


if __name__ == "__main__":
    main()

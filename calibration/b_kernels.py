"""Zero fills, index_put_'s radix passes and cross entropy's softmax at their measured rates (s15bw2,
docs/notes/s15bw2_rule.md, candidate J behind calibration.predict.ADOPT_B_KERNEL_RATES).

Each law is measured per GPU on the fitting split's profiled pipeline kernels
(pipeline_op_kernels.csv of the 2- and 4-GPU folders, real/pipeline/probe.py; every profiled row
`fit`), v2-lite-slice stages (D 2048, top-k 6, 64 experts, vocabulary 102,400):
- softmax: log_softmax over the vocabulary (rows larger than shared memory: cunn_SoftMaxForward /
  cunn_SoftMaxBackward's multi-pass loops), seconds per element of the T x Y logits, forward from the
  F ops' kernels, backward from the B ops';
- BF16 zero fills: the F ops' `FillFunctor<BFloat16>` kernels of PP-only runs (ep 1), where every
  one is a MoE layer's capacity buffer (real/model.py expert_ffn `x_ND.new_zeros(capacity, D)`,
  capacity as calibration.predict._moe_ops's Np), seconds per byte written. The fill is
  write-only and runs at ~3.26 TB/s on H100 and H200 alike, so the streaming rate of the catalog
  bandwidth does not carry over;
- index_put_'s radix passes: the B ops' cub `DeviceRadixSortOnesweepKernel` calls of PP-only runs
  (each MoE layer's three index_put_ sorts, two passes each; rank 0's embedding backward sort),
  seconds a pass.
- argsort's radix passes (s16rx, docs/notes/s16rx_rule.md): the F ops' `DeviceRadixSortOnesweepKernel`
  calls of PP-only runs: real/model.py MoE.routed's two torch.argsort calls a MoE layer (of the
  int64 expert ids, then of the order), each a cub onesweep sort of the keys' full 64 bits, 8
  passes (16 calls a layer in the records), seconds a pass.
Each figure is the median over the rows; None where the GPU has no records.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from twin.core.specs import get_model

# records folders (under calibration/measurements) holding each GPU's profiled pipeline kernels
FOLDERS = {"h100": ("h100x2", "h100x4"), "h200": ("h200x2", "h200x4")}
KERNELS_CSV = "pipeline_op_kernels.csv"
SOFTMAX_KERNEL = {"fwd": "cunn_SoftMaxForward", "bwd": "cunn_SoftMaxBackward"}
SOFTMAX_KIND = {"fwd": "F", "bwd": "B"}
FILL_KERNEL = "FillFunctor<c10::BFloat16>"
ONESWEEP_KERNEL = "DeviceRadixSortOnesweepKernel"
BF16_BYTES = 2
# cub's onesweep radix sort of 64-bit keys: 8 bits a pass (ATen native/cuda/Indexing.cu
# index_put_with_sort_kernel sorts on cuda::cub::get_num_bits(rows of the destination) bits)
RADIX_BITS_PER_PASS = 8
# torch.argsort of int64 keys (ATen sort's cub radix_sort_pairs over the key's whole width, bits 0-64):
# 8 onesweep passes a sort, as the fitting records show (16 calls a one-GPU MoE layer forward, two sorts)
ARGSORT_KEY_BITS = 64
ARGSORT_PASSES = math.ceil(ARGSORT_KEY_BITS / RADIX_BITS_PER_PASS)


def gpu_key(gpu_name: str) -> str | None:
    """Catalog GPU name ("NVIDIA H100 SXM5 80GB") -> FOLDERS key ("h100"); None if none matches."""
    low = gpu_name.lower()
    return next((k for k in FOLDERS if k in low), None)


def radix_passes(dest_rows: float) -> int:
    """Onesweep passes of index_put_'s sort into a destination of `dest_rows` rows: cub's
    get_num_bits (the bit length of the row count, at least 1) over 8 bits a pass. 4,096 rows:
    13 bits, 2 passes; 25,552: 15 bits, 2; 131,072: 18 bits, 3."""
    bits = max(1, int(dest_rows).bit_length())
    return math.ceil(bits / RADIX_BITS_PER_PASS)


def _fit_rows(kernels: pd.DataFrame, kind: str, pattern: str) -> pd.DataFrame:
    return kernels[(kernels["split"] == "fit") & (kernels["kind"] == kind)
                   & kernels["kernel"].astype(str).str.contains(pattern, regex=False)]


def softmax_rates(kernels: pd.DataFrame, direction: str) -> list[float]:
    """Seconds per logit (tokens x vocabulary) of each fitting row's softmax kernel calls."""
    k = _fit_rows(kernels, SOFTMAX_KIND[direction], SOFTMAX_KERNEL[direction])
    vocab = np.array([get_model(m).vocab_size for m in k["model"]], float)
    elems = k["calls"] * k["micro_batch_seqs"] * k["seq_len"] * vocab
    return [float(x) for x in k["time_s"] / elems]


def capacity_rows(model: str, tokens: int) -> int:
    """real/model.py expert_ffn's static capacity: tokens x top-k plus 15 padding rows an expert,
    rounded up to 16 (calibration.predict._moe_ops's Np)."""
    spec = get_model(model)
    n = tokens * spec.top_k
    return (n + spec.num_routed_experts * 15 + 15) // 16 * 16


def fill_rates(kernels: pd.DataFrame) -> list[float]:
    """Seconds per byte of each PP-only fitting row's forward BF16 fills (capacity buffers)."""
    k = _fit_rows(kernels[kernels["ep"] == 1], "F", FILL_KERNEL)
    bytes_each = [capacity_rows(m, int(b * s)) * get_model(m).hidden_size * BF16_BYTES
                  for m, b, s in zip(k["model"], k["micro_batch_seqs"], k["seq_len"])]
    return [float(x) for x in k["time_s"] / (k["calls"] * np.array(bytes_each, float))]


def pass_times(kernels: pd.DataFrame, kind: str = "B") -> list[float]:
    """Seconds a onesweep pass of each PP-only fitting row's radix-sort calls in `kind` ops: "B" the
    backward's index_put_ sorts, "F" the forward's argsorts."""
    k = _fit_rows(kernels[kernels["ep"] == 1], kind, ONESWEEP_KERNEL)
    return [float(x) for x in k["time_s"] / k["calls"]]


def _records(key: str, root: Path) -> pd.DataFrame | None:
    frames = [read_csv(p) for p in (root / f / KERNELS_CSV for f in FOLDERS[key]) if csv_exists(p)]
    return pd.concat(frames, ignore_index=True) if frames else None


def measured(gpu_name: str) -> dict | None:
    """{"softmax_fwd_s_per_elem", "softmax_bwd_s_per_elem", "fill_s_per_byte", "radix_pass_s",
    "argsort_pass_s"} of this GPU (medians over the fitting rows; a key is absent where its rows are), None without
    records. Read under the records root in use (calibration.records.records_root)."""
    return _measured(gpu_name, rec.records_root())


@functools.cache
def _measured(gpu_name: str, root: Path) -> dict | None:
    key = gpu_key(gpu_name)
    kernels = _records(key, root) if key else None
    if kernels is None:
        return None
    laws = {"softmax_fwd_s_per_elem": softmax_rates(kernels, "fwd"),
            "softmax_bwd_s_per_elem": softmax_rates(kernels, "bwd"),
            "fill_s_per_byte": fill_rates(kernels), "radix_pass_s": pass_times(kernels, "B"),
            "argsort_pass_s": pass_times(kernels, "F")}
    return {name: float(np.median(v)) for name, v in laws.items() if v}


def law(gpu_name: str, name: str) -> float | None:
    """One measured figure of `measured` for this GPU, None where unmeasured."""
    return (measured(gpu_name) or {}).get(name)

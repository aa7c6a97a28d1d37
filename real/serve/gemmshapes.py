"""The dense GEMM shapes one eager engine prompt step launches with the step's flat size as a dimension (issue 15, s31look).

    python -m real.serve.gemmshapes --models a,b [--sizes 301,517] [--out FILE]

Why: docs/notes/s30blas.md found an exact flat size new to the engine process costs cuBLASLt's heuristics look-up
(gone with CUBLASLT_HEURISTICS_CACHE_CAPACITY=0), s11srv one look-up per linear at a row count the process never ran;
the cache's key is the GEMM's shape, so a new flat size M costs one look-up per distinct dense GEMM shape whose M is
the size (every layer after the first reuses the first layer's shapes: cache hits). This counts them, structurally (no
timing): the engine's own step (Engine.step, GPU1's settings, graphs off) on CPU in float32 at the model's full widths
under a TorchDispatchMode that records every mm / addmm / bmm / baddbmm call's operand shapes; a signature
(operator, shapes) counts when one of its dimensions is the step's flat size, once however many layers call it. The
routed experts' grouped GEMM (_grouped_mm: M is routed rows; s30serve's profile: no first-size cost) is not counted.
Two sizes are counted per model (they must agree, else an error). Printed as JSON {model: count}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from real.configs import get_spec
from real.model import build_model
from real.serve.eagerhost import Driver
from real.serve.engine import Engine, EngineConfig
from real.serve.plans import GPU1

GEMMS = ("mm", "addmm", "bmm", "baddbmm")
NUM_PAGES = 256
SIZES = (301, 517)   # prompt lengths no model width equals


class GemmRecorder(TorchDispatchMode):
    """Records (operator, operand shapes) of every dense GEMM dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in GEMMS:
            self.calls.append((name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))))
        return func(*args, **(kwargs or {}))


def size_shapes(calls: list[tuple], size: int) -> set[tuple]:
    """The distinct GEMM signatures with `size` among their dimensions."""
    return {c for c in calls if any(size in s for s in c[1])}


def count_model(name: str, sizes=SIZES) -> dict:
    """{"shapes": distinct size-dependent dense GEMM signatures of a one-prompt step, "calls": those calls in the step,
    "gemm_calls": every dense GEMM call} for one model; raises if the sizes disagree."""
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build_model(spec, torch.device("cpu"), torch.float32, max_seq_len=GPU1.max_context).eval()
    engine = Engine(model, EngineConfig(page_size=GPU1.page_size, num_pages=NUM_PAGES, token_budget=GPU1.token_budget,
                                        max_running=GPU1.max_running, max_context=GPU1.max_context, cuda_graphs=False))
    drv = Driver(engine, spec.vocab_size)
    got = []
    with torch.no_grad():
        for n in sizes:
            engine.reset(engine.clock())
            drv._add(1, n, 2)
            rec = GemmRecorder()
            with rec:
                engine.step()
            dep = size_shapes(rec.calls, n)
            got.append({"shapes": len(dep), "calls": sum(1 for c in rec.calls if c in dep), "gemm_calls": len(rec.calls)})
    if len({g["shapes"] for g in got}) != 1:
        raise ValueError(f"{name}: size-dependent GEMM shapes differ between sizes {sizes}: {got}")
    return got[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.serve.gemmshapes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    sizes = tuple(int(x) for x in a.sizes.split(","))
    out = {m: count_model(m, sizes) for m in a.models.split(",")}
    text = json.dumps(out, indent=1, sort_keys=True)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

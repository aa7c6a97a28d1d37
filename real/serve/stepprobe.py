"""Host-speed probe candidates that look more like a model's eager step (issues 13 and 15, session s24probe).

Why: the 3 ms launch-chain probe (hostspeed.launch_probe: 64 `x * 1.0001` a chain) follows a machine's host speed only
in part: on one host every model's eager decode step runs at 0.94-1.05 of ratio x probe per twin op, across fresh H100
hosts at 0.87-1.18 (docs/notes/s23hrate_rule.md). A step is not one op repeated: it is Python module calls, torch ops of
several arities and kinds (views, reductions, GEMMs, SDPA), tensor allocation and free, launches. A machine whose
Python interpreter, dispatcher, allocator or driver call is relatively slower moves each part differently, so a probe
made of one part can miss what the others do. These candidates are measured beside the old probe; which one predicts
the eager steps' host time across hosts is judged by docs/notes/s24probe_rule.md. Nothing here is used by the engine or
an existing campaign (hostspeed.launch_probe is unchanged).

Every candidate returns (mean, median) host seconds per unit over a window of at least window_s of timed work (a
time-sliced core reads its average share), the device synchronised between repetitions outside the timed part:
  launch    hostspeed.launch_probe (the old probe), at any window;
  mix       MIX_OPS torch ops a repetition of mixed arity and kind on small tensors (binary, unary, scalar, matmul,
            views, reductions, softmax, cat, index_select, where, fresh allocations): seconds per op;
  refmodel  the eager forward of RefModel (a fixed 4-layer pre-norm transformer of width 128 that no measured model
            is, one token against a 64-token cache): seconds per forward;
  cpuop     the mix's ops on CPU tensors of 4 elements (Python + dispatcher + CPU kernel, no device launch): seconds
            per op;
  py        hostspeed.py_probe (the pure-Python loop): seconds per pass.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from real.serve.hostspeed import launch_probe, py_probe, run_window
from real.sync import synchronize

PROBE_MAX_REPS = 5000   # a candidate's repetitions a window at most (hostspeed's probes stop at 2000)
MIX_OPS = 27   # torch calls in one _mix_once, views and in-place ops counted (the comments' counts)


def _timed(fn, dev: torch.device):
    """A repetition timer: host seconds of fn(), the device synchronised after it (outside the timed part)."""
    def one() -> float:
        t = time.perf_counter()
        fn()
        t = time.perf_counter() - t
        synchronize(dev)
        return t
    return one


class _MixInputs:
    """The mix's fixed small tensors on one device (built once, outside any window)."""

    def __init__(self, dev: torch.device, n: int):
        g = torch.Generator().manual_seed(0)
        self.a = torch.rand(n, generator=g).to(dev)
        self.b = torch.rand(n, generator=g).to(dev)
        side = max(2, int(round(n ** 0.5)))
        self.m = torch.rand(side, side, generator=g).to(dev)
        self.w = torch.rand(side, side, generator=g).to(dev)
        self.idx = torch.arange(0, side, 2, device=dev)
        self.mask = self.a > 0.5


def _mix_once(t: _MixInputs) -> int:
    """One repetition of the mix (MIX_OPS torch calls); returns MIX_OPS."""
    x = t.a + t.b                                   # binary
    x = x * 1.0001                                  # scalar
    y = torch.exp(x)                                # unary
    z = torch.where(t.mask, x, y)                   # ternary
    s = z.sum()                                     # full reduction
    z = z - s                                       # binary with a 0-d tensor
    h = torch.matmul(t.m, t.w)                      # GEMM
    h = h.view(-1).view(t.m.shape).transpose(0, 1)  # views (3)
    h = h.contiguous()                              # copy
    h = F.softmax(h, dim=-1)                        # softmax
    r = h.mean(dim=0)                               # dim reduction
    q = torch.index_select(h, 0, t.idx)             # gather
    e = torch.empty_like(t.a)                       # fresh allocation
    e.copy_(z)                                      # in-place copy
    c = torch.cat([r, q.flatten()])                 # flatten view, cat (2)
    k = torch.rsqrt(c.abs() + 1.0)                  # unary, scalar, unary (3)
    o = torch.zeros(4, device=t.a.device)           # fresh allocation
    o.add_(k[:4])                                   # slice view, in-place add (2)
    u = F.silu(e) * torch.sigmoid(z)                # unary, unary, binary (3)
    del x, y, z, s, h, r, q, e, c, k, o, u          # frees
    return MIX_OPS


def mix_probe(dev: torch.device, window_s: float, n: int = 256) -> tuple[float, float]:
    """(mean, median) host seconds per op of the mixed-op chain on dev."""
    t = _MixInputs(dev, n)
    with torch.no_grad():
        _mix_once(t)   # first calls out of the window
        synchronize(dev)
        mean, p50 = run_window(_timed(lambda: _mix_once(t), dev), window_s, PROBE_MAX_REPS)
    return mean / MIX_OPS, p50 / MIX_OPS


def cpuop_probe(window_s: float) -> tuple[float, float]:
    """(mean, median) host seconds per op of the mix on CPU tensors of 4 elements (no device launch)."""
    cpu = torch.device("cpu")
    t = _MixInputs(cpu, 4)
    with torch.no_grad():
        _mix_once(t)
        mean, p50 = run_window(_timed(lambda: _mix_once(t), cpu), window_s, PROBE_MAX_REPS)
    return mean / MIX_OPS, p50 / MIX_OPS


class _RefBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 2 * d, bias=False)
        self.gate = nn.Linear(d, 2 * d, bias=False)
        self.down = nn.Linear(2 * d, d, bias=False)

    def forward(self, x_B1D: torch.Tensor, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor) -> torch.Tensor:
        B, _, D = x_B1D.shape
        q, k, v = self.qkv(self.norm1(x_B1D)).split(D, dim=-1)
        q, k, v = (a.view(B, 1, self.heads, D // self.heads).transpose(1, 2) for a in (q, k, v))
        k = torch.cat([k_BHTd, k], dim=2)
        v = torch.cat([v_BHTd, v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v)
        x_B1D = x_B1D + self.out(a.transpose(1, 2).reshape(B, 1, D))
        h = self.norm2(x_B1D)
        return x_B1D + self.down(F.silu(self.gate(h)) * self.up(h))


class RefModel(nn.Module):
    """The fixed reference model: 4 pre-norm blocks of width 128, 4 heads, a 512-token vocabulary; one token a call
    against a fixed 64-token cache (concatenated, not written: every call does the same work)."""

    def __init__(self, d: int = 128, heads: int = 4, layers: int = 4, vocab: int = 512, cache: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(_RefBlock(d, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.cache_shape = (1, heads, cache, d // heads)

    def forward(self, token_B1: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        x = self.embed(token_B1)
        for blk, (k, v) in zip(self.blocks, kv):
            x = blk(x, k, v)
        return self.head(self.norm(x)).argmax(dim=-1)


def refmodel_probe(dev: torch.device, window_s: float) -> tuple[float, float]:
    """(mean, median) host seconds of one eager RefModel forward on dev (weights seeded: the same model everywhere)."""
    torch.manual_seed(0)
    model = RefModel().to(dev).eval()
    kv = [(torch.zeros(model.cache_shape, device=dev), torch.zeros(model.cache_shape, device=dev))
          for _ in model.blocks]
    token = torch.zeros(1, 1, dtype=torch.long, device=dev)
    with torch.no_grad():
        model(token, kv)
        synchronize(dev)
        return run_window(_timed(lambda: model(token, kv), dev), window_s, PROBE_MAX_REPS)


CANDIDATES = ("launch_3ms", "launch", "mix", "refmodel", "cpuop", "py")


def probe_set(dev: torch.device, window_s: float) -> dict:
    """Every candidate once, in CANDIDATES order: name -> (mean, median) host seconds per unit. launch_3ms is the old
    probe at host_steps' window (3 ms); the others run window_s each."""
    return {
        "launch_3ms": launch_probe(dev, 0.003),
        "launch": launch_probe(dev, window_s),
        "mix": mix_probe(dev, window_s),
        "refmodel": refmodel_probe(dev, window_s),
        "cpuop": cpuop_probe(window_s),
        "py": py_probe(window_s),
    }


# s24probe candidate 2 (docs/notes/s24probe_rule.md "Candidate 2"): each kind as a short probe right before a step, the
# inputs built once per device (outside every window), so the probe measures only its own repetitions.
def each_probers(dev: torch.device) -> dict:
    """EACH_KINDS -> a function (window_s) -> (mean, median) host seconds per unit, the same units as probe_set's."""
    mix_inputs = _MixInputs(dev, 256)
    cpu_inputs = _MixInputs(torch.device("cpu"), 4)
    torch.manual_seed(0)
    model = RefModel().to(dev).eval()
    kv = [(torch.zeros(model.cache_shape, device=dev), torch.zeros(model.cache_shape, device=dev))
          for _ in model.blocks]
    token = torch.zeros(1, 1, dtype=torch.long, device=dev)
    cpu = torch.device("cpu")

    def per_op(inputs, where):
        def run(window_s):
            with torch.no_grad():
                mean, p50 = run_window(_timed(lambda: _mix_once(inputs), where), window_s, PROBE_MAX_REPS)
            return mean / MIX_OPS, p50 / MIX_OPS
        return run

    def ref(window_s):
        with torch.no_grad():
            return run_window(_timed(lambda: model(token, kv), dev), window_s, PROBE_MAX_REPS)

    with torch.no_grad():   # first calls of each, out of every window
        _mix_once(mix_inputs)
        _mix_once(cpu_inputs)
        model(token, kv)
        synchronize(dev)
    return {"launch": lambda w: launch_probe(dev, w), "mix": per_op(mix_inputs, dev), "refmodel": ref,
            "cpuop": per_op(cpu_inputs, cpu), "py": py_probe}


EACH_KINDS = ("launch", "mix", "refmodel", "cpuop", "py")

"""The load runs of each campaign plan (torch-free).

`gpu1`: one GPU, v3-slice-2l (V3 layer shapes, 2 layers, 32 experts: ~2.5 B parameters, so decode
is weight-read bound and prefill compute bound), BF16, CUDA graphs. `ep2`: the same model with
expert parallelism over two GPUs (16 experts a rank) and data-parallel attention, eager.
`tiny`/`tiny-ep2`: the catalog's tiny model for CPU dry runs and tests (hard caps of 30 s, so a
loaded CPU drains its few requests rather than cutting them off).

Held out (split=holdout; a fit must never see them): configurations between fitted ones, so a
held-out run is interpolation in load, never a new regime: in gpu1 a closed-loop concurrency and
a Poisson rate of the short class and a concurrency of the long class; in ep2 a concurrency of
the short class and the Poisson rate of the long class. The one graphs-off run is fitted (the
twin's CUDA-graph knob needs a measured eager decode).
Each run issues requests for `load_s` seconds, then drains; `max_duration_s` is a hard cap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunSpec:
    name: str
    arrival: str  # "poisson" | "closed"
    input_len: str  # "fixed:N" | "uniform:LO-HI" | "list:A,B,C"
    output_len: str
    rate_per_s: float = 0.0  # poisson: requests per second over all ranks
    concurrency: int = 0  # closed: requests in flight over all ranks
    load_s: float = 2.5
    max_duration_s: float = 4.5
    split: str = "fit"
    cuda_graphs: bool = True
    seed: int = 0
    pin: str = ""  # the main thread's CPU pinning (real/serve/hostpin.PIN_MODES); "" = the CLI's --pin
    warm_shapes: int = 0  # before the run, one eager forward of every flat batch size up to this (Engine.warm_shapes)
    co_runner_nice: int | None = None  # a busy process on the main thread's CPUs at this nice (hostspeed.CoRunner)

    def __post_init__(self):
        if self.arrival not in ("poisson", "closed"):
            raise ValueError(f"run {self.name}: arrival must be 'poisson' or 'closed', got {self.arrival!r}")
        if self.split not in ("fit", "holdout"):
            raise ValueError(f"run {self.name}: split must be 'fit' or 'holdout', got {self.split!r}")
        if self.arrival == "poisson" and self.rate_per_s <= 0:
            raise ValueError(f"run {self.name}: poisson needs rate_per_s > 0")
        if self.arrival == "closed" and self.concurrency <= 0:
            raise ValueError(f"run {self.name}: closed needs concurrency > 0")
        if self.pin not in ("", "none", "numa", "core"):
            raise ValueError(f"run {self.name}: pin must be '', 'none', 'numa' or 'core', got {self.pin!r}")
        if self.co_runner_nice is not None and (self.pin != "core" or not 0 <= self.co_runner_nice <= 19):
            raise ValueError(f"run {self.name}: co_runner_nice needs pin 'core' (the co-runner shares the main "
                             f"thread's one CPU) and a nice of 0..19, got pin {self.pin!r}, nice {self.co_runner_nice!r}")


@dataclass(frozen=True)
class Plan:
    model: str
    page_size: int
    num_pages: int
    token_budget: int
    max_running: int  # per rank
    max_context: int
    runs: tuple[RunSpec, ...]
    warmup: tuple[RunSpec, ...] = field(default=())
    dtype_cpu: str = "float32"  # CPU dry runs compare against float references
    dtype_gpu: str = "bfloat16"


SHORT_IN, SHORT_OUT = "uniform:128-512", "fixed:128"
LONG_IN, LONG_OUT = "uniform:1536-2048", "fixed:64"

GPU1 = Plan(
    model="v3-slice-2l", page_size=64, num_pages=4096, token_budget=2048, max_running=64,
    max_context=2112,
    warmup=(RunSpec("warmup-short", "closed", SHORT_IN, "fixed:16", concurrency=64, load_s=0.5,
                    max_duration_s=5.0, seed=99),
            RunSpec("warmup-long", "closed", LONG_IN, "fixed:8", concurrency=8, load_s=0.3,
                    max_duration_s=5.0, seed=98)),
    runs=(
        RunSpec("g1-closed-c1-short", "closed", SHORT_IN, SHORT_OUT, concurrency=1),
        RunSpec("g1-closed-c8-short", "closed", SHORT_IN, SHORT_OUT, concurrency=8),
        RunSpec("g1-closed-c24-short", "closed", SHORT_IN, SHORT_OUT, concurrency=24, split="holdout"),
        RunSpec("g1-closed-c64-short", "closed", SHORT_IN, SHORT_OUT, concurrency=64),
        RunSpec("g1-closed-c16-short-eager", "closed", SHORT_IN, SHORT_OUT, concurrency=16,
                cuda_graphs=False),
        RunSpec("g1-poisson-r10-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=10.0),
        RunSpec("g1-poisson-r40-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=40.0, split="holdout"),
        RunSpec("g1-poisson-r120-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=120.0),
        RunSpec("g1-closed-c2-long", "closed", LONG_IN, LONG_OUT, concurrency=2),
        RunSpec("g1-closed-c8-long", "closed", LONG_IN, LONG_OUT, concurrency=8, split="holdout"),
        RunSpec("g1-closed-c16-long", "closed", LONG_IN, LONG_OUT, concurrency=16),
        RunSpec("g1-poisson-r8-long", "poisson", LONG_IN, LONG_OUT, rate_per_s=8.0),
    ),
)

EP2 = Plan(
    model="v3-slice-2l", page_size=64, num_pages=4096, token_budget=2048, max_running=64,
    max_context=2112,
    warmup=(RunSpec("warmup-short", "closed", SHORT_IN, "fixed:16", concurrency=32, load_s=0.5,
                    max_duration_s=5.0, seed=99),
            RunSpec("warmup-long", "closed", LONG_IN, "fixed:8", concurrency=8, load_s=0.3,
                    max_duration_s=5.0, seed=98)),
    runs=(
        RunSpec("ep2-closed-c16-short", "closed", SHORT_IN, SHORT_OUT, concurrency=16, load_s=3.5,
                max_duration_s=5.5),
        RunSpec("ep2-closed-c48-short", "closed", SHORT_IN, SHORT_OUT, concurrency=48, load_s=3.5,
                max_duration_s=5.5, split="holdout"),
        RunSpec("ep2-closed-c128-short", "closed", SHORT_IN, SHORT_OUT, concurrency=128, load_s=3.5,
                max_duration_s=5.5),
        RunSpec("ep2-poisson-r60-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=60.0, load_s=3.5,
                max_duration_s=5.5),
        RunSpec("ep2-closed-c8-long", "closed", LONG_IN, LONG_OUT, concurrency=8, load_s=3.5,
                max_duration_s=5.5),
        RunSpec("ep2-poisson-r10-long", "poisson", LONG_IN, LONG_OUT, rate_per_s=10.0, load_s=3.5,
                max_duration_s=5.5, split="holdout"),
    ),
)

# Low-load runs (issue 15, s7srv campaign). Fit runs: more prompt iterations at low load, where
# eager prompt iterations vary by milliseconds, so the engine fit's per-iteration spread rests on
# hundreds of them rather than tens; other seeds than the runs above, loads away from the held-out
# ones (gpu1 r40-short, ep2 c48-short, r10-long). Held-out runs (r30-short, c12-short; ep2 r30-short):
# configurations no run above has, a fresh check of the spread model chosen before they were measured.
GPU1_LOWLOAD = dataclasses.replace(GPU1, runs=(
    RunSpec("g1lo-closed-c1-short", "closed", SHORT_IN, SHORT_OUT, concurrency=1, load_s=5.0,
            max_duration_s=6.5, seed=11),
    RunSpec("g1lo-poisson-r5-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=5.0, load_s=7.0,
            max_duration_s=8.5, seed=13),
    RunSpec("g1lo-poisson-r30-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=30.0, load_s=5.0,
            max_duration_s=6.5, seed=18, split="holdout"),
    RunSpec("g1lo-closed-c4-short", "closed", SHORT_IN, SHORT_OUT, concurrency=4, load_s=5.0,
            max_duration_s=6.5, seed=12),
    RunSpec("g1lo-poisson-r20-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=20.0, load_s=6.0,
            max_duration_s=7.5, seed=14),
    RunSpec("g1lo-closed-c12-short", "closed", SHORT_IN, SHORT_OUT, concurrency=12, load_s=4.0,
            max_duration_s=5.5, seed=19, split="holdout"),
    RunSpec("g1lo-poisson-r70-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=70.0, load_s=5.0,
            max_duration_s=6.5, seed=15),
    RunSpec("g1lo-poisson-r4-long", "poisson", LONG_IN, LONG_OUT, rate_per_s=4.0, load_s=6.0,
            max_duration_s=7.5, seed=16),
    RunSpec("g1lo-closed-c1-long", "closed", LONG_IN, LONG_OUT, concurrency=1, load_s=3.0,
            max_duration_s=4.5, seed=17),
))

EP2_LOWLOAD = dataclasses.replace(EP2, runs=(
    RunSpec("ep2lo-poisson-r4-long", "poisson", LONG_IN, LONG_OUT, rate_per_s=4.0, load_s=6.0,
            max_duration_s=7.5, seed=21),
    RunSpec("ep2lo-poisson-r20-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=20.0, load_s=5.0,
            max_duration_s=6.5, seed=22),
    RunSpec("ep2lo-poisson-r30-short", "poisson", SHORT_IN, SHORT_OUT, rate_per_s=30.0, load_s=4.0,
            max_duration_s=5.5, seed=26, split="holdout"),
    RunSpec("ep2lo-closed-c4-short", "closed", SHORT_IN, SHORT_OUT, concurrency=4, load_s=4.0,
            max_duration_s=5.5, seed=23),
    RunSpec("ep2lo-closed-c2-long", "closed", LONG_IN, LONG_OUT, concurrency=2, load_s=4.0,
            max_duration_s=5.5, seed=24),
    RunSpec("ep2lo-closed-c96-short", "closed", SHORT_IN, SHORT_OUT, concurrency=96, load_s=3.0,
            max_duration_s=5.0, seed=25),
))



def _pinned_pairs(runs, prefix: str, pins: tuple[str, str], load_s: float, drain_s: float) -> tuple[RunSpec, ...]:
    """Each run twice, under both pinnings (alternating which goes first, so drift over the session
    falls on both alike), renamed `<prefix>-<rest of name>-<pin>`, `load_s` of load and the same
    seed as the original (the same request stream, cut at load_s)."""
    out = []
    for k, r in enumerate(runs):
        rest = r.name.split("-", 1)[1]
        for pin in (pins if k % 2 == 0 else pins[::-1]):
            out.append(dataclasses.replace(r, name=f"{prefix}-{rest}-{pin}", pin=pin, load_s=load_s,
                                           max_duration_s=load_s + drain_s))
    return tuple(out)


# Issue 15, s8srv campaign: is real/serve's speed set by where its host thread runs? Every run twice,
# the main thread unpinned ('none') or pinned to one CPU of its GPU's ('core'; 'numa', its share of
# the GPU-local CPUs, was half of one NUMA node's 64 on the first 2xH100 host: no test), with the
# per-iteration host / GPU split, CPU ids and the GPU's SM clock recorded (--timing). EP2: all twelve configurations
# measured so far (held-out ones first, then the fit ones, with their original seeds and splits), so
# the engine fit and its validation can take whichever condition reproduces. One GPU: the Poisson
# short-prompt runs whose TTFT the twin misses (held-out r30, r40) and fit runs around them.
_EP2_ALL = {r.name: r for r in (*EP2.runs, *EP2_LOWLOAD.runs)}
_EP2_PAIRS = _pinned_pairs(
    [_EP2_ALL[n] for n in ("ep2-closed-c48-short", "ep2-poisson-r10-long", "ep2lo-poisson-r30-short",
                           "ep2-closed-c16-short", "ep2-closed-c128-short", "ep2-poisson-r60-short",
                           "ep2-closed-c8-long", "ep2lo-poisson-r4-long", "ep2lo-poisson-r20-short",
                           "ep2lo-closed-c4-short", "ep2lo-closed-c2-long", "ep2lo-closed-c96-short")],
    "ep2s8", ("none", "core"), load_s=1.75, drain_s=1.25)
# the EP2 engine runs every flat batch size up to EP2_WARM_TOKENS before its first run (both pinnings
# alike), so a size's first forward is no part of either condition's speed
EP2_WARM_TOKENS = 576
EP2_PIN = dataclasses.replace(EP2, runs=(dataclasses.replace(_EP2_PAIRS[0], warm_shapes=EP2_WARM_TOKENS),
                                         *_EP2_PAIRS[1:]))
# One GPU: is the run-to-run level of the eager prompt iterations the one-off cost of a flat batch
# size's first forward? The five configurations (original seeds and splits), first as the engine
# comes (sizes first met during the runs), then again after Engine.warm_shapes ran every size up to
# WARM_TOKENS (short prompts of <= 512 tokens beside <= 64 decode rows, and more), unpinned.
WARM_TOKENS = 640
_GPU1_ALL = {r.name: r for r in (*GPU1.runs, *GPU1_LOWLOAD.runs)}
_GPU1_S8 = [dataclasses.replace(_GPU1_ALL[n], load_s=3.0, max_duration_s=4.5, pin="none")
            for n in ("g1lo-poisson-r30-short", "g1-poisson-r40-short", "g1-poisson-r10-short",
                      "g1lo-poisson-r20-short", "g1lo-closed-c1-short")]
GPU1_PIN = dataclasses.replace(GPU1, runs=(
    *(dataclasses.replace(r, name="g1s8-" + r.name.split("-", 1)[1] + "-cold") for r in _GPU1_S8),
    *(dataclasses.replace(r, name="g1s8-" + r.name.split("-", 1)[1] + "-warm", warm_shapes=WARM_TOKENS)
      for r in _GPU1_S8)))

# Issue 15, s12srv campaign: does a one-GPU engine's eager prompt iteration get faster as its process
# runs prompt iterations, beyond the first-met sizes the twin tracks? The short-prompt Poisson runs'
# prompt iterations take 1.2x (r5, r10: each its session's first Poisson run), 1.04-1.18x (held-out
# r30, r40: the second), 0.88-0.95x (r20, r70, r120: later) the engine fit, in session order, not
# load order. Here one stream (held-out r30's seed 18, so from the second run on every size is one the
# process ran) run REPEAT_RUNS times back to back in one process, then once more at r70's load: a
# level that keeps falling over the identical repeats is the process warming up (a term by prompt
# iterations run); a flat level from the second on is the first-met sizes alone; no order but a
# spread is run-to-run noise. Each run keeps its configuration's split and seed (r30 held out, r70 fit),
# so no held-out configuration is ever fitted.
REPEAT_RUNS = 4
_R30 = _GPU1_ALL["g1lo-poisson-r30-short"]
GPU1_REPEAT = dataclasses.replace(GPU1, runs=(
    *(dataclasses.replace(_R30, name=f"g1rep-poisson-r30-short-{k}", load_s=3.0, max_duration_s=4.5, pin="none")
      for k in range(1, REPEAT_RUNS + 1)),
    dataclasses.replace(_GPU1_ALL["g1lo-poisson-r70-short"], name="g1rep-poisson-r70-short", load_s=3.0,
                        max_duration_s=4.5, pin="none")))

# Issue 15, s13srv campaign: the host's speed as a measured input. Every run bracketed by the host
# probe (real/serve/hostspeed.py, --host-probe), the main thread pinned to one CPU of its GPU's
# ('core': s8srv found pinning moves no run's speed consistently, and the dose needs it). Fit
# configurations twice, as the host comes and with a controlled dose of host slowness (a busy
# co-runner on the main thread's CPU at nice SLOW_NICE: ~1.5x slower host work), so the fit can
# say how iteration time follows the probe; held-out configurations as the host comes (and, where
# time is left, one or two under the dose): their original seeds and splits, SLOW_LOAD_S of load.
# Order: each fit pair, then held-out runs between them, the dosed held-out runs last (the budget
# cuts from the end).
SLOW_NICE = 3
S13_LOAD_S, S13_DRAIN_S = 2.5, 1.5


def _s13(run: RunSpec, prefix: str, slow: bool, load_s: float, drain_s: float) -> RunSpec:
    rest = run.name.split("-", 1)[1]
    return dataclasses.replace(run, name=f"{prefix}-{rest}{'-slow' if slow else ''}", pin="core",
                               load_s=load_s, max_duration_s=load_s + drain_s,
                               co_runner_nice=SLOW_NICE if slow else None)


def _s13_runs(all_runs: dict, prefix: str, fit: list[str], held: list[str], held_slow: list[str],
              load_s: float = S13_LOAD_S, drain_s: float = S13_DRAIN_S) -> tuple:
    out = []
    one = lambda name, slow: _s13(all_runs[name], prefix, slow, load_s, drain_s)  # noqa: E731
    for k, name in enumerate(fit):
        pair = [one(name, False), one(name, True)]
        out.extend(pair if k % 2 == 0 else pair[::-1])   # alternate which goes first (drift on both alike)
        out.extend(one(h, False) for h in held[k::len(fit)])
    out.extend(one(h, True) for h in held_slow)
    return tuple(out)


GPU1_HOST = dataclasses.replace(GPU1, runs=_s13_runs(
    _GPU1_ALL, "g1s13", fit=["g1lo-poisson-r20-short", "g1-closed-c8-short", "g1-closed-c2-long"],
    held=["g1lo-poisson-r30-short", "g1-poisson-r40-short", "g1-closed-c8-long", "g1-closed-c24-short",
          "g1lo-closed-c12-short"],
    held_slow=["g1lo-poisson-r30-short", "g1-closed-c8-long"]))
EP2_HOST = dataclasses.replace(EP2, runs=_s13_runs(
    _EP2_ALL, "ep2s13", fit=["ep2lo-poisson-r20-short", "ep2-closed-c16-short", "ep2-closed-c8-long"],
    held=["ep2lo-poisson-r30-short", "ep2-closed-c48-short", "ep2-poisson-r10-long"],
    held_slow=["ep2lo-poisson-r30-short"]))

# Issue 15, s19srv campaign: does an EP2 engine's prompt iteration get faster as its process runs
# short-prompt runs (group B: the held-out ep2lo-poisson-r30-short, its process's second short-prompt run,
# runs faster than the fit's first-size terms say)? The one-GPU repeat (s12srv) found no warming beyond
# first-met sizes; EP2 was never repeated. The low-load session's first run (fit r4-long, seed 21), then fit
# r20-short's stream (seed 22: the session's first short-prompt run) EP2_REPEAT_RUNS times back to back in one
# process (from the second on every exact size is one the process ran), then fit c4-short's stream (seed 23,
# another stream after them): a level that keeps falling over identical repeats is the process warming up; a
# level flat from the second repeat is the first-met sizes alone. Fit configurations only (never a held-out
# seed), unpinned as the committed low-load session ran.
EP2_REPEAT_RUNS = 4
EP2_REPEAT_LOAD_S, EP2_REPEAT_DRAIN_S = 3.0, 1.5


def _ep2_repeat(run: RunSpec, name: str) -> RunSpec:
    return dataclasses.replace(run, name=name, load_s=EP2_REPEAT_LOAD_S,
                               max_duration_s=EP2_REPEAT_LOAD_S + EP2_REPEAT_DRAIN_S, pin="none")


EP2_REPEAT = dataclasses.replace(EP2, runs=(
    _ep2_repeat(_EP2_ALL["ep2lo-poisson-r4-long"], "ep2rep-poisson-r4-long"),
    *(_ep2_repeat(_EP2_ALL["ep2lo-poisson-r20-short"], f"ep2rep-poisson-r20-short-{k}")
      for k in range(1, EP2_REPEAT_RUNS + 1)),
    _ep2_repeat(_EP2_ALL["ep2lo-closed-c4-short"], "ep2rep-closed-c4-short")))

# Issue 15, s21srvnew campaign: load runs of models no load run ever served, predicted before they run
# (calibration/prereg_serve.py, committed first). Session s20new's three MLA slices of other families' MoE
# shapes (twin/data/models.toml), each in its own engine process with GPU1's engine settings (page 64, 4096
# pages, token budget 2048, 64 running, CUDA graphs), its warm-up loads, the host probe around every run, the
# main thread pinned to one CPU of its GPU's (as s13srv). A length mix no fit run had (prompts 192-768, outputs
# 32-160 tokens, both uniform), at two Poisson rates and one closed-loop concurrency, every run held out. The
# first run first runs an eager forward of every flat batch size up to S21_WARM_TOKENS (Engine.warm_shapes: the
# longest prompt beside a full graph batch of 64 decode rows), so an iteration of one prompt is never of a size
# the process meets first, whatever earlier runs met.
S21_MODELS = ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice")
S21_IN, S21_OUT = "uniform:192-768", "uniform:32-160"
S21_WARM_TOKENS = 832
S21_LOAD_S, S21_DRAIN_S = 2.5, 1.5
_S21_RUNS = (
    RunSpec("poisson-r8-mid", "poisson", S21_IN, S21_OUT, rate_per_s=8.0, seed=41),
    RunSpec("poisson-r24-mid", "poisson", S21_IN, S21_OUT, rate_per_s=24.0, seed=42),
    RunSpec("closed-c16-mid", "closed", S21_IN, S21_OUT, concurrency=16, seed=43),
)


def s21_short(model: str) -> str:
    """'qwen3moe-mla-slice' -> 'qwen3moe' (the run names' model part)."""
    return model.split("-", 1)[0]


def _s21_plan(model: str, runs=_S21_RUNS, warm_tokens: int = S21_WARM_TOKENS, load_s: float = S21_LOAD_S,
              drain_s: float = S21_DRAIN_S, base: "Plan | None" = None, prefix: str = "n21") -> "Plan":
    named = tuple(dataclasses.replace(r, name=f"{prefix}-{s21_short(model)}-{r.name}", split="holdout", pin="core",
                                      load_s=load_s, max_duration_s=load_s + drain_s,
                                      warm_shapes=warm_tokens if k == 0 else 0)
                  for k, r in enumerate(runs))
    return dataclasses.replace(base or GPU1, model=model, runs=named)


S21_PLANS = {f"gpu1-new-{s21_short(m)}": _s21_plan(m) for m in S21_MODELS}
# s21srvnew2: the same configurations with fresh seeds (fresh request streams), run names n21b-*: the records
# that judge docs/notes/s21srvnew2_rule.md (the engine tables' launch terms scaled by the model's layers)
_S21B_RUNS = tuple(dataclasses.replace(r, seed=r.seed + 10) for r in _S21_RUNS)
S21B_PLANS = {f"gpu1-new2-{s21_short(m)}": _s21_plan(m, runs=_S21B_RUNS, prefix="n21b") for m in S21_MODELS}
# s22ttft (docs/notes/s22ttft_rule.md): the same models and length mix at rates and a concurrency no run had (Poisson
# 16/s and 32/s, a closed loop of 24), fresh seeds 61-63, run names n22-*: the records that judge whether a warmed
# process's sizes above its warm pass pay a first-met stall (calibration/prereg_serve.py S22, registered first)
_S22_RUNS = (RunSpec("poisson-r16-mid", "poisson", S21_IN, S21_OUT, rate_per_s=16.0, seed=61),
             RunSpec("poisson-r32-mid", "poisson", S21_IN, S21_OUT, rate_per_s=32.0, seed=62),
             RunSpec("closed-c24-mid", "closed", S21_IN, S21_OUT, concurrency=24, seed=63))
S22_PLANS = {f"gpu1-s22-{s21_short(m)}": _s21_plan(m, runs=_S22_RUNS, prefix="n22") for m in S21_MODELS}
# s23srvh (docs/notes/s23srvh_rule.md): the same models and length mix at rates and a concurrency no run had (Poisson
# 12/s and 28/s, a closed loop of 20), fresh seeds 71-73, run names n23-*, each run's load preceded by the pause
# probe (--pause-probe): the records that judge the graph-decode host term and the host-stall model
_S23_RUNS = (RunSpec("poisson-r12-mid", "poisson", S21_IN, S21_OUT, rate_per_s=12.0, seed=71),
             RunSpec("poisson-r28-mid", "poisson", S21_IN, S21_OUT, rate_per_s=28.0, seed=72),
             RunSpec("closed-c20-mid", "closed", S21_IN, S21_OUT, concurrency=20, seed=73))
# s23closed (docs/notes/s23closed_rule.md, third candidate): the same models, engine and mix at a Poisson rate and two
# closed-loop concurrencies, fresh seeds 71-73, run names n23-*: fresh held-out records for the closed loops' start
# (plans gpu1-s23c-*: s23srvh's gpu1-s23-* were merged beside them; both used seeds 71-73, at other rates)
_S23C_RUNS = (RunSpec("poisson-r24-mid", "poisson", S21_IN, S21_OUT, rate_per_s=24.0, seed=71),
             RunSpec("closed-c16-mid", "closed", S21_IN, S21_OUT, concurrency=16, seed=72),
             RunSpec("closed-c24-mid", "closed", S21_IN, S21_OUT, concurrency=24, seed=73))
S23_PLANS = {f"gpu1-s23-{s21_short(m)}": _s21_plan(m, runs=_S23_RUNS, prefix="n23") for m in S21_MODELS}
S23C_PLANS = {f"gpu1-s23c-{s21_short(m)}": _s21_plan(m, runs=_S23C_RUNS, prefix="n23") for m in S21_MODELS}

# s24eager (docs/notes/s24eager_rule.md): models no load run served (v2-lite-slice: 4 layers, 16 heads, one dense
# layer, 64 experts + 2 shared; v3-slice-1l: one MoE layer of V3, 128 heads) in the same engine and mix, at a Poisson
# rate and two closed-loop concurrencies, seeds 81-83, run names n24-<short>-*: the fresh held-out records that judge
# the eager iteration's measured host term (real/serve/eagerhost.py measures it on the fit models)
S24_MODELS = {"v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l"}
_S24_RUNS = (RunSpec("poisson-r20-mid", "poisson", S21_IN, S21_OUT, rate_per_s=20.0, seed=81),
             RunSpec("closed-c16-mid", "closed", S21_IN, S21_OUT, concurrency=16, seed=82),
             RunSpec("closed-c24-mid", "closed", S21_IN, S21_OUT, concurrency=24, seed=83))


def _s24_plan(model: str, short: str) -> "Plan":
    """GPU1's engine for `model`, the s24 runs named n24-<short>-<run>, held out, pinned, the first warmed."""
    named = tuple(dataclasses.replace(r, name=f"n24-{short}-{r.name}", split="holdout", pin="core", load_s=S21_LOAD_S,
                                      max_duration_s=S21_LOAD_S + S21_DRAIN_S,
                                      warm_shapes=S21_WARM_TOKENS if k == 0 else 0)
                  for k, r in enumerate(_S24_RUNS))
    return dataclasses.replace(GPU1, model=model, runs=named)


S24_PLANS = {f"gpu1-s24-{short}": _s24_plan(m, short) for m, short in S24_MODELS.items()}
# s24pipe (docs/notes/s24pipe_rule.md): fresh held-out records for the eager iteration as a launch/kernel pipeline:
# bench-small (4 layers, 8 heads, hidden 1,024, 16 experts of width 256: no load run served it; host-paced) in the
# same engine and mix, and mixtral-mla-slice (its experts 14,336 wide: the longest GPU tail after the last launch) at a
# rate and two concurrencies no record of it holds (Poisson 20/s, closed loops of 12 and 32), seeds 91-96, run names
# n24p-<short>-*
_S24P_RUNS = {"bench-small": (RunSpec("poisson-r20-mid", "poisson", S21_IN, S21_OUT, rate_per_s=20.0, seed=91),
                              RunSpec("closed-c16-mid", "closed", S21_IN, S21_OUT, concurrency=16, seed=92),
                              RunSpec("closed-c24-mid", "closed", S21_IN, S21_OUT, concurrency=24, seed=93)),
              "mixtral-mla-slice": (RunSpec("poisson-r20-mid", "poisson", S21_IN, S21_OUT, rate_per_s=20.0, seed=94),
                                    RunSpec("closed-c12-mid", "closed", S21_IN, S21_OUT, concurrency=12, seed=95),
                                    RunSpec("closed-c32-mid", "closed", S21_IN, S21_OUT, concurrency=32, seed=96))}
S24P_MODELS = {"bench-small": "bench", "mixtral-mla-slice": "mixtral"}
S24P_PLANS = {f"gpu1-s24p-{short}": _s21_plan(m, runs=_S24P_RUNS[m], prefix="n24p") for m, short in S24P_MODELS.items()}
# s25v3pre (docs/notes/s25v3pre_rule.md): fresh held-out records for the eager engine's prompt kernels (math-SDPA core,
# routing passes, fp32 RoPE): v3-slice-2l (its prefill is the mispriced one) at prompt and output lengths no record of it
# holds (prompts 640-1280 tokens: between the fit's short 128-512 and long 1536-2048 classes; outputs 16-96) at a rate
# and concurrencies no record of it holds (Poisson 12/s, closed loops of 6 and 20), and qwen3moe-mla-slice at the same
# lengths (no record of it holds them; Poisson 12/s, closed loops of 8 and 20), in the s21srvnew engine (GPU1's
# settings, pinned, the first run warmed to the longest prompt beside 64 decode rows), seeds 101-106, run names n25v-*
S25V_IN, S25V_OUT = "uniform:640-1280", "uniform:16-96"
S25V_WARM_TOKENS = 1344
_S25V_RUNS = {"v3-slice-2l": (RunSpec("poisson-r12-long", "poisson", S25V_IN, S25V_OUT, rate_per_s=12.0, seed=101),
                              RunSpec("closed-c6-long", "closed", S25V_IN, S25V_OUT, concurrency=6, seed=102),
                              RunSpec("closed-c20-long", "closed", S25V_IN, S25V_OUT, concurrency=20, seed=103)),
              "qwen3moe-mla-slice": (RunSpec("poisson-r12-long", "poisson", S25V_IN, S25V_OUT, rate_per_s=12.0, seed=104),
                                     RunSpec("closed-c8-long", "closed", S25V_IN, S25V_OUT, concurrency=8, seed=105),
                                     RunSpec("closed-c20-long", "closed", S25V_IN, S25V_OUT, concurrency=20, seed=106))}
S25V_MODELS = {"v3-slice-2l": "v3s2l", "qwen3moe-mla-slice": "qwen3moe"}
S25V_PLANS = {f"gpu1-s25v-{short}": _s21_plan(m, runs=_S25V_RUNS[m], warm_tokens=S25V_WARM_TOKENS, prefix="n25v")
              for m, short in S25V_MODELS.items()}

# s25v3pre2 (docs/notes/s25v3pre2_rule.md, committed before these ran): set G, fresh held-out records for the engine's
# prompt terms on the models whose head-layers differ from the tables' fit model: v3-slice-2l (the fit model, a guard
# of "unchanged") at Poisson 14/s and a closed loop of 10, qwen3moe-mla-slice again at Poisson 18/s and a closed loop
# of 12, mixtral-mla-slice (32 heads x 1 layer, a serve-fit model set F did not hold) at Poisson 18/s and a closed loop
# of 10 (rates and concurrencies no run of the model had), prompts uniform 448-1088 and outputs 24-120 tokens (no load
# record holds these lengths), fresh seeds 111-116, run names n25w-*
S25W_IN, S25W_OUT = "uniform:448-1088", "uniform:24-120"
S25W_WARM_TOKENS = 1152
_S25W_RUNS = {"v3-slice-2l": (RunSpec("poisson-r14-g", "poisson", S25W_IN, S25W_OUT, rate_per_s=14.0, seed=111),
                              RunSpec("closed-c10-g", "closed", S25W_IN, S25W_OUT, concurrency=10, seed=112)),
              "qwen3moe-mla-slice": (RunSpec("poisson-r18-g", "poisson", S25W_IN, S25W_OUT, rate_per_s=18.0, seed=113),
                                     RunSpec("closed-c12-g", "closed", S25W_IN, S25W_OUT, concurrency=12, seed=114)),
              "mixtral-mla-slice": (RunSpec("poisson-r18-g", "poisson", S25W_IN, S25W_OUT, rate_per_s=18.0, seed=115),
                                    RunSpec("closed-c10-g", "closed", S25W_IN, S25W_OUT, concurrency=10, seed=116))}
S25W_MODELS = {"v3-slice-2l": "v3s2l", "qwen3moe-mla-slice": "qwen3moe", "mixtral-mla-slice": "mixtral"}
S25W_PLANS = {f"gpu1-s25w-{short}": _s21_plan(m, runs=_S25W_RUNS[m], warm_tokens=S25W_WARM_TOKENS, prefix="n25w")
              for m, short in S25W_MODELS.items()}

# s26start (docs/notes/s26start_rule.md, committed before these ran): set H, fresh held-out records for the eager prompt
# step's start and closing sync on models no set E-G held: qwen2moe-mla-slice (16 heads x 2 layers; sets A-C's lengths
# only), v2-lite-slice (16 heads x 4 layers, a dense layer) and v3-slice-1l (128 heads x 1 layer; set D's lengths only),
# at rates and concurrencies no run of the model had (Poisson 14/s and a closed loop of 10; Poisson 18/s and closed
# loops of 12), prompts uniform 320-960 and outputs 20-100 tokens (no load record holds these lengths), fresh seeds
# 121-126, each model's first run warmed to 1088 flat tokens, run names n26s-*
S26H_IN, S26H_OUT = "uniform:320-960", "uniform:20-100"
S26H_WARM_TOKENS = 1088
_S26H_RUNS = {"qwen2moe-mla-slice": (RunSpec("poisson-r14-h", "poisson", S26H_IN, S26H_OUT, rate_per_s=14.0, seed=121),
                                     RunSpec("closed-c10-h", "closed", S26H_IN, S26H_OUT, concurrency=10, seed=122)),
              "v2-lite-slice": (RunSpec("poisson-r18-h", "poisson", S26H_IN, S26H_OUT, rate_per_s=18.0, seed=123),
                                RunSpec("closed-c12-h", "closed", S26H_IN, S26H_OUT, concurrency=12, seed=124)),
              "v3-slice-1l": (RunSpec("poisson-r18-h", "poisson", S26H_IN, S26H_OUT, rate_per_s=18.0, seed=125),
                              RunSpec("closed-c12-h", "closed", S26H_IN, S26H_OUT, concurrency=12, seed=126))}
S26H_MODELS = {"qwen2moe-mla-slice": "qwen2moe", "v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l"}
S26H_PLANS = {f"gpu1-s26h-{short}": _s21_plan(m, runs=_S26H_RUNS[m], warm_tokens=S26H_WARM_TOKENS, prefix="n26s")
              for m, short in S26H_MODELS.items()}

# s26start round 2 (docs/notes/s26start2_rule.md, committed before these ran), one delivery on one GPU:
# (a) fitting load runs (split "fit", named fitting in advance) whose iterations (--timing: host_s, gpu_s) fit the eager
#     prompt step's host terms inside the serving loop (calibration.serve_load_host fit): the four serve-fit models
#     (h100/s24eager/fit's) at Poisson 16/s and a closed loop of 8, prompts uniform 128-1152 and outputs 16-128 tokens,
#     seeds 131-138, the first run warmed to 1216 flat tokens, run names n26f-*;
# (b) set I, fresh held-out records: the three models outside the fit (v2-lite-slice, v3-slice-1l, bench-small) at
#     Poisson 26/s and a closed loop of 14 (no run of these models had them), prompts uniform 96-480 and outputs 40-176
#     tokens (no load record holds these lengths), seeds 141-146, the first run warmed to 544 flat tokens, run names n26i-*
S26F_IN, S26F_OUT = "uniform:128-1152", "uniform:16-128"
S26F_WARM_TOKENS = 1216
S26F_MODELS = {"qwen3moe-mla-slice": "qwen3moe", "qwen2moe-mla-slice": "qwen2moe", "mixtral-mla-slice": "mixtral",
               "v3-slice-2l": "v3s2l"}
S26F_PLANS = {f"gpu1-s26f-{short}": dataclasses.replace(plan, runs=tuple(dataclasses.replace(r, split="fit") for r in plan.runs))
              for short, plan in ((short, _s21_plan(m, runs=(
                  RunSpec("poisson-r16-f", "poisson", S26F_IN, S26F_OUT, rate_per_s=16.0, seed=131 + 2 * k),
                  RunSpec("closed-c8-f", "closed", S26F_IN, S26F_OUT, concurrency=8, seed=132 + 2 * k)),
                  warm_tokens=S26F_WARM_TOKENS, prefix="n26f"))
                  for k, (m, short) in enumerate(S26F_MODELS.items()))}
S26I_IN, S26I_OUT = "uniform:96-480", "uniform:40-176"
S26I_WARM_TOKENS = 544
S26I_MODELS = {"v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "bench-small": "bench"}
S26I_PLANS = {f"gpu1-s26i-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-r26-i", "poisson", S26I_IN, S26I_OUT, rate_per_s=26.0, seed=141 + 2 * k),
    RunSpec("closed-c14-i", "closed", S26I_IN, S26I_OUT, concurrency=14, seed=142 + 2 * k)),
    warm_tokens=S26I_WARM_TOKENS, prefix="n26i") for k, (m, short) in enumerate(S26I_MODELS.items())}
# s27serve (docs/notes/s27serve_rule.md, committed before these ran): set J, fresh held-out records on one GPU that judge
# the graph decode replay's operator and row terms (calibration.serve_graph_ops): bench-small, v2-lite-slice and
# v3-slice-1l (4, 4 and 1 layers: the captured forwards farthest from the fitting models' either way) at Poisson 22/s
# and a closed loop of 18 (no run of these models had them), prompts uniform 160-640 and outputs 48-208 tokens (no load
# record holds these lengths; long outputs: decode-paced), seeds 151-156, the first run warmed to 704 flat tokens, run
# names n27j-*. Run without --timing (the judged figures are the engine's own; the campaign repeats them with --timing
# into a diagnostic folder, never judged).
S27J_IN, S27J_OUT = "uniform:160-640", "uniform:48-208"
S27J_WARM_TOKENS = 704
S27J_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l"}
S27J_PLANS = {f"gpu1-s27j-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-r22-j", "poisson", S27J_IN, S27J_OUT, rate_per_s=22.0, seed=151 + 2 * k),
    RunSpec("closed-c18-j", "closed", S27J_IN, S27J_OUT, concurrency=18, seed=152 + 2 * k)),
    warm_tokens=S27J_WARM_TOKENS, prefix="n27j") for k, (m, short) in enumerate(S27J_MODELS.items())}
# s27serve round 2 (docs/notes/s27serve2_rule.md, committed before these ran): set K, fresh held-out records on one GPU
# that judge the graph replay's per-operator floor (calibration.serve_graph_floor): bench-small, v2-lite-slice,
# v3-slice-1l and mixtral-mla-slice (captured forwards of 847, 780, 243 and 216 operators against the fit model's 403)
# at Poisson 11/s and a closed loop of 6 (low batches, where the floor weighs most; no run of these models had them),
# prompts uniform 256-768 and outputs 64-256 tokens (no load record holds these lengths), seeds 161-168, the first run
# warmed to 832 flat tokens, run names n27k-*, without --timing.
S27K_IN, S27K_OUT = "uniform:256-768", "uniform:64-256"
S27K_WARM_TOKENS = 832
S27K_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "mixtral-mla-slice": "mixtral"}
S27K_PLANS = {f"gpu1-s27k-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-r11-k", "poisson", S27K_IN, S27K_OUT, rate_per_s=11.0, seed=161 + 2 * k),
    RunSpec("closed-c6-k", "closed", S27K_IN, S27K_OUT, concurrency=6, seed=162 + 2 * k)),
    warm_tokens=S27K_WARM_TOKENS, prefix="n27k") for k, (m, short) in enumerate(S27K_MODELS.items())}

# s27serve round 3 (docs/notes/s27serve3_rule.md, committed before these ran): set L, fresh held-out records on one GPU
# that judge the per-operator floor on the card it was fitted on (calibration.serve_graph_floor_h200): the same four
# models as set K at Poisson 14/s and a closed loop of 5 (no run of these models had them), prompts uniform 208-720 and
# outputs 72-232 tokens (no load record holds these lengths), seeds 171-178, the first run warmed to 800 flat tokens,
# run names n27l-*, without --timing.
S27L_IN, S27L_OUT = "uniform:208-720", "uniform:72-232"
S27L_WARM_TOKENS = 800
S27L_PLANS = {f"gpu1-s27l-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-r14-l", "poisson", S27L_IN, S27L_OUT, rate_per_s=14.0, seed=171 + 2 * k),
    RunSpec("closed-c5-l", "closed", S27L_IN, S27L_OUT, concurrency=5, seed=172 + 2 * k)),
    warm_tokens=S27L_WARM_TOKENS, prefix="n27l") for k, (m, short) in enumerate(S27K_MODELS.items())}

# s28serve (docs/notes/s28serve_rule.md, committed before these ran): set M, fresh held-out records on one GPU that judge
# round 3's V-H200 again (calibration.serve_floor_rejudge: the per-operator floor in the H200 table): bench-small,
# v2-lite-slice, v3-slice-1l and mixtral-mla-slice at Poisson 9/s and a closed loop of 3 (no run of any model had
# these), prompts uniform 176-592 and outputs 56-216 tokens (no load record holds these lengths), seeds 181-188, 3.5 s
# of load a run, the first run warmed to 816 flat tokens, run names n28m-*; recorded without --timing, and
# bench-small's and v2-lite-slice's plans once more with it (real/campaigns/s28serve.sh's timing parts: evidence).
S28M_IN, S28M_OUT = "uniform:176-592", "uniform:56-216"
S28M_WARM_TOKENS = 816
S28M_LOAD_S = 3.5   # 1 s above the earlier sets' 2.5 s: some 30 requests at 9/s
S28M_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "mixtral-mla-slice": "mixtral"}
S28M_PLANS = {f"gpu1-s28m-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-r9-m", "poisson", S28M_IN, S28M_OUT, rate_per_s=9.0, seed=181 + 2 * k),
    RunSpec("closed-c3-m", "closed", S28M_IN, S28M_OUT, concurrency=3, seed=182 + 2 * k)),
    warm_tokens=S28M_WARM_TOKENS, load_s=S28M_LOAD_S, prefix="n28m") for k, (m, short) in enumerate(S28M_MODELS.items())}

# s28serve round 2 (docs/notes/s28serve2_rule.md, committed before these ran): set N, fresh held-out records on one GPU
# that judge ADOPT_WARM_PASS_AND_BUDGET (calibration.serve_warm_budget: a warmed process has met 1..warm_shapes and its
# budget's size, not the sizes between): bench-small and v2-lite-slice (the models whose first-met terms bite) at closed
# loops of 2 and 4 and Poisson 7/s (no run of either model had these), prompts uniform 240-720 and outputs 48-160 tokens
# (no load record holds these lengths), seeds 191-196, 3 s of load a run, the first run warmed to 672 flat tokens (its
# t=0 iteration of two prompts, 480-1440 tokens, lands above the pass), run names n28n-*; without --timing.
S28N_IN, S28N_OUT = "uniform:240-720", "uniform:48-160"
S28N_WARM_TOKENS = 672
S28N_LOAD_S = 3.0
S28N_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite"}
S28N_PLANS = {f"gpu1-s28n-{short}": _s21_plan(m, runs=(
    RunSpec("closed-c2-n", "closed", S28N_IN, S28N_OUT, concurrency=2, seed=191 + 3 * k),
    RunSpec("poisson-r7-n", "poisson", S28N_IN, S28N_OUT, rate_per_s=7.0, seed=192 + 3 * k),
    RunSpec("closed-c4-n", "closed", S28N_IN, S28N_OUT, concurrency=4, seed=193 + 3 * k)),
    warm_tokens=S28N_WARM_TOKENS, load_s=S28N_LOAD_S, prefix="n28n") for k, (m, short) in enumerate(S28N_MODELS.items())}
# s29serve (docs/notes/s29serve_rule.md, set O): the same four models as set M with a small warm pass (256 flat tokens)
# under prompts of 224-608 tokens, a closed loop of 1 (its t=0 prompt, after the idle before the run, of a size between
# the warm pass and the budget) and Poisson 3/s and 5/s (most prompt steps after an idle of 100 ms or more): loads,
# lengths and seeds (201-212) no record holds; 4 s of load a run, no --timing
S29O_IN, S29O_OUT = "uniform:224-608", "uniform:40-152"
S29O_WARM_TOKENS = 256
S29O_LOAD_S = 4.0
S29O_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "mixtral-mla-slice": "mixtral"}
S29O_PLANS = {f"gpu1-s29o-{short}": _s21_plan(m, runs=(
    RunSpec("closed-c1-o", "closed", S29O_IN, S29O_OUT, concurrency=1, seed=201 + 3 * k),
    RunSpec("poisson-r3-o", "poisson", S29O_IN, S29O_OUT, rate_per_s=3.0, seed=202 + 3 * k),
    RunSpec("poisson-r5-o", "poisson", S29O_IN, S29O_OUT, rate_per_s=5.0, seed=203 + 3 * k)),
    warm_tokens=S29O_WARM_TOKENS, load_s=S29O_LOAD_S, prefix="n29o") for k, (m, short) in enumerate(S29O_MODELS.items())}

# s30serve (docs/notes/s30serve_rule.md, set P): the same four models as set O with a warm pass of 272 flat tokens under
# prompts of 288-896 tokens (every prompt step, alone or with decode rows, a size between the pass and the budget), a
# closed loop of 7 (mixed steps: sizes first met mid-stream) and Poisson 2/s and 4/s (prompt steps after idle): loads,
# lengths and seeds (301-312) no record holds; 5 s of load a run, no --timing; the Poisson runs first (the process's
# sizes above the pass mostly unmet when they run). The same plans' engine process state
# (warm-up loads, then the pass) is what the first-met probe (real/serve/firstmet.py) measures, as fitting records.
S30P_IN, S30P_OUT = "uniform:288-896", "uniform:32-128"
S30P_WARM_TOKENS = 272
S30P_LOAD_S = 5.0
S30P_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "mixtral-mla-slice": "mixtral"}
S30P_PLANS = {f"gpu1-s30p-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-r2-p", "poisson", S30P_IN, S30P_OUT, rate_per_s=2.0, seed=301 + 3 * k),
    RunSpec("poisson-r4-p", "poisson", S30P_IN, S30P_OUT, rate_per_s=4.0, seed=302 + 3 * k),
    RunSpec("closed-c7-p", "closed", S30P_IN, S30P_OUT, concurrency=7, seed=303 + 3 * k)),
    warm_tokens=S30P_WARM_TOKENS, load_s=S30P_LOAD_S, prefix="n30p") for k, (m, short) in enumerate(S30P_MODELS.items())}

# s31look (docs/notes/s31look_rule.md, set Q): two probed models (bench-small, v2-lite-slice) and three the first-met probe
# never ran (qwen3moe-mla-slice, qwen2moe-mla-slice, v3-slice-2l), a warm pass of 288 flat tokens under prompts of
# 304-928 tokens (every prompt step a size between the pass and the budget), Poisson 2.5/s first (the process's sizes
# above the pass unmet), a closed loop of 9 (many sizes met mid-stream), then Poisson 3.5/s late in the process (after
# the loop's sizes: a fixed look-up keeps charging new sizes, a fading cost would not): loads, lengths and seeds (321-335)
# no record holds; 5 s of load a run, no --timing
S31Q_IN, S31Q_OUT = "uniform:304-928", "uniform:24-112"
S31Q_WARM_TOKENS = 288
S31Q_LOAD_S = 5.0
S31Q_MODELS = {"bench-small": "bench", "v2-lite-slice": "v2lite", "qwen3moe-mla-slice": "qwen3moe",
               "qwen2moe-mla-slice": "qwen2moe", "v3-slice-2l": "v3s2l"}
S31Q_PLANS = {f"gpu1-s31q-{short}": _s21_plan(m, runs=(
    RunSpec("poisson-early-q", "poisson", S31Q_IN, S31Q_OUT, rate_per_s=2.5, seed=321 + 3 * k),
    RunSpec("closed-c9-q", "closed", S31Q_IN, S31Q_OUT, concurrency=9, seed=322 + 3 * k),
    RunSpec("poisson-late-q", "poisson", S31Q_IN, S31Q_OUT, rate_per_s=3.5, seed=323 + 3 * k)),
    warm_tokens=S31Q_WARM_TOKENS, load_s=S31Q_LOAD_S, prefix="n31q") for k, (m, short) in enumerate(S31Q_MODELS.items())}

# s32cold (docs/notes/s32cold.md; fitting records, a probe): a process's first Poisson run against the same stream
# again and a fresh stream later in the process. Set Q's lengths and rate (Poisson 2.5/s, prompts 304-928, outputs
# 24-112, 5 s of load, the first run warmed to 288 flat tokens), seeds 341-342 no record holds: `cold` (the process's
# first run), `fresh` (a new stream: exact sizes new, the process no longer new), `again` (cold's stream once more: its
# sizes met). Run names c32-<short>-*, split fit. The -w1024 plan warms the first run to 1,024 flat tokens (every
# size of the stream met before it: does the excess go with the sizes or with the process's first run?).
S32C_RUNS = (RunSpec("poisson-cold", "poisson", S31Q_IN, S31Q_OUT, rate_per_s=2.5, seed=341),
             RunSpec("poisson-fresh", "poisson", S31Q_IN, S31Q_OUT, rate_per_s=2.5, seed=342),
             RunSpec("poisson-again", "poisson", S31Q_IN, S31Q_OUT, rate_per_s=2.5, seed=341))
S32C_WARM_W = 1024


def _s32c_plan(model: str, short: str, warm_tokens: int) -> "Plan":
    plan = _s21_plan(model, runs=S32C_RUNS, warm_tokens=warm_tokens, load_s=S31Q_LOAD_S, prefix="c32")
    return dataclasses.replace(plan, runs=tuple(dataclasses.replace(r, split="fit", name=r.name.replace(
        f"c32-{s21_short(model)}-", f"c32-{short}-")) for r in plan.runs))


S32C_PLANS = {"gpu1-s32c-bench": _s32c_plan("bench-small", "bench", S31Q_WARM_TOKENS),
              "gpu1-s32c-v2lite": _s32c_plan("v2-lite-slice", "v2lite", S31Q_WARM_TOKENS),
              "gpu1-s32c-bench-w1024": _s32c_plan("bench-small", "benchw", S32C_WARM_W)}

# s32cold set K (docs/notes/s32cold_rule.md, held out: judges twin.serving.engine.ADOPT_COLD_SIZES): four models the
# probe never ran, a warm pass of 320 flat tokens under prompts of 336-1008 (every prompt step a size above the pass),
# Poisson 2.25/s first (the process's first sizes above its pass), a closed loop of 11, Poisson 2.75/s late; outputs
# 20-104, seeds 361-372, 5 s of load a run: loads, lengths and seeds no record holds; run names k32-<short>-*
S32K_IN, S32K_OUT = "uniform:336-1008", "uniform:20-104"
S32K_WARM_TOKENS = 320
S32K_MODELS = {"mixtral-mla-slice": "mixtral", "qwen3moe-mla-slice": "qwen3moe", "v3-slice-1l": "v3s1l",
               "v3-slice-2l": "v3s2l"}


def _s32k_plan(model: str, short: str, k: int) -> "Plan":
    plan = _s21_plan(model, runs=(
        RunSpec("poisson-early-k", "poisson", S32K_IN, S32K_OUT, rate_per_s=2.25, seed=361 + 3 * k),
        RunSpec("closed-c11-k", "closed", S32K_IN, S32K_OUT, concurrency=11, seed=362 + 3 * k),
        RunSpec("poisson-late-k", "poisson", S32K_IN, S32K_OUT, rate_per_s=2.75, seed=363 + 3 * k)),
        warm_tokens=S32K_WARM_TOKENS, load_s=S31Q_LOAD_S, prefix="k32")
    return dataclasses.replace(plan, runs=tuple(dataclasses.replace(r, name=r.name.replace(
        f"k32-{s21_short(model)}-", f"k32-{short}-")) for r in plan.runs))


S32K_PLANS = {f"gpu1-s32k-{short}": _s32k_plan(m, short, k) for k, (m, short) in enumerate(S32K_MODELS.items())}

# s32kern set N (docs/notes/s32kern_rule.md, held out: judges twin.serving.engine.ADOPT_COLD_KERNELS, a first-used GEMM
# kernel's host cost counted per kernel on each model's kernel map): set K's regime on fresh loads, lengths and seeds
# (381-392): a warm pass of 336 flat tokens under prompts of 352-976 (every prompt step a size above the pass), Poisson
# 2.4/s first (the process's first sizes above its pass), a closed loop of 13, Poisson 3.25/s late; outputs 28-96, 5 s
# of load a run; run names n32k-<short>-*
S32N_IN, S32N_OUT = "uniform:352-976", "uniform:28-96"
S32N_WARM_TOKENS = 336
S32N_MODELS = {"qwen2moe-mla-slice": "qwen2moe", "mixtral-mla-slice": "mixtral", "v3-slice-1l": "v3s1l",
               "v3-slice-2l": "v3s2l"}


def _s32n_plan(model: str, short: str, k: int) -> "Plan":
    plan = _s21_plan(model, runs=(
        RunSpec("poisson-early-n", "poisson", S32N_IN, S32N_OUT, rate_per_s=2.4, seed=381 + 3 * k),
        RunSpec("closed-c13-n", "closed", S32N_IN, S32N_OUT, concurrency=13, seed=382 + 3 * k),
        RunSpec("poisson-late-n", "poisson", S32N_IN, S32N_OUT, rate_per_s=3.25, seed=383 + 3 * k)),
        warm_tokens=S32N_WARM_TOKENS, load_s=S31Q_LOAD_S, prefix="n32k")
    return dataclasses.replace(plan, runs=tuple(dataclasses.replace(r, name=r.name.replace(
        f"n32k-{s21_short(model)}-", f"n32k-{short}-")) for r in plan.runs))


S32N_PLANS = {f"gpu1-s32n-{short}": _s32n_plan(m, short, k) for k, (m, short) in enumerate(S32N_MODELS.items())}
# the models whose kernel maps s32kern's campaign takes (fitting inputs): set N's, set K's and set Q's
S32KERN_MAP_MODELS = tuple(dict.fromkeys((*S32N_MODELS, *S32K_MODELS, *S31Q_MODELS)))

# s33cold set R (docs/notes/s33cold_rule.md, held out: judges twin.serving.engine.ADOPT_COLD_STEPS, the per-step cold
# charge: a look-up per flat size first met in the process's life plus each GEMM kernel first launched, on the kernel
# maps): six mapped models, a warm pass of 352 flat tokens under prompts of 368-960 (every prompt step a size above the
# pass), 4 s of load a run, outputs 24-88, seeds 401-418, loads no record holds. Two session shapes, each one process:
#   "repeat" (qwen2moe, qwen3moe, v3-slice-2l; docs/notes/s28serve2.md's proposal: one Poisson stream early and late in
#   one process, warming separated from rate): Poisson 2.6/s first (stream a), a closed loop of 17, Poisson 3.4/s
#   (stream c), Poisson 2.6/s stream a again;
#   "loop first" (v2-lite-slice, v3-slice-1l, mixtral): a closed loop of 15 first (stream a), Poisson 2.6/s (stream b),
#   the loop of 15 again (stream a), Poisson 2.6/s stream b again.
# run names r33-<short>-*: "-first-" the process's first run, "-again-" a stream repeated late in the process
S33R_IN, S33R_OUT = "uniform:368-960", "uniform:24-88"
S33R_WARM_TOKENS = 352
S33R_LOAD_S = 4.0
S33R_REPEAT = {"qwen2moe-mla-slice": "qwen2moe", "qwen3moe-mla-slice": "qwen3moe", "v3-slice-2l": "v3s2l"}
S33R_LOOP_FIRST = {"v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "mixtral-mla-slice": "mixtral"}
S33R_MODELS = {"v2-lite-slice": "v2lite", "qwen2moe-mla-slice": "qwen2moe", "v3-slice-1l": "v3s1l",
               "qwen3moe-mla-slice": "qwen3moe", "mixtral-mla-slice": "mixtral", "v3-slice-2l": "v3s2l"}


def _s33r_plan(model: str, short: str, k: int) -> "Plan":
    a, b = 401 + 3 * k, 402 + 3 * k
    if model in S33R_REPEAT:
        runs = (RunSpec("poisson-first-r", "poisson", S33R_IN, S33R_OUT, rate_per_s=2.6, seed=a),
                RunSpec("closed-c17-r", "closed", S33R_IN, S33R_OUT, concurrency=17, seed=b),
                RunSpec("poisson-mid-r", "poisson", S33R_IN, S33R_OUT, rate_per_s=3.4, seed=403 + 3 * k),
                RunSpec("poisson-again-r", "poisson", S33R_IN, S33R_OUT, rate_per_s=2.6, seed=a))
    else:
        runs = (RunSpec("closed-first-c15-r", "closed", S33R_IN, S33R_OUT, concurrency=15, seed=a),
                RunSpec("poisson-second-r", "poisson", S33R_IN, S33R_OUT, rate_per_s=2.6, seed=b),
                RunSpec("closed-again-c15-r", "closed", S33R_IN, S33R_OUT, concurrency=15, seed=a),
                RunSpec("poisson-again-r", "poisson", S33R_IN, S33R_OUT, rate_per_s=2.6, seed=b))
    plan = _s21_plan(model, runs=runs, warm_tokens=S33R_WARM_TOKENS, load_s=S33R_LOAD_S, prefix="r33")
    return dataclasses.replace(plan, runs=tuple(dataclasses.replace(r, name=r.name.replace(
        f"r33-{s21_short(model)}-", f"r33-{short}-")) for r in plan.runs))


S33R_PLANS = {f"gpu1-s33r-{short}": _s33r_plan(m, short, k) for k, (m, short) in enumerate(S33R_MODELS.items())}

# s33loop set T (docs/notes/s33loop.md; diagnostic / fitting records, judges nothing): does an engine's eager host run
# faster in a closed loop than in a Poisson run, against the launch probe around each run? Set J's engine and nearly its
# length mix (prompts 152-632, outputs 44-204: lengths no record holds; warmed to 704 flat tokens) for the models of the
# two loops issue 15 over-prices (v2-lite-slice, v3-slice-1l) and bench-small, each one process of four runs in turn:
# Poisson 19/s, a closed loop of 15, Poisson 19/s (another stream), a closed loop of 8; seeds 421-432; run names
# t33-<short>-*; split "fit"
S33T_IN, S33T_OUT = "uniform:152-632", "uniform:44-204"
S33T_MODELS = {"v2-lite-slice": "v2lite", "v3-slice-1l": "v3s1l", "bench-small": "bench"}


def _s33t_plan(model: str, short: str, k: int) -> "Plan":
    plan = _s21_plan(model, runs=(
        RunSpec("poisson-r19-a", "poisson", S33T_IN, S33T_OUT, rate_per_s=19.0, seed=421 + 4 * k),
        RunSpec("closed-c15-a", "closed", S33T_IN, S33T_OUT, concurrency=15, seed=422 + 4 * k),
        RunSpec("poisson-r19-b", "poisson", S33T_IN, S33T_OUT, rate_per_s=19.0, seed=423 + 4 * k),
        RunSpec("closed-c8-b", "closed", S33T_IN, S33T_OUT, concurrency=8, seed=424 + 4 * k)),
        warm_tokens=S27J_WARM_TOKENS, prefix="t33")
    return dataclasses.replace(plan, runs=tuple(dataclasses.replace(r, split="fit", name=r.name.replace(
        f"t33-{s21_short(model)}-", f"t33-{short}-")) for r in plan.runs))


S33T_PLANS = {f"gpu1-s33t-{short}": _s33t_plan(m, short, k) for k, (m, short) in enumerate(S33T_MODELS.items())}

TINY = Plan(
    model="tiny", page_size=4, num_pages=256, token_budget=32, max_running=8, max_context=96,
    warmup=(RunSpec("warmup", "closed", "fixed:8", "fixed:2", concurrency=2, load_s=0.05,
                    max_duration_s=30.0, seed=99),),
    runs=(
        RunSpec("tiny-closed-c2", "closed", "uniform:4-40", "fixed:5", concurrency=2, load_s=0.3,
                max_duration_s=30.0),
        RunSpec("tiny-poisson-r20", "poisson", "list:6,30,12", "uniform:1-6", rate_per_s=20.0,
                load_s=0.3, max_duration_s=30.0, split="holdout"),
    ),
)

TINY_REPEAT = dataclasses.replace(TINY, runs=tuple(
    dataclasses.replace(TINY.runs[1], name=f"tinyrep-poisson-r20-{k}") for k in range(1, 3)))
TINY_EP2_REPEAT = dataclasses.replace(TINY, runs=tuple(
    dataclasses.replace(TINY.runs[1], name=f"tinyep2rep-poisson-r20-{k}", split="fit", load_s=0.2) for k in range(1, 3)))

TINY_EP2 = dataclasses.replace(TINY, runs=tuple(dataclasses.replace(r, name=r.name.replace("tiny-", "tiny-ep2-"))
                                                for r in TINY.runs))

TINY_PIN = dataclasses.replace(TINY, runs=(
    *_pinned_pairs(TINY.runs, "tinys8", ("none", "core"), 0.3, 29.7),
    dataclasses.replace(TINY.runs[0], name="tinys8-closed-c2-warm", warm_shapes=12)))
_TINY_EP2_PAIRS = _pinned_pairs(TINY_EP2.runs, "tinyep2s8", ("none", "core"), 0.3, 29.7)
TINY_EP2_PIN = dataclasses.replace(TINY, runs=(dataclasses.replace(_TINY_EP2_PAIRS[0], warm_shapes=10),
                                               *_TINY_EP2_PAIRS[1:]))

_TINY_HOST_RUNS = {r.name: r for r in TINY.runs}
TINY_HOST = dataclasses.replace(TINY, runs=_s13_runs(_TINY_HOST_RUNS, "tinys13", fit=["tiny-closed-c2"],
                                                     held=["tiny-poisson-r20"], held_slow=[], load_s=0.3, drain_s=29.7))
TINY_EP2_HOST = dataclasses.replace(TINY, runs=_s13_runs(
    {r.name: r for r in TINY_EP2.runs}, "tinyep2s13", fit=["tiny-ep2-closed-c2"], held=["tiny-ep2-poisson-r20"],
    held_slow=[], load_s=0.3, drain_s=29.7))

# the CPU dry run of s21srvnew: the tiny model under the same naming, warm-up and pinning (a tiny budget)
TINY_NEW = _s21_plan("tiny", runs=(dataclasses.replace(_S21_RUNS[0], name="poisson-r20-tiny", input_len="uniform:4-40",
                                                        output_len="uniform:1-6", rate_per_s=20.0),
                                   dataclasses.replace(_S21_RUNS[2], name="closed-c2-tiny", input_len="uniform:4-40",
                                                       output_len="uniform:1-6", concurrency=2)),
                     warm_tokens=32, load_s=0.3, drain_s=29.7, base=TINY)

PLANS = {"gpu1": GPU1, "ep2": EP2, "gpu1-lowload": GPU1_LOWLOAD, "ep2-lowload": EP2_LOWLOAD,
         "gpu1-pin": GPU1_PIN, "ep2-pin": EP2_PIN, "gpu1-repeat": GPU1_REPEAT, "tiny-repeat": TINY_REPEAT,
         "tiny": TINY, "tiny-ep2": TINY_EP2, "tiny-pin": TINY_PIN, "tiny-ep2-pin": TINY_EP2_PIN,
         "gpu1-host": GPU1_HOST, "ep2-host": EP2_HOST, "tiny-host": TINY_HOST, "tiny-ep2-host": TINY_EP2_HOST,
         "ep2-repeat": EP2_REPEAT, "tiny-ep2-repeat": TINY_EP2_REPEAT,
         **S21_PLANS, **S21B_PLANS, **S22_PLANS, **S23_PLANS, **S23C_PLANS, **S24_PLANS, **S24P_PLANS,
         **S25V_PLANS, **S25W_PLANS, **S26H_PLANS, **S26F_PLANS, **S26I_PLANS, **S27J_PLANS, **S27K_PLANS, **S27L_PLANS,
         **S28M_PLANS, **S28N_PLANS, **S29O_PLANS, **S30P_PLANS, **S31Q_PLANS, **S32C_PLANS, **S32K_PLANS, **S32N_PLANS,
         **S33R_PLANS, **S33T_PLANS,
         "tiny-new": TINY_NEW}

"""Iteration times for the request-level simulation, from the serving cost functions, cached.

An iteration of one instance carries `b` decoding requests (mean context `ctx` tokens) and `p`
prompt tokens (mean attention span `span` tokens per prompt token). Its time is

    decode_s(b, ctx)                                  p = 0   (twin.serving.iteration.decode_step)
    prefill_s(p, span)                                b = 0   (twin.serving.iteration.prefill_forward)
    decode_s(b, ctx) + prefill_s(p + b q, span) - prefill_s(b q, span)     both (a mixed batch)

The mixed form charges the prompt tokens their *marginal* cost in a forward that already carries
the b x q decode tokens: the weights the decode step streams are not read twice, and the sum is
continuous in p (p -> 0 gives the decode step) and in b. Attention of a prompt token is charged
through prefill_forward's causal attention at input_len = span: a chunk of n new tokens behind c
cached ones costs n (c + n / 2) token-pairs, which is n x span / 2 with span = n + 2c. The c cached
tokens' latents are expanded into keys and values once more for the chunk (MLA:
twin.serving.iteration.prefix_expand_s, on its own grid of prefix tokens per GPU), added to the
prompt work.

Cost functions are evaluated on a grid and interpolated linearly: batch and tokens on integer points
to 16 and then 2^(1/8) apart (9%), contexts and spans 2x apart and interpolated linearly in tokens
(decode and prefill time are affine in context, so a coarse grid there loses nothing). A decode
step's line in context is kept per (batch, cell), so the common iteration costs one dict lookup. Each grid point is
computed once, when first needed: a 100,000-request run touches a few hundred of them.

Two-batch overlap ("microbatch_policy = auto"): each grid point takes the faster of one micro-batch
and `num_microbatches`, as an engine that splits only where it pays; "always" splits every
iteration (splitting re-reads the weights per micro-batch, so small decode batches get slower).

CUDA graphs: a decode-only iteration of at most `cuda_graph_max_batch` requests per attention group
replays a graph; any other iteration (eager) pays kernel_launch_s x kernels_per_layer x layers of
host time on top (the GPU idles while the host launches). With `graph_batch_buckets` the graph runs
the smallest captured batch >= the decode batch (the rest padding rows, timed as rows) and, with
`graph_page_buckets`, the longest context's pages must fit the largest captured width.

Engine costs (`serve.engine_costs`, a table of twin/data/serve_engines.toml fitted by
calibration/serve_engine_fit.py on an engine's fit-split load runs): the engine's own host and
implementation costs on top of the kernels, on the instance's totals (its attention groups step in
lockstep, the slowest setting the pace):
host time per iteration, eager launches, an iteration's prompt path, per prefill chunk, per query-key pair of a chunk's
materialized scores, per padded decode row x padded context token of the gathered decode attention,
and the host loop between iterations. They replace the kernel_launch_s x kernels_per_layer guess.
A closed-loop client issuing a finished request's successor in the engine's thread (real/serve's
load generator draws the prompt there) delays the next iteration by issue_s_per_request +
issue_s_per_token x its prompt tokens (issue_s; under attention DP the group issuing most).
An idle instance starts its next iteration wake_s after the arrival that wakes it (the engine
sleeps until the next arrival and wakes late; the simulation's instance loop waits it). An eager
iteration whose flat batch size (decode rows + prompt tokens) the engine has never run pays
new_size_s more (the first forward of a size sets up its GEMM shapes; `new_size`, tracked by the
simulation from the sizes the engine is given as already run), and new_bin_s more when the size
falls in a bin of new_size_bin_tokens (16) flat tokens the engine never ran (`new_bin`: the larger
one-off cost, measured by the s9srv campaign on one GPU and under EP alike), a share of it fading as
the group meets bins where the table has new_bin_fade_bins (new_bin_weight). Under EP each attention
group (rank) has its own flat size, new when new to that group. Both are host stalls: with
new_size_host_bound (fitted so) an iteration pays them only where it is host-bound, its kernels
shorter than its fixed host terms (iteration, eager launch, prompt path).

Host speed (`serve.host_launch_s`, session s13srv): real/serve's host terms are the host's work, and
hosts of one kind run it at different speeds; a table fitted with the host probe carries its fit
host's probe (host_probe_launch_s) and the exponent the fit runs show (host_probe_exponent), and a
scenario giving its host's probe gets the host terms scaled (host_scale; HOST_SCALED_TERMS). Under
ADOPT_GRAPH_DECODE_HOST_UNSCALED (s23srvh, off until adopted) a CUDA-graph replay keeps the fit host's per-iteration
host terms (GRAPH_HOST_TERMS): one launch, whatever the launch probe.

Iteration spread (IterationSpread, the engine table's `spread`): the engine terms give an
iteration's mean; a real engine's iterations scatter around it (host stalls of a few ms double a
short eager prompt iteration, a 30 ms one moves by a few percent). The measured / predicted ratios
of the fit iterations are kept as quantiles by kind (prompt work or decode only) and predicted
duration; the simulation multiplies each iteration's time (less the loop gap) by a ratio drawn by
inverse CDF from a generator seeded with traffic.seed, so a run is deterministic for its seed.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import functools
import math

from twin.core.serve_specs import ServeSpec
from twin.core.errors import ScenarioError
from twin.core.scoped import BlockStore
from twin.core.specs import GPUSpec, ModelSpec, get_model, serve_engines
from twin.costs.profile import Profile
from twin.serving.iteration import decode_step, prefill_forward, prefix_expand_s, serving_profile
from twin.serving.pipeline import eager_ops, head_stages, is_moe_layer, moe_ffn_stages, pipeline_end_s, stage_ops

LINEAR_TO = 16               # grid points 1..16 are integers
FINE_RATIO = 2 ** (1 / 8)    # batch/token grid spacing above that
COARSE_RATIO = 2.0           # context/span grid spacing (times are affine there)
MIN_SPAN = 16                # tokens: the context/span grid starts here


def _fine_index(x: float) -> float:
    """Continuous grid index of x >= 1 on the fine grid (1, 2, ..., 16, 16 r, 16 r^2, ...)."""
    if x <= LINEAR_TO:
        return x - 1.0
    return LINEAR_TO - 1.0 + math.log(x / LINEAR_TO, FINE_RATIO)


def _fine_point(i: int) -> float:
    return float(i + 1) if i < LINEAR_TO else LINEAR_TO * FINE_RATIO ** (i - LINEAR_TO + 1)


def _coarse_cell(x: float) -> int:
    """The context cell [16 x 2^j, 16 x 2^(j+1)) holding x (j = 0 below 16: extrapolated)."""
    return max(0, (int(x) // MIN_SPAN).bit_length() - 1)


def _coarse_point(j: int) -> float:
    return MIN_SPAN * COARSE_RATIO ** j


ENGINE_TERMS = ("iteration_s", "eager_iteration_s", "prompt_iteration_s", "chunk_s", "score_s_per_pair", "gather_s_per_row_token", "loop_s",
                "wake_s", "new_size_s", "new_bin_s", "new_size_bin_tokens", "new_size_host_bound", "new_bin_fade_bins",
                "new_size_backlog", "issue_s_per_request", "issue_s_per_token",
                "launch_overlap", "cold_prompt_s", "cold_sizes", "host_probe_launch_s", "host_probe_exponent",
                "host_probe_prompt_launch_s", "cold_eager_s", "cold_eager_iterations", "new_bin_regions",
                "new_bin_kernels", "post_prompt_s", "post_prompt_iterations", "cold_prompt_iterations",
                "launch_floor_iteration_s", "launch_floor_eager_s", "launch_floor_chunk_s", "launch_floor_token_s",
                "launch_floor_row_s", "launch_floor_decode_s", "eager_op_s", "sync_s", "start_s",
                "start_prompt_only_s", "start_s_per_token", "graph_host_s", "graph_op_s", "graph_row_s",
                "graph_op_floor_s", "timing_loop_s", "idle_prompt_s")
# (s23closed) a one-GPU eager iteration's launches (ADOPT_LAUNCH_FLOOR): host work per iteration, per eager forward, per
# chunk; (s24eager) per prompt token and per decode row (the engine's per-token and per-row Python: token, position and
# slot lists, a decode row's page-table row) and the decode rows' attention path (per layer, where decode rows run)
LAUNCH_FLOOR_TERMS = ("launch_floor_iteration_s", "launch_floor_eager_s", "launch_floor_chunk_s", "launch_floor_token_s",
                      "launch_floor_row_s", "launch_floor_decode_s")
# the engine terms that are host work: they scale with the host's measured speed (host_scale)
HOST_SCALED_TERMS = ("iteration_s", "eager_iteration_s", "prompt_iteration_s", "chunk_s", "new_size_s", "new_bin_s",
                     "cold_prompt_s", "cold_eager_s", "loop_s", "wake_s", "issue_s_per_request", "issue_s_per_token",
                     "post_prompt_s", "eager_op_s", "sync_s", "start_s", "start_prompt_only_s", "start_s_per_token",
                     "graph_host_s", "timing_loop_s", *LAUNCH_FLOOR_TERMS)


# (s14srv2, docs/notes/s14srv2_rule.md third candidate, committed before its held-out figures) the
# spread's bins were measured on the table's fit host: under the host input an iteration takes the bin
# of its prediction there (edges x the host factor), not of its stretched prediction. s14srv3
# (docs/notes/s14srv3_rule.md) ties the host-speed fit to it: on, calibration.serve_engine_fit.run_scales
# fits each run's factor with the spread's mean ratio at the fit host's bin (both not adopted: off)
ADOPT_SPREAD_AT_FIT_HOST = False


def host_scale(engine: dict, host_launch_s: float) -> float:
    """The factor on an engine table's host terms for a host measured at `host_launch_s` (host
    seconds per small kernel launch, real/serve/hostspeed.py): (host_launch_s / the table's fit host's
    host_probe_launch_s) ^ host_probe_exponent; 1 for 0 (the fit host) or a table without a reference."""
    ref, beta = engine.get("host_probe_launch_s", 0.0), engine.get("host_probe_exponent", 0.0)
    if host_launch_s <= 0 or ref <= 0 or beta == 0:
        return 1.0
    return (host_launch_s / ref) ** beta


# the prompt path's host terms (session s14srv2, docs/notes/s14srv2_rule.md): a table carrying
# host_probe_prompt_launch_s (> 0) scales these by its own reference, the rest by host_probe_launch_s
PROMPT_SCALED_TERMS = ("prompt_iteration_s", "chunk_s", "new_size_s", "new_bin_s", "cold_prompt_s", "launch_floor_chunk_s")


def scaled_engine(engine: dict, host_launch_s: float) -> dict:
    """The engine terms with the host terms (HOST_SCALED_TERMS) scaled for the host (host_scale);
    the prompt path's (PROMPT_SCALED_TERMS) by the table's prompt reference where it has one."""
    f = host_scale(engine, host_launch_s)
    prompt_ref = engine.get("host_probe_prompt_launch_s", 0.0)
    f_prompt = host_scale({**engine, "host_probe_launch_s": prompt_ref}, host_launch_s) if prompt_ref > 0 else f
    if f == 1.0 and f_prompt == 1.0:
        return engine
    return {k: v * (f_prompt if k in PROMPT_SCALED_TERMS else f) if k in HOST_SCALED_TERMS else v
            for k, v in engine.items()}


def new_bin_weight(bins_met: int, fade_bins: float) -> float:
    """The share of new_bin_s a new bin costs after its attention group met `bins_met` bins:
    fade_bins / (fade_bins + bins_met), 1 where the table has no fade (new_bin_fade_bins 0). The
    s11srv shapeprobe's first calls cost less the more sizes the process had met (12.1 -> 5.5 -> 3.4
    ms by thirds of 48: a GEMM configuration's one-off set-up, fewer of a new size's configurations new;
    not CUDA's lazy module loading, h100x2/s11srv2)."""
    return fade_bins / (fade_bins + bins_met) if fade_bins > 0 else 1.0


def exposed_stall_s(stall_s: float, kernels_s: float, host_s: float, host_bound: float, backlog: float) -> float:
    """The part of a first-met size's host stall an eager iteration pays. Without `host_bound`: all
    of it. With it: all where the iteration is host-bound (kernels shorter than its fixed host terms),
    none elsewhere; with `backlog` too, the GPU's queue hides the stall only as far as the kernels'
    excess over the launches reaches (real/serve launches the whole forward and waits once at its
    end: a stall delays every later launch, the GPU busy meanwhile only on what was queued)."""
    if not host_bound:
        return stall_s
    if backlog:
        return max(0.0, stall_s - max(0.0, kernels_s - host_s))
    return stall_s if kernels_s < host_s else 0.0


def graph_bucket(decode_rows: int, max_ctx: float, has_prompt: bool, page_size: int, batch_buckets, page_buckets) -> tuple[int, float]:
    """(graph rows, padded context tokens) of one attention group's iteration: the smallest
    captured batch >= decode_rows and the page-table width (the longest context's pages, rounded up
    to the next captured width). Graph rows 0 = eager (a prompt in the batch, no buckets, or beyond
    the largest); the width is then the longest context's pages."""
    pages = math.ceil(max_ctx / page_size) if max_ctx > 0 else 0
    width = pages * page_size
    if has_prompt or not batch_buckets or decode_rows <= 0:
        return 0, float(width)
    i = bisect.bisect_left(batch_buckets, decode_rows)
    if i == len(batch_buckets):
        return 0, float(width)
    if page_buckets:
        j = bisect.bisect_left(page_buckets, pages)
        if j == len(page_buckets):
            return 0, float(width)
        width = page_buckets[j] * page_size
    return int(batch_buckets[i]), float(width)


def engine_costs(name: str) -> dict[str, float]:
    """The fitted engine terms of `name` (twin/data/serve_engines.toml); {} for ''."""
    if not name:
        return {}
    table = serve_engines()
    if name not in table:
        raise ScenarioError("serve.engine_costs", name, "'' or one of " + ", ".join(sorted(table)))
    return {k: float(engine_table(name).get(k, 0.0)) for k in ENGINE_TERMS}


def engine_table(name: str) -> dict:
    """Engine `name`'s table as the switches in force price it: where ADOPT_ENGINE_PREFILL_KERNELS,
    ADOPT_EAGER_PIPELINE and ADOPT_EAGER_START_SYNC are all on and the table carries the adopted terms
    (ADOPTED_TERMS_KEY: the s25v3pre refit's terms and spread, s26start round 2's five host terms), those replace the
    committed ones; else the committed table ({} for an unknown name)."""
    raw = serve_engines().get(name, {})
    adopted = raw.get(ADOPTED_TERMS_KEY)
    if isinstance(adopted, dict) and ADOPT_ENGINE_PREFILL_KERNELS and ADOPT_EAGER_PIPELINE and ADOPT_EAGER_START_SYNC:
        return {**{k: v for k, v in raw.items() if k != ADOPTED_TERMS_KEY}, **adopted}
    return raw


class IterationSpread:
    """Measured / predicted iteration time of an engine as quantiles (`probs` levels) per kind and
    predicted-duration bin (bin i: predictions below edges_s[i]; the last bin the rest)."""

    def __init__(self, edges_s, probs, decode, prompt):
        self.edges_s = [float(e) for e in edges_s]
        self.probs = [float(p) for p in probs]
        self.rows = {False: [list(map(float, r)) for r in decode], True: [list(map(float, r)) for r in prompt]}
        for prompt_kind, rows in self.rows.items():
            if len(rows) != len(self.edges_s) + 1 or any(len(r) != len(self.probs) or min(r) <= 0 or r != sorted(r) for r in rows):
                raise ValueError(f"serve_engines.toml spread.{'prompt' if prompt_kind else 'decode'}: expected "
                                 f"{len(self.edges_s) + 1} rising rows of {len(self.probs)} positive quantiles")

    @classmethod
    def from_table(cls, table: dict) -> "IterationSpread":
        return cls(table["edges_s"], table["probs"], table["decode"], table["prompt"])

    def at_host(self, host_factor: float) -> "IterationSpread":
        """The spread with its bin edges stretched by the host factor (ADOPT_SPREAD_AT_FIT_HOST): an
        iteration takes the bin its prediction would have on the table's fit host."""
        out = copy.copy(self)
        out.edges_s = [e * host_factor for e in self.edges_s]
        return out

    def mean_ratio(self, prompt: bool, pred_s: float) -> float:
        """The mean of `ratio` over u in [0, 1) for an iteration predicted to take pred_s: the area
        under the stored quantiles (linear between them; the levels run from 0 to 1)."""
        row = self.rows[prompt][bisect.bisect_left(self.edges_s, pred_s)]
        p = self.probs
        area = sum((p[k + 1] - p[k]) * (row[k] + row[k + 1]) / 2 for k in range(len(p) - 1))
        return area / (p[-1] - p[0])

    def ratio(self, prompt: bool, pred_s: float, u: float) -> float:
        """The ratio at uniform draw u in [0, 1) of an iteration predicted to take pred_s (inverse
        CDF, linear between the stored quantiles)."""
        row = self.rows[prompt][bisect.bisect_left(self.edges_s, pred_s)]
        p = self.probs
        k = min(max(bisect.bisect_right(p, u) - 1, 0), len(p) - 2)
        f = (u - p[k]) / (p[k + 1] - p[k])
        return row[k] + (row[k + 1] - row[k]) * f


def engine_spread(name: str) -> IterationSpread | None:
    """The measured iteration spread of engine `name`; None for '' or a table without one."""
    table = engine_table(name) if name else {}
    return IterationSpread.from_table(table["spread"]) if "spread" in table else None


_SHARED_GRIDS = BlockStore()   # the open sharing_grids() block's grids


def sharing_grids():
    """IterationCosts of one (model, GPU, serve spec, profile) made inside the block share their grid
    points: the replays of one scenario under several seeds (calibration.serve_load_validation's
    predict_run) evaluate each point once instead of once a replay. The grid is a function of those
    four alone (the traffic and its seed never enter it), and nothing changes a switch or a profile
    while a block is open; outside one each IterationCosts keeps its own. Within a block grid_points
    counts the points of the shared grid. (s32ci) The eager pipeline's stage shares are shared too, and a folder's
    replays (validate_load, serve_host_speed.replay) open one around all their runs: a folder's runs are a few
    scenarios."""
    return _SHARED_GRIDS.block()


_SHARED_ITERATIONS = BlockStore()   # (s32ci) the open sharing_iterations() block's engine-table iterations priced


def sharing_iterations():
    """(s32ci) IterationCosts of one scenario (as sharing_grids) made inside the block look up an engine-table
    iteration another of them priced (IterationCosts._iteration_engine_s: the price is a function of the scenario
    and the iteration's arguments): predict_run's seeded replays of one run meet most of each other's iterations.
    Kept per block (a run's: a few thousand), not per folder (another run's contexts seldom recur)."""
    return _SHARED_ITERATIONS.block()


def _grids(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, profile: Profile | None,
           engine_prefill: bool = False) -> tuple[dict, dict, dict, dict, dict]:
    """(decode, prefill, prefix grid points, decode_parts, stage shares) for an IterationCosts: fresh, or those of
    the open sharing_grids() block for its arguments (the profile by identity: the block keeps it alive; the engine's
    prompt kernels apart: their prefill grid lacks the ops the engine terms price)."""
    grids = _SHARED_GRIDS.kept
    if grids is None:
        return {}, {}, {}, {}, {}
    return grids.setdefault((m, gpu, s, id(profile), engine_prefill), (profile, ({}, {}, {}, {}, {})))[1]


# (s32ci) engine-table iterations kept per block and scenario (IterationCosts._iteration_engine_s; a few thousand a
# recorded load run): past this many the block's memo stops taking new ones (memory bound; the prices are the same)
ITERATION_MEMO_MAX = 100_000


def _iteration_memo(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, profile: Profile | None,
                    engine_prefill: bool = False) -> dict | None:
    """The open sharing_iterations() block's iterations priced for the scenario (keyed as _grids); None outside."""
    kept = _SHARED_ITERATIONS.kept
    if kept is None:
        return None
    return kept.setdefault((m, gpu, s, id(profile), engine_prefill), (profile, {}))[1]


# (s21srvnew2, docs/notes/s21srvnew2_rule.md, committed before any figure under it) The one-GPU tables were fitted
# on load runs of v3-slice-2l alone (ENGINE_FIT_LAYERS layers): their eager-launch term (every kernel of the forward
# launched from Python) and per-chunk term (each chunk's attention launched per layer) are that model's per-layer
# launches times its layers. Under the switch a model of L layers pays them times L / ENGINE_FIT_LAYERS
# (LAYER_SCALED_TERMS; every other term as fitted). Off: the terms as fitted, whatever the model. Adopted by its rule
# on the s21srvnew2 records (one H100 and one H200 pooled, host input: 44 -> 50 of 90 checks, median |error|
# 12.52% -> 10.35%, no GPU worse; docs/notes/s21srvnew2.md).
ADOPT_LAYER_SCALED_ENGINE = True
ENGINE_FIT_LAYERS = 2   # v3-slice-2l (twin/data/models.toml), the only model of every committed real/serve load run
LAYER_SCALED_TERMS = ("eager_iteration_s", "chunk_s", "launch_floor_eager_s", "launch_floor_chunk_s", "launch_floor_decode_s")


def layer_scaled_engine(engine: dict, num_layers: int) -> dict:
    """The engine terms for a model of `num_layers` layers (ADOPT_LAYER_SCALED_ENGINE; else as given)."""
    if not ADOPT_LAYER_SCALED_ENGINE or not engine or num_layers == ENGINE_FIT_LAYERS:
        return engine
    f = num_layers / ENGINE_FIT_LAYERS
    return {k: v * f if k in LAYER_SCALED_TERMS else v for k, v in engine.items()}


# (s23srvh, docs/notes/s23srvh_rule.md, committed before any figure under it) A CUDA-graph replay is one launch: its
# host work (the scheduler's Python, the input copies, the replay) need not grow with the launch probe as an eager
# forward's launches do (the s22ttft H100's graph decode ran at 0.71-0.98 of the host-scaled prediction). Under the
# switch a graph-replayed iteration takes the table's host terms at its fit host (GRAPH_HOST_TERMS unscaled); eager
# iterations, wake and issue as scaled. Off: every host term scaled.
ADOPT_GRAPH_DECODE_HOST_UNSCALED = False
GRAPH_HOST_TERMS = ("iteration_s", "loop_s", "post_prompt_s")


def graph_engine(engine: dict, fit_host_engine: dict) -> dict:
    """The terms a graph-replayed iteration pays: GRAPH_HOST_TERMS from the table at its fit host (fit_host_engine)
    under ADOPT_GRAPH_DECODE_HOST_UNSCALED, the rest as `engine` (the host-scaled terms); `engine` itself when off."""
    if not ADOPT_GRAPH_DECODE_HOST_UNSCALED or not engine:
        return engine
    return {**engine, **{k: fit_host_engine[k] for k in GRAPH_HOST_TERMS if k in fit_host_engine}}


# (s23closed, docs/notes/s23closed_rule.md, committed before any held-out figure under it) score_s_per_pair is the
# time per query-key pair of a prefill chunk's materialized attention scores: real/serve/forward.py prefill_attention
# calls SDPA on 3-D (heads, n, Lc) inputs, which PyTorch serves with its math backend (bf16 upcast to fp32), one
# (n x Lc) score matrix per head and layer written, masked, soft-maxed and multiplied. The tables fitted it on
# v3-slice-2l alone (ENGINE_FIT_HEADS heads x ENGINE_FIT_LAYERS layers, every committed load run), so it holds that
# model's head-layers. Under the switch a model of H heads and L layers pays it times (H x L) / (128 x 2) (every model
# real/serve serves has V3's MLA head dims, qk 192 and v 128, so a head's pair costs the same); off, as fitted.
# Nothing is fitted: the factor is the model's head-layer count.
ADOPT_HEAD_SCALED_SCORES = False
ENGINE_FIT_HEADS = 128  # v3-slice-2l's attention heads (twin/data/models.toml)
HEAD_SCALED_TERMS = ("score_s_per_pair",)
# (s23closed third candidate, docs/notes/s23closed_rule.md, committed before any held-out figure under it) A one-GPU
# engine launches its eager forward from Python and the GPU runs each kernel as it comes (real/serve/engine.py step:
# step_forward, then one `.tolist()`): the iteration cannot end before its last launch. The tables' additive terms were
# fitted on v3-slice-2l, whose prompt iterations are mostly kernel-bound, so they hold only part of the launch time; a
# host-bound model's iteration (the models never served: host_s 1.5-3.2 ms over the table's host terms) pays all of it.
# Under the switch an eager iteration takes at least its launch floor: loop_s + launch_floor_iteration_s +
# launch_floor_eager_s + launch_floor_chunk_s x chunks + its first-met stall, the floor terms the launch terms of the
# same fit runs fitted in the launch-overlap form (calibration.serve_engine_fit LAUNCH_OVERLAP), host- and
# layer-scaled as the additive ones. A table without them (EP, or written before) has no floor.
ADOPT_LAUNCH_FLOOR = False


def launch_floor_s(engine: dict, chunks: int, stall_s: float = 0.0, prompt_tokens: float = 0.0,
                   decode_rows: float = 0.0) -> float:
    """The shortest an eager one-GPU iteration of `chunks` prefill chunks of `prompt_tokens` tokens beside
    `decode_rows` decode rows can take (ADOPT_LAUNCH_FLOOR): the host's loop gap, its launches (per iteration, per
    eager forward, per chunk), (s24eager; 0 in a table without the terms) its per-token and per-row host work and
    the decode rows' attention path, and a first-met size's stall."""
    return (engine["loop_s"] + engine["launch_floor_iteration_s"] + engine["launch_floor_eager_s"]
            + engine["launch_floor_chunk_s"] * chunks + engine.get("launch_floor_token_s", 0.0) * prompt_tokens
            + engine.get("launch_floor_row_s", 0.0) * decode_rows
            + (engine.get("launch_floor_decode_s", 0.0) if decode_rows > 0 else 0.0) + stall_s)


# (s24pipe, docs/notes/s24pipe_rule.md, committed before any figure under it) An eager one-GPU iteration as the pipeline
# it is (twin.serving.pipeline): after the loop gap and a first-met size's stall, the host issues the step's aten
# operators (twin/data/serve_eager_ops.toml, the engine's own count) at the table's `eager_op_s` each (s24eager's
# measured host per operator, host-scaled); the GPU runs the twin's kernels of each stage (before the layers, each
# layer's attention with its share of the scores, its FFN, the head) as they are launched; the iteration ends at
# the last kernel's end, then the gather and post-prompt terms as before. Replaces the additive host terms and the
# launch-overlap form for those iterations; a table without `eager_op_s` (EP, or written before) or a model with no
# operator count prices them as before. Part of s26start round 2's candidate T (see ADOPT_EAGER_START_SYNC).
ADOPT_EAGER_PIPELINE = True

# (s25v3pre, docs/notes/s25v3pre_rule.md, committed before any figure under it) real/serve's eager prompt chunk does not
# run the twin's prefill kernels (docs/notes/s24v3pre.md): SDPA on 3-D tensors takes PyTorch's math backend (fp32 scores
# over the whole n x (c + n) square, masked, a four-pass safe softmax), the eager MoE makes ~7 passes over the routed
# rows, RoPE runs in fp32 with copies. Under the switch an iteration with prompt work on a one-GPU real.serve table
# (ENGINE_PREFILL_TABLES) prices its prompt kernels as the twin's prefill forward less ENGINE_PREFILL_SKIPPED_OPS and
# the prefix expansion, plus the engine terms below; the table's score term is not charged there. Every constant is
# fitted on the fitting record calibration/measurements/h100/s24v3pre (prefill_kernels.csv.gz: real/serve/prefillprof
# on one H100 80GB HBM3, v3-slice-2l and qwen3moe-mla-slice, 4 prompt-only compositions each) by
# calibration.serve_prefill_kernels.fit_constants (relative non-negative least squares), the same seconds on the H200
# table (not measured there). Part of s26start round 2's candidate T (see ADOPT_EAGER_START_SYNC).
ADOPT_ENGINE_PREFILL_KERNELS = True
ENGINE_PREFILL_TABLES = ("real-serve-h100-ep1", "real-serve-h200-ep1")
ENGINE_PREFILL_SKIPPED_OPS = ("attn_core", "kv_up", "rope", "permute", "unpermute", "experts_swiglu")
CORE_S_PER_PAIR_HEAD_LAYER = 2.21e-11     # math SDPA per query-key pair of a head and layer (h100/s24v3pre)
CORE_S_PER_KEY_HEAD_LAYER = 1.081e-8      # per key token (c + n) of a chunk, head and layer: gather, wkv_b, casts, cat
MOE_ROUTING_S_PER_LAYER = 1.877e-4        # the eager MoE's routing passes per MoE layer (argsort, sort, fill, launches)
MOE_ROUTING_S_PER_ROW_ELEMENT = 1.603e-11  # per routed row x hidden element (gather, index_copy, gate multiply, sum)
ROPE_S_PER_TOKEN_HEAD_LAYER = 1.835e-9    # fp32 rotate-half RoPE and the q/kv paths' elementwise per token-head-layer


# (s25v3pre2, docs/notes/s25v3pre2_rule.md, committed before any figure under it) The one-GPU tables' additive host and
# score terms were fitted on v3-slice-2l alone (ENGINE_FIT_HEADS x ENGINE_FIT_LAYERS head-layers): they hold that
# model's math-SDPA and kernel deficit where its prompt steps are kernel-bound, and misprice a model of other
# head-layers (its own heads' attention core, its host-bound steps). Under the switch (with ADOPT_ENGINE_PREFILL_KERNELS
# and ADOPT_EAGER_PIPELINE) on a one-GPU real.serve table a model of the fit model's head-layers is priced as committed
# (no engine prompt terms; the committed table, which has no `eager_op_s`, so no pipeline), every other model as
# s25v3pre's candidate P: the engine prompt terms and the table's variant ENGINE_PREFILL_VARIANT (the table refitted
# under the engine terms, calibration/s25v3pre_refit.json, with s24pipe's `eager_op_s`: the pipeline), where the
# variant exists; else the table as given with the engine terms.
ADOPT_ENGINE_PREFILL_BY_HEADS = False
ENGINE_PREFILL_VARIANT = "{table}-engine"


def engine_prefill_by_heads(m: ModelSpec, s: ServeSpec) -> tuple[ServeSpec, bool | None]:
    """(the serve spec whose table prices `m`, whether its prompt work takes the engine prompt terms) under
    ADOPT_ENGINE_PREFILL_BY_HEADS; (s, None) where the switch is off or does not reach the table (EP, other tables):
    the caller decides as before. Example: qwen3moe-mla-slice (32 x 2 head-layers) on real-serve-h100-ep1 ->
    (the spec on real-serve-h100-ep1-engine, True); v3-slice-2l (128 x 2) -> (s, False)."""
    if not ADOPT_ENGINE_PREFILL_BY_HEADS or s.engine_costs not in ENGINE_PREFILL_TABLES or s.ep != 1:
        return s, None
    if m.num_heads * m.num_layers == ENGINE_FIT_HEADS * ENGINE_FIT_LAYERS:
        return s, False
    variant = ENGINE_PREFILL_VARIANT.format(table=s.engine_costs)
    return (dataclasses.replace(s, engine_costs=variant) if variant in serve_engines() else s), True


# (s26start, docs/notes/s26start_rule.md, committed before any figure under it on its fresh set) an eager prompt step's
# start and its closing sync. Under the switch (with ADOPT_ENGINE_PREFILL_KERNELS and ADOPT_EAGER_PIPELINE, every model
# alike, no choice by model) the pipeline (1) issues each layer's attention-core kernels (the engine's math-SDPA core
# term, engine_core_s, and the table's score term where charged) from the chunks' own operators (attn_ops_per_chunk x
# chunks, which the engine issues after the layer's q/kv path, cache writes and decode attention), not spread over the
# whole attention stage: the GPU waits for the host to reach them (the start); (2) ends the step `sync_s` after its last
# kernel (the table's term: the engine's scheduling before its first launch and the `.tolist()` sync's return after its
# last kernel, host-scaled; measured as duration_s - gpu_s on h100/s24eager/fit, calibration.serve_start_sync); (3) starts
# the host's operators after its input preparation (start_s a step, start_prompt_only_s where no decode row runs beside
# the prompt work, start_s_per_token a prompt token; the GPU idle meanwhile), with `eager_op_s` refitted beside them
# (one fit: host_s at the reference host of h100/s24eager/fit's fitting rows, non-negative least squares on relative
# residuals, calibration.serve_start_sync.host_fit). Without these terms in a table nothing moves.
# (s26start round 2, docs/notes/s26start2_rule.md, committed before its records) candidate T, adopted by its rule: the
# three switches on and the one-GPU tables' adopted terms (their `start_sync` section, read by engine_table): the refit of
# calibration/s25v3pre_refit.json (terms and spread) and the five host terms (eager_op_s, start_s, start_prompt_only_s,
# start_s_per_token, sync_s) fitted on fitting load runs recorded with --timing (calibration/measurements/h200/
# s26start2/fit, one H200; calibration.serve_load_host fit -> calibration/s26start2_fit.json). Judged on set I
# (calibration/s26start2_judgement.json): 12 -> 17 of 30 checks, guards on sets A-H and the committed sets held.
# With any of the three off the tables price as committed before T. The defaults are on (flipped by s26flip, with what
# moved in `twin validate` stated in docs/notes/s26start2_rule.md).
ADOPT_EAGER_START_SYNC = True
ADOPTED_TERMS_KEY = "start_sync"
# T's three switches: a replay of what was committed before T (sets D-H's judgements, the mechanism tests of the
# additive host terms that T's pipeline replaces on eager iterations) turns these off.
T_SWITCHES = ("ADOPT_ENGINE_PREFILL_KERNELS", "ADOPT_EAGER_PIPELINE", "ADOPT_EAGER_START_SYNC")

# (s27serve, docs/notes/s27serve_rule.md, committed before its judging records) A CUDA-graph decode replay's GPU time is
# not its kernels' roofline alone: every kernel of the captured forward takes a floor of GPU time, and each padded row
# adds some. The one-GPU tables' `iteration_s` (fitted on v3-slice-2l alone) holds that model's graph floor as a
# constant, so a 4-layer model's replays came out short and a 1-layer model's long (set I: bench-small -23..-35%,
# v2-lite-slice -16..-25%, v3-slice-1l +1..+23% a step). Under the switch a graph-replayed iteration on a table that
# carries the terms costs
#     graph_host_s (host work: scheduling, input copies, the replay's launch; host-scaled)
#     + its kernels + graph_op_s x the captured forward's operators (graph_ops) + graph_row_s x its padded rows
#     + loop_s + the gathered attention's term (as before), in place of iteration_s + its kernels + ...
# (the terms fitted by calibration.serve_graph_ops on the fitting load runs h200/s26start2/fit). Off, or on a table
# without them: as before. Eager iterations are untouched.
ADOPT_GRAPH_DECODE_OPS = False


# (s27serve round 2, docs/notes/s27serve2_rule.md, committed before its judging records) Round 1's U (above, not
# adopted) replaced iteration_s and lost on every seen set through its per-row term. Candidate V keeps the tables'
# graph pricing for the model they were fitted on (ENGINE_FIT_MODEL: iteration_s holds its captured forward's floor)
# and charges another model graph_op_floor_s x (its captured operators - the fit model's): a 4-layer forward's replay
# pays more, a 1-layer one's less (as ADOPT_LAYER_SCALED_ENGINE does for the eager launch terms). Off, or on a table
# without the term: as before. (s27serve round 3) the term in the H200 one-GPU table only (V-H200); (s28serve,
# docs/notes/s28serve_rule.md) V-H200 judged on set M and adopted: on, and `real-serve-h200-ep1` alone carries
# graph_op_floor_s (twin/data/serve_engines.toml). H100 runs, EP tables, eager iterations and the fit model's replays
# price as before.
ADOPT_GRAPH_OP_FLOOR = True
ENGINE_FIT_MODEL = "v3-slice-2l"

# (s28serve, docs/notes/s28serve_rule.md, committed before its judging records) real/serve run with `--timing` runs its
# per-iteration instrument (Engine._time: CUDA-event elapsed time, CPU id and MHz, NVML's SM clock and throttle reasons)
# after each iteration's end, before the next starts: the loop gap between iterations is 40-140 us in the load records
# recorded with it (sets D-I, the fitting runs h200/s26start2/fit) against the tables' loop_s of 9-16 us (fitted on
# runs recorded without it). It is the instrument, not the engine: a scenario says whether its engine ran with it
# (serve.engine_timing, set by calibration.serve_load_validation from a record's per-iteration timing columns), and
# under the switch such a scenario's iterations pay the table's `timing_loop_s` (host-scaled) on top of loop_s. A
# scenario without --timing (every `twin serve` one, the committed runs, sets J-L) or a table without the term: as before.
ADOPT_TIMING_INSTRUMENT = False


def timed_engine(engine: dict, engine_timing: bool) -> dict:
    """The table's terms with the instrument's loop time added to loop_s where the engine ran with --timing
    (ADOPT_TIMING_INSTRUMENT, the table's timing_loop_s); `engine` itself otherwise."""
    extra = engine.get("timing_loop_s", 0.0)
    if not (ADOPT_TIMING_INSTRUMENT and engine_timing and extra > 0.0):
        return engine
    return {**engine, "loop_s": engine.get("loop_s", 0.0) + extra}


# (s33loop, docs/notes/s33loop.md; candidate W, evidence only: screened on the seen sets, where it loses checks on sets
# G, H and I, so no rule and no fresh set judged it; off) An eager step's host work (its input preparation and each aten
# operator's dispatch) costs more the longer the engine has replayed CUDA graphs since its last eager step: the eager
# Python path goes cold meanwhile. The fitting load runs h200/s26start2/fit (one H200, --timing: host_s per step, every
# flat size met in the warm pass) show it within each run: measured host over the twin's host path 0.91 at 1-3 graph
# steps since the last eager one, 0.98 at 4-7, 1.02-1.03 at 8-31, 0.99 beyond. Under the switch an eager
# iteration on a table of EAGER_WARMTH_TABLES takes its pipeline's host work (start_s and eager_op_s) times
#     eager_warmth(k) = exp(EAGER_WARMTH_PER_DOUBLING x (log2(1 + min(k, EAGER_WARMTH_CAP)) - EAGER_WARMTH_CENTER))
# k the graph-replayed iterations of its instance since its last eager one (EAGER_WARMTH_CAP before its first); the
# slope fitted within run on the fitting runs, the centre their mean, so the fitting runs' mean host is kept
# (`python -m calibration.s33loop fit` -> calibration/s33loop_fit.json). Off: 1 (as before).
ADOPT_EAGER_WARMTH = False
EAGER_WARMTH_TABLES = ("real-serve-h200-ep1",)
EAGER_WARMTH_CAP = 64
EAGER_WARMTH_PER_DOUBLING = 0.019792078626837666   # calibration/s33loop_fit.json (se 0.0041, 550 steps)
EAGER_WARMTH_CENTER = 3.11135602532492         # the fitting steps' mean log2(1 + min(k, cap))


def eager_warmth(graphs_since_eager: float) -> float:
    """The factor on an eager step's host work after `graphs_since_eager` graph-replayed iterations since the
    instance's last eager one (ADOPT_EAGER_WARMTH's form; math.inf before the first: the cap). Example: with a slope of
    0.02 per doubling and a centre of 3.1, k = 3 gives exp(0.02 x (2 - 3.1)) = 0.978, k >= 64 exp(0.02 x 2.9) = 1.06."""
    k = min(max(graphs_since_eager, 0.0), float(EAGER_WARMTH_CAP))
    return math.exp(EAGER_WARMTH_PER_DOUBLING * (math.log2(1.0 + k) - EAGER_WARMTH_CENTER))


def graph_ops(ops: dict[str, float], m: ModelSpec) -> float:
    """The operators of a decode step's captured forward (twin/data/serve_eager_ops.toml, decode rows present, the
    per-row host operators left out: in a replay they are input copies made before it)."""
    pre, attn, ffn, head = stage_ops(ops, m, 0, 1)
    return pre - ops["pre_ops_per_row"] + sum(attn) + sum(ffn) + head


@functools.cache
def fit_model_graph_ops() -> float:
    """graph_ops of the model the one-GPU tables were fitted on (ENGINE_FIT_MODEL: 403)."""
    return graph_ops(eager_ops(ENGINE_FIT_MODEL), get_model(ENGINE_FIT_MODEL))


def engine_core_s(m: ModelSpec, pairs: float, keys: float) -> float:
    """The math-SDPA attention core's seconds over every layer (the core part of engine_prompt_terms_s)."""
    return m.num_heads * m.num_layers * (CORE_S_PER_PAIR_HEAD_LAYER * pairs + CORE_S_PER_KEY_HEAD_LAYER * keys)


def engine_prompt_terms_s(m: ModelSpec, prompt_tokens: float, pairs: float, keys: float) -> tuple[float, float]:
    """(attention-side seconds: the math-SDPA core + RoPE over every layer, MoE-side seconds: the routing passes over
    every MoE layer) of an eager engine's prompt work of `prompt_tokens` tokens in chunks of `pairs` query-key pairs
    (sum of n (c + n)) over `keys` key tokens (sum of c + n) (ADOPT_ENGINE_PREFILL_KERNELS)."""
    if prompt_tokens <= 0:
        return 0.0, 0.0
    head_layers = m.num_heads * m.num_layers
    attn = (head_layers * (CORE_S_PER_PAIR_HEAD_LAYER * pairs + CORE_S_PER_KEY_HEAD_LAYER * keys)
            + ROPE_S_PER_TOKEN_HEAD_LAYER * prompt_tokens * head_layers)
    moe = (m.num_moe_layers * (MOE_ROUTING_S_PER_LAYER + MOE_ROUTING_S_PER_ROW_ELEMENT * prompt_tokens * m.top_k
                               * m.hidden_size) if m.num_routed_experts > 0 else 0.0)
    return attn, moe


def head_scaled_engine(engine: dict, num_heads: int, num_layers: int) -> dict:
    """The engine terms for a model of `num_heads` attention heads in each of `num_layers` layers
    (ADOPT_HEAD_SCALED_SCORES; else as given): the score term per pair times its head-layers over the
    fit model's. Example: qwen2moe-mla-slice, 16 heads x 2 layers = 32 of v3-slice-2l's 256, pays 1/8."""
    fit = ENGINE_FIT_HEADS * ENGINE_FIT_LAYERS
    if not ADOPT_HEAD_SCALED_SCORES or not engine or num_heads * num_layers == fit:
        return engine
    f = num_heads * num_layers / fit
    return {k: v * f if k in HEAD_SCALED_TERMS else v for k, v in engine.items()}


class IterationCosts:
    """Seconds of one iteration of one instance; grid points computed on first use and kept (shared by
    the IterationCosts of the same arguments inside a sharing_grids() block)."""

    def __init__(self, m: ModelSpec, gpu: GPUSpec, s: ServeSpec, profile: Profile | None = None,
                 engine_prefill: bool | None = None):
        # the table that prices this model and whether its prompt work takes the engine terms, by its head-layers
        # (ADOPT_ENGINE_PREFILL_BY_HEADS; (s, None) when off)
        s, by_heads = engine_prefill_by_heads(m, s)
        self.m, self.gpu, self.s = m, gpu, s
        # the eager engine's prompt kernels (ADOPT_ENGINE_PREFILL_KERNELS): on a one-GPU real.serve table, or where the
        # caller says so (the tables' refit, whose kernel physics has no table)
        self.engine_prefill = (engine_prefill if engine_prefill is not None else by_heads if by_heads is not None else
                               ADOPT_ENGINE_PREFILL_KERNELS and s.engine_costs in ENGINE_PREFILL_TABLES and s.ep == 1)
        self._skip = ENGINE_PREFILL_SKIPPED_OPS if self.engine_prefill else ()
        self.prof = serving_profile(gpu, s, profile)
        self.q = 1 + s.mtp_draft_tokens
        # the table's host terms at this host's measured speed (serve.host_launch_s; 0 = its fit host)
        # (ADOPT_TIMING_INSTRUMENT) with the instrument's loop time where the engine ran with --timing
        table = timed_engine(engine_costs(s.engine_costs), s.engine_timing)
        self.engine = head_scaled_engine(layer_scaled_engine(scaled_engine(table, s.host_launch_s),
                                                             m.num_layers), m.num_heads, m.num_layers)
        # a graph-replayed iteration's terms (ADOPT_GRAPH_DECODE_HOST_UNSCALED; the same dict when off)
        self.graph_engine = graph_engine(self.engine, layer_scaled_engine(table, m.num_layers))
        # the measured spread around the mean (sampled by the simulation, twin.serving.engine)
        self.spread = engine_spread(s.engine_costs) if s.iteration_spread else None
        f = host_scale(engine_costs(s.engine_costs), s.host_launch_s) if s.engine_costs else 1.0
        if self.spread is not None and ADOPT_SPREAD_AT_FIT_HOST and f != 1.0:
            self.spread = self.spread.at_host(f)
        self.loop_s = self.engine.get("loop_s", 0.0)
        self.graph_loop_s = self.graph_engine.get("loop_s", 0.0)
        self.eager_s = (self.engine["eager_iteration_s"] if self.engine else
                        s.kernel_launch_s * s.kernels_per_layer * (m.num_layers + s.mtp_draft_tokens))
        self.graph_max = s.cuda_graph_max_batch * s.attention_dp if s.cuda_graphs else 0
        self.batch_buckets = sorted(b for b in s.graph_batch_buckets if b <= s.cuda_graph_max_batch) if s.cuda_graphs else []
        self.page_buckets = sorted(s.graph_page_buckets)
        # decode (i, j), prefill (i, j) and prefix (i) grid points, and one decode_step breakdown per
        # batch grid point (reports)
        # (s32ci) the stage shares too; inside a sharing_iterations() block, the engine-table iterations priced
        (self._decode, self._prefill, self._prefix, self.decode_parts,
         self._stage_shares) = _grids(m, gpu, s, profile, self.engine_prefill)
        self._iterations = _iteration_memo(m, gpu, s, profile, self.engine_prefill)
        if self._iterations is None:   # no memo: no look-up on the way
            self._iteration_engine_s = self._priced_iteration_s
        self._decode_lines: dict[tuple[int, int], tuple[float, float, float]] = {}
        self._cells: dict[tuple, tuple] = {}
        # the engine's operator counts (ADOPT_EAGER_PIPELINE) and the kernel shares of its stages per grid point
        self.ops = eager_ops(m.name)
        # (ADOPT_GRAPH_OP_FLOOR) the captured decode forward's operators beyond the tables' fit model's
        self.graph_ops_over_fit = graph_ops(self.ops, m) - fit_model_graph_ops() if self.ops is not None else 0.0
        # (ADOPT_EAGER_WARMTH) does an eager step's host work follow the graph replays since the last eager one?
        self.tracks_warmth = bool(ADOPT_EAGER_WARMTH and s.engine_costs in EAGER_WARMTH_TABLES and self.ops is not None
                                  and self.engine.get("eager_op_s", 0.0) > 0.0)

    # -- grid evaluations ---------------------------------------------------------------------
    def _policies(self) -> list[int]:
        n = self.s.num_microbatches
        if n == 1 or self.s.microbatch_policy == "always":
            return [n]
        return [1, n]

    def _decode_at(self, i: int, j: int) -> float:
        key = (i, j)
        t = self._decode.get(key)
        if t is None:
            b = max(1, round(_fine_point(i)))
            ctx = _coarse_point(j)
            best = None
            for n in self._policies():
                spec = dataclasses.replace(self.s, input_len=ctx, output_len=0, num_microbatches=n)
                d = decode_step(self.m, self.gpu, spec, b, self.prof)
                if best is None or d["step_s"] < best["step_s"]:
                    best = d
            t = self._decode[key] = best["step_s"]
            self.decode_parts.setdefault(i, best)
        return t

    def _prefill_at(self, i: int, j: int) -> float:
        key = (i, j)
        t = self._prefill.get(key)
        if t is None:
            tokens = _fine_point(i)                   # per GPU
            span = _coarse_point(j)
            best = math.inf
            for n in self._policies():
                spec = dataclasses.replace(self.s, prefill_chunk_tokens=max(1, round(tokens)), input_len=max(1, round(span)),
                                           num_microbatches=n)
                best = min(best, prefill_forward(self.m, self.gpu, spec, self.prof, self._skip)["forward_s"])
            t = self._prefill[key] = best
        return t

    def _prefix_at(self, i: int) -> float:
        t = self._prefix.get(i)
        if t is None:
            t = self._prefix[i] = prefix_expand_s(self.m, self.gpu, self.s, max(1, round(_fine_point(i))), self.prof)
        return t

    def _line(self, fn, x: float, j: int) -> tuple[float, float, float]:
        """Across context cell j at fine index x: (value at the cell's start, slope per token, start)."""
        i0 = int(x)
        fx = x - i0
        key = (fn, i0, j)
        cell = self._cells.get(key)
        if cell is None:
            c0, c1 = _coarse_point(j), _coarse_point(j + 1)
            cell = self._cells[key] = (fn(i0, j), fn(i0 + 1, j), fn(i0, j + 1), fn(i0 + 1, j + 1), c0, c1 - c0)
        a0, b0, a1, b1, c0, width = cell
        v0 = a0 + (b0 - a0) * fx
        v1 = a1 + (b1 - a1) * fx
        return v0, (v1 - v0) / width, c0

    # -- what the engine asks ---------------------------------------------------------------
    def decode_s(self, batch: int, ctx: float) -> float:
        """A decode-only step of `batch` requests at mean context `ctx` (no launch overhead)."""
        if batch <= 0:
            return 0.0
        j = _coarse_cell(ctx)
        key = (batch, j)
        line = self._decode_lines.get(key)
        if line is None:
            line = self._decode_lines[key] = self._line(self._decode_at, _fine_index(batch), j)
        v0, slope, c0 = line
        return v0 + slope * (ctx - c0)

    def prefill_s(self, tokens: float, span: float) -> float:
        """A forward of `tokens` (instance total) prompt tokens of mean attention span `span`."""
        if tokens <= 0:
            return 0.0
        per_gpu = max(1.0, tokens / self.s.ep)
        v0, slope, c0 = self._line(self._prefill_at, _fine_index(per_gpu), _coarse_cell(span))
        return v0 + slope * (span - c0)

    def prefix_s(self, prefix_tokens: float) -> float:
        """Expanding the cached latents of `prefix_tokens` (instance total) prefix tokens that this
        iteration's prompt chunks attend over (twin.serving.iteration.prefix_expand_s)."""
        if prefix_tokens <= 0 or self.m.attention != "mla" or self.engine_prefill:
            return 0.0   # (engine_prefill: the core's per-key term expands every key, prefix included)
        x = _fine_index(max(1.0, prefix_tokens / self.s.ep))
        i0 = int(x)
        a, b = self._prefix_at(i0), self._prefix_at(i0 + 1)
        return a + (b - a) * (x - i0)

    @property
    def wake_s(self) -> float:
        return self.engine.get("wake_s", 0.0)

    def issue_s(self, requests: int, prompt_tokens: int) -> float:
        """Host time a closed-loop client spends issuing `requests` successors of `prompt_tokens`
        prompt tokens in the engine's thread before its next iteration (real/serve's load generator
        draws each prompt there; the engine table's issue_s_per_request, issue_s_per_token; 0 without)."""
        return self.engine.get("issue_s_per_request", 0.0) * requests + self.engine.get("issue_s_per_token", 0.0) * prompt_tokens

    @property
    def tracks_sizes(self) -> bool:
        """Does the engine table charge an eager iteration's first flat batch size?"""
        return (self.engine.get("new_size_s", 0.0) > 0.0 or self.engine.get("new_bin_s", 0.0) > 0.0
                or self.engine.get("cold_prompt_s", 0.0) > 0.0)

    def cold_weight(self, sizes_met: int) -> float:
        """The share of cold_prompt_s a prompt iteration pays after its group ran `sizes_met` distinct
        flat sizes: cold_sizes / (cold_sizes + sizes_met) (0 without the term)."""
        h = self.engine.get("cold_sizes", 0.0)
        return h / (h + sizes_met) if h > 0 and self.engine.get("cold_prompt_s", 0.0) > 0 else 0.0

    @property
    def warms_prompts(self) -> bool:
        """Does the table charge an EP engine's prompt path warming up with its host-bound prompt work
        (cold_prompt_s over cold_prompt_iterations; session s19srv2, docs/notes/s19srv2_rule.md)?"""
        return self.engine.get("cold_prompt_iterations", 0.0) > 0 and self.engine.get("cold_prompt_s", 0.0) > 0

    def warmup_weight(self, prompts_before: int) -> float:
        """The share of cold_prompt_s a host-bound prompt iteration pays after its engine process ran
        `prompts_before` host-bound prompt iterations: h / (h + prompts_before), h the table's
        cold_prompt_iterations (0 without the term)."""
        h = self.engine.get("cold_prompt_iterations", 0.0)
        return h / (h + prompts_before) if self.warms_prompts else 0.0

    def prompt_host_bound(self, batch: int, ctx: float, prompt_tokens: float, span: float, max_ctx: float,
                          prefix_tokens: float = 0.0) -> bool:
        """Is this an eager prompt iteration whose kernel time is under its fixed host terms (iteration,
        eager launch, prompt path): the iterations whose count warms the prompt path (warmup_weight)?"""
        e = self.engine
        if prompt_tokens <= 0 or not e:
            return False
        kern, _, eager, _, _ = self._kernels(batch, ctx, prompt_tokens, span, max_ctx, prefix_tokens)
        return eager and kern < e["iteration_s"] + e["eager_iteration_s"] + e["prompt_iteration_s"]

    def exposed_host_stall_s(self, stall_s: float, batch: int, ctx: float, prompt_tokens: float, span: float,
                             max_ctx: float, prefix_tokens: float = 0.0) -> float:
        """(s31look, ADOPT_LOOKUP_PER_SHAPE) The part of a host stall of `stall_s` an eager prompt iteration pays, by the
        rule the table applies to its own first-met stall (exposed_stall_s with its new_size_host_bound /
        new_size_backlog: all where the kernels are shorter than the fixed host terms)."""
        e = self.engine
        if stall_s <= 0.0 or not e:
            return stall_s
        kern, _, eager, _, _ = self._kernels(batch, ctx, prompt_tokens, span, max_ctx, prefix_tokens)
        launches = (e["iteration_s"] + (e["eager_iteration_s"] if eager else 0.0)
                    + (e["prompt_iteration_s"] if prompt_tokens > 0 else 0.0))
        return exposed_stall_s(stall_s, kern, launches, e.get("new_size_host_bound", 0.0), e.get("new_size_backlog", 0.0))

    def exposed_kernel_charge_s(self, charge_s: float, batch: int, ctx: float, prompt_tokens: float, span: float,
                                max_ctx: float, prefix_tokens: float = 0.0) -> float:
        """(s32kern2, ADOPT_COLD_KERNELS_EXPOSED) The part of an eager iteration's first-used-kernel host time the host's
        critical path pays: exposed_stall_s with the backlog (the GPU's queue hides it as far as the iteration's kernels
        outlast its fixed launch terms), whatever the table's new_size flags."""
        e = self.engine
        if charge_s <= 0.0 or not e:
            return charge_s
        kern, _, eager, _, _ = self._kernels(batch, ctx, prompt_tokens, span, max_ctx, prefix_tokens)
        launches = (e["iteration_s"] + (e["eager_iteration_s"] if eager else 0.0)
                    + (e["prompt_iteration_s"] if prompt_tokens > 0 else 0.0))
        return exposed_stall_s(charge_s, kern, launches, 1.0, 1.0)

    @property
    def cold_eager_after(self) -> int:
        """Graph iterations since an instance's last eager one after which its next eager iteration
        pays cold_eager_s (the eager host path gone cold, session s15srv2); 0: no such term."""
        return int(self.engine.get("cold_eager_iterations", 0.0)) if self.engine.get("cold_eager_s", 0.0) > 0 else 0

    @property
    def post_prompt_after(self) -> int:
        """Decode-only iterations after an instance's last prompt iteration that pay post_prompt_s (session
        s18srv, docs/notes/s18srv_rule.md); 0: no such term."""
        return int(self.engine.get("post_prompt_iterations", 0.0)) if self.engine.get("post_prompt_s", 0.0) > 0 else 0

    @property
    def size_bin_tokens(self) -> int:
        """Flat batch sizes count as met in bins of this many tokens (1: each size its own; the
        engine table's new_size_bin_tokens: 16, measured by the s9srv campaign)."""
        return max(1, int(self.engine.get("new_size_bin_tokens", 0.0) or 1))

    def loop_of(self, eager: bool) -> float:
        """The host loop between iterations an eager (or graph-replayed) iteration pays (the spread's draw leaves it
        out)."""
        return self.loop_s if eager else self.graph_loop_s

    def is_eager(self, batch: int, prompt_tokens: float, max_ctx: float) -> bool:
        """Does this iteration run eagerly (no CUDA graph replayed)?"""
        return not self._bucket(batch, prompt_tokens, max_ctx)[0]

    def _bucket(self, batch: int, prompt_tokens: float, max_ctx: float) -> tuple[int, float]:
        """(graph rows per attention group, 0 = eager; padded width) of an iteration."""
        rows = math.ceil(batch / self.s.attention_dp) if batch > 0 else 0
        bucket, width = graph_bucket(rows, max_ctx if batch > 0 else 0.0, prompt_tokens > 0, self.s.kv_page_size,
                                     self.batch_buckets, self.page_buckets)
        if not self.batch_buckets and self.s.cuda_graphs and prompt_tokens <= 0 and 0 < rows <= self.s.cuda_graph_max_batch:
            bucket = rows                       # graphs of every batch: no padding rows
        return bucket, width

    def iteration_s(self, batch: int, ctx: float, prompt_tokens: float, span: float, max_ctx: float | None = None,
                    chunks: int = 0, pairs: float = 0.0, prefix_tokens: float = 0.0,
                    new_size: bool = False, new_bin: float = False, cold: float = 0.0,
                    cold_eager: bool = False, post_prompt: bool = False, warmth: float = 1.0) -> tuple[float, float]:
        """(seconds, of which prompt work) of one iteration: `batch` decoding requests at mean
        context `ctx` (longest `max_ctx`, default ctx) and `prompt_tokens` prompt tokens of mean
        span `span` in `chunks` chunks with `pairs` query-key pairs (sum of chunk x (prefix + chunk))
        behind `prefix_tokens` cached tokens (sum of the chunks' prefixes) whose latents are expanded;
        `new_size`: the engine's first iteration of this flat batch size, `new_bin`: of its bin of
        new_size_bin_tokens, as the share of new_bin_s it pays (new_bin_weight; True = 1) (each
        charged when eager); `cold`: the share of cold_prompt_s a prompt iteration pays (cold_weight);
        `cold_eager`: the instance ran cold_eager_after graph iterations since its last eager one (cold_eager_s
        charged when eager, as the first-size stalls); `post_prompt`: a decode-only iteration within
        post_prompt_after iterations of the instance's last prompt iteration (post_prompt_s); `warmth`: the factor on an
        eager pipeline's host work (ADOPT_EAGER_WARMTH: eager_warmth of the graph iterations since the last eager one)."""
        if self.batch_buckets or self.engine:
            return self._iteration_engine_s(batch, ctx, prompt_tokens, span, ctx if max_ctx is None else max_ctx,
                                            chunks, pairs, prefix_tokens, new_size, new_bin, cold, cold_eager, post_prompt,
                                            warmth)
        if prompt_tokens <= 0:
            t = self.decode_s(batch, ctx)
            return (t + (0.0 if batch <= self.graph_max else self.eager_s)), 0.0
        terms = sum(self.engine_terms_s(prompt_tokens, span, pairs, prefix_tokens))
        if batch <= 0:
            t = self.prefill_s(prompt_tokens, span) + self.prefix_s(prefix_tokens) + terms
            return t + self.eager_s, t
        dq = batch * self.q
        extra = (max(0.0, self.prefill_s(prompt_tokens + dq, span) - self.prefill_s(dq, span)) + self.prefix_s(prefix_tokens)
                 + terms)
        return self.decode_s(batch, ctx) + extra + self.eager_s, extra

    def _iteration_engine_s(self, batch: int, ctx: float, prompt_tokens: float, span: float, max_ctx: float,
                            chunks: int, pairs: float, prefix_tokens: float = 0.0,
                            new_size: bool = False, new_bin: float = False, cold: float = 0.0,
                            cold_eager: bool = False, post_prompt: bool = False, warmth: float = 1.0) -> tuple[float, float]:
        """iteration_s with graph buckets and the engine's fitted terms. Graph buckets apply per
        attention group (the instance's batch spread evenly over its dp groups); the engine terms
        are fitted on instance totals (the groups step in lockstep, the slower setting the time).
        (s32ci) Inside a sharing_iterations() block an iteration priced before (by any IterationCosts of the block's
        scenario: another seed's replay) is looked up: the price is a function of the arguments and the scenario."""
        memo = self._iterations
        if memo is None:
            return self._priced_iteration_s(batch, ctx, prompt_tokens, span, max_ctx, chunks, pairs, prefix_tokens,
                                            new_size, new_bin, cold, cold_eager, post_prompt, warmth)
        key = (batch, ctx, prompt_tokens, span, max_ctx, chunks, pairs, prefix_tokens, new_size, new_bin, cold,
               cold_eager, post_prompt, warmth)
        got = memo.get(key)
        if got is None:
            got = self._priced_iteration_s(*key)
            if len(memo) < ITERATION_MEMO_MAX:
                memo[key] = got
        return got

    def _priced_iteration_s(self, batch: int, ctx: float, prompt_tokens: float, span: float, max_ctx: float,
                            chunks: int, pairs: float, prefix_tokens: float = 0.0,
                            new_size: bool = False, new_bin: float = False, cold: float = 0.0,
                            cold_eager: bool = False, post_prompt: bool = False, warmth: float = 1.0) -> tuple[float, float]:
        """_iteration_engine_s computed (outside a sharing_iterations() block an instance calls it directly)."""
        kern, pre, eager, b, width = self._kernels(batch, ctx, prompt_tokens, span, max_ctx, prefix_tokens, pairs)
        e = self.engine if eager else self.graph_engine
        if not e:
            return kern + (self.eager_s if eager else 0.0), pre
        pad_rows = b                            # padded decode rows of all groups
        if not eager and ADOPT_GRAPH_DECODE_OPS and self.ops is not None and e.get("graph_op_s", 0.0) > 0.0:
            # (s27serve) a replay: its host work, then its kernels with each captured operator's floor and each row's
            kern += e["graph_op_s"] * graph_ops(self.ops, self.m) + e.get("graph_row_s", 0.0) * pad_rows
            return (e.get("graph_host_s", 0.0) + e["loop_s"] + kern + e["gather_s_per_row_token"] * pad_rows * width
                    + (e.get("post_prompt_s", 0.0) if post_prompt else 0.0)), pre
        if not eager and ADOPT_GRAPH_OP_FLOOR and self.ops is not None and e.get("graph_op_floor_s", 0.0) > 0.0:
            # (s27serve round 2) the captured forward's operators beyond (or short of) the fit model's
            kern = max(0.0, kern + e["graph_op_floor_s"] * self.graph_ops_over_fit)
        prompt_host = (e["prompt_iteration_s"] if prompt_tokens > 0 else 0.0) + e["chunk_s"] * chunks
        # a first-met size's host stall, where the iteration is host-bound (new_size_host_bound:
        # its kernels shorter than its fixed host terms; a longer GPU queue hides the stall), or
        # (new_size_backlog) less what the GPU's queue hides (exposed_stall_s)
        launches = (e["iteration_s"] + (e["eager_iteration_s"] if eager else 0.0)
                    + (e["prompt_iteration_s"] if prompt_tokens > 0 else 0.0))
        stall = 0.0
        if eager:
            cold_s = e.get("cold_prompt_s", 0.0) * cold if prompt_tokens > 0 else 0.0
            cold_s += e.get("cold_eager_s", 0.0) if cold_eager else 0.0
            stall = exposed_stall_s((e["new_size_s"] if new_size else 0.0) + e["new_bin_s"] * float(new_bin) + cold_s,
                                    kern, launches, e.get("new_size_host_bound", 0.0), e.get("new_size_backlog", 0.0))
        host = (e["iteration_s"] + e["loop_s"] + ((e["eager_iteration_s"] + stall) if eager else 0.0)
                + e["gather_s_per_row_token"] * pad_rows * width
                + (e.get("post_prompt_s", 0.0) if post_prompt and prompt_tokens <= 0 else 0.0))
        # (ADOPT_ENGINE_PREFILL_KERNELS) the engine's attention core replaces the table's score term
        scores_s = 0.0 if self.engine_prefill else e["score_s_per_pair"] * pairs
        pre_host = prompt_host + scores_s
        if eager and ADOPT_EAGER_PIPELINE and self.ops is not None and e.get("eager_op_s", 0.0) > 0.0:
            attn_x, moe_x = self.engine_terms_s(prompt_tokens, span, pairs, prefix_tokens)
            core_x = scores_s + self.engine_core_part_s(prompt_tokens, span, pairs, prefix_tokens) if ADOPT_EAGER_START_SYNC else 0.0
            stages = self._pipeline_stages(b, ctx, prompt_tokens, span, chunks, kern - pre, pre - attn_x - moe_x,
                                           scores_s + attn_x, moe_x, core_x)
            # (ADOPT_EAGER_WARMTH) the host's dispatch and input preparation, colder after graph replays
            end, _ = pipeline_end_s(stages, e["eager_op_s"] * warmth, self.start_s(batch, prompt_tokens) * warmth)
            end += e.get("sync_s", 0.0) if ADOPT_EAGER_START_SYNC else 0.0
            total = (e["loop_s"] + stall + end + e["gather_s_per_row_token"] * pad_rows * width
                     + (e.get("post_prompt_s", 0.0) if post_prompt and prompt_tokens <= 0 else 0.0))
            old = kern + host + pre_host
            return total, total * (pre + pre_host) / old if old > 0 else 0.0
        if eager and e.get("launch_overlap", 0.0):
            # a one-GPU engine's eager forward: the kernels run under the launches, the later ending it
            hidden = min(kern, launches)
            return kern + host + pre_host - hidden, pre + pre_host
        total, prompt_s = kern + host + pre_host, pre + pre_host
        if eager and ADOPT_LAUNCH_FLOOR and e.get("launch_floor_eager_s", 0.0) > 0.0:
            floor = launch_floor_s(e, chunks, stall, prompt_tokens, batch)
            if floor > total:   # host-bound: the launches set the time; the prompt work keeps its share
                return floor, prompt_s * floor / total
        return total, prompt_s

    def _shares(self, prompt: bool, x: float, y: float) -> tuple[float, float, float, float, float]:
        """(a layer's attention, a dense layer's FFN, a MoE layer's FFN, the head) as shares of the kernel time of a
        prefill forward of x tokens at span y (prompt) or a decode step of x rows at context y, at the nearest grid
        point (the twin's cost functions; ADOPT_EAGER_PIPELINE), and the routed experts' share of a MoE layer's FFN."""
        i, j = max(0, round(_fine_index(max(x, 1.0)))), _coarse_cell(max(y, 1.0))
        key = (prompt, i, j)
        got = self._stage_shares.get(key)
        if got is not None:
            return got
        m, n = self.m, max(1, round(_fine_point(i)))
        if prompt:
            spec = dataclasses.replace(self.s, prefill_chunk_tokens=n, input_len=max(1, round(_coarse_point(j))),
                                       num_microbatches=1)
            d = prefill_forward(m, self.gpu, spec, self.prof, self._skip)
            dense_total = d["dense_layers_s"]
        else:
            spec = dataclasses.replace(self.s, input_len=_coarse_point(j), output_len=0, num_microbatches=1)
            d = decode_step(m, self.gpu, spec, n, self.prof)
            dense_total = d["layers_dense_s"]
        moe_layers = sum(is_moe_layer(m, k) for k in range(m.num_layers))
        dense_layers = m.num_layers - moe_layers
        attn = d["per_layer_attn_s"]
        moe = d["per_layer_moe_compute_s"] + d["per_layer_a2a_s"]
        dense = max(0.0, dense_total / dense_layers - attn) if dense_layers else 0.0
        total = m.num_layers * attn + moe_layers * moe + dense_layers * dense + d["head_s"]
        routed = d["per_microbatch_groups_s"].get("routed_experts", 0.0) / moe if moe > 0 else 0.0
        got = ((attn / total, dense / total, moe / total, d["head_s"] / total, routed) if total > 0
               else (0.0, 0.0, 0.0, 0.0, 0.0))
        self._stage_shares[key] = got
        return got

    def _pipeline_stages(self, batch: int, ctx: float, prompt_tokens: float, span: float, chunks: int,
                         decode_kernels_s: float, prompt_kernels_s: float, scores_s: float,
                         moe_extra_s: float = 0.0, core_s: float = 0.0) -> list[tuple[float, float]]:
        """[(operators, kernel seconds)] of an eager iteration's stages in issue order (ADOPT_EAGER_PIPELINE): before
        the first layer (no kernel time), each layer's attention (its share of both parts' kernels and of the scores)
        then its FFN, the head; the decode part's kernels split by a decode step's shares, the prompt part's by a
        prefill forward's; `moe_extra_s` (the engine's routing passes, ADOPT_ENGINE_PREFILL_KERNELS) in equal shares
        to each MoE layer's FFN outside its grouped GEMMs; `core_s` (part of `scores_s`: the attention core,
        ADOPT_EAGER_START_SYNC) issued from each layer's chunk operators after the rest of its attention stage's."""
        m = self.m
        pre_n, attn_n, ffn_n, head_n = stage_ops(self.ops, m, chunks, batch)
        zero = (0.0, 0.0, 0.0, 0.0, 0.0)
        sp = self._shares(True, prompt_tokens, span) if prompt_kernels_s > 0 else zero
        sd = self._shares(False, batch, ctx) if decode_kernels_s > 0 and batch > 0 else zero
        stages = [(pre_n, 0.0)]
        chunk_n = self.ops["attn_ops_per_chunk"] * chunks if core_s > 0 else 0.0
        if chunk_n <= 0 or chunk_n >= attn_n[0]:
            core_s, chunk_n = 0.0, 0.0
        for k in range(m.num_layers):
            attn_s = prompt_kernels_s * sp[0] + decode_kernels_s * sd[0] + scores_s / m.num_layers
            if core_s > 0:
                stages.extend([(attn_n[k] - chunk_n, attn_s - core_s / m.num_layers), (chunk_n, core_s / m.num_layers)])
            else:
                stages.append((attn_n[k], attn_s))
            if is_moe_layer(m, k):
                ffn_p, ffn_d = prompt_kernels_s * sp[2], decode_kernels_s * sd[2]
                routed_s = ffn_p * sp[4] + ffn_d * sd[4]
                ffn = ffn_p + ffn_d + (moe_extra_s / m.num_moe_layers if m.num_moe_layers else 0.0)
                stages.extend(moe_ffn_stages(self.ops, ffn, routed_s / ffn if ffn > 0 else 0.0))
            else:
                stages.append((ffn_n[k], prompt_kernels_s * sp[1] + decode_kernels_s * sd[1]))
        stages.extend(head_stages(self.ops, prompt_kernels_s * sp[3] + decode_kernels_s * sd[3]))
        return stages

    def engine_terms_s(self, prompt_tokens: float, span: float, pairs: float | None, prefix_tokens: float) -> tuple[float, float]:
        """(attention-side, MoE-side) seconds of the eager engine's own prompt terms (engine_prompt_terms_s; (0, 0)
        unless engine_prefill). `pairs` None: one chunk a prompt from its start (prompt tokens x span)."""
        if not self.engine_prefill or prompt_tokens <= 0:
            return 0.0, 0.0
        pairs = prompt_tokens * span if pairs is None or pairs <= 0 else pairs
        return engine_prompt_terms_s(self.m, prompt_tokens, pairs, prompt_tokens + prefix_tokens)

    def start_s(self, batch: int, prompt_tokens: float) -> float:
        """The engine's host work before an eager step's first operator (ADOPT_EAGER_START_SYNC; 0 when off): the
        table's start_s, start_prompt_only_s where no decode row runs beside the prompt work, start_s_per_token a
        prompt token."""
        e = self.engine
        if not ADOPT_EAGER_START_SYNC:
            return 0.0
        return (e.get("start_s", 0.0) + (e.get("start_prompt_only_s", 0.0) if batch <= 0 < prompt_tokens else 0.0)
                + e.get("start_s_per_token", 0.0) * max(prompt_tokens, 0.0))

    def engine_core_part_s(self, prompt_tokens: float, span: float, pairs: float | None, prefix_tokens: float) -> float:
        """The attention-core part of engine_terms_s' attention side (engine_core_s; 0 unless engine_prefill)."""
        if not self.engine_prefill or prompt_tokens <= 0:
            return 0.0
        pairs = prompt_tokens * span if pairs is None or pairs <= 0 else pairs
        return engine_core_s(self.m, pairs, prompt_tokens + prefix_tokens)

    def _kernels(self, batch: int, ctx: float, prompt_tokens: float, span: float, max_ctx: float,
                 prefix_tokens: float, pairs: float | None = None) -> tuple[float, float, bool, int, float]:
        """(kernel seconds, of which prompt work, eager, padded decode rows of all groups, padded width) of an
        iteration with graph buckets (per attention group: the instance's batch spread evenly over its groups); the
        eager engine's own prompt terms in the prompt work (engine_terms_s)."""
        dp = self.s.attention_dp
        bucket, width = self._bucket(batch, prompt_tokens, max_ctx)
        b = bucket * dp if bucket else batch
        terms = sum(self.engine_terms_s(prompt_tokens, span, pairs, prefix_tokens))
        if prompt_tokens <= 0:
            kern, pre = self.decode_s(b, ctx), 0.0
        elif b <= 0:
            kern = pre = self.prefill_s(prompt_tokens, span) + self.prefix_s(prefix_tokens) + terms
        else:
            dq = b * self.q
            pre = (max(0.0, self.prefill_s(prompt_tokens + dq, span) - self.prefill_s(dq, span)) + self.prefix_s(prefix_tokens)
                   + terms)
            kern = self.decode_s(b, ctx) + pre
        return kern, pre, not bucket, b, width

    @property
    def grid_points(self) -> int:
        return len(self._decode) + len(self._prefill)

"""Scenarios: the one strict TOML loader, and the three kinds of scenario it produces.

The kind follows from the tables (`kind_of`):
- a *training* scenario (`Scenario`) has [model], [cluster], [plan], [workload] and, for whole-run
  replay, [run], [cost], [energy], [failures], [uncertainty]; [moe] picks the expert-load model;
- a *plan* scenario (`PlanScenario`) is a training scenario, the base plan, with a [search] table:
  the tokens, the deadline and the lists of values a plan search tries;
- a *serving* scenario (`ServeScenario`) has [model], [cluster] and [serve], and nothing of training.
Unknown keys, wrong types, out-of-range values, tables of another kind and plans whose degrees
don't fit the cluster raise ScenarioError naming the field, the value and what is allowed.
`--set a.b=value` overrides are applied to the raw tables before validation, so they are checked
exactly like file values.

Two guards keep hostile or mistyped input from running away before any field is checked: TOML
nested deeper than MAX_TOML_DEPTH is refused before it is parsed (the parser recurses once per
level), and a training scenario whose step would simulate more than STEP_TASK_LIMIT tasks is refused
by `Scenario.check`, naming the field that makes it large (`step_work`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from twin.core.errors import ScenarioError
from twin.core.fields import build, to_dict
from twin.core.moe_specs import DYNAMIC_RUNS, DYNAMIC_TOKENS, MoeLoadSpec
from twin.core.search_specs import PLAN_AXES, SearchSpec
from twin.core.serve_specs import ServeSpec, TrafficSpec
from twin.core.run_specs import CostSpec, EnergySpec, FailureSpec, RunSpec, UncertaintySpec
from twin.core.specs import (A2A_SMS_SATURATING, ClusterSpec, GPUSpec, ModelSpec, ParallelPlan, Workload, _catalog,
                             get_gpu)
from twin.core.schedules import build_schedule, check_virtual_stages, num_stages

TRAINING, PLAN, SERVING = "training", "plan", "serving"

# The step twin simulates one pipeline at task granularity: every rank runs every micro-batch's
# forward and backward through the blocks of its stage, each block a handful of tasks (attention,
# dispatch, MLP, combine; in the backward input and weight gradients too). Measured on one core: the
# default V3 step (16 ranks x 120 micro-batches, estimated 153,600 tasks) simulates 114,336 tasks
# in 0.7 s; at 16x its batch (estimated 2.46 M) 1.85 M tasks in 11 s and 0.6 GB; at 32x (4.9 M)
# 3.7 M tasks in 15 s and 1.2 GB. The limit admits 16x the default batch on the default cluster.
TASKS_PER_BLOCK = 16
STEP_TASK_LIMIT = 2_500_000
# An op's tasks are placed on its rank's streams together (twin.sim.pipeline.arbitrate_streams), at
# a cost that grows with the square of its blocks: measured 2.6 us per op per block^2 on one core
# (a 516-layer model on 2 ranks, 259 blocks per stage: 16 ops in 2.8 s; the default V3, 5 blocks:
# 1,920 ops in 0.07 s). Ops x blocks^2 is capped at about 5 s of that work.
STEP_OP_BLOCKS2_LIMIT = 2_000_000
# the 'dynamic' load model routes 4,096 tokens over every expert per simulated step, in up to 4
# runs: the default (200 steps, 256 experts) draws 0.84e9 keys in ~15 s
DYNAMIC_DRAW_LIMIT = 4.2e9
MAX_TOML_DEPTH = 32   # nesting of arrays, inline tables and dotted keys (a scenario uses 3)
# the largest scenario file read: the shipped ones are 1-3 KB (the catalogs under 64 KB); the depth
# check and the parser take ~0.7 s per MB, so a 50 MB file took 34 s before failing and a larger
# one would exhaust memory
MAX_SCENARIO_BYTES = 1 << 20
# the embedded default of each kind (package data, twin/data)
DEFAULT_SCENARIO = {TRAINING: "deepseek_v3_pretrain.toml", SERVING: "r1_serve_h200.toml"}
# the serving scenarios the twin itself runs (the default; DeepSeek's published prefill and decode
# conditions, which `twin validate` and twin.serving.published run): package data, so an installed
# wheel has them; the checkout's scenarios/ holds a link to each, not a copy
PACKAGED_SCENARIOS = ("r1_serve_h200", "r1_serve_h800_decode", "r1_serve_h800_prefill")


@dataclass(frozen=True)
class Scenario:
    name: str
    model: ModelSpec
    cluster: ClusterSpec
    plan: ParallelPlan
    workload: Workload
    run: RunSpec = RunSpec()
    cost: CostSpec = CostSpec()
    energy: EnergySpec = EnergySpec()
    failures: FailureSpec = FailureSpec()
    uncertainty: UncertaintySpec = UncertaintySpec()
    moe: MoeLoadSpec = MoeLoadSpec()

    kind = TRAINING

    @property
    def gpu(self) -> GPUSpec:
        return get_gpu(self.cluster.gpu)

    @property
    def dp(self) -> int:
        """Data-parallel degree: pipelines in the job, each of tp x cp x pp GPUs."""
        return self.cluster.num_gpus // (self.plan.tp * self.plan.cp * self.plan.pp)

    @property
    def num_microbatches(self) -> int:
        return self.workload.global_batch_seqs // (self.dp * self.plan.micro_batch_seqs)

    @property
    def tokens_per_microbatch(self) -> int:
        """Tokens of one micro-batch, over all its tp x cp ranks."""
        return self.plan.micro_batch_seqs * self.workload.seq_len

    @property
    def gpus_per_pipeline_stage(self) -> int:
        """GPUs that share one pipeline stage of one pipeline: tp x cp."""
        return self.plan.tp * self.plan.cp

    def to_dict(self) -> dict:
        return to_dict(self)

    def check(self, source: str | None = None) -> None:
        """Cross-section invariants; each error prints the numbers involved."""
        m, c, p, w = self.model, self.cluster, self.plan, self.workload
        gpus_per_pipeline = p.tp * p.cp * p.pp
        if c.num_gpus % gpus_per_pipeline:
            raise ScenarioError("cluster.num_gpus", c.num_gpus, f"a multiple of plan.tp * plan.cp * plan.pp = {p.tp} * {p.cp} * {p.pp} = {gpus_per_pipeline}", source)
        dp = c.num_gpus // gpus_per_pipeline
        if m.num_heads % p.tp:
            raise ScenarioError("plan.tp", p.tp, f"a divisor of model.num_heads = {m.num_heads}", source)
        if p.tp > self.gpu.gpus_per_node:
            raise ScenarioError("plan.tp", p.tp, f"<= GPUs per node = {self.gpu.gpus_per_node} (TP stays inside a node)", source)
        if m.attention == "gqa" and p.tp > m.num_kv_heads and p.tp % m.num_kv_heads:
            raise ScenarioError("plan.tp", p.tp, f"a divisor or multiple of model.num_kv_heads = {m.num_kv_heads}", source)
        if p.cp > 1 and w.seq_len % (2 * p.cp):
            raise ScenarioError("plan.cp", p.cp, f"a degree with workload.seq_len = {w.seq_len} a multiple of 2 x plan.cp "
                                "(each rank holds two balanced halves of the causal sequence)", source)
        if m.is_moe:
            # expert parallelism draws on every rank that holds different tokens of one layer:
            # data-, context- and tensor-parallel ranks (the MoE takes each TP rank's share of tokens)
            if (dp * p.cp * p.tp) % p.ep:
                raise ScenarioError("plan.ep", p.ep, f"a divisor of data-parallel x context-parallel x tensor-parallel ranks = "
                                    f"{dp} x {p.cp} x {p.tp} = {dp * p.cp * p.tp}", source)
            if m.num_routed_experts % p.ep:
                raise ScenarioError("plan.ep", p.ep, f"a divisor of model.num_routed_experts = {m.num_routed_experts}", source)
        elif p.ep != 1:
            raise ScenarioError("plan.ep", p.ep, f"1 for a dense model (model {m.name!r} has no routed experts to spread)", source)
        self._check_inapplicable(source)
        per_pipeline = dp * p.micro_batch_seqs
        if w.global_batch_seqs % per_pipeline:
            raise ScenarioError("workload.global_batch_seqs", w.global_batch_seqs,
                                f"a multiple of data-parallel degree x plan.micro_batch_seqs = {dp} x {p.micro_batch_seqs} = {per_pipeline}", source)
        self._check_work(source)
        self._check_dynamic_load(source)
        check_virtual_stages(p.schedule, p.virtual_stages, source)
        try:
            build_schedule(p.schedule, p.pp, w.global_batch_seqs // per_pipeline, p.virtual_stages)
        except ScenarioError as exc:
            if exc.field != "plan.num_microbatches":   # the plan's own (dualpipe's even plan.pp): no batch mends it
                raise ScenarioError(exc.field, exc.value, exc.allowed, source) from None
            raise ScenarioError("workload.global_batch_seqs", w.global_batch_seqs,
                                f"a batch giving {exc.allowed.replace('pp', 'plan.pp')} micro-batches per pipeline "
                                f"(now {w.global_batch_seqs} / ({dp} x {p.micro_batch_seqs}) = {w.global_batch_seqs // per_pipeline})",
                                source) from None
        stages = num_stages(p.schedule, p.pp, p.virtual_stages)
        if stages > m.num_layers + 2:
            field, value = ("plan.virtual_stages", p.virtual_stages) if p.virtual_stages > 1 else ("plan.pp", p.pp)
            raise ScenarioError(field, value, f"at most {m.num_layers + 2} model stages for {m.num_layers} layers (one block "
                                f"each, and a first stage with only the embedding and a last with only the head; schedule "
                                f"{p.schedule} makes {stages} stages)", source)
        if p.held_comm_sms >= self.gpu.num_sms:
            raise ScenarioError("plan.comm_sms", p.held_comm_sms, f"< the GPU's {self.gpu.num_sms} SMs", source)
        if m.is_moe and p.ep > 1 and p.held_comm_sms == 0:
            # the all-to-all's bandwidth follows its SMs (twin.costs.comm.a2a_link_share): none cannot run it
            raise ScenarioError("plan.comm_sms", 0, f">= 1 with expert parallelism (plan.ep = {p.ep}): DeepEP's dispatch "
                                f"and combine run on the SMs held for them ({A2A_SMS_SATURATING} saturate IB and NVLink, "
                                "V3 report §3.2.2)", source)

    def _check_inapplicable(self, source: str | None) -> None:
        """Refuse plan fields that do not apply to this model or plan, rather than ignore them."""
        p = self.plan
        if p.sequence_parallel and p.tp == 1:
            raise ScenarioError("plan.sequence_parallel", True, "false when plan.tp = 1 (sequence parallelism splits over tensor-parallel ranks)", source)
        if p.tp_comm_overlap and p.tp == 1:
            raise ScenarioError("plan.tp_comm_overlap", True, "false when plan.tp = 1 (no tensor-parallel communication to overlap)", source)
        if p.tp_overlap_kind != "te_userbuffers" and not p.tp_comm_overlap:
            raise ScenarioError("plan.tp_overlap_kind", p.tp_overlap_kind, "'te_userbuffers' (the default) when plan.tp_comm_overlap "
                                "= false (no overlap to choose)", source)
        if not p.sp_input_regather and not (p.tp > 1 and (p.sequence_parallel or self.model.is_moe)
                                            and not p.tp_comm_overlap and p.recompute == "full"):
            raise ScenarioError("plan.sp_input_regather", False, "true (the default) unless plan.tp > 1 gathers a part's "
                                "input (sequence_parallel, or an MoE model) without plan.tp_comm_overlap and with "
                                "plan.recompute = 'full' (only then does the backward have a gathered input to reuse)", source)
        if p.grad_buckets != "every_chunk" and not p.overlap_grad_reduce:
            raise ScenarioError("plan.grad_buckets", p.grad_buckets, "'every_chunk' (the default) when plan.overlap_grad_reduce "
                                "= false (no bucket runs beside the backward)", source)
        if p.grad_buckets == "megatron" and p.zero_stage > 1:
            raise ScenarioError("plan.grad_buckets", p.grad_buckets, f"'every_chunk' (the default) when plan.zero_stage = "
                                f"{p.zero_stage} (Megatron's buffers reduce for ZeRO 0-1: DDP or its distributed optimizer)",
                                source)
        if p.pp_grad_sync != "last_backward" and not (p.zero_stage == 2 and p.pp > 1):
            raise ScenarioError("plan.pp_grad_sync", p.pp_grad_sync, "'last_backward' (the default) unless plan.zero_stage "
                                "= 2 with plan.pp > 1 (without PP ZeRO-2 reduce-scatters every backward already; ZeRO 0-1 "
                                "and 3 hold their gradients as they do)", source)
        if p.pp_runtime == "torch_pipelining" and p.pp > 1 and p.schedule not in ("1f1b", "interleaved-1f1b"):
            raise ScenarioError("plan.pp_runtime", p.pp_runtime, "'dataflow' (the default) with plan.schedule "
                                f"{p.schedule!r} (torch.distributed.pipelining's runtime is modelled for '1f1b' and "
                                "'interleaved-1f1b')", source)
        if p.optimizer_kernel == "none" and p.zero_stage != 0:
            raise ScenarioError("plan.optimizer_kernel", p.optimizer_kernel, f"'fused' or 'foreach' when plan.zero_stage = "
                                f"{p.zero_stage} (a sharded optimizer's update and gather are its step; 'none' times a "
                                "benchmark step without one: zero_stage 0)", source)
        if p.grad_reduce_groups != "dense_and_expert" and (p.zero_stage != 0 or p.cp != 1):
            raise ScenarioError("plan.grad_reduce_groups", p.grad_reduce_groups, f"'dense_and_expert' (the default) with "
                                f"plan.zero_stage = {p.zero_stage} and plan.cp = {p.cp} ('by_group' is real/pipeline's "
                                "all-reduces: zero_stage 0, no context parallelism)", source)
        if p.grad_accumulate != "fused" and p.zero_stage != 0:
            raise ScenarioError("plan.grad_accumulate", p.grad_accumulate, f"'fused' (the default) when plan.zero_stage = "
                                f"{p.zero_stage} ('autograd' is real/pipeline's unsharded .grad: zero_stage 0)", source)
        if p.cp_kind != "ring" and p.cp == 1:
            raise ScenarioError("plan.cp_kind", p.cp_kind, "'ring' (the default) when plan.cp = 1 (no context parallelism)", source)
        if p.zero_stage == 3 and p.grad_reduce_dtype != "bf16":
            raise ScenarioError("plan.grad_reduce_dtype", p.grad_reduce_dtype, "'bf16' (the default) when plan.zero_stage = 3 "
                                "(FSDP reduce-scatters each block's gradients in FP32 inside the pipeline)", source)
        if p.zero_stage == 3 and p.overlap_grad_reduce:
            raise ScenarioError("plan.overlap_grad_reduce", True, "false when plan.zero_stage = 3 (FSDP reduce-scatters each "
                                "block's gradients inside the pipeline, no reduce-scatter follows it)", source)
        if p.param_gather_kind != "ideal":
            why = ("plan.zero_stage 1 or 2 (the distributed optimizer's all-gather; FSDP gathers per block)"
                   if p.zero_stage not in (1, 2) else
                   "plan.overlap_dp_comm = true (without it the all-gather runs whole after the optimizer step)"
                   if not p.overlap_dp_comm else
                   "plan.overlap_grad_reduce = true (Megatron-LM asserts --overlap-grad-reduce with "
                   "--overlap-param-gather: arguments.py @ core_r0.8.0)" if not p.overlap_grad_reduce else
                   "plan.ep = 1 (expert parameters gather over their own data-parallel group: not modelled)"
                   if p.ep > 1 else None)
            if why:
                raise ScenarioError("plan.param_gather_kind", p.param_gather_kind, f"'ideal' (the default) unless {why}", source)
        if p.fp8_recipe != "blockwise" and p.gemm_precision != "fp8":
            raise ScenarioError("plan.fp8_recipe", p.fp8_recipe, f"'blockwise' (the default) when plan.gemm_precision = "
                                f"{p.gemm_precision!r} (no FP8 GEMMs to scale)", source)
        if p.kv_repeat and self.model.attention != "gqa":
            raise ScenarioError("plan.kv_repeat", True, f"false for model {self.model.name!r}: its attention is "
                                f"{self.model.attention!r}, not GQA (no key/value heads to repeat)", source)
        if not self.model.is_moe and p.comm_sms:
            raise ScenarioError("plan.comm_sms", p.comm_sms, f"0 or absent for a dense model (model {self.model.name!r} has no "
                                "expert-parallel all-to-all to hold SMs for)", source)

    def step_work(self) -> dict:
        """Estimated tasks of one simulated step, and its factors: pipeline ranks x micro-batches
        per pipeline x passes of a micro-batch through a rank x blocks per stage x TASKS_PER_BLOCK,
        where blocks per stage are the largest stage's layers, ceil(layers / stages), plus one per
        MTP module (they sit on the last stage): an upper bound. From the specs alone (no schedule
        is built), so a huge batch is refused before anything is allocated."""
        m, p = self.model, self.plan
        stages = num_stages(p.schedule, p.pp, p.virtual_stages)
        passes = stages // p.pp   # DualPipeV: every micro-batch passes each rank twice; interleaved: V times
        blocks = math.ceil(m.num_layers / stages) + m.num_mtp_modules
        n = self.workload.global_batch_seqs // (self.dp * p.micro_batch_seqs)
        return {"tasks": p.pp * n * passes * blocks * TASKS_PER_BLOCK, "ranks": p.pp, "microbatches": n,
                "passes": passes, "blocks": blocks, "op_blocks2": p.pp * n * passes * blocks ** 2}

    def _check_work(self, source: str | None) -> None:
        """Refuse a step too large to simulate (STEP_TASK_LIMIT). The error names the larger factor:
        the batch (micro-batches per pipeline) or the depth (blocks per stage: layers, MTP modules)."""
        m, w = self.model, self.workload
        wk = self.step_work()
        if wk["op_blocks2"] > STEP_OP_BLOCKS2_LIMIT and wk["tasks"] <= STEP_TASK_LIMIT:
            raise ScenarioError("model.num_layers", m.num_layers,
                                f"at most {STEP_OP_BLOCKS2_LIMIT:,} ops x blocks^2 per simulated step (an op's tasks are "
                                f"placed together, at a cost that grows with the square of its blocks); this one has "
                                f"{wk['ranks'] * wk['microbatches'] * wk['passes']:,} ops x {wk['blocks']:,}^2 blocks per stage "
                                f"= {wk['op_blocks2']:,}: use fewer layers or more pipeline stages (plan.pp)", source)
        if wk["tasks"] <= STEP_TASK_LIMIT:
            return
        if wk["microbatches"] >= wk["blocks"]:
            field, value = "workload.global_batch_seqs", w.global_batch_seqs
            fix = "a smaller batch, more sequences per micro-batch (plan.micro_batch_seqs) or more GPUs (cluster.num_gpus)"
        elif m.num_mtp_modules > wk["blocks"] - m.num_mtp_modules:
            field, value, fix = "model.num_mtp_modules", m.num_mtp_modules, "fewer MTP modules"
        else:
            field, value, fix = "model.num_layers", m.num_layers, "fewer layers or more pipeline stages (plan.pp)"
        raise ScenarioError(field, value,
                            f"a training step of at most {STEP_TASK_LIMIT:,} simulated tasks; this one has ~{wk['tasks']:,} = "
                            f"{wk['ranks']:,} pipeline ranks x {wk['microbatches']:,} micro-batches x {wk['passes']} "
                            f"pass{'es' if wk['passes'] > 1 else ''} x "
                            f"{wk['blocks']:,} blocks per stage x {TASKS_PER_BLOCK} tasks per block: use {fix}", source)

    def _check_dynamic_load(self, source: str | None) -> None:
        """Refuse a 'dynamic' expert-load model too costly to simulate (DYNAMIC_DRAW_LIMIT)."""
        m = self.model
        if self.moe.load_model == "dynamic" and m.is_moe:
            runs = min(DYNAMIC_RUNS, m.num_moe_layers)
            draws = self.moe.dynamic_steps * m.num_routed_experts * DYNAMIC_TOKENS * runs
            if draws > DYNAMIC_DRAW_LIMIT:
                raise ScenarioError("moe.dynamic_steps", self.moe.dynamic_steps,
                                    f"at most {DYNAMIC_DRAW_LIMIT:.2g} routing draws for the 'dynamic' load model; this one makes "
                                    f"{draws:.3g} = {self.moe.dynamic_steps:,} steps x {m.num_routed_experts:,} experts x "
                                    f"{DYNAMIC_TOKENS:,} tokens x {runs} runs: use fewer steps", source)


def _load_model(table: dict, source: str | None) -> ModelSpec:
    """[model] names a catalog entry, optionally overriding fields, or defines a model inline."""
    if not isinstance(table, dict):
        raise ScenarioError("model", table, "a table", source)
    catalog = _catalog("models.toml")["models"]
    name = table.get("name", "custom")
    base = dict(catalog.get(name, {})) if isinstance(name, str) else {}
    if isinstance(name, str) and "name" in table and not base:   # a misspelt catalog name read as an inline model: say which (until s22walk
        # `model.name = "deepseek-r1"` was refused as "model.num_layers: got '<missing>'")
        missing = [f.name for f in dataclasses.fields(ModelSpec) if f.init and f.name not in table
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ScenarioError("model.name", name, "a catalog model (twin model --list: " + ", ".join(sorted(catalog))
                                + "), or an inline model, for which " + ", ".join(f"model.{k}" for k in missing)
                                + " are required", source)
    merged = {**base, **table}
    # a dense catalog model (every block dense) at another depth stays dense: its num_dense_layers follows
    # num_layers where the table does not say it (`--set model.num_layers=40` on llama3-70b was refused, 100 asked
    # for routed experts, until s26walk)
    if (base and "num_layers" in table and "num_dense_layers" not in table and not base.get("num_routed_experts")
            and base.get("num_dense_layers") == base.get("num_layers")):
        merged["num_dense_layers"] = table["num_layers"]
    return build(ModelSpec, merged, "model", source)


@dataclass(frozen=True)
class PlanScenario(Scenario):
    """A training scenario (the base plan) with the question a plan search answers ([search])."""

    search: SearchSpec = None   # always given by the loader

    kind = PLAN

    def base(self) -> Scenario:
        """The base training scenario, without the search."""
        return Scenario(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Scenario)})


@dataclass(frozen=True)
class ServeScenario:
    """A serving deployment: the model, the GPUs, and how they serve it ([serve])."""

    name: str
    model: ModelSpec
    cluster: ClusterSpec
    serve: ServeSpec
    traffic: TrafficSpec = TrafficSpec()

    kind = SERVING

    @property
    def gpu(self) -> GPUSpec:
        return get_gpu(self.cluster.gpu)

    def to_dict(self) -> dict:
        return to_dict(self)

    def check(self, source: str | None = None) -> None:
        self.serve.check_against(self.model, self.gpu, self.cluster.num_gpus, source)


TRAINING_SECTIONS = {
    "cluster": ClusterSpec,
    "plan": ParallelPlan,
    "workload": Workload,
    "run": RunSpec,
    "cost": CostSpec,
    "energy": EnergySpec,
    "failures": FailureSpec,
    "uncertainty": UncertaintySpec,
    "moe": MoeLoadSpec,
}
SERVING_SECTIONS = {"cluster": ClusterSpec, "serve": ServeSpec, "traffic": TrafficSpec}
SECTIONS = {**TRAINING_SECTIONS, **SERVING_SECTIONS}   # every section of every kind (docs/scenario.md)
KINDS = {TRAINING: (Scenario, TRAINING_SECTIONS), PLAN: (PlanScenario, {**TRAINING_SECTIONS, "search": SearchSpec}),
         SERVING: (ServeScenario, SERVING_SECTIONS)}
SECTIONS["search"] = SearchSpec


def kind_of(raw: dict) -> str:
    """A scenario with a [serve] table is a serving scenario, one with a [search] table a plan
    scenario; otherwise it is a training one."""
    if not isinstance(raw, dict) or "serve" in raw:
        return SERVING if isinstance(raw, dict) else TRAINING
    return PLAN if "search" in raw else TRAINING


def from_dict(raw: dict, source: str | None = None, kind: str | tuple[str, ...] | None = None
              ) -> Scenario | PlanScenario | ServeScenario:
    """Validate raw scenario tables (as parsed from TOML) into a scenario of their kind; `kind`
    demands one or several (a serving scenario given to a training command is an error naming [serve])."""
    if not isinstance(raw, dict):
        raise ScenarioError("<scenario>", raw, "a TOML document of tables", source)
    found = kind_of(raw)
    kinds = (kind,) if isinstance(kind, str) else kind
    for k in kinds or ():   # a caller's typo (the Python API's kind="serve") is not a kind the file lacks
        if k not in KINDS:
            raise ScenarioError("kind", k, "one of " + ", ".join(repr(name) for name in KINDS))
    if kinds is not None and found not in kinds:
        raise _wrong_kind(found, kinds, source)
    cls, sections = KINDS[found]
    allowed = {"name", "model", *sections}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        other = "a training" if found == SERVING and unknown[0] in TRAINING_SECTIONS else None
        raise ScenarioError(unknown[0], raw[unknown[0]],
                            f"{other} section does not belong in a serving scenario ([serve]); its sections are "
                            + ", ".join(sorted(allowed)) if other else "known sections: " + ", ".join(sorted(allowed)), source)
    name = raw.get("name", "scenario")
    if not isinstance(name, str):
        raise ScenarioError("name", name, "a string", source)
    if "model" not in raw:
        raise ScenarioError("model", "<missing>", "a [model] table (name = a catalog model, or inline fields)", source)
    if found == PLAN:   # the lists checked first: a bad value is named search.<axis>, not the base's field
        build(SearchSpec, raw.get("search", {}), "search", source)
    try:
        return _checked(cls, sections, name, raw, source)
    except ScenarioError:
        if found != PLAN or not _searched_axes(raw):
            raise
    adjusted = _base_takes_searched_values(raw)
    try:
        return _checked(cls, sections, name, adjusted, source)
    except ScenarioError:
        # the lists may still make plans that hold (V3's 32K batch refuses TP1 x CP1, not TP2 x CP4): every candidate
        # is checked like a scenario, and one refused whatever the lists counts its reason (until s23walk the base's
        # refusal ended the search before any candidate ran)
        return _checked(cls, sections, name, adjusted, source, check=False)


def _searched_axes(raw: dict) -> list[str]:
    """The plan axes and cluster fields a plan scenario's search replaces in its candidates: those its
    [search] lists, or every one under the full space (`full_space`, or no list at all)."""
    search = raw.get("search")
    if not isinstance(search, dict):
        return []
    every = ["gpu", "num_gpus", *PLAN_AXES]
    listed = [n for n in every if isinstance(search.get(n), list) and search[n]]
    return every if search.get("full_space") is True or not listed else listed


def _checked(cls, sections: dict, name: str, raw: dict, source: str | None, check: bool = True):
    model = _load_model(raw["model"], source)
    plan = raw.get("plan", {})
    if "plan" in sections and not model.num_routed_experts and isinstance(plan, dict) and "ep" not in plan:
        # a dense model's plan.ep follows it where the scenario does not say (the default, 64, is V3's: a llama
        # scenario without [plan] ep was refused as "plan.ep in F: got 64", a value F never held, until s27walk)
        raw = {**raw, "plan": {**plan, "ep": 1}}
    parts = {key: build(spec, raw.get(key, {}), key, source) for key, spec in sections.items()}
    scenario = cls(name=name, model=model, **parts)
    if check:
        scenario.check(source)
    # the price of the GPU type the scenario runs on, unless it names one (so --set cluster.gpu=...
    # also switches the price); the resolved scenario written beside outputs carries it
    return dataclasses.replace(scenario, cluster=scenario.cluster.resolved())


def _base_takes_searched_values(raw: dict) -> dict:
    """A plan scenario's tables with each searched plan axis (and GPU count) whose base value its
    [search] list leaves out set to the list's first value: tried where the base as written is
    refused. The search replaces those values in every candidate, yet the base plan was checked with
    them: `twin plan --set model.name=mixtral-8x7b --ep 8` was refused for the default's EP64 (until
    s23walk). A base that holds as written is kept, so a list none of whose values can run is still
    answered candidate by candidate (exit 3 with the reasons). Malformed tables are left to the checks."""
    search, plan, cluster = raw.get("search"), raw.get("plan", {}), raw.get("cluster", {})
    if not (isinstance(search, dict) and isinstance(plan, dict) and isinstance(cluster, dict)):
        return raw
    defaults = {f.name: f.default for f in dataclasses.fields(ParallelPlan)}
    out = {**raw, "plan": dict(plan), "cluster": dict(cluster)}
    for table, names, current in ((out["plan"], PLAN_AXES, lambda n: plan.get(n, defaults.get(n))),
                                  (out["cluster"], ("num_gpus",), lambda n: cluster.get(n))):
        for name in names:
            values = search.get(name)
            if isinstance(values, list) and values and current(name) not in values:
                table[name] = values[0]
    return out


def _wrong_kind(found: str, wanted: tuple[str, ...], source: str | None) -> ScenarioError:
    """The error for a scenario of one kind given to a command that takes another: it names the
    table that makes the difference."""
    want = " or ".join(wanted)
    if found == SERVING:
        return ScenarioError("serve", "a [serve] table (a serving scenario)",
                             f"a {want} scenario for this command; `twin serve` takes serving scenarios", source)
    if found == PLAN:
        return ScenarioError("search", "a [search] table (a plan scenario)",
                             f"a {want} scenario for this command; `twin plan` takes plan scenarios", source)
    if SERVING in wanted:
        return ScenarioError("serve", "<missing> (a training scenario)",
                             "a [serve] table: this command takes a serving scenario (without one it runs the default, R1 on one HGX H200)", source)
    return ScenarioError("search", "<missing> (a training scenario)",
                         "a [search] table (tokens, days): this command takes a plan scenario", source)


def toml_depth(text: str) -> int:
    """How deep a TOML text nests, found in one cheap pass before parsing: open arrays and inline
    tables, plus the dots of the key being read (`a.b.c = 1` and `[a.b.c]` nest tables too). Strings
    and comments are skipped. A value's own dots (1.5) may count one level more: an upper bound."""
    depth = deepest = dots = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            i = _skip_string(text, i)
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c in "[{":
            depth, dots = depth + 1, 0
        elif c in "]}":
            depth, dots = max(0, depth - 1), 0
        elif c in "=,\n":
            dots = 0
        elif c == ".":
            dots += 1
        deepest = max(deepest, depth + dots)
        i += 1
    return deepest


def _skip_string(text: str, i: int) -> int:
    """Index just past the TOML string that starts at text[i] (basic or literal, single- or
    multi-line); the end of the text if it is never closed."""
    q = text[i]
    delim = q * 3 if text.startswith(q * 3, i) else q
    j = i + len(delim)
    while j < len(text):
        if q == '"' and text[j] == "\\":   # an escape in a basic string
            j += 2
            continue
        if text.startswith(delim, j):
            return j + len(delim)
        if len(delim) == 1 and text[j] == "\n":   # an unclosed one-line string: let the parser say so
            return j
        j += 1
    return j


def parse_toml(text: str, what: str, source: str | None = None) -> dict:
    """tomllib.loads, after refusing text nested deeper than MAX_TOML_DEPTH (the parser recurses
    once per level and a few hundred levels exhaust Python's stack). `what` names the input in the
    error: SCENARIO for a file, --set for an override."""
    depth = toml_depth(text)
    if depth > MAX_TOML_DEPTH:
        raise ScenarioError(what, source or text, f"TOML nested at most {MAX_TOML_DEPTH} levels deep "
                            f"(arrays, inline tables and dotted keys; this nests {depth:,})")
    try:
        return tomllib.loads(text)
    except RecursionError:   # not reached after the depth check; kept so a parser change can't crash us
        raise ScenarioError(what, source or text, f"TOML nested at most {MAX_TOML_DEPTH} levels deep") from None
    except tomllib.TOMLDecodeError:
        raise
    except ValueError:   # not a decode error: int() refusing an integer past Python's digit limit
        raise ScenarioError(what, source or text,
                            f"integers of at most {sys.get_int_max_str_digits():,} digits") from None


def parse_override(text: str) -> tuple[list[str], object]:
    """'plan.pp=8' -> (['plan', 'pp'], 8). The value is read as TOML, else as a bare string."""
    if "=" not in text:
        raise ScenarioError("--set", text, "KEY=VALUE with a dotted key, e.g. plan.pp=8")
    key, value_text = text.split("=", 1)
    path = [k.strip() for k in key.strip().split(".")]
    if not all(path):
        raise ScenarioError("--set", text, "KEY=VALUE with a dotted key, e.g. plan.pp=8")
    if len(path) > MAX_TOML_DEPTH:
        raise ScenarioError("--set", text, f"a key of at most {MAX_TOML_DEPTH} dotted parts (this has {len(path):,})")
    try:
        value = parse_toml(f"v = {value_text.strip()}", "--set", text)["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        table = raw
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ScenarioError("--set", text, f"'{part}' is a value, not a table")
        table[path[-1]] = value
    return raw


def packaged_scenario(name: str) -> Path:
    """The file of a scenario shipped as package data (PACKAGED_SCENARIOS: twin/data/<name>.toml),
    found the same way in a source checkout and in an installed wheel."""
    if name not in PACKAGED_SCENARIOS:
        raise ValueError(f"scenario {name!r}: the package ships {', '.join(PACKAGED_SCENARIOS)}")
    return Path(str(resources.files("twin.data").joinpath(f"{name}.toml")))


def symlink_stub_target(data: bytes) -> str | None:
    """The path a file holds where it holds nothing but one relative path to a .toml file: a symbolic
    link that git checked out as a text file (core.symlinks=false, the default on Windows; scenarios/
    links to the serving scenarios of twin/data/). None for any other content."""
    text = data.decode("utf-8", "replace").strip()
    if not text.endswith(".toml") or any(c.isspace() or c in "=[]\"'#" for c in text):
        return None
    return text


def read_raw(path: str | Path | None, kind: str = TRAINING) -> tuple[dict, str]:
    """Raw tables and a source label; None reads the embedded default scenario of `kind`."""
    if path is None:
        default = DEFAULT_SCENARIO[kind]
        with resources.files("twin.data").joinpath(default).open("rb") as fh:
            return tomllib.load(fh), f"<default: {default}>"
    p = Path(path)
    if not p.is_file():
        raise ScenarioError("SCENARIO", str(path), "an existing TOML file")
    try:
        with p.open("rb") as fh:   # never more than the limit read, whatever the file's size says
            data = fh.read(MAX_SCENARIO_BYTES + 1)
        if len(data) > MAX_SCENARIO_BYTES:
            raise ScenarioError("SCENARIO", str(path), f"a TOML file of at most {MAX_SCENARIO_BYTES:,} bytes (a scenario is a few KB)")
        # utf-8-sig: a byte-order mark (editors saving "UTF-8 with BOM") is read past, not refused as TOML (s28prod)
        return parse_toml(data.decode("utf-8-sig"), "SCENARIO", str(path)), str(p)
    except tomllib.TOMLDecodeError as exc:
        target = symlink_stub_target(data)
        if target is not None:
            raise ScenarioError("SCENARIO", str(path), (
                f"a TOML file; this one holds only the path {target!r}: a symbolic link checked out as a text "
                f"file (git core.symlinks=false, the default on Windows). Load the file it names "
                f"({p.parent / target}), or check it out with symlinks on (git config core.symlinks true, "
                f"then git checkout -- {path})")) from None
        raise ScenarioError("SCENARIO", str(path), f"valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ScenarioError("SCENARIO", str(path), "a UTF-8 TOML file") from None
    except OSError as exc:   # a directory, a FIFO that fails, no permission
        raise ScenarioError("SCENARIO", str(path), f"a readable TOML file ({exc.strerror or exc})") from None


def load_scenario(path: str | Path | None = None, overrides: list[str] | tuple = (),
                  kind: str | tuple[str, ...] | None = None) -> Scenario | PlanScenario | ServeScenario:
    """A validated scenario from a TOML file (None: the embedded default of `kind`, training if
    unset), with `--set` overrides applied first. Its kind follows from its tables; `kind` demands
    one, or one of several."""
    default_kind = kind if isinstance(kind, str) else (kind[0] if kind else TRAINING)
    raw, source = read_raw(path, SERVING if default_kind == SERVING else TRAINING)
    if path is not None:
        raw = with_paths_from(raw, Path(path).absolute().parent)
    try:
        return from_dict(apply_overrides(raw, list(overrides)), source, kind)
    except ScenarioError as exc:
        raise blamed_on_overrides(exc, source, list(overrides)) from None


# the defaults of ParallelPlan and Workload that are DeepSeek-V3's own layout (its report §3.2, §4.2), not neutral ones:
# a scenario of another model that does not set them runs V3's layout (s27walk round 2: said, not changed, so that
# every scenario runs as it did)
V3_DEFAULT_FIELDS = (("plan", "pp"), ("plan", "ep"), ("plan", "schedule"), ("plan", "gemm_precision"),
                     ("plan", "fp8_recipe"), ("plan", "recompute"), ("plan", "comm_sms"), ("plan", "max_nodes_per_token"),
                     ("workload", "global_batch_seqs"))
V3_MODEL = "deepseek-v3"


def v3_defaults_assumed(raw: dict, sc, searched: tuple[str, ...] = ()) -> dict[str, object]:
    """{"plan.pp": 16, ...}: the fields of V3_DEFAULT_FIELDS that the raw tables (the file with its overrides) do not
    set and that apply to the scenario, for a model other than DeepSeek-V3 (empty for V3's own scenarios and for a
    serving one); `searched`: plan axes a plan search varies (not assumed: each candidate sets them)."""
    if sc.kind == SERVING or sc.model.name == V3_MODEL:
        return {}
    moe_ep = bool(sc.model.num_routed_experts) and sc.plan.ep > 1
    applies = {"ep": bool(sc.model.num_routed_experts), "comm_sms": moe_ep, "max_nodes_per_token": moe_ep,
               "fp8_recipe": sc.plan.gemm_precision == "fp8"}
    out = {}
    for table, name in V3_DEFAULT_FIELDS:
        given = raw.get(table)
        if (isinstance(given, dict) and name in given) or name in searched or not applies.get(name, True):
            continue
        value = sc.plan.held_comm_sms if name == "comm_sms" else getattr(getattr(sc, table), name)
        out[f"{table}.{name}"] = value
    return out


def v3_defaults_note(assumed: dict[str, object]) -> str:
    """One line naming what a scenario took from DeepSeek-V3's defaults ('' where nothing)."""
    if not assumed:
        return ""
    said = ", ".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v:,}" for k, v in assumed.items())
    return (f"note: assumed from DeepSeek-V3's defaults, not set for this model: {said}; set them in the "
            "scenario (or --set) to plan otherwise")


def blamed_on_overrides(exc: ScenarioError, source: str, overrides: list[str]) -> ScenarioError:
    """A loader's error with its source naming the --set that gave the value ("plan.tp (--set plan.tp=abc):
    got 'abc'"), or, for a field of the file that an override made invalid, both ("cluster.num_gpus in F with
    --set plan.tp=3"): the value was typed on the command line, not read from F (s27walk; s26walk did the
    same for `twin plan`'s options)."""
    if not overrides or exc.source != source:
        return exc
    named = {".".join(parse_override(text)[0]): text for text in overrides}
    if exc.field in named:
        return ScenarioError(exc.field, exc.value, exc.allowed, f"--set {named[exc.field]}")
    return ScenarioError(exc.field, exc.value, exc.allowed, f"{source} with --set {', '.join(overrides)}")


def with_paths_from(raw: dict, folder: Path) -> dict:
    """The raw tables with a relative traffic.trace_csv read from `folder`, the scenario file's (it was
    read from the working directory until s21walk: `twin serve sub/x.toml` did not find sub/'s trace,
    and a resolved scenario loaded from elsewhere lost it). Anything but a non-empty relative path
    string is left for the loader to judge."""
    traffic = raw.get("traffic")
    value = traffic.get("trace_csv") if isinstance(traffic, dict) else None
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        return raw
    return {**raw, "traffic": {**traffic, "trace_csv": str(folder / value)}}


def replace(scenario: Scenario, **sections) -> Scenario:
    """A variant with some sections replaced by keyword (workload=..., plan=...), re-checked."""
    new = dataclasses.replace(scenario, **sections)
    new.check()
    return new

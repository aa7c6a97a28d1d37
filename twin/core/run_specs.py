"""Scenario sections for whole-run replay: stages, cost, energy, failures, uncertainty.

Owned by the replay (issue 3). Each is a frozen spec dataclass declared with `spec_field`, so the
strict loader and docs/scenario.md pick it up. The defaults reproduce DeepSeek-V3's published
training run (technical report arXiv 2412.19437 §4.2, §4.3, §5) so that `twin replay` with no
arguments replays it. Figures that the report does not publish (post-training token counts) are
marked as assumptions in their `doc` and in every report.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.errors import ScenarioError
from twin.core.fields import spec_field
from twin.core.schedules import SCHEDULE_NAMES
from twin.core.specs import (MAX_BATCH_SEQS, MAX_BYTES_PER_PARAM, MAX_DEGREE, MAX_GPUS, MAX_IMBALANCE, MAX_SEED,
                             MAX_SEQ_LEN, RECOMPUTE)

MAX_TOKENS = 1e17          # tokens of a stage (V3's pre-training: 1.48e13)
MAX_STEPS = 1_000_000_000  # optimizer steps of a stage
MAX_STAGES = 64            # [[run.stages]] tables
MAX_FALLBACKS = 16         # fallback TP degrees, fallback schedules
MAX_SWEEP_SIZES = 16       # cluster sizes of the cost sweep (each simulates the large stages again)
MAX_SAMPLES = 1_000_000    # Monte Carlo samples

UNCERTAINTY_METHODS = ("monte_carlo", "linear")


_R1 = "DeepSeek-R1 (Nature 645, 2025; arXiv 2501.12948) Methods"


@dataclass(frozen=True)
class GrpoSpec:
    """An RL stage trained with GRPO ([run.stages.grpo]): each step generates `samples_per_prompt`
    outputs for each of `prompts_per_step` prompts on the serving twin, scores them against a
    reference model, and updates the policy on the training twin. Defaults: DeepSeek-R1-Zero's
    published settings where published, else marked as assumptions."""

    prompts_per_step: int = spec_field(32, unit="count", ge=1, le=MAX_BATCH_SEQS, doc=f"Prompts per optimizer step ({_R1}: 32 unique questions per step)")
    samples_per_prompt: int = spec_field(16, unit="count", ge=1, le=1024, doc=f"Outputs sampled per prompt, the GRPO group ({_R1}: 16)")
    steps_per_rollout: int = spec_field(16, unit="count", ge=1, le=1024, doc=f"Optimizer steps trained on one rollout's outputs ({_R1}: 8,192 outputs per rollout, split into 16 mini-batches, one inner epoch)")
    prompt_len: int = spec_field(256, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Prompt length (assumption: reasoning questions of a few hundred tokens; unpublished)")
    gen_len_mean: float = spec_field(6000.0, unit="tokens", gt=0, le=MAX_SEQ_LEN, doc="Mean generated length over the stage (assumption: R1-Zero's average response length grew from a few hundred to ~12K tokens over training, its Fig. 1b; mean taken as ~half)")
    gen_len_cv: float = spec_field(0.8, ge=0, le=10, doc="Coefficient of variation of generated lengths, lognormal (assumption)")
    gen_len_max: int = spec_field(32768, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc=f"Maximum generated length ({_R1}: 32,768 tokens, 65,536 after step 8.2K)")
    reference_forward: bool = spec_field(True, doc=f"A reference-model forward over every output for the KL term ({_R1}: KL coefficient 0.001, reference refreshed every 400 steps)")
    old_policy_forward: bool = spec_field(True, doc="A forward of the policy before the update for the old log-probabilities (assumption: recomputed by the trainer, as verl/OpenRLHF do)")
    reward_model_forward: bool = spec_field(False, doc=f"A reward-model forward over every output (R1-Zero: rule-based accuracy and format rewards, no reward model, {_R1})")
    forward_frac: float = spec_field(1 / 3, gt=0, le=1, doc="A forward pass's share of a training step's time, for the reference, old-policy and reward passes (assumption: forward : backward = 1 : 2)")
    rollout_gpus: int = spec_field(32, unit="count", ge=1, le=MAX_GPUS, doc="GPUs of one rollout (generation) instance: EP over them, DP attention (assumption: 80 GB GPUs need >= 16 for R1's 685 GB of FP8 weights)")
    rollout_mtp_draft_tokens: int = spec_field(0, unit="count", ge=0, le=4, doc="MTP tokens drafted per rollout decode step (0: none)")
    seed: int = spec_field(0, unit="count", ge=0, le=MAX_SEED, doc="Seed of the sampled generation lengths")

    @property
    def outputs_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def tokens_per_step(self) -> float:
        """Tokens the policy update trains on per step (prompts + generated, mean lengths)."""
        return self.outputs_per_step * (self.prompt_len + self.gen_len_mean)


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """One training stage: a number of tokens (or steps) at one sequence length and batch size."""

    name: str = spec_field(doc="Stage name, e.g. 'pretrain'")
    group: str = spec_field("", doc="Group for published per-group figures (stages sharing a group are summed); '' = the stage's name")
    tokens: float = spec_field(0.0, unit="tokens", ge=0, le=MAX_TOKENS, doc="Tokens trained in the stage (0 = given by steps)")
    steps: int = spec_field(0, unit="count", ge=0, le=MAX_STEPS, doc="Optimizer steps (used when tokens = 0)")
    seq_len: int = spec_field(4096, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Sequence length")
    global_batch_seqs: int = spec_field(15360, unit="sequences", ge=1, le=MAX_BATCH_SEQS, doc="Sequences per step (after any ramp)")
    batch_ramp_start_seqs: int = spec_field(0, unit="sequences", ge=0, le=MAX_BATCH_SEQS, doc="Batch at the start of a linear batch ramp (0 = no ramp)")
    batch_ramp_tokens: float = spec_field(0.0, unit="tokens", ge=0, le=MAX_TOKENS, doc="Tokens over which the batch ramps linearly to global_batch_seqs")
    tp: int | None = spec_field(None, unit="count", ge=1, le=MAX_DEGREE, doc="Stage override of plan.tp (absent = the scenario's plan)")
    pp: int | None = spec_field(None, unit="count", ge=1, le=MAX_DEGREE, doc="Stage override of plan.pp")
    ep: int | None = spec_field(None, unit="count", ge=1, le=MAX_GPUS, doc="Stage override of plan.ep")
    micro_batch_seqs: int | None = spec_field(None, unit="sequences", ge=1, le=MAX_BATCH_SEQS, doc="Stage override of plan.micro_batch_seqs")
    recompute: str | None = spec_field(None, choices=RECOMPUTE, doc="Stage override of plan.recompute")
    overhead_factor: float = spec_field(1.0, gt=0, le=1_000, doc="GPU-time multiplier for work the step twin does not simulate (e.g. RL rollout generation); an assumption shown in the report")
    grpo: GrpoSpec | None = spec_field(None, doc="An RL stage trained with GRPO: rollouts on the serving twin, reference/old-policy passes and the policy update; its steps come from `steps`, or `tokens` over GrpoSpec.tokens_per_step. seq_len x global_batch_seqs is the training step's shape, scaled to the GRPO step's tokens")
    claim_id: str = spec_field("", doc="Published GPU-hour figure for this stage's group (an id in twin/data/claims.toml); '' = none")
    source: str = spec_field("", doc="Where the stage's shape comes from, or 'assumption: ...'")

    def check(self, path: str = "stage", source: str | None = None) -> None:
        if self.tokens <= 0 and self.steps <= 0:
            raise ScenarioError(f"{path}.tokens", self.tokens, "tokens > 0 or steps > 0", source)
        if self.batch_ramp_start_seqs:
            if self.batch_ramp_start_seqs > self.global_batch_seqs:
                raise ScenarioError(f"{path}.batch_ramp_start_seqs", self.batch_ramp_start_seqs,
                                    f"<= global_batch_seqs = {self.global_batch_seqs}", source)
            if self.batch_ramp_tokens <= 0 or self.tokens <= 0:
                raise ScenarioError(f"{path}.batch_ramp_tokens", self.batch_ramp_tokens,
                                    "> 0 (and tokens > 0) when batch_ramp_start_seqs is set", source)
            if self.batch_ramp_tokens > self.tokens:
                raise ScenarioError(f"{path}.batch_ramp_tokens", self.batch_ramp_tokens, f"<= tokens = {self.tokens:g}", source)

    @property
    def label(self) -> str:
        return self.group or self.name

    @property
    def total_tokens(self) -> float:
        if self.grpo is not None and self.tokens <= 0:
            return float(self.steps * self.grpo.tokens_per_step)
        return self.tokens if self.tokens > 0 else float(self.steps * self.seq_len * self.global_batch_seqs)


_V3 = "DeepSeek-V3 report arXiv 2412.19437"
V3_STAGES = (
    StageSpec(name="pretrain", group="pretrain", tokens=14.8e12, seq_len=4096, global_batch_seqs=15360,
              batch_ramp_start_seqs=3072, batch_ramp_tokens=469e9, claim_id="train.cost.pretrain_gpu_hours",
              source=f"{_V3} §4.2: 14.8T tokens, 4K sequences, batch 3,072 -> 15,360 over the first 469B tokens"),
    StageSpec(name="context_32k", group="context_extension", steps=1000, seq_len=32768, global_batch_seqs=1920,
              claim_id="train.cost.context_ext_gpu_hours", source=f"{_V3} §4.3: 1,000 steps, 32K sequences, batch 1,920"),
    StageSpec(name="context_128k", group="context_extension", steps=1000, seq_len=131072, global_batch_seqs=480,
              claim_id="train.cost.context_ext_gpu_hours", source=f"{_V3} §4.3: 1,000 steps, 128K sequences, batch 480"),
    StageSpec(name="sft", group="post_training", tokens=3.0e9, seq_len=4096, global_batch_seqs=15360,
              claim_id="train.cost.posttrain_gpu_hours",
              source=f"{_V3} §5.1: 1.5M instances, 2 epochs; assumption: ~1,000 tokens per instance (unpublished); batch unpublished, pre-training's 15,360 used"),
    StageSpec(name="rl", group="post_training", tokens=1.0e9, seq_len=4096, global_batch_seqs=15360, grpo=GrpoSpec(),
              claim_id="train.cost.posttrain_gpu_hours",
              source=f"{_V3} §5.2 (GRPO); assumption: 1B trained tokens (unpublished); GRPO step shape from {_R1} (R1-Zero's settings)"),
)


@dataclass(frozen=True)
class RunSpec:
    """The training run to replay: its stages, in order."""

    stages: tuple[StageSpec, ...] = spec_field(default=V3_STAGES, max_items=MAX_STAGES, doc="Stages in order ([[run.stages]] tables)")
    ramp_knots: int = spec_field(2, unit="count", ge=2, le=16, doc="Batch sizes simulated along a batch ramp (step time is interpolated between them)")
    plan_search: bool = spec_field(True, doc="If a stage's plan does not fit (memory, divisibility), simulate every fallback plan (TP x CP x recomputation, schedules where needed) and run the fastest that fits; the report says which")
    fallback_tp: tuple[int, ...] = spec_field(default=(2, 4, 8), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_FALLBACKS, doc="TP degrees a stage's plan search tries (with sequence parallelism) when its plan does not fit")
    fallback_cp: tuple[int, ...] = spec_field(default=(2, 4, 8), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_FALLBACKS, doc="Context-parallel degrees a stage's plan search tries (with each fallback TP degree and recomputation) when its plan does not fit")
    fallback_schedules: tuple[str, ...] = spec_field(default=("zb1p", "1f1b"), choices=SCHEDULE_NAMES, max_items=MAX_FALLBACKS, doc="Pipeline schedules a stage's plan search falls back to, in order, where the scenario's cannot take the stage's micro-batch count (e.g. too few for DualPipe)")
    claims_basis: str = spec_field("ideal", choices=("ideal", "goodput"), doc="Compare published figures with ideal GPU-hours, or with failure-adjusted ones (V3's 2,664K = 14.8 x 180K is throughput-derived, i.e. ideal)")

    def check(self, path: str = "run", source: str | None = None) -> None:
        if not self.stages:
            raise ScenarioError(f"{path}.stages", [], "at least one [[run.stages]] table", source)
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ScenarioError(f"{path}.stages", dup[0], "unique stage names", source)


@dataclass(frozen=True)
class CostSpec:
    """Money: the rental price is cluster.price_usd_per_gpu_hour; these add electricity and the size sweep."""

    electricity_usd_per_kwh: float = spec_field(0.0, unit="USD/kWh", ge=0, doc="Electricity price for an owner-operator view (0 = rental only; rental prices include power)")
    # empty by default since s26walk: DeepSeek-V3's 2,048-8,192 were every scenario's sizes, a 64-GPU plan's too
    size_sweep_gpus: tuple[int, ...] = spec_field(default=(), unit="count", ge=1, le=MAX_GPUS, max_items=MAX_SWEEP_SIZES, doc="Cluster sizes for the cost-against-cluster-size plot (same plan, DP scaled); empty = the scenario's cluster.num_gpus x 1, 1.5, 2 and 4")


@dataclass(frozen=True)
class EnergySpec:
    """Power model: per GPU between idle and TDP by utilisation, plus node overhead, times PUE."""

    gpu_busy_power_frac: float = spec_field(1.0, unit="fraction", ge=0, le=1, doc="GPU power while computing, as a fraction of TDP (measured with NVML on our H100/H200: 680-712 W of 700 W for large GEMMs and attention, calibration/measurements/*/power.csv; the FlashMLA deep dive reports H800 throttling at the cap)")
    gpu_idle_power_frac: float = spec_field(0.17, unit="fraction", ge=0, le=1, doc="GPU power in pipeline bubbles, as a fraction of TDP (measured idle with NVML: 117.9 W on H100, 124.2 W on H200 of 700 W, calibration/measurements/*/power.csv)")
    node_overhead_w: float = spec_field(4600.0, unit="W", ge=0, doc="Non-GPU power per 8-GPU node: DGX H100 datasheet ~10.2 kW max - 8 x 700 W (an upper bound)")
    pue: float = spec_field(1.58, ge=1.0, le=5.0, doc="Power usage effectiveness (Uptime Institute Global Data Center Survey 2023 industry average 1.58; hyperscale 1.1-1.2)")
    carbon_kg_per_kwh: float = spec_field(0.0, unit="kgCO2e/kWh", ge=0, doc="Grid carbon intensity (0 = not reported)")


@dataclass(frozen=True)
class FailureSpec:
    """Interruptions, detection/restart and checkpoints -> goodput (Young/Daly interval)."""

    enabled: bool = spec_field(True, doc="Apply the failure model (goodput-adjusted GPU-hours beside the ideal ones)")
    catalog: str = spec_field("llama3_405b", doc="Interruption statistics by cause, a key of twin/data/failures.toml")
    rate_scale: float = spec_field(1.0, ge=0, le=1_000, doc="Multiplier on the catalog's interruption rate per GPU-hour")
    detection_s: float = spec_field(600.0, unit="s", ge=0, doc="Time to detect a failure (PyTorch NCCL watchdog default timeout 10 min)")
    restart_s: float = spec_field(900.0, unit="s", ge=0, doc="Time to restart: reschedule, re-init NCCL, load the checkpoint (assumption)")
    checkpoint_bytes_per_param: float = spec_field(10.0, unit="bytes", ge=0, le=MAX_BYTES_PER_PARAM, doc="Checkpoint bytes per parameter: BF16 weights + FP32 master + BF16 AdamW moments (V3 report §3.3.4)")
    checkpoint_write_bytes_per_s_per_node: float = spec_field(10.737e9, unit="bytes/s", gt=0, doc="Checkpoint write bandwidth per node (Fire-Flyer 3FS: >10 GiB/s per node)")
    checkpoint_interval_s: float = spec_field(0.0, unit="s", ge=0, doc="Checkpoint interval (0 = Young/Daly sqrt(2 x write time x MTBF))")


@dataclass(frozen=True)
class UncertaintySpec:
    """Input uncertainty propagated to the P10-P90 band of every headline number."""

    method: str = spec_field("monte_carlo", choices=UNCERTAINTY_METHODS, doc="Monte Carlo through a per-input response surface from one-at-a-time runs, or linear (quadrature) propagation")
    num_samples: int = spec_field(4000, unit="count", ge=10, le=MAX_SAMPLES, doc="Monte Carlo samples (cheap: drawn through the response surface)")
    seed: int = spec_field(0, unit="count", ge=0, le=MAX_SEED, doc="Random seed")
    compute_eff_rel_sigma: float = spec_field(0.08, unit="fraction", ge=0, le=0.5, doc="Relative sigma of compute efficiency (DeepGEMM H800 tables moved ~10% between releases; H800 throttles 990 -> 865 TFLOPS)")
    link_bw_rel_sigma: float = spec_field(0.15, unit="fraction", ge=0, le=0.5, doc="Relative sigma of achieved link bandwidth (DeepEP EP64 internode 46 -> 51 GB/s between releases, NCCL's 46-49 GB/s per NDR NIC; DeepSeek's trace is a validation target, not an input)")
    routing_imbalance_high: float = spec_field(1.15, ge=1.0, le=MAX_IMBALANCE, doc="Upper end of the routing imbalance range (uniform from the scenario's value; V3's aux-loss-free balancing keeps it near 1)")
    failure_rate_rel_sigma: float = spec_field(0.5, unit="fraction", ge=0, le=2.0, doc="Relative sigma of the interruption rate (Llama 3 vs Meta RSC vs Epoch's 1 per 50K GPU-hours)")
    pue_low: float = spec_field(1.1, ge=1.0, le=5.0, doc="Low end of the PUE range (hyperscale)")
    pue_high: float = spec_field(1.6, ge=1.0, le=5.0, doc="High end of the PUE range (industry average)")

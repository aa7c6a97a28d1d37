"""The step simulator's typed input perturbation and its result (what `twin step --json` prints)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Perturb:
    """A point in the uncertain inputs of a step, for sensitivity and Monte Carlo runs; the
    defaults are the scenario itself."""

    compute_eff_scale: float = 1.0          # multiplies every compute efficiency curve
    memory_eff_scale: float = 1.0           # multiplies memory-bound kernels' bandwidth efficiency
    link_bw_scale: float = 1.0              # multiplies every link's bandwidth
    # absolute max/mean routed load, or per-layer ExpertLoads (twin.moe.placement); None: the scenario's.
    # Either overrides a [moe] load model.
    routing_imbalance: float | tuple | None = None


@dataclass(frozen=True)
class StepResult:
    """One simulated optimizer step of the whole job (one representative pipeline)."""

    schedule: str
    step_time_s: float
    pipeline_time_s: float          # forward/backward pipeline makespan, before the DP/optimizer tail
    bubble_frac: float              # pipeline bubble: largest per-rank time with no task on any stream, / makespan
    exposed_comm_frac: float        # on that rank: time communicating while compute idles, / makespan
    tokens_per_step: int
    tokens_per_s_per_gpu: float
    model_flops_per_step: float     # training FLOPs of the model (6N + attention), BF16 MFU basis
    mfu_frac: float                 # model FLOPs / (step time x GPUs x BF16 dense peak)
    memory_per_gpu_bytes: float     # peak over pipeline ranks
    memory_breakdown_bytes: dict[str, float]  # component -> bytes on the worst rank
    memory_capacity_bytes: float
    op_time_s: dict[str, float]     # op name -> compute/comm seconds on the busiest rank per step
    num_gpus: int
    num_microbatches: int
    # twin.sim.pipeline.PipelineResult (events for traces and the Gantt chart); not part of the JSON
    pipeline: object = field(repr=False, default=None, metadata={"json": False})
    # the step's tail after the pipeline, per rank (data-parallel reduce-scatter, optimizer,
    # all-gather) as twin.sim.pipeline.Event rows; empty without the event log
    tail_events: tuple = field(repr=False, default=(), metadata={"json": False})

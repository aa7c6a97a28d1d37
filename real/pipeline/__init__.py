"""Pipeline parallelism of real/: `engine` runs the twin's schedule programs over torch.distributed,
`bench` times them (`torchrun --standalone --nproc-per-node 2 -m real.pipeline --out DIR`)."""

from real.pipeline.engine import (Mesh, PipelineRunner, Stage, StepTimeline, build_mesh, build_stages,
                                  cycle_order, flow_orders, interleaved_steps, load_from, on_shared_axis,
                                  stage_layers)

__all__ = ["Mesh", "PipelineRunner", "Stage", "StepTimeline", "build_mesh", "build_stages", "cycle_order", "flow_orders",
           "interleaved_steps", "load_from", "on_shared_axis", "stage_layers"]

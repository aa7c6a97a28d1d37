"""s23ephost (issue 13, docs/notes/s23ephost_rule.md): the EP layer's post-sync host time.

After each of dispatch's blocking .tolist() (real/ep.py) the GPU has run everything issued before it
and sits empty while the host issues the rest of the layer; how long depends on the host seconds of
the ops issued after the sync, against the GPU seconds they queue. real/campaigns/s23ephost.sh marks
the host per segment (real/ep.py MARK_SEGMENTS) in EP2 steps of the s20epnew shapes (split fit) and
times fresh EP2 steps of models no record holds (split holdout).
"""

from __future__ import annotations

# real/campaigns/s23ephost.sh FIT_MODELS / HOLDOUT_MODELS (restated: calibration does not read the
# script; a test keeps them equal): (model, layers)
FIT_MODELS = (("qwen2moe-mla-slice", 4), ("qwen3moe-mla-slice", 4), ("mixtral-mla-slice", 2))
HOLDOUT_MODELS = (("bench-small", 4), ("qwen3moe-slice", 4), ("mixtral-slice", 2))
HOLDOUT_MICROBATCHES = (1, 2, 4)

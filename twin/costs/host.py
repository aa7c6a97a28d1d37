"""The host's measured speed as an input of an eager prefill or decode step (issue 13, session
s21host; docs/notes/s21host_rule.md).

real/'s eager prefill and decode steps (calibration.whole_step prefill_ops / decode_ops) are
host-bound where their kernels are short: the step lasts as long as the host takes to dispatch its
~100-250 ops under torch.no_grad, at the host seconds per launched kernel the profile carries
(Profile.eager["host_s"]["infer"], measured on the fitting split's host_dispatch rows of an earlier
host). A host's speed moves between machines of one kind and within minutes on one machine
(s20new2: the same decode steps 14-37% apart a minute later). A short fixed probe on the host that
runs the step (real/serve/hostspeed.py launch_probe: host seconds per small kernel launched from
Python, `probe_launch_s`) gives the step's host time per kernel as probe_ratio x probe_launch_s,
probe_ratio being the fitting split's no-grad layer host time per kernel over the probe taken beside
it (calibration/host_input.py fit_probe_ratio)."""

from __future__ import annotations

import dataclasses
import math

from twin.costs.profile import Profile


def infer_host_s_per_kernel(probe_launch_s: float, probe_ratio: float) -> float:
    """Host seconds real/'s no-grad eager forward spends per launched kernel on a host whose launch
    probe reads `probe_launch_s` (seconds per small kernel): probe_ratio x probe_launch_s. NaN where
    either is missing or not positive (the caller keeps the profile's figure)."""
    if not (probe_launch_s > 0 and probe_ratio > 0) or math.isinf(probe_launch_s * probe_ratio):
        return math.nan
    return probe_ratio * probe_launch_s


def with_infer_host_s(profile: Profile, host_s_per_kernel: float) -> Profile:
    """`profile` with its no-grad host time per launched kernel (eager host_s["infer"], what every op
    of a prefill or decode step is dispatched at) set to `host_s_per_kernel`; unchanged for NaN."""
    if not host_s_per_kernel > 0:
        return profile
    eager = dict(profile.eager or {})
    eager["host_s"] = {**eager.get("host_s", {}), "infer": float(host_s_per_kernel)}
    return dataclasses.replace(profile, eager=eager)

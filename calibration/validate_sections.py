"""The judgements `twin validate` adds to its records' cases (calibration.validate), each listed once: its key in
the result, how it is computed from the records root, and its lines on the terminal (and in the report).

These are the pre-registered predictions (models, layouts and loads no fit saw, predicted and committed before
their runs) and the fresh EP2 shapes. Until s25walk `twin validate` computed them in one hand-kept list and
printed them from a second, and its HTML report (`--out`) showed none of them, though the terminal's last line
sent the reader there for "every table" (docs/notes/s25walk.md D5). Adding a judgement is now one line here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from calibration import (ep_fresh, lease_probe, lease_probe2, prereg, prereg_pp, prereg_pp4, prereg_serve, s28blind,
                         s29dec, s29dec2, s29idle, s30dec, s30dec2, s30mem, serve_first_met, serve_idle_wake)


@dataclass(frozen=True)
class Judged:
    key: str                            # the result's key (`twin validate --json`)
    compute: Callable[[Path], dict]     # records root -> the section
    table: Callable[[dict], str]        # the section -> its lines (the first one its heading)


def _lines(format_section: Callable[[dict], list[str]]) -> Callable[[dict], str]:
    return lambda section: "\n".join(format_section(section))


# in the order `twin validate` has always computed and printed them (its --json keys' order)
JUDGED = (
    Judged("prereg_s20new", prereg.validate_section, prereg.format_table),   # train steps of models no record held
    Judged("prereg_s20gqa", functools.partial(prereg.validate_section, reg=prereg.S20GQA), prereg.format_table),
    Judged("prereg_s20epnew", prereg.ep_section, prereg.format_ep_table),   # the same slices' EP2 steps
    Judged("prereg_s20new2", functools.partial(prereg.validate_section, reg=prereg.S20NEW2), prereg.format_table),
    Judged("prereg_s20ppnew", prereg_pp.section, prereg_pp.format_table),   # their PP2 steps, each schedule
    Judged("prereg_s20gqa2", functools.partial(prereg.validate_section, reg=prereg.S20GQA2), prereg.format_table),
    Judged("prereg_s21host", prereg.host_section, prereg.format_host_table),   # serving, the host's speed an input
    Judged("fresh_s21ep2", ep_fresh.section, ep_fresh.format_table),   # EP2 layers at shapes no record held
    Judged("prereg_s21host2", prereg.step_section, prereg.format_step_table),   # each step beside its own probe
    Judged("prereg_s22host", prereg.s22host_section, prereg.format_step_table),   # models never served, synced steps
    Judged("prereg_s21pp4", prereg_pp4.section, prereg_pp4.format_table),   # four GPUs: pp4, pp2ep2
    Judged("prereg_s21pp4b", functools.partial(prereg_pp4.section, subdir=prereg_pp4.SECOND_SUBDIR),
           prereg_pp4.format_table),
    Judged("prereg_s21srvnew", prereg_serve.validate_section, _lines(prereg_serve.format_section)),   # load runs
    Judged("prereg_s21srvnew2", functools.partial(prereg_serve.validate_section, reg=prereg_serve.S21B),
           _lines(prereg_serve.format_section)),   # fresh seeds
    Judged("prereg_s22ttft", functools.partial(prereg_serve.validate_section, reg=prereg_serve.S22),
           _lines(prereg_serve.format_section)),   # new rates
    Judged("prereg_s28pp4", lease_probe.section, lease_probe.format_section),   # 4xH200 pp2ep2 / pp4, a fresh lease
    Judged("prereg_s28pp42", lease_probe2.section, lease_probe2.format_section),   # 2xH200 EP2 / pp2, P on two GPUs
    Judged("prereg_s28blind", s28blind.section, s28blind.format_table),   # today's twin, blind: 1 and 2 GPUs, every kind
    Judged("prereg_s29dec", s29dec.section, s29dec.format_table),   # decode / prefill, each lease's host probed, 2 leases
    Judged("s29dec2_kernels", s29dec2.section, s29dec2.format_table),   # decode host per kernel launched (candidate)
    Judged("s29idle", s29idle.section, s29idle.format_section),   # DualPipe's mirrored-rank wait, a fresh PP2 set
    Judged("s29serve_idle_wake", serve_idle_wake.section, serve_idle_wake.format_section),   # set O: after idle (H200)
    Judged("s30mem", s30mem.section, s30mem.format_section),   # pipeline-stage kernel rates, screened (candidate)
    Judged("s30dec_synced_kernels", s30dec.section, s30dec.format_table),   # decode as issued: synced, occupancy, kernels
    Judged("s30serve_first_met", serve_first_met.section, serve_first_met.format_section),   # set P: first-met probe (H200)
    Judged("s30dec2_confirm", s30dec2.section, s30dec2.format_table),   # the same, a second fresh lease (blind)
)
JUDGED_KEYS = tuple(j.key for j in JUDGED)

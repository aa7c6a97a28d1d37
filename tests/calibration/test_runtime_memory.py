"""The memory outside torch's allocator (s26mem round 2): the committed judgements of
docs/notes/s26mem2_rule.md (m1: C1 failed, no figure) and docs/notes/s26mem3_rule.md (m2: C1 held,
adopted), recomputed live from the committed records, and the twin's figure is m2's."""

from pathlib import Path

import pytest

from calibration import judged_under
from calibration import runtime_memory as rm
from calibration.records import MEASUREMENTS_DIR
from calibration.records_io import read_json
from twin.training import step

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("rule", "record"), [
    ("s26mem2", MEASUREMENTS_DIR / "h200x2" / "s26mem_m1" / "runtime_memory.csv"),
    ("s26mem3", MEASUREMENTS_DIR / "h200x2" / "runtime_memory.csv")])
def test_the_committed_judgement_is_the_records(rule, record):
    committed = read_json(ROOT / "calibration" / f"{rule}_judgement.json")
    # the stamp's keys (s30stale: commit, computed_under, rechecked) say when, not what was judged
    assert rm.judge(record, rule) == {k: v for k, v in committed.items() if k not in judged_under.IGNORED_KEYS}


def test_m1_failed_its_rule_and_m2_holds_the_replaced_one():
    m1 = read_json(ROOT / "calibration" / "s26mem2_judgement.json")
    m2 = read_json(ROOT / "calibration" / "s26mem3_judgement.json")
    assert not m1["c1_holds"] and not m1["c1"]["empty_gpu_before_cuda"]
    assert m2["c1_holds"] and m2["gpu_name"] == "NVIDIA H200"


def test_the_twins_reserve_is_m2s_figure():
    m2 = read_json(ROOT / "calibration" / "s26mem3_judgement.json")
    assert step.ADOPT_OUTSIDE_ALLOCATOR_RESERVE
    assert step.OUTSIDE_ALLOCATOR_BYTES == m2["outside_allocator_bytes"] == rm.judge(rm.committed_record())["outside_allocator_bytes"]
    # the stages add up: a context, the kernels, then NCCL's three communicators and its p2p buffers
    by_stage = list(m2["outside_by_stage_gib"].values())
    assert by_stage == sorted(by_stage) and 0.3 < by_stage[0] < 1.0

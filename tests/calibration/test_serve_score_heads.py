"""calibration.serve_score_heads (docs/notes/s23closed_rule.md): the twin starts a closed loop as real/serve does (the
same prompt tokens and decode rows in every first iteration), and the rule's verdict as coded."""

import pytest

from calibration import prereg_serve as ps
from calibration import records as rec
from calibration import serve_score_heads as ssh
from calibration.records_io import csv_exists
from calibration.serve_load_validation import TARGETS


@pytest.mark.parametrize("gpu", ps.GPUS)
def test_the_twin_batches_a_closed_loops_start_as_the_engine_did(gpu):
    """n22's closed loop of 24 (qwen2moe-mla-slice): five prompt iterations, then decode-only ones, the twin's prompt
    tokens and decode rows equal to the engine's iteration for iteration."""
    d = ps.records_dir(rec.MEASUREMENTS_DIR, gpu, "qwen2moe-mla-slice", ps.S22)
    if not csv_exists(d / "serve_load.csv"):
        pytest.skip("no s22ttft records")
    rows = ssh.closed_start(d, "n22-qwen2moe-closed-c24-mid", 7)
    assert len(rows) == 7
    assert [r["measured_prompt_tokens"] for r in rows] == [2048, 2043, 2038, 2034, 1775, 0, 0]
    assert [r["measured_decode_rows"] for r in rows] == [0, 5, 10, 14, 20, 24, 24]
    assert [r["twin_prompt_tokens"] for r in rows] == [r["measured_prompt_tokens"] for r in rows]
    assert [r["twin_decode_rows"] for r in rows] == [r["measured_decode_rows"] for r in rows]


def _row(reg: str, run_id: str, gpu: str, p99: float, other: float) -> dict:
    """A replay row whose TTFT P99 error is p99 and every other figure's `other`."""
    out = {"registration": reg, "run_id": run_id, "gpu": gpu}
    for k in ssh.FIGURES:
        e = p99 if k == "ttft_p99_s" else other
        out[f"{k}_rel_error"] = e
        out[f"{k}_within_target"] = abs(e) <= TARGETS[k]
    return out


def _rows(p99_closed: float, other_poisson: float) -> list[dict]:
    """Sets A and B: a closed loop and a Poisson run per GPU and record set."""
    rows = []
    for reg in ssh.REGISTRATIONS + ssh.EXTRA:
        for gpu in (("h100",) if reg in ssh.EXTRA else ps.GPUS):
            rows.append(_row(reg, f"x-{reg}-closed-c16-mid", gpu, p99_closed, 0.02))
            rows.append(_row(reg, f"x-{reg}-poisson-r8-mid", gpu, 0.1, other_poisson))
    return rows


def test_the_verdict_adopts_only_when_the_closed_tail_improves_and_nothing_is_lost():
    off = _rows(0.40, 0.02)
    assert ssh.verdict(off, _rows(0.10, 0.02))["adopt"]
    # the closed loops' P99 within target now, but every Poisson run's other figures pushed out of target
    lost = ssh.verdict(off, _rows(0.10, 0.30))
    assert not lost["adopt"] and not lost["A"]["criteria"]["3_all_checks"]
    # nothing changes side: criterion 1 fails
    assert not ssh.verdict(off, _rows(0.30, 0.02))["adopt"]
    with pytest.raises(ValueError):
        ssh.verdict(off, list(reversed(off)))

"""The s28tt rule's judgement (docs/notes/s28tt_rule.md; calibration/s28tt_judgement.json, written by
`python -m calibration.sac_kept`) and a live recompute from the committed records: what torchtitan's per-op SAC
keeps of a Llama 3.1 8B block by SDPA backend and under torch.compile (campaign s28tt, one H200), and
campaign s27mlm2's FSDP2 record read the same way. Under a second of CPU (two small records, the twin's count)."""

from pathlib import Path

import pytest

from calibration import sac_kept as sk
from calibration.records_io import read_json
from twin.costs import memory

J = read_json(Path(sk.__file__).resolve().parent / "s28tt_judgement.json")
COMPILED_ROWS = {"tt-8b-fsdp8-compile", "tt-8b-fsdp8-compile-fp8", "tt-8b-fsdp128-compile", "tt-8b-fsdp128-compile-fp8"}


def test_the_switch_stands_as_judged():
    assert J["D"]["holds"] and J["C"]["C1"] and J["C"]["C2"] and J["C"]["adopt"]
    assert memory.ADOPT_COMPILED_SAC_NEEDED_ONLY is J["C"]["adopt"]


def test_the_record_gives_the_judged_parts():
    """Live: each part's median bytes a token a block from the committed record, the twin's count beside it."""
    parts, counts = sk.parts(), sk.twin_counts()
    assert counts == pytest.approx(J["twin_counts"])
    want = sk.predictions(counts)
    for mode in ("default", "flash", "cudnn", "cudnn_saved"):
        assert parts[mode]["median"] == pytest.approx(J["parts"][mode]["median"])
        assert abs(parts[mode]["median"] - want[mode]) <= sk.D_TOL, mode
    assert parts["default"]["sdp_choice"] == "cudnn"   # torch 2.11 on the H200: cuDNN's attention first
    # the attention's output (BF16) and log-sum-exp (FP32) are the whole difference the save list makes
    assert parts["flash"]["median"] - parts["default"]["median"] == pytest.approx(counts["attention"], abs=1.0)
    # compiled: the eager set less w2's output (only the residual add reads it), to within a byte a token
    assert parts["flash_compile"]["median"] == pytest.approx(counts["compiled_candidate"], abs=1.0)
    assert parts["flash"]["median"] - parts["flash_compile"]["median"] == pytest.approx(8192.0, abs=1.0)


def test_s27mlm2_kept_the_count_less_the_attention():
    """That record's run also ran cuDNN's attention (torch 2.11, the list without its op): its per-block slope is
    the twin's count less the attention's kept outputs, to the byte."""
    d0 = sk.d0_s27mlm2(sk.twin_counts())
    assert d0 == J["D0"] and d0["equals_not_listed"]
    assert d0["kept_per_block_per_token"] == 55296.0 and d0["gap_to_twin"] == 8320.0


def test_only_the_compiled_rows_memory_moved():
    p = J["published"]
    assert p["G1_no_throughput_moves"] and not p["throughput_moved"]
    assert set(p["memory_moved"]) == COMPILED_ROWS
    for r in p["memory_moved"].values():   # 8,192 B x 16,384 tokens x 32 blocks
        assert r["off_bytes"] - r["on_bytes"] == pytest.approx(8192 * 16384 * 32)
    assert p["summary_on"] == p["summary_off"]   # no throughput summary moves


def test_an_empty_records_root_is_refused(tmp_path, monkeypatch, capsys):
    from calibration import records as rec
    monkeypatch.setattr(rec, "_ROOT", rec._ROOT)   # the run sets the process's root: restored after the test
    (tmp_path / "h200").mkdir()
    assert sk.main(["--records", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err

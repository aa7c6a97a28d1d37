"""real/serve/gemmshapes.py (s31look): the size-dependent dense GEMM shapes of one engine prompt step, counted on CPU,
are the committed calibration/s31look_shapes.json's for the tiny model (the other models' counts take minutes at full
width on CPU: `python -m real.serve.gemmshapes --models ...` rewrites them), and agree between two flat sizes."""

from pathlib import Path

from real.serve import gemmshapes
from calibration.records_io import read_json

SHAPES = Path(__file__).resolve().parents[2] / "calibration" / "s31look_shapes.json"


def test_tiny_counts_are_the_committed_ones_at_two_sizes():
    committed = read_json(SHAPES)
    got = gemmshapes.count_model("tiny", sizes=(37, 53))
    assert got == committed["tiny"]
    assert 0 < got["shapes"] <= got["calls"] < got["gemm_calls"]   # the head's GEMM (the last tokens' rows) not counted


def test_a_signature_counts_once_and_only_with_the_size():
    calls = [("mm", ((301, 64), (64, 128))), ("mm", ((301, 64), (64, 128))), ("mm", ((2, 64), (64, 512))),
             ("bmm", ((4, 301, 16), (4, 16, 301)))]
    assert gemmshapes.size_shapes(calls, 301) == {calls[0], calls[3]}

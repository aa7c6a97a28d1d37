"""(s17srv2, docs/notes/s17srv2_rule.md) ADOPT_KERNEL_WARMUP: a session's sizes run before start with real/serve's
start-up warm-up sizes (per rank), so the kernels they launch are not first launched by a recorded iteration;
the engine fit then counts kernels at the measured cost (as ADOPT_KERNEL_FIRST_LAUNCH). Both settings."""

import calibration.serve_engine_fit as sef
import calibration.serve_load_validation as slv
from calibration import records as rec
from calibration.serve_load_validation import sizes_run_before

RUNS = [{"run_id": "a", "timestamp_utc": "2026-11-26T03:00:00Z", "model": "v3-slice-2l", "ep_size": "2"},
        {"run_id": "b", "timestamp_utc": "2026-11-26T03:00:30Z", "model": "v3-slice-2l", "ep_size": "2"},
        {"run_id": "c", "timestamp_utc": "2026-11-26T06:00:00Z", "model": "v3-slice-2l", "ep_size": "2"},
        {"run_id": "t", "timestamp_utc": "2026-11-26T09:00:00Z", "model": "tiny", "ep_size": "2"}]
ITS = [{"run_id": "a", "rank": "1", "prefill_tokens": "300", "decode_seqs": "0", "graph_batch": "0", "idle": "0"}]


def test_off_no_warmup_size_counts(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_KERNEL_WARMUP", False)
    assert sizes_run_before(RUNS, ITS) == {"a": frozenset(), "b": frozenset({(1, 300)}), "c": frozenset(),
                                           "t": frozenset()}
    assert not sef.counts_kernels()


def test_on_every_session_starts_with_its_ranks_warmup_sizes(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_KERNEL_WARMUP", True)
    warm = {(g, n) for g, sizes in enumerate(slv.WARMUP_SIZES[2]) for n in sizes}
    assert (0, 1163) in warm and (1, 1163) not in warm
    before = sizes_run_before(RUNS, ITS)
    # a new session (c) starts again from the warm-up; a model whose plans warm up otherwise counts none
    assert before == {"a": frozenset(warm), "b": frozenset(warm | {(1, 300)}), "c": frozenset(warm),
                      "t": frozenset()}
    assert sef.counts_kernels()


def test_the_fit_counts_fewer_kernels_first_launched_with_the_warmup(monkeypatch):
    counted = {}
    for on in (False, True):
        monkeypatch.setattr(slv, "ADOPT_KERNEL_WARMUP", on)
        df, meta = sef.design(rec.MEASUREMENTS_DIR / "h100", "fit", {"g1-closed-c1-short", "g1-closed-c8-short"})
        df = sef.mark_new_sizes(df, kernel_gpu=meta["gpu"])
        counted[on] = df.groupby("run_id").new_bin_flag.sum()
    assert (counted[True] < counted[False]).all()
    # the single-request loop's prompts (s17srv's over-charge): 44 kernels by the map, 39 after the warm-up's
    assert (counted[False]["g1-closed-c1-short"], counted[True]["g1-closed-c1-short"]) == (44, 39)

"""Megatron-LM's unpublished micro-batch read from the SC21 weak-scaling script, the README table's
predecessor (calibration.published_runs.ADOPT_MLM_SC21_MICRO_BATCH; docs/notes/s28mlm_rule.md)."""

from __future__ import annotations

import pytest

import calibration.published_runs as pr

# examples/academic_paper_scripts/sc21/run_table_1.sh @ f2e5db4 (MODEL_SIZE: TP, PP, MBS), sequence 2,048
# (CONFIG.sh --seq-length 2048): the rule's C1 table, copied here so an edit of either side fails
SC21_SCRIPT = {"1.7B": (1, 1, 16), "3.6B": (2, 1, 16), "7.5B": (4, 1, 16), "18B": (8, 1, 8), "39B": (8, 2, 4),
               "76B": (8, 4, 2), "145B": (8, 8, 2), "310B": (8, 16, 1), "530B": (8, 35, 1), "1T": (8, 64, 1)}
# the rule's mapping (docs/notes/s28mlm_rule.md table): five rows move, the six at PP >= 4 keep one sequence
RULE_MICRO_BATCH = {"mlm-gpt-1.7b": 4, "mlm-gpt-7.1b": 4, "mlm-gpt-16b": 4, "mlm-gpt-32b": 4, "mlm-gpt-70b": 2,
                    "mlm-gpt-119b": 1, "mlm-gpt-177b": 1, "mlm-gpt-314b": 1, "mlm-gpt-462b": 1,
                    "mlm-gpt-177b-strong-96": 1, "mlm-gpt-177b-strong-4608": 1}


def test_the_encoded_table_is_the_sc21_script_s():
    assert pr.SC21_SEQ_LEN == 2048
    assert pr.SC21_MICRO_BATCH_SEQS == {(tp, pp): mbs for tp, pp, mbs in SC21_SCRIPT.values()}


def test_the_reading_in_tokens_with_its_worked_examples():
    # 18B's 8 x 2,048 tokens = 4 sequences of 4,096; 4 a rank: one micro-batch of 4
    assert pr.sc21_micro_batch_seqs(8, 1, 4096, 4, False) == 4
    # 1.7B's 16 x 2,048 = 8 sequences, capped at the 4 a rank holds
    assert pr.sc21_micro_batch_seqs(1, 1, 4096, 4, False) == 4
    # PP 6 has no SC21 layout: PP 4's (76B, 2 x 2,048) = 1 sequence
    assert pr.sc21_micro_batch_seqs(8, 6, 4096, 24, True) == 1
    # 310B's 1 x 2,048 is half a sequence: at least one
    assert pr.sc21_micro_batch_seqs(8, 16, 4096, 64, True) == 1
    # lowered until whole micro-batches: 6 a rank at 4 -> 3; interleaved at PP 2 (39B's 4 x 2,048 at seq 2,048)
    # and 6 a rank -> 3 (2 micro-batches, a multiple of 2); interleaved at PP 4 (76B's 2 x 2,048 = 4 at seq
    # 1,024) and 6 a rank -> 1 (6 / 3 = 2 and 6 / 2 = 3 micro-batches are not multiples of 4)
    assert pr.sc21_micro_batch_seqs(8, 1, 4096, 6, False) == 3
    assert pr.sc21_micro_batch_seqs(8, 2, 2048, 6, True) == 3
    assert pr.sc21_micro_batch_seqs(8, 4, 1024, 6, True) == 1


def test_a_layout_without_an_sc21_row_is_refused_by_name():
    with pytest.raises(ValueError, match=r"no SC21 layout at tp 16 with pp <= 1"):
        pr.sc21_micro_batch_seqs(16, 1, 4096, 4, False)


@pytest.mark.parametrize("adopt", [False, True])
def test_only_megatron_rows_read_it_and_only_where_it_differs(monkeypatch, adopt):
    monkeypatch.setattr(pr, "ADOPT_MLM_SC21_MICRO_BATCH", False)
    before = {r.id: r for r in pr.load_runs()[0]}
    monkeypatch.setattr(pr, "ADOPT_MLM_SC21_MICRO_BATCH", adopt)
    after = {r.id: r for r in pr.load_runs()[0]}
    for rid, run in after.items():
        if run.source != "megatron" or not adopt or RULE_MICRO_BATCH[rid] == 1:
            assert run == before[rid], rid
            continue
        assert run.plan == {**before[rid].plan, "micro_batch_seqs": RULE_MICRO_BATCH[rid]}
        said = [a for a in run.assumed if a.startswith("micro_batch_seqs")]
        assert said == [a for a in said if "run_table_1.sh" in a] and len(said) == 1
    assert {rid: r.plan["micro_batch_seqs"] for rid, r in after.items() if r.source == "megatron"} == (
        RULE_MICRO_BATCH if adopt else dict.fromkeys(RULE_MICRO_BATCH, 1))


def test_a_moved_row_fits_and_runs_one_micro_batch_a_step(monkeypatch):
    """C2 on the row the rule speaks of first (32B, TP 8 PP 1): it fits the twin's count at four sequences
    and, with the DP traffic beside a whole forward and backward, runs faster than at one (live)."""
    def step_of(adopt):
        monkeypatch.setattr(pr, "ADOPT_MLM_SC21_MICRO_BATCH", adopt)
        run = next(r for r in pr.load_runs()[0] if r.id == "mlm-gpt-32b")
        return pr.evaluate(run)
    one, four = step_of(False), step_of(True)
    assert four["status"] == "ok" and four["memory_fits"]
    assert four["step_time_s"] < one["step_time_s"]
    print(f"32B step {one['step_time_s']:.3f} s at one sequence, {four['step_time_s']:.3f} s at four")

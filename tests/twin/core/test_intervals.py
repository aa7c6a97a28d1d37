from twin.core.intervals import covered_length, uncovered_length, union_intervals


def test_union_merges_overlaps_and_sorts():
    assert union_intervals([(5, 7), (0, 2), (1, 3)]) == [(0, 3), (5, 7)]
    assert union_intervals([(0, 1), (1, 2)]) == [(0, 2)]      # touching intervals join
    assert union_intervals([(3, 2)]) == []                   # a reversed interval covers nothing


def test_covered_and_uncovered_lengths():
    assert covered_length([(0, 2), (1, 3), (5, 7)]) == 5
    assert covered_length([]) == 0
    # NCCL 0..10 under compute 2..4 and 6..7 (one of them twice): 7 of its 10 us exposed
    assert uncovered_length([(0, 10)], [(2, 4), (6, 7), (3, 4)]) == 7
    assert uncovered_length([(0, 1)], [(0, 5)]) == 0

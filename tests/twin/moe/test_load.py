import numpy as np
import pytest

from twin.core.fields import build
from twin.core.errors import ScenarioError
from twin.moe.load import (LoadModel, expected_topk_rows, fit_dirichlet, load_model_of, fit_measured, fit_zipf,
                           gumbel_topk_counts, read_expert_load, resample_shares, routed_shares, simulate_bias_update,
                           zipf_weights)
from twin.core.moe_specs import MoeLoadSpec


def _synthetic(p_fn, n, e, k, tokens, seed):
    rng = np.random.default_rng(seed)
    return np.stack([gumbel_topk_counts(np.log(p_fn(rng)), k, tokens, rng) for _ in range(n)])


def test_fit_zipf_recovers_known_exponent():
    counts = _synthetic(lambda rng: zipf_weights(16, 1.2)[rng.permutation(16)], 60, 16, 4, 1024, seed=11)
    assert fit_zipf(counts, 4, draws=4, seed=5).param == pytest.approx(1.2, abs=0.1)


def test_fit_dirichlet_recovers_known_concentration():
    counts = _synthetic(lambda rng: rng.dirichlet(np.full(16, 0.5)), 150, 16, 4, 1024, seed=12)
    assert fit_dirichlet(counts, 4, draws=32, seed=5).param == pytest.approx(0.5, rel=0.3)


def test_distinct_topk_caps_share():
    # one overwhelmingly popular expert still gets at most one row per token: share <= 1/top_k
    s = LoadModel("zipf", 8.0).shares_LE(1, 16, 4)
    assert s.max() <= 0.25 + 1e-12 and s.sum() == pytest.approx(1.0)


def test_expected_topk_rows_are_capped_proportional_inclusions():
    # weights (0.7, 0.1, 0.1, 0.1), top-2: pi = min(1, c p) with sum 2; the first is capped, so
    # 1 + 3 * 0.1 c = 2 -> c = 10/3 and pi = (1, 1/3, 1/3, 1/3); 300 tokens get 300 pi rows
    rows = expected_topk_rows(np.array([0.7, 0.1, 0.1, 0.1]), 2, 300)
    assert rows == pytest.approx([300.0, 100.0, 100.0, 100.0])
    # uniform weights: every expert gets tokens * top_k / E
    assert expected_topk_rows(zipf_weights(16, 0.0), 4, 1024) == pytest.approx(np.full(16, 256.0))


def test_balanced_and_resample():
    assert np.allclose(LoadModel("balanced").shares_LE(2, 8, 2), 1 / 8)
    # sorted curve / mean = [1.6, 1.2, .8, .4] at ranks .125 .. .875; at 8 experts (ranks 1/16 ..
    # 15/16) it interpolates to [1.6, 1.5, 1.3, 1.1, .9, .7, .5, .4] (ends clamped), mean 1
    r = resample_shares(np.array([0.4, 0.3, 0.2, 0.1]), 8, np.random.default_rng(0))
    assert sorted(r * 8, reverse=True) == pytest.approx([1.6, 1.5, 1.3, 1.1, 0.9, 0.7, 0.5, 0.4])


def test_measured_replay_reads_recorded_counts():
    c = read_expert_load("h200", 0.0)
    # 8 x 512 tokens x top-4 per main layer; the MTP layer (last) sees 511 positions per sequence
    assert c.shape == (60, 4, 16)
    assert (c.sum(axis=2)[:, :3] == 8 * 512 * 4).all() and (c.sum(axis=2)[:, 3] == 8 * 511 * 4).all()
    with pytest.raises(ValueError, match="recorded"):
        read_expert_load("h200", 0.5)


def test_bias_update_decays_imbalance_and_faster_with_gamma():
    def tail(gamma):
        return simulate_bias_update(16, 4, 1.0, gamma, 120, 1024, seed=1).rank_imbalance_S(16)[-20:].mean()
    none, slow, fast = tail(0.0), tail(1e-3), tail(1e-2)
    assert fast < slow < none


def test_moe_section_is_strict():
    assert build(MoeLoadSpec, {"load_model": "zipf", "zipf_s": 1.2}, "moe").zipf_s == 1.2
    with pytest.raises(ScenarioError, match="moe.load_model"):
        build(MoeLoadSpec, {"load_model": "pareto"}, "moe")
    assert load_model_of(MoeLoadSpec()) is None


def test_default_affinity_parameters_are_the_fits_of_the_recorded_run():
    fit = fit_measured("h200")
    spec = MoeLoadSpec()
    assert spec.zipf_s == pytest.approx(fit["zipf_s"], abs=0.01)
    assert spec.dirichlet_alpha == pytest.approx(fit["dirichlet_alpha"], abs=0.01)


def test_exponential_keys_sample_the_softmax_exactly():
    # top-1 of log p - log Exp(1) is a softmax draw: shares converge to p (binomial sigma ~ 0.0016)
    p = np.array([0.5, 0.25, 0.15, 0.1])
    counts = gumbel_topk_counts(np.log(p), 1, 100_000, np.random.default_rng(3))
    assert np.allclose(counts / counts.sum(), p, atol=0.006)
    # the bias enters the choice: +log 2 on the last expert doubles its weight
    biased = gumbel_topk_counts(np.log(p), 1, 100_000, np.random.default_rng(3), bias_E=np.array([0, 0, 0, np.log(2)]))
    assert np.allclose(biased / biased.sum(), np.array([0.5, 0.25, 0.15, 0.2]) / 1.1, atol=0.006)


def test_bias_update_without_bias_is_the_zipf_model():
    # sigmoid affinity keys without bias rank experts as the Gumbel keys do: same sorted share curve
    run = simulate_bias_update(32, 4, 1.2, 0.0, 40, 2048, seed=2)
    dyn = np.sort(run.counts_SE.sum(0) / run.counts_SE.sum())[::-1]
    zipf = np.sort(routed_shares(zipf_weights(32, 1.2), 4, 80_000))[::-1]
    assert zipf[0] > 4 * zipf[-1]
    assert np.allclose(dyn, zipf, atol=0.004)

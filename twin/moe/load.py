"""Expert-load models: how a layer's routed rows split over its experts.

A load model yields `shares_LE`: for each MoE layer, the fraction of the layer's routed rows
(tokens x top_k) that each expert receives; rows sum to 1. Kinds:

- balanced: 1/E each (DeepSeek's profiling runs).
- zipf(s): expert affinity weights p_e ~ rank^-s (experts randomly permuted per layer), and each
  token picks top_k *distinct* experts by sampling without replacement from p (Plackett-Luce; the
  same routing `real/bench/moe_layer.py::skewed_routing` injects). A share can never exceed 1/top_k.
- dirichlet(alpha): affinity weights p ~ Dirichlet(alpha * 1), then the same distinct top-k routing.
- measured: per-(step, layer, expert) counts recorded from `real/` training
  (calibration/measurements/<gpu>/expert_load.csv, shipped as twin/data/expert_load/<gpu>.csv), replayed; for another expert count the sorted
  share curve is interpolated over normalised rank.
- dynamic: the auxiliary-loss-free bias update of V3 (§2.1.2: b_i += gamma * sign(mean load -
  load_i) after every step) simulated over steps on top of a zipf base affinity.

Shares of distinct top-k routing are computed by seeded Monte Carlo with the Gumbel-top-k trick
(top_k of log p + Gumbel noise is exactly sampling k distinct items without replacement), so every
function here is deterministic for a given seed.

Fits (`fit_zipf`, `fit_dirichlet`) match the mean sorted share curve of measured counts (the
method of moments on order statistics: expert identities are arbitrary, so only the sorted curve
carries the skew). Counts of one layer-step contain multinomial noise; the model curve is
computed at the same number of rows, so the noise is in both sides alike.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

from twin.core.moe_specs import DYNAMIC_RUNS, DYNAMIC_TOKENS, MoeLoadSpec

# measured loads replayed by the twin: package data copied from calibration/measurements/<gpu>/expert_load.csv by `twin fit`
EXPERT_LOADS = resources.files("twin.data").joinpath("expert_load")
# tokens per Monte Carlo estimate of routed shares, and independent bias-update runs of a dynamic
# model (cycled over layers): defined in core, where Scenario.check bounds the dynamic model's work
MC_TOKENS = DYNAMIC_TOKENS


# ---------------------------------------------------------------------------------------------
# Routing primitives


def gumbel_topk_counts(log_p_E: np.ndarray, top_k: int, num_tokens: int, rng: np.random.Generator,
                       bias_E: np.ndarray | None = None) -> np.ndarray:
    """Routed-row counts per expert when `num_tokens` tokens each take top_k distinct experts,
    sampled without replacement from softmax(log_p) (biased by bias_E in the choice only).

    Gumbel keys log p + g are drawn as log p - log X with X = exp(-g) ~ Exponential(1), in float32:
    the same distribution at a third of the cost of numpy's float64 Gumbel sampler."""
    e = log_p_E.shape[0]
    log_w_E = log_p_E if bias_E is None else log_p_E + bias_E
    keys_TE = rng.standard_exponential((num_tokens, e), dtype=np.float32)
    with np.errstate(divide="ignore"):  # a float32 draw of exactly 0 is a key of +inf: still exact
        np.log(keys_TE, out=keys_TE)
    np.subtract(log_w_E.astype(np.float32)[None, :], keys_TE, out=keys_TE)
    return _topk_counts(keys_TE, top_k)


def _topk_counts(keys_TE: np.ndarray, top_k: int) -> np.ndarray:
    """How often each expert is among the top_k keys of a token (ties have probability zero)."""
    e = keys_TE.shape[1]
    kth_T = np.partition(keys_TE, e - top_k, axis=1)[:, e - top_k]
    return np.count_nonzero(keys_TE >= kth_T[:, None], axis=0).astype(np.float64)


def zipf_weights(num_experts: int, s: float) -> np.ndarray:
    """The Zipf popularity law: expert of rank r (1..E) has weight r^-s, normalised to sum 1.
    The one definition: the zipf and dynamic load models here, calibration's MoE-layer
    predictions (calibration/predict.py, calibration/moe_skew.py), and the law
    real/bench/moe_layer.py::skewed_routing samples on the GPU (in torch; real/ imports no twin.moe)."""
    w = np.arange(1, num_experts + 1, dtype=np.float64) ** -s
    return w / w.sum()


def expected_topk_rows(p_E: np.ndarray, top_k: int, num_tokens: float) -> np.ndarray:
    """Expected routed rows per expert when each of `num_tokens` tokens takes top_k distinct
    experts with inclusion probabilities proportional to the weights p_E, capped at 1:
    pi_e = min(1, c p_e) with c such that sum pi_e = top_k (the proportional-to-size design; c by
    bisection, 60 halvings). Closed form and deterministic, but not the law of successive sampling
    (Plackett-Luce: gumbel_topk_counts, torch.multinomial in real/), which spreads rows more evenly:
    at 16 experts, top-4, Zipf 1.5 the hottest expert gets 0.250 of the rows here against 0.239
    under successive sampling (routed_shares)."""
    p_E = np.asarray(p_E, dtype=np.float64)
    lo, hi = 0.0, float(p_E.shape[0]) / p_E.min()
    for _ in range(60):
        c = 0.5 * (lo + hi)
        if np.minimum(1.0, c * p_E).sum() < top_k:
            lo = c
        else:
            hi = c
    return num_tokens * np.minimum(1.0, hi * p_E)


def routed_shares(p_E: np.ndarray, top_k: int, num_tokens: int = MC_TOKENS, seed: int = 0) -> np.ndarray:
    """Expected share of routed rows per expert under distinct top-k sampling from weights p."""
    rng = np.random.default_rng(seed)
    counts = gumbel_topk_counts(np.log(np.maximum(p_E, 1e-300)), top_k, num_tokens, rng)
    return counts / counts.sum()


# ---------------------------------------------------------------------------------------------
# Load models


@dataclass(frozen=True)
class LoadModel:
    """kind: 'balanced' | 'zipf' | 'dirichlet' | 'measured' | 'dynamic'.

    param: zipf s, dirichlet alpha, or the zipf s of the dynamic model's base affinity.
    gamma: bias update speed of the dynamic model (per step, in routing-score units).
    measured_gpu / bias_update_rate: which recorded run a 'measured' model replays.
    """

    kind: str = "balanced"
    param: float = 0.0
    gamma: float = 0.0
    steps: int = 200
    seed: int = 0
    measured_gpu: str = "h200"
    bias_update_rate: float = 0.0

    def shares_LE(self, num_layers: int, num_experts: int, top_k: int) -> np.ndarray:
        """(layers, experts) shares of routed rows, each row summing to 1."""
        return _shares(self, num_layers, num_experts, top_k).copy()


@functools.cache
def _shares(model: LoadModel, num_layers: int, num_experts: int, top_k: int) -> np.ndarray:
    rng = np.random.default_rng(model.seed)
    e = num_experts
    if model.kind == "balanced" or e == 0:
        return np.full((num_layers, max(e, 1)), 1.0 / max(e, 1))
    out = np.empty((num_layers, e))
    if model.kind in ("zipf", "dirichlet"):
        for layer in range(num_layers):
            if model.kind == "zipf":
                p = zipf_weights(e, model.param)[rng.permutation(e)]
            else:
                p = rng.dirichlet(np.full(e, model.param))
            out[layer] = routed_shares(p, top_k, seed=int(rng.integers(2**31)))
        return out
    if model.kind == "measured":
        counts_SLE = read_expert_load(model.measured_gpu, model.bias_update_rate)
        mean_LE = counts_SLE.mean(axis=0)
        for layer in range(num_layers):
            row = mean_LE[layer % mean_LE.shape[0]]
            out[layer] = resample_shares(row / row.sum(), e, rng)
        return out
    if model.kind == "dynamic":
        # a few independent runs (each its own expert permutation), cycled over the layers
        runs = []
        for _ in range(min(num_layers, DYNAMIC_RUNS)):
            run = simulate_bias_update(e, top_k, model.param, model.gamma, model.steps,
                                       seed=int(rng.integers(2**31)))
            tail = run.counts_SE[-max(1, model.steps // 10):].mean(axis=0)
            runs.append(tail / tail.sum())
        for layer in range(num_layers):
            out[layer] = runs[layer % len(runs)]
        return out
    raise ValueError(f"unknown load model kind {model.kind!r}")


def resample_shares(shares_E: np.ndarray, num_experts: int, rng: np.random.Generator) -> np.ndarray:
    """Carry a share vector to another expert count: the sorted share curve is interpolated over
    normalised rank (r + 0.5) / E, renormalised, then randomly permuted. Same E: returned as is."""
    if shares_E.shape[0] == num_experts:
        return shares_E.copy()
    src = np.sort(shares_E)[::-1] * shares_E.shape[0]            # relative to mean
    x_src = (np.arange(src.shape[0]) + 0.5) / src.shape[0]
    x_dst = (np.arange(num_experts) + 0.5) / num_experts
    dst = np.interp(x_dst, x_src, src)
    dst = dst / dst.sum()
    return dst[rng.permutation(num_experts)]


# ---------------------------------------------------------------------------------------------
# Measured loads


@functools.cache
def _read_rows(gpu: str) -> tuple:
    with EXPERT_LOADS.joinpath(f"{gpu}.csv").open() as fh:
        return tuple(csv.DictReader(fh))


def read_expert_load(gpu: str, bias_update_rate: float) -> np.ndarray:
    """Recorded counts (steps, layers, experts) of one run of expert_load.csv."""
    rows = [r for r in _read_rows(gpu) if float(r["bias_update_rate"]) == bias_update_rate]
    if not rows:
        rates = sorted({float(r["bias_update_rate"]) for r in _read_rows(gpu)})
        raise ValueError(f"no expert_load rows for {gpu} at bias_update_rate={bias_update_rate}; recorded: {rates}")
    steps = 1 + max(int(r["step"]) for r in rows)
    layers = 1 + max(int(r["layer"]) for r in rows)
    e = int(rows[0]["num_experts"])
    out = np.zeros((steps, layers, e))
    for r in rows:
        out[int(r["step"]), int(r["layer"])] = [float(v) for v in r["tokens_per_expert"].split()]
    return out


def recorded_rates(gpu: str) -> list[float]:
    return sorted({float(r["bias_update_rate"]) for r in _read_rows(gpu)})


def max_over_mean(counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return counts.max(axis=axis) / counts.mean(axis=axis)


# ---------------------------------------------------------------------------------------------
# Fits


def sorted_share_curve(counts_NE: np.ndarray) -> np.ndarray:
    """Mean over samples of the descending-sorted share vector."""
    counts_NE = np.asarray(counts_NE, dtype=np.float64).reshape(-1, np.shape(counts_NE)[-1])
    shares = counts_NE / counts_NE.sum(axis=1, keepdims=True)
    return np.sort(shares, axis=1)[:, ::-1].mean(axis=0)


def _model_curve(kind: str, param: float, e: int, top_k: int, tokens: int, draws: int, seed: int) -> np.ndarray:
    """Mean sorted share curve of `draws` samples of `tokens` tokens under a parametric model,
    with common random numbers (same seed for every parameter value) so the fit is smooth."""
    # lazy: only the fits need scipy.special (~0.4 s to import); the simulators never fit
    from scipy.special import gammaincinv
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(draws):
        if kind == "zipf":
            p = zipf_weights(e, param)
        else:
            # Dirichlet by normalised Gammas, drawn from fixed uniforms (CRN over alpha)
            u = rng.random(e)
            p = gammaincinv(param, np.clip(u, 1e-12, 1 - 1e-12)) + 1e-300
            p = p / p.sum()
        c = gumbel_topk_counts(np.log(p), top_k, tokens, rng)
        curves.append(np.sort(c / c.sum())[::-1])
    return np.mean(curves, axis=0)


@dataclass(frozen=True)
class Fit:
    kind: str
    param: float
    rmse: float          # of the sorted share curve, in shares
    num_samples: int


def _fit(kind: str, counts_NE: np.ndarray, top_k: int, bounds: tuple[float, float], log_scale: bool,
         draws: int, seed: int) -> Fit:
    # lazy: only the fits need scipy.optimize (~0.7 s to import); the simulators never fit
    from scipy import optimize
    counts_NE = np.asarray(counts_NE, dtype=np.float64).reshape(-1, np.shape(counts_NE)[-1])
    e = counts_NE.shape[1]
    tokens = int(round(counts_NE.sum(axis=1).mean() / top_k))
    target = sorted_share_curve(counts_NE)

    def loss(x: float) -> float:
        param = float(np.exp(x)) if log_scale else x
        return float(np.mean((_model_curve(kind, param, e, top_k, tokens, draws, seed) - target) ** 2))

    lo, hi = (np.log(bounds[0]), np.log(bounds[1])) if log_scale else bounds
    grid = np.linspace(lo, hi, 25)
    best = grid[int(np.argmin([loss(x) for x in grid]))]
    step = grid[1] - grid[0]
    res = optimize.minimize_scalar(loss, bounds=(max(lo, best - step), min(hi, best + step)), method="bounded",
                                   options={"xatol": 1e-4})
    x = float(res.x)
    return Fit(kind, float(np.exp(x)) if log_scale else x, float(np.sqrt(res.fun)), counts_NE.shape[0])


def fit_zipf(counts_NE: np.ndarray, top_k: int, draws: int = 8, seed: int = 0) -> Fit:
    """Zipf exponent s whose distinct top-k routing best matches the measured sorted shares."""
    return _fit("zipf", counts_NE, top_k, (0.0, 4.0), False, draws, seed)


def fit_dirichlet(counts_NE: np.ndarray, top_k: int, draws: int = 64, seed: int = 0) -> Fit:
    """Dirichlet concentration alpha of the affinity weights (distinct top-k routing on top)."""
    return _fit("dirichlet", counts_NE, top_k, (0.02, 200.0), True, draws, seed)


@functools.cache
def fit_measured(gpu: str = "h200", top_k: int = 4, bias_update_rate: float = 0.0) -> dict:
    """Zipf and Dirichlet fits to a recorded run (bench-small: 16 experts, top-4), all layers and
    steps pooled."""
    counts = read_expert_load(gpu, bias_update_rate)
    flat = counts.reshape(-1, counts.shape[-1])
    z, d = fit_zipf(flat, top_k), fit_dirichlet(flat, top_k)
    return {"gpu": gpu, "bias_update_rate": bias_update_rate, "num_samples": flat.shape[0],
            "num_experts": flat.shape[1], "top_k": top_k,
            "zipf_s": z.param, "zipf_rmse": z.rmse, "dirichlet_alpha": d.param, "dirichlet_rmse": d.rmse,
            "measured_max_over_mean": float(max_over_mean(flat).mean())}


# ---------------------------------------------------------------------------------------------
# Dynamic: the aux-loss-free bias update


@dataclass(frozen=True)
class BiasRun:
    counts_SE: np.ndarray       # routed rows per step and expert
    bias_SE: np.ndarray         # bias after each step

    def rank_imbalance_S(self, ep: int) -> np.ndarray:
        """max/mean of rows per EP rank (contiguous placement) for each step."""
        ranks = self.counts_SE.reshape(self.counts_SE.shape[0], ep, -1).sum(-1)
        return max_over_mean(ranks)


def simulate_bias_update(num_experts: int, top_k: int, base_s: float, gamma: float, steps: int,
                         tokens_per_step: int = MC_TOKENS, seed: int = 0, score_temp: float = 1.0) -> BiasRun:
    """Route `tokens_per_step` tokens per step with sigmoid affinities sigmoid(a_e + g_te)
    (a_e = log of permuted Zipf(base_s) weights, g Gumbel: without bias this is exactly the zipf
    load model), choose top_k of affinity + b_e, then b_e += gamma * sign(mean load - load_e) as in
    V3 §2.1.2 (and real/model.py Gate.update_bias). Gamma acts on the sigmoid-score scale, as V3's
    0.001 does. The base affinity does not drift (a trained router would)."""
    rng = np.random.default_rng(seed)
    a = np.log(zipf_weights(num_experts, base_s)[rng.permutation(num_experts)])
    b = np.zeros(num_experts)
    counts, biases = np.empty((steps, num_experts)), np.empty((steps, num_experts))
    # sigmoid((a + g) / T) = 1 / (1 + exp(-a/T) * X**(1/T)) with X = exp(-g) ~ Exponential(1):
    # exact, and five times cheaper than sampling Gumbel noise and taking exp in float64
    exp_neg_a_E = np.exp(-a / score_temp).astype(np.float32)
    for step in range(steps):
        choice_TE = rng.standard_exponential((tokens_per_step, num_experts), dtype=np.float32)
        if score_temp != 1.0:
            choice_TE **= np.float32(1.0 / score_temp)
        choice_TE *= exp_neg_a_E
        choice_TE += 1.0
        np.reciprocal(choice_TE, out=choice_TE)
        choice_TE += b.astype(np.float32)
        load = _topk_counts(choice_TE, top_k)
        b = b + gamma * np.sign(load.mean() - load)
        counts[step], biases[step] = load, b
    return BiasRun(counts, biases)


def load_model_of(spec: MoeLoadSpec) -> LoadModel | None:
    """The LoadModel a scenario's [moe] section names, or None for the scalar knob."""
    k = spec.load_model
    if k == "scalar":
        return None
    if k == "balanced":
        return LoadModel("balanced")
    if k == "zipf":
        return LoadModel("zipf", spec.zipf_s, seed=spec.seed)
    if k == "dirichlet":
        return LoadModel("dirichlet", spec.dirichlet_alpha, seed=spec.seed)
    if k == "measured":
        return LoadModel("measured", seed=spec.seed, measured_gpu=spec.measured_gpu,
                         bias_update_rate=spec.measured_bias_update_rate)
    return LoadModel("dynamic", spec.zipf_s, gamma=spec.bias_update_speed, steps=spec.dynamic_steps, seed=spec.seed)

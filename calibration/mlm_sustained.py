"""Campaign s24mlm's records against the twin (issue 14, Megatron-LM's TP 8 rows; rule
docs/notes/s24mlm_rule.md, diagnostic only: nothing here is an input of the twin).

(C) chunks: the GEMMs TransformerEngine's userbuffers split under Megatron's --tp-comm-overlap at TP 8,
measured whole, chunked on one stream and chunked round-robin on three (real/bench/mlm_sustained.py),
against the twin's chunk pricing (compute.chunked_gemm_time_s on the fitted profile: these are burst
timings). Per model, the excess of the chunks over the whole GEMMs a layer and micro-batch, measured and
as the twin prices it, and the difference as a share of the twin's block (burst).

(S) blocks: one GPU's TP 8 slice of the GPT block held at the power limit: measured burst / held time
(the held windows from SETTLED_WINDOW on) against the twin's own burst / sustained ratio for the same
block (calibration.dense_block's op list for the record on fitted_profile over load_profile), and the
reference GEMM's measured ratio against the profile's sustained ratio for BF16 GEMMs.

Diagnostics on the published rows (the rule's (i) and (ii), printed, never adopted): the Megatron rows
(i) with the measured chunk ratios in place of the twin's on the measured models, (ii) with the compute
curves scaled by the twin's over the measured sustained ratio of the row's own model's block.

    python -m calibration.mlm_sustained DIR [--rows]     (DIR holds gemm.csv and, round 1, sustained.csv)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from unittest import mock

import pandas as pd

from calibration import entry
from calibration.dense_block import predicted_components_s
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import Profile, fitted_profile, load_profile

SETTLED_WINDOW = 3          # held windows from the 3rd second on (the rule)
FINDING_SHARE = 0.03        # the rule's threshold, of the twin's block (C) or on the ratio (S)
UNSETTLED_SPREAD = 0.05     # round 2: a GEMM whose pair of timings differs by more on any variant is not used
TP, CHUNK_BENCH, HOLD_BENCH = 8, "mlm_chunks", "mlm_sustained"
CHUNK_BENCH2 = "mlm_chunks2"   # round 2: forwards in F.linear's layout, each variant twice (/a, /b)
# a TE-split GEMM -> (the twin's op name in a Megatron layer, the pass its chunks run in)
TWIN_OP = {"qkv_fprop": ("qkv_proj", "fwd"), "fc1_fprop": ("ffn_gate_up", "fwd"),
           "proj_dgrad": ("o_proj", "bwd_input"), "fc2_dgrad": ("ffn_down", "bwd_input"),
           "proj_fprop": ("o_proj", "fwd"), "fc2_fprop": ("ffn_down", "fwd")}


def _gemm_op(m: int, n: int, k: int, pass_: str) -> tuple[Op, str]:
    """The record's GEMM out[m, n] = in[m, k] W as a twin op and phase: a forward is the op itself; a
    dgrad (dX = dY W of a layer with k outputs and n inputs) the op of that layer in bwd_input."""
    if pass_ == "fwd":
        return Op("g", OpKind.GEMM, "mlp", m, n, k), "fwd"
    return Op("g", OpKind.GEMM, "mlp", m, k, n), "bwd_input"


def chunk_table(folder: Path, gpu: str = "h100", profile: Profile | None = None) -> pd.DataFrame:
    """Per model and TE-split GEMM: measured whole / one-stream / three-stream seconds and the twin's
    whole and chunked seconds (fitted profile), with the ratios chunked / whole. A round-2 file
    (bench mlm_chunks2) gives each variant's mean over its two timings and `spread`, the largest
    |a / b - 1| of the GEMM's three variants; round 1 (bench mlm_chunks) one timing, spread NaN."""
    df = read_csv(Path(folder) / "gemm.csv")
    round2 = bool((df["bench"] == CHUNK_BENCH2).any())
    df = df[df["bench"] == (CHUNK_BENCH2 if round2 else CHUNK_BENCH)].copy()
    parts = df["shape_tag"].str.split("/", expand=True)
    df["model"], df["gemm"], df["variant"] = parts[0], parts[1], parts[2]
    df["rep"] = parts[3] if round2 else "a"
    df["time_s"] = pd.to_numeric(df["time_s"])
    spec, prof = gpu_spec(gpu), profile or fitted_profile(gpu)
    rows = []
    for (model, gemm), g in df.groupby(["model", "gemm"], sort=False):
        t = g.groupby("variant", sort=False)["time_s"].mean().to_dict()
        pairs = g.pivot_table(index="variant", columns="rep", values="time_s")
        spread = float((pairs["a"] / pairs["b"] - 1.0).abs().max()) if round2 else float("nan")
        chunked = [v for v in t if v != "whole"]
        one = next(v for v in chunked if v.endswith("streams1"))
        three = next(v for v in chunked if not v.endswith("streams1"))
        chunks = int(g.loc[g["variant"] == one, "groups"].iloc[0])
        m, n, k = (int(g[c].iloc[0]) for c in ("m", "n", "k"))
        op, phase = _gemm_op(m, n, k, "fwd" if gemm.endswith("fprop") else "dgrad")
        twin_whole = compute.chunked_gemm_time_s(op, phase, "bf16", 1, spec, prof)
        twin_chunked = compute.chunked_gemm_time_s(op, phase, "bf16", chunks, spec, prof)
        rows.append(dict(model=model, gemm=gemm, m=m, n=n, k=k, chunks=chunks, whole_s=t["whole"],
                         streams1_s=t[one], streams3_s=t[three], twin_whole_s=twin_whole,
                         twin_chunked_s=twin_chunked, ratio1=t[one] / t["whole"], ratio3=t[three] / t["whole"],
                         twin_ratio=twin_chunked / twin_whole, spread=spread))
    return pd.DataFrame(rows)


def block_row(config: str) -> dict:
    """calibration.dense_block's record fields for a held block config ('<model> tp8 b1 s<T> block
    fwd_bwd flash'): the TP 8 slice of the catalog GPT (MHA, head dim 128, GeLU 4h)."""
    model, _tp, _b, seq = config.split()[:4]
    hidden, heads = {m: (d, h) for m, d, h in _MLM_SHAPES}[model]
    return dict(bench="block_fwd_bwd", block="gpt", model=model, batch=1, seq_len=int(seq.lstrip("s")),
                sdpa_backend="flash", gqa="repeat_kv", compiled="no", hidden_size=hidden,
                num_heads=heads // TP, num_kv_heads=heads // TP, head_dim=hidden // heads,
                ffn=4 * hidden // TP, vocab=131072 // TP)


# real/bench/mlm_sustained.ROUND2_ROWS (torch-free copy: calibration never imports real/)
_MLM_SHAPES = (("megatron-gpt-462b", 18432, 144), ("megatron-gpt-177b", 12288, 96),
               ("megatron-gpt-119b", 10240, 80), ("megatron-gpt-32b", 7168, 56),
               ("megatron-gpt-70b", 8192, 64), ("megatron-gpt-314b", 16384, 128))


def held_ratio(g: pd.DataFrame) -> tuple[float, float, float, float]:
    """(burst s, held s: median of the settled windows, burst / held, held SM clock MHz) of one config."""
    burst = float(g.loc[g["phase"] == "burst", "time_s"].iloc[0])
    held = g[(g["phase"] == "sustained") & (pd.to_numeric(g["window"]) >= SETTLED_WINDOW)]
    if held.empty:
        raise ValueError(f"{g['config'].iloc[0]}: no held window from the {SETTLED_WINDOW}rd on")
    t = statistics.median(pd.to_numeric(held["time_s"]))
    return burst, t, burst / t, statistics.median(pd.to_numeric(held["sm_clock_mhz"]))


def sustained_table(folder: Path, gpu: str = "h100") -> pd.DataFrame:
    """Per held config: measured burst, held, burst / held, clock, power, and the twin's ratio for it
    (blocks: dense_block's ops, fitted over sustained profile; the reference GEMM: the profile's BF16
    GEMM sustained ratio)."""
    df = read_csv(Path(folder) / "sustained.csv")
    df = df[df["bench"] == HOLD_BENCH]
    spec, burst_prof, sust_prof = gpu_spec(gpu), fitted_profile(gpu), load_profile(gpu)
    rows = []
    for config, g in df.groupby("config", sort=False):
        burst, held, ratio, clock = held_ratio(g)
        power = statistics.median(pd.to_numeric(g.loc[(g["phase"] == "sustained") & (pd.to_numeric(g["window"])
                                                                                       >= SETTLED_WINDOW), "power_w"]))
        out = dict(config=config, burst_s=burst, held_s=held, ratio=ratio, clock_mhz=clock, power_w=power)
        if " block " in config:
            r = block_row(config)
            b = predicted_components_s(r, spec, burst_prof, catalog=False)
            s = predicted_components_s(r, spec, sust_prof, catalog=False)
            out.update(twin_burst_s=sum(b.values()), twin_held_s=sum(s.values()),
                       twin_ratio=sum(b.values()) / sum(s.values()))
        else:
            twin_ratio = float(burst_prof.sustained_curves.get("gemm/bf16", burst_prof.sustained.get("gemm", 1.0)))
            out.update(twin_burst_s=float("nan"), twin_held_s=float("nan"), twin_ratio=twin_ratio)
        out["meas_over_twin"] = out["ratio"] / out["twin_ratio"]
        rows.append(out)
    return pd.DataFrame(rows)


def per_model_excess(chunks: pd.DataFrame, folder: Path, gpu: str = "h100") -> pd.DataFrame:
    """Per model: the six GEMMs' chunk excess a layer and micro-batch (measured one-stream and three-
    stream, the twin's), and the measured minus the twin's as a share of the twin's burst block."""
    spec, prof = gpu_spec(gpu), fitted_profile(gpu)
    rows = []
    for model, g in chunks.groupby("model", sort=False):
        blk = predicted_components_s(block_row(f"{model} tp8 b1 s4096 block fwd_bwd flash"), spec, prof)
        block_s = sum(blk.values())
        ex1 = float((g["streams1_s"] - g["whole_s"]).sum())
        ex3 = float((g["streams3_s"] - g["whole_s"]).sum())
        twin = float((g["twin_chunked_s"] - g["twin_whole_s"]).sum())
        rows.append(dict(model=model, twin_block_s=block_s, excess1_s=ex1, excess3_s=ex3, twin_excess_s=twin,
                         share1=(ex1 - twin) / block_s, share3=(ex3 - twin) / block_s))
    return pd.DataFrame(rows)


def findings(excess: pd.DataFrame, held: pd.DataFrame) -> list[str]:
    """The rule's findings: a model whose measured chunk excess exceeds the twin's by >= 3% of its
    block (either stream reading), a block whose sustained ratio differs from the twin's by >= 3%."""
    out = []
    for _, r in excess.iterrows():
        if max(r["share1"], r["share3"]) >= FINDING_SHARE:
            out.append(f"(C) {r['model']}: chunk excess beyond the twin's {r['share1']:+.1%} (one stream) / "
                       f"{r['share3']:+.1%} (three) of its block")
    for _, r in held.iterrows():
        if " block " in r["config"] and abs(r["meas_over_twin"] - 1.0) >= FINDING_SHARE:
            out.append(f"(S) {r['config']}: sustained ratio {r['ratio']:.3f} against the twin's "
                       f"{r['twin_ratio']:.3f} ({r['meas_over_twin'] - 1:+.1%})")
    return out


# -- diagnostics on the published rows (printed, never adopted) ---------------------------------------
def _measured_ratio_lookup(chunks: pd.DataFrame, column: str) -> dict:
    """(model, twin op name, phase, chunks) -> measured chunked / whole ratio (round 2: GEMMs whose
    pair of timings is unsettled left out, so the twin's own pricing stays for them)."""
    out = {}
    for _, r in chunks.iterrows():
        if r.get("spread", float("nan")) > UNSETTLED_SPREAD:
            continue
        name, phase = TWIN_OP[r["gemm"]]
        out[(r["model"], name, phase, int(r["chunks"]))] = float(r[column])
    return out


def rows_with_measured_chunks(chunks: pd.DataFrame, column: str) -> list[dict]:
    """The Megatron rows with each TE-split GEMM's chunk excess at the measured ratio (`column`:
    ratio1 or ratio3) times the twin's whole GEMM, on the models measured (others unchanged)."""
    from calibration.published_runs import evaluate, load_runs   # lazy: the published-run evaluation loads only for these diagnostics
    from twin.training import step as step_mod   # lazy: the published-run evaluation loads only for these diagnostics
    lookup = _measured_ratio_lookup(chunks, column)
    original = step_mod.StepCosts._chunked_extra_s

    def patched(self, gemms, phase, chunks_=None):
        model = self.sc.model.name
        n = chunks_ or self.sc.plan.tp
        total = 0.0
        for op in gemms:
            r = lookup.get((model, op.name, phase, n))
            if r is None:
                total += original(self, [op], phase, chunks_)
                continue
            whole = compute.chunked_gemm_time_s(op, phase, self.sc.plan.gemm_precision, 1, self.gpu, self.profile,
                                                self.sm_frac)
            total += (r - 1.0) * whole
        return total

    runs, _ = load_runs()
    step_mod._PREPARED.clear()
    with mock.patch.object(step_mod.StepCosts, "_chunked_extra_s", patched):
        out = [evaluate(r) for r in runs if r.source == "megatron"]
    step_mod._PREPARED.clear()
    return out


def rows_with_block_ratio(held: pd.DataFrame) -> list[dict]:
    """The Megatron rows whose model's block was held, with the compute curves scaled by the twin's
    sustained ratio over the measured one (Perturb.compute_eff_scale); other rows as they are."""
    from calibration.published_runs import load_runs, predicted_metric, scenario_of   # lazy: the published-run evaluation loads only for these diagnostics
    from twin.training.results import Perturb   # lazy: the published-run evaluation loads only for these diagnostics
    from twin.training.step import simulate_step   # lazy: the published-run evaluation loads only for these diagnostics
    scale = {r["config"].split()[0]: r["meas_over_twin"] for _, r in held.iterrows() if " block " in r["config"]}
    runs, _ = load_runs()
    out = []
    for run in runs:
        if run.source != "megatron" or run.model not in scale:
            continue
        sc = scenario_of(run)
        step = simulate_step(sc, perturb=Perturb(compute_eff_scale=scale[run.model]), record_events=False)
        pred = predicted_metric(run, sc, step)
        out.append(dict(id=run.id, predicted=pred, rel_error=pred / run.published - 1.0, scale=scale[run.model]))
    return out


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.mlm_sustained", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--rows", action="store_true", help="the rule's diagnostics on the published rows")
    a = ap.parse_args(argv)
    with entry.user_inputs("FOLDER", a.folder, "a campaign s24mlm output folder (gemm.csv, ...)"):
        pd.set_option("display.width", 200)
        chunks = chunk_table(a.folder, a.gpu)
        print("(C) TE-split GEMMs, burst (ms; ratios chunked / whole):")
        show = chunks.assign(whole_ms=chunks["whole_s"] * 1e3, twin_whole_ms=chunks["twin_whole_s"] * 1e3)
        print(show[["model", "gemm", "m", "n", "k", "chunks", "whole_ms", "twin_whole_ms", "ratio1", "ratio3",
                    "twin_ratio", "spread"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        excess = per_model_excess(chunks, a.folder, a.gpu)
        print("\nper model, a layer and micro-batch (ms): measured excess one stream / three streams, the twin's;"
              " measured - twin's as a share of the twin's burst block")
        print(excess.assign(**{c: excess[c] * 1e3 for c in ("twin_block_s", "excess1_s", "excess3_s", "twin_excess_s")})
              .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if not csv_exists(Path(a.folder) / "sustained.csv"):   # round 2: chunks only
            if a.rows:
                for column in ("ratio3", "ratio1"):
                    print(f"\n(i) Megatron rows with the measured chunk ratios ({column}):")
                    for r in rows_with_measured_chunks(chunks, column):
                        print(f"  {r['id']:28s} {r['predicted']:7.1f}  {r['rel_error']:+.1%}")
            return 0
        held = sustained_table(a.folder, a.gpu)
        print("\n(S) held at the power limit (burst / held; the twin's ratio for the same work):")
        print(held.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        found = findings(excess, held)
        print("\nfindings (the rule's thresholds):", *(found or ["none"]), sep="\n  ")
        if a.rows:
            for column in ("ratio3", "ratio1"):
                print(f"\n(i) Megatron rows with the measured chunk ratios ({column}):")
                for r in rows_with_measured_chunks(chunks, column):
                    print(f"  {r['id']:28s} {r['predicted']:7.1f}  {r['rel_error']:+.1%}")
            print("\n(ii) Megatron rows with the compute scaled by the measured / twin sustained block ratio:")
            for r in rows_with_block_ratio(held):
                print(f"  {r['id']:28s} {r['predicted']:7.1f}  {r['rel_error']:+.1%}  (efficiency x {r['scale']:.3f})")
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving report: throughput vs concurrency and vs TPOT, claims, and validation on our measurements.

  python -m reports.serve_report OUT_DIR [SCENARIO.toml ...] [--set serve.x=v]

For each scenario (default: the three scenarios/r1_serve_*.toml) writes, staged and atomic:
  <name>/serve.json, serve_sweep.csv, scenario.resolved.json, throughput_vs_batch.png,
  throughput_vs_tpot.png (write_outputs)
and at the top: serve_report.md, serve_report.json (claims table, DeepGEMM kernel check, twin vs
measured decode/prefill of calibration/measurements/<gpu>/model.csv).
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from calibration.kernel_tables import deepgemm_check  # noqa: E402
from calibration.serve_validation import validate_measured  # noqa: E402
from twin.core import atomic  # noqa: E402
from twin.core.results import to_json  # noqa: E402
from twin.core.scenario import SERVING, ServeScenario, load_scenario  # noqa: E402
from twin.serving.result import SweepPoint, ServeResult  # noqa: E402
from twin.serving.run import serve  # noqa: E402

SWEEP_COLUMNS = tuple(f.name for f in dataclasses.fields(SweepPoint))

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIOS = ("scenarios/r1_serve_h200.toml", "scenarios/r1_serve_h800_decode.toml",
                     "scenarios/r1_serve_h800_prefill.toml")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _claim_lines(result: dict) -> list[tuple[str, float]]:
    return [(c["id"], c["claimed"]) for c in result.get("claims", [])
            if c["metric"] == "output_tokens_per_s_per_node"]


def plot_sweep(result: dict, out_dir: Path) -> None:
    """throughput_vs_batch.png and throughput_vs_tpot.png (output tok/s per node) into out_dir."""
    rows = [r for r in result["sweep"] if r["feasible"]]
    if not rows:
        return
    x = [r["batch"] for r in rows]
    y = [r["output_tokens_per_s_per_node"] for r in rows]
    tpot_ms = [r["tpot_s"] * 1e3 for r in rows]
    claims = _claim_lines(result)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, "o-", label="twin")
    if result.get("max_batch_by_memory"):
        ax.axvline(result["max_batch_by_memory"], color="grey", ls=":", label="memory limit")
    for cid, val in claims:
        ax.axhline(val, color="C3", ls="--", label=f"claim {cid}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests per instance")
    ax.set_ylabel("output tokens/s per node")
    ax.set_title(f"{result['scenario']}: {result['model']} on {result['num_gpus']}x {result['gpu']}")
    ax.legend(fontsize=8)
    (out_dir / "throughput_vs_batch.png").write_bytes(_png(fig))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(tpot_ms, y, "o-", label="twin (batch sweep)")
    for b, t, v in zip(x, tpot_ms, y):
        ax.annotate(str(b), (t, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for cid, val in claims:
        ax.axhline(val, color="C3", ls="--", label=f"claim {cid}")
    ax.set_xlabel("TPOT (ms)")
    ax.set_ylabel("output tokens/s per node")
    ax.legend(fontsize=8)
    (out_dir / "throughput_vs_tpot.png").write_bytes(_png(fig))


def _fmt(v, scale=1.0, digits=1) -> str:
    return "-" if v is None else f"{v * scale:,.{digits}f}"


def markdown(results: list[dict], validation: list[dict], kernel: list[dict]) -> str:
    lines = ["# Serving twin report", "",
             "Predicted from first principles and the calibrated profiles; published figures are compared, never fitted.", "",
             "## Headline", "",
             "| scenario | batch | out tok/s/node | in tok/s/node | TPOT ms | TTFT s | mem/GPU GB |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['batch']} | {_fmt(r['output_tokens_per_s_per_node'])} | "
                     f"{_fmt(r['input_tokens_per_s_per_node'])} | {_fmt(r['tpot_s'], 1e3)} | {_fmt(r['ttft_s'], 1, 2)} | "
                     f"{_fmt(r['memory_per_gpu_bytes'], 1e-9)} |")
    lines += ["", "## Claims", "", "| claim | claimed | predicted | error | conditions |", "|---|---|---|---|---|"]
    for r in results:
        for c in r["claims"]:
            err = "-" if c["rel_error"] is None else f"{c['rel_error']:+.1%}"
            lines.append(f"| {c['id']} | {c['claimed']:,.0f} | {_fmt(c['predicted'], 1, 0)} | {err} | {c['conditions_note']} |")
    lines += ["", "## FP8 GEMM kernel check (DeepGEMM H800 table, published)", "",
              "| m | n | k | published us | fp8-rowwise us (err) | fp8 blockwise us (err) |", "|---|---|---|---|---|---|"]
    for k in kernel:
        lines.append(f"| {k['m']} | {k['n']} | {k['k']} | {k['published_s'] * 1e6:.1f} | "
                     f"{k['fp8-rowwise_s'] * 1e6:.1f} ({k['fp8-rowwise_rel_error']:+.0%}) | {k['fp8_s'] * 1e6:.1f} ({k['fp8_rel_error']:+.0%}) |")
    lines += ["", "## Validation on our measurements (calibration/measurements/*/model.csv)", "",
              "| gpu | bench | model | batch | measured ms | twin ms | error | GPU-only ms | note |", "|---|---|---|---|---|---|---|---|---|"]
    for v in validation:
        lines.append(f"| {v['gpu']} | {v['bench']} | {v['model']} | {v['batch']} | {v['measured_s'] * 1e3:.2f} | "
                     f"{v['predicted_s'] * 1e3:.2f} | {v['rel_error']:+.1%} | {v['gpu_only_s'] * 1e3:.2f} | {v['note']} |")
    return "\n".join(lines) + "\n"


def sweep_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SWEEP_COLUMNS))
    w.writeheader()
    for r in result["sweep"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SWEEP_COLUMNS})
    return buf.getvalue()


def write_outputs(result: ServeResult, scenario: ServeScenario, out_dir: str | Path) -> None:
    """serve.json, serve_sweep.csv, scenario.resolved.json and the throughput plots, atomically."""
    data = to_json(result)
    with atomic.staged_dir(out_dir) as tmp:
        (tmp / "serve.json").write_text(json.dumps(data, indent=2) + "\n")
        (tmp / "serve_sweep.csv").write_text(sweep_csv(data))
        (tmp / "scenario.resolved.json").write_text(json.dumps(scenario.to_dict(), indent=2) + "\n")
        plot_sweep(data, tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.serve_report")
    ap.add_argument("out")
    ap.add_argument("scenarios", nargs="*")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    out = Path(args.out)
    results = []
    for path in args.scenarios or [str(ROOT / p) for p in DEFAULT_SCENARIOS]:
        sc = load_scenario(path, args.set, kind=SERVING)
        result = serve(sc)
        write_outputs(result, sc, out / sc.name)
        results.append(to_json(result))
    validation = validate_measured()
    kernel = deepgemm_check()
    payload = {"results": [{k: v for k, v in r.items() if k != "sweep"} for r in results],
               "validation": validation, "deepgemm_check": kernel}
    with atomic.staged_dir(out) as tmp:
        (tmp / "serve_report.md").write_text(markdown(results, validation, kernel))
        (tmp / "serve_report.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(out / "serve_report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

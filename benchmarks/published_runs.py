"""Published runs beyond DeepSeek: the twin and two peers on the same rows, in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/published_runs.py \
        [--peers-python /tmp/peers/bin/python] [--calculon /tmp/calculon] [--out calibration/published_runs/peers.csv]

The rows are calibration/data/published_runs.toml. The twin is evaluated in-process
(calibration.published_runs.evaluate); the peers run in their own virtual environment through
benchmarks/peers_worker.py, never in the project's install:

    python3.11 -m venv /tmp/peers
    /tmp/peers/bin/pip install llm-analysis==0.2.2 pandas==2.2.3 psutil==7.2.2   # pandas, psutil: Calculon's imports
    # Calculon is not on PyPI (the `calculon` there is another project): a checkout of
    # github.com/calculon-ai/calculon, e.g. git archive of caa4b11 into /tmp/calculon

Writes the peers table (committed; the report and `twin validate` read it): row id, metric,
published, twin, calculon, llm_analysis, each error (predicted / published - 1), peer versions and
how each peer was configured. A peer's tokens/s per GPU is turned into the row's metric the way the
twin's is (calibration.published_runs.predicted_metric's FLOP basis). Prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from calibration.published_runs import PEERS_CSV, evaluate, flops_per_token, load_runs
from twin.core.atomic import write_text
from twin.core.specs import get_gpu, get_model

ROOT = Path(__file__).resolve().parents[1]
CALCULON_H100_GB_PER_S = 3072.0   # HBM bandwidth in Calculon's systems/h100_80g_nvl8.json (for 3.35 TB/s)


def to_metric(run, tokens_per_s_per_gpu: float | None) -> float | None:
    """A peer's tokens/s per GPU in the row's published metric, counted as the twin's is."""
    if tokens_per_s_per_gpu is None or run.metric == "tokens_per_s_per_gpu":
        return tokens_per_s_per_gpu
    return flops_per_token(run.flop_basis, get_model(run.model), run.seq_len) * tokens_per_s_per_gpu / 1e12


def peer_job(runs, calculon_dir: Path, commit: str) -> dict:
    rows = []
    for run in runs:
        gpu = get_gpu(run.gpu)
        rows.append({"id": run.id, "model": run.model, "model_spec": dataclasses.asdict(get_model(run.model)),
                     "num_gpus": run.num_gpus, "seq_len": run.seq_len, "global_batch_seqs": run.global_batch_seqs,
                     "plan": run.plan, "hbm_gib": gpu.hbm_bytes / 1e9,
                     "hbm_gb_per_s": CALCULON_H100_GB_PER_S * gpu.hbm_bytes_per_s / 3.35e12})
    return {"calculon_dir": str(calculon_dir), "calculon_commit": commit, "rows": rows}


def calculon_commit(calculon_dir: Path) -> str:
    """The checkout's commit: its git HEAD, else a COMMIT file written beside a `git archive`."""
    try:
        return subprocess.check_output(["git", "-C", str(calculon_dir), "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        f = calculon_dir / "COMMIT"
        return f.read_text().strip() if f.is_file() else "unknown"


def run_peers(runs, peers_python: str, calculon_dir: Path) -> dict:
    job = peer_job(runs, calculon_dir, calculon_commit(calculon_dir))
    proc = subprocess.run([peers_python, str(ROOT / "benchmarks" / "peers_worker.py")], input=json.dumps(job),
                          capture_output=True, text=True, env={"PYTHONPATH": str(calculon_dir), "PATH": "/usr/bin:/bin"},
                          timeout=600)
    if proc.returncode:
        sys.exit(f"peers worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def rel(pred: float | None, published: float) -> float | None:
    return None if pred is None else pred / published - 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers-python", default="/tmp/peers/bin/python")
    ap.add_argument("--calculon", default="/tmp/calculon", type=Path, help="a checkout of calculon-ai/calculon")
    ap.add_argument("--out", default=PEERS_CSV, type=Path)
    args = ap.parse_args()
    runs, _ = load_runs()
    twin = {r.id: evaluate(r) for r in runs}
    peers = run_peers(runs, args.peers_python, args.calculon)
    by_id = {p["id"]: p for p in peers["rows"]}
    table = []
    for run in runs:
        t, p = twin[run.id], by_id[run.id]
        c = to_metric(run, p["calculon_tokens_per_s_per_gpu"])
        a = to_metric(run, p["llm_analysis_tokens_per_s_per_gpu"])
        table.append({"id": run.id, "metric": run.metric, "published": run.published,
                      "twin": t["predicted"], "twin_rel_error": t["rel_error"], "twin_status": t["status"],
                      "twin_reason": t["reason"],
                      "calculon": c, "calculon_rel_error": rel(c, run.published),
                      "llm_analysis": a, "llm_analysis_rel_error": rel(a, run.published),
                      "calculon_version": peers["calculon_version"], "llm_analysis_version": peers["llm_analysis_version"],
                      "calculon_config": p["calculon_config"], "llm_analysis_config": p["llm_analysis_config"]})
    df = pd.DataFrame(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, df.to_csv(index=False, float_format="%.6g"))
    pd.set_option("display.width", 200)
    cols = ["id", "published", "twin", "twin_rel_error", "calculon", "calculon_rel_error", "llm_analysis",
            "llm_analysis_rel_error", "twin_status"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    for name in ("twin", "calculon", "llm_analysis"):
        e = df[f"{name}_rel_error"].dropna().abs()
        if len(e):
            print(f"{name:13} rows {len(e):2}  median |error| {e.median():.1%}  max {e.max():.1%}  within 10%: {(e <= 0.10).sum()}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Set O's predictions registered before it ran (session s29serve, docs/notes/s29serve_rule.md): the twin in force and
candidate I (twin.serving.engine.ADOPT_IDLE_WAKE) for the 12 planned runs of real/campaigns/s29serve.sh (plans
gpu1-s29o-*, real/serve/plans.py S29O_PLANS; RUNS here, a test holds them equal), on an H200.

What is known before a run (calibration.prereg_serve): a Poisson run's requests follow from its seed alone; a closed
loop's are the seed's id-ordered lengths, as many as the replay issues before load_s. The engine process ran the plan's
warm-up and a warm pass of 256 flat tokens before its first run; its later runs' sizes are not known before the runs
(each run is predicted with the warm pass alone as run before). The host probe is known only once the run ran: each
run is registered at the fit host (host_launch_s 0) and on PROBE_GRID_S, the judge's replay (calibration.
serve_idle_wake: the recorded requests, the record's probe, the sizes earlier runs recorded) is what decides; these
predictions are the committed evidence of what each setting said before any record of set O existed.

    python -m calibration.prereg_idle_wake      # writes calibration/measurements/prereg/s29serve_predictions.csv once
"""

from __future__ import annotations

import dataclasses
import sys
from unittest import mock

import numpy as np
import pandas as pd

from calibration import entry
from calibration import prereg_serve as ps
from calibration.prereg import PREREG_DIR, write_registered
from calibration.serve_load_validation import (FIGURES, SPREAD_SEEDS, loadgen_figures, scenario_for, warm_pass_pairs)
from twin.serving import engine
from twin.serving.simulate import simulate
from twin.serving.timing import engine_spread, sharing_grids, sharing_iterations
from twin.serving.workload import from_records

NAME = "s29serve"
PREDICTIONS_FILE = PREREG_DIR / f"{NAME}_predictions.csv"
GPU = "h200"
IN, OUT = "uniform:224-608", "uniform:40-152"
WARM_TOKENS = 256
LOAD_S = 4.0
MODELS = {"bench-small": ("bench", 0), "v2-lite-slice": ("v2", 1), "v3-slice-1l": ("v3", 2),
          "mixtral-mla-slice": ("mixtral", 3)}   # model -> (run-name short, plan index k: seeds 201 + 3k ...)
PROBE_GRID_S = (8e-6, 10e-6, 12e-6)   # the H200 hosts of sets L-M probed 7.4-12.7 us
SETTINGS = ("in_force", "I")


def runs(model: str) -> tuple[ps.RunCase, ...]:
    """The plan's three runs (real/serve/plans.py S29O_PLANS), the first warmed."""
    k = MODELS[model][1]
    return (ps.RunCase("closed-c1-o", "closed", IN, OUT, concurrency=1, load_s=LOAD_S, seed=201 + 3 * k),
            ps.RunCase("poisson-r3-o", "poisson", IN, OUT, rate_per_s=3.0, load_s=LOAD_S, seed=202 + 3 * k),
            ps.RunCase("poisson-r5-o", "poisson", IN, OUT, rate_per_s=5.0, load_s=LOAD_S, seed=203 + 3 * k))


def run_id(model: str, run: ps.RunCase) -> str:
    return f"n29o-{MODELS[model][0]}-{run.name}"


def _row(model: str, run: ps.RunCase, host_launch_s: float) -> dict:
    return {**ps.run_row(GPU, model, run, host_launch_s), "run_id": run_id(model, run), "warm_shapes": WARM_TOKENS}


def _replay(sc, row: dict, arrival, isl, osl) -> dict:
    return simulate(sc, requests=from_records(arrival, isl, osl, sc.traffic),
                    run_batch_sizes=frozenset(warm_pass_pairs(row))).per_request()


def _closed_count(sc, row: dict, run: ps.RunCase, start: int = 128) -> int:
    """prereg_serve.closed_loop_count with this set's warm pass."""
    n = max(start, 2 * run.concurrency)
    while True:
        isl, osl = zip(*(ps.lengths(run, i) for i in range(n)))
        per = _replay(sc, row, None, list(isl), list(osl))
        issued = run.concurrency + int(np.sum(np.asarray(per["finish_s"]) < run.load_s))
        if issued < n:
            return issued
        n *= 2


def predict(model: str, run: ps.RunCase, host_launch_s: float) -> dict:
    """The median over the spread seeds of one planned run's figures (and of the closed loop's request count)."""
    row = _row(model, run, host_launch_s)
    sc = scenario_for(row, engine=ps.engine_table(GPU))
    seeds = SPREAD_SEEDS if sc.serve.iteration_spread and engine_spread(sc.serve.engine_costs) else 1
    arrival = None if run.arrival == "closed" else ps.poisson_arrivals_s(run)
    figs, counts = [], []
    with sharing_grids(), sharing_iterations():   # (s32ci2) as prereg_serve.predict
        for seed in range(seeds):
            one = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed))
            n = _closed_count(one, row, run) if arrival is None else len(arrival)
            isl, osl = zip(*(ps.lengths(run, i) for i in range(n)))
            figs.append(loadgen_figures(_replay(one, row, arrival, list(isl), list(osl))))
            counts.append(n)
    return {**{k: float(np.median([f[k] for f in figs])) for k in FIGURES}, "num_requests": float(np.median(counts))}


def predictions() -> pd.DataFrame:
    out = []
    for setting in SETTINGS:
        for model in MODELS:
            for run in runs(model):
                for p in (0.0, *PROBE_GRID_S):
                    with _setting(setting):
                        out.append({"twin": setting, "gpu": GPU, "model": model, "run_id": run_id(model, run),
                                    "host_launch_s": p, **predict(model, run, p)})
    return pd.DataFrame(out)


def _setting(name: str):
    """The twin in force ('in_force') or candidate I on ('I')."""
    return mock.patch.object(engine, "ADOPT_IDLE_WAKE", name == "I")


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.prereg_idle_wake", __doc__)
    ap.add_argument("--allow-dirty", action="store_true", help="predict from uncommitted code (a dry run; not for the record)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if PREDICTIONS_FILE.exists():   # a pre-registration is never redone (write_registered refuses it too)
        print(f"error: {PREDICTIONS_FILE.name} exists: set O's predictions were registered once, before it ran",
              file=sys.stderr)
        return 2
    df = write_registered(PREDICTIONS_FILE, predictions, args.allow_dirty)
    print(df[df.host_launch_s == 0].drop(columns=["gpu", "host_launch_s"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

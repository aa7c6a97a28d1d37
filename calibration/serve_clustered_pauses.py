"""The s24stall judgement of the clustered host-pause model (docs/notes/s24stall_rule.md (c)): the as-it-comes runs of
real/campaigns/s24stall.sh's sets (s23srvh's plans and seeds, calibration.prereg_serve.S23's runs), predicted at each
run's measured launch probe and its host's pauses pooled over every part of the set, under three settings:

- `base`: the committed twin (both pause switches off);
- `host_stalls`: twin.serving.engine.ADOPT_HOST_STALLS (s23srvh's independent pauses on eager iterations; beside);
- `clustered`: twin.serving.engine.ADOPT_CLUSTERED_HOST_PAUSES (clusters of pauses on every iteration).

    python -m calibration.serve_clustered_pauses SET_DIR [SET_DIR ...]     # e.g. calibration/measurements/h100/s24stall_host2
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from calibration import entry
from calibration import prereg_serve as ps
from calibration import serve_host_stalls as shs
from calibration.records_io import csv_exists, read_csv, text_records
from calibration.serve_host_speed import before_t
from calibration.serve_load_validation import FIGURES, record_host_launch_s
from twin.serving import engine as serve_engine

AS_IT_COMES = ("qwen3moe", "qwen2moe")   # the parts the rule judges (the gc-freeze part only adds its probes' pauses)
# setting -> (ADOPT_HOST_STALLS, ADOPT_CLUSTERED_HOST_PAUSES)
SETTINGS = {"base": (False, False), "host_stalls": (True, False), "clustered": (False, True)}


@contextlib.contextmanager
def setting(name: str):
    """The s24stall judgement's setting `name` on the twin committed at its time (candidate T's switches off)."""
    saved = serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES
    serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES = SETTINGS[name]
    try:
        with before_t():
            yield
    finally:
        serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES = saved


def set_runs(folder: Path, gpu: str = "h100") -> list[dict]:
    """The as-it-comes runs of one set (serve_load rows, `gpu` the engine table's GPU, `set` the folder), each given the
    host's pauses pooled over every part's pause probes (the set is one machine)."""
    rows = []
    for part in sorted(p for p in Path(folder).iterdir() if csv_exists(p / "serve_load.csv")):
        for r in text_records(read_csv(part / "serve_load.csv", dtype=str).fillna("")):
            rows.append({**r, "part": part.name, "gpu": gpu, "set": str(folder),
                         "probe_s": record_host_launch_s(r)})
    pooled = shs.host_pauses(rows)
    sizes = ";".join(f"{x:.6g}" for x in pooled["host_stall_sizes_s"])
    return [{**r, "host_stall_rate_per_s": pooled["host_stall_rate_per_s"], "host_stall_sizes_s": sizes}
            for r in rows if r["part"] in AS_IT_COMES]


def run_case(run_id: str) -> tuple[str, ps.RunCase]:
    """The model and registered run (calibration.prereg_serve.S23, s23srvh's plans) of a run id."""
    for model in ps.MODELS:
        for run in shs.REG.runs:
            if ps.run_id(model, run, shs.REG.prefix) == run_id:
                return model, run
    raise KeyError(f"{run_id}: not a run of registration {shs.REG.name}")


def predict(r: dict, name: str) -> dict:
    model, run = run_case(r["run_id"])
    extra = {"host_stall_rate_per_s": r["host_stall_rate_per_s"], "host_stall_sizes_s": r["host_stall_sizes_s"]}
    with setting(name):
        return ps.predict(r["gpu"], model, run, float(r["probe_s"]), shs.REG.prefix, extra)


def compare_set(folder: Path, names=tuple(SETTINGS)) -> list[dict]:
    """Per as-it-comes run and setting, the figures' errors (calibration.prereg_serve.figure_errors), `gpu` set to the
    set's folder name so rule_verdict's per-GPU count is per set."""
    out = []
    for r in set_runs(folder):
        for name in names:
            p = predict(r, name)
            out.append({"gpu": Path(folder).name, "run_id": r["run_id"], "twin": name, "variant": "host_input",
                        "probe_s": r["probe_s"], "host_stall_rate_per_s": r["host_stall_rate_per_s"],
                        **ps.figure_errors(r, p)})
    return out


def verdict(rows: list[dict]) -> dict:
    """The rule's criteria 1-3: clustered against base (labelled 'committed', as calibration.serve_host_stalls does)."""
    named = [{**r, "twin": "committed" if r["twin"] == "base" else r["twin"]} for r in rows]
    return {c: ps.rule_verdict(named, "committed", c) for c in ("clustered", "host_stalls")}


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_clustered_pauses", __doc__)
    ap.add_argument("sets", nargs="+", type=entry.folder, metavar="SET_DIR",
                    help="e.g. calibration/measurements/h100/s24stall_host2")
    rows = []
    for d in ap.parse_args(argv).sets:
        with entry.user_inputs("SET_DIR", d, f"a set whose parts hold the as-it-comes runs' serve_load.csv "
                                               f"({', '.join(AS_IT_COMES)}), as real/campaigns/s24stall.sh writes them"):
            found = compare_set(d)
            if not found:   # nothing to judge is not a verdict (until s25walk: no line at all, exit 0)
                raise ValueError("no as-it-comes run in it")
            rows += found
    for r in rows:
        figs = ", ".join(f"{k.removesuffix('_s')} {r[f'{k}_rel_error']:+.1%}{'' if r[f'{k}_within_target'] else '!'}"
                         for k in FIGURES)
        print(f"  {r['twin']:12} {r['gpu']} {r['run_id']} (p {r['probe_s'] * 1e6:.1f} us, "
              f"{r['host_stall_rate_per_s']:.2f} pauses/s): {figs}")
    for cand, v in verdict(rows).items():
        b, c = v["base"], v["candidate"]
        print(f"rule {cand}: base {v[b]['checks_met']}/{v[b]['checks']} (median {v[b]['median_abs_rel_error']:.2%}, "
              f"by set {v[b]['by_gpu']}); {c} {v[c]['checks_met']}/{v[c]['checks']} (median "
              f"{v[c]['median_abs_rel_error']:.2%}, by set {v[c]['by_gpu']}): "
              f"{'criteria 1-3 met' if v['adopt'] else 'criteria 1-3 not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

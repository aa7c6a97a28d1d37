"""The s15tt rule's part A (docs/notes/s15tt_rule.md): s14ac's implementation check of
`ADOPT_COMPILED_FULL_AC_TAIL`, per micro-batch slot, on every published row it moves.

For each row: the step off and on; every backward op's span shortening (delta_op) against its rank's
removed recompute per backward op (removed_op); forward spans unchanged; and the step's shortening
against S x delta_max, S the most backward ops a dependency chain of the row's schedule crosses
(the schedule at constant op times F ~ 0, B = 1, free transfers, with the runtime's extra needs).

    PYTHONPATH=. python benchmarks/full_ac_tail_check.py
    PYTHONPATH=. python benchmarks/full_ac_tail_check.py --blocks-only   (part E: ADOPT_AC_BLOCKS_ONLY)
"""

from __future__ import annotations

import sys

from calibration.published_runs import load_runs, scenario_of
from twin.sim.ideal import IdealCosts
from twin.sim.pipeline import simulate_pipeline
from twin.training import step as step_mod
from twin.training.results import Perturb

TOL_S = 1e-9


def _run(sc, adopt: bool):
    """The step with ADOPT_COMPILED_FULL_AC_TAIL `adopt`, under part A's setting of the head's
    recompute (ADOPT_AC_BLOCKS_ONLY off, as when part A was computed); both switches restored after."""
    saved = step_mod.ADOPT_COMPILED_FULL_AC_TAIL, step_mod.ADOPT_AC_BLOCKS_ONLY
    step_mod.ADOPT_COMPILED_FULL_AC_TAIL, step_mod.ADOPT_AC_BLOCKS_ONLY = adopt, False
    step_mod._PREPARED.clear()   # costs built under the other setting are kept there
    try:
        return step_mod.simulate_step(sc, record_events=True)
    finally:
        step_mod.ADOPT_COMPILED_FULL_AC_TAIL, step_mod.ADOPT_AC_BLOCKS_ONLY = saved
        step_mod._PREPARED.clear()


def backward_slots(sc) -> int:
    """S: the most backward ops any dependency chain of the row's schedule crosses."""
    schedule = step_mod._prepare(sc, None, Perturb(), False)[0]
    ideal = simulate_pipeline(schedule, IdealCosts(1e-9, 1.0, 0.0, 1.0 + 1e-9), streams=("compute",),
                              record_events=False, extra_needs=step_mod.runtime_needs(sc, schedule))
    return round(ideal.makespan_s)


def _spans(result) -> dict:
    return {(rank, label): end - start for rank, label, start, end in result.pipeline.op_spans}


def _removed_per_backward(off, on, spans_off) -> dict[int, float]:
    out = {}
    for rank, (t_off, t_on) in enumerate(zip(off.pipeline.task_time_s, on.pipeline.task_time_s)):
        removed = sum(v for k, v in t_off.items() if k.startswith("recompute_")) - \
            sum(v for k, v in t_on.items() if k.startswith("recompute_"))
        n_bwd = sum(1 for (r, label) in spans_off if r == rank and "B" in label)
        out[rank] = removed / n_bwd if n_bwd else 0.0
    return out


def check_row(run) -> dict:
    sc = scenario_of(run)
    off, on = _run(sc, False), _run(sc, True)
    s_off, s_on = _spans(off), _spans(on)
    removed = _removed_per_backward(off, on, s_off)
    deltas, fwd_moves, over = [], [], []
    for key, d_off in s_off.items():
        delta = d_off - s_on[key]
        if "B" in key[1]:
            deltas.append(delta)
            if delta < -TOL_S or delta > removed[key[0]] * (1 + 1e-6) + TOL_S:
                over.append((key, delta, removed[key[0]]))
        else:
            fwd_moves.append(abs(delta))
    slots = backward_slots(sc)
    shortening = off.step_time_s - on.step_time_s
    delta_max = max(deltas) if deltas else 0.0
    return {"id": run.id, "step_off_s": off.step_time_s, "step_on_s": on.step_time_s,
            "shortening_s": shortening, "slots": slots, "delta_max_s": delta_max,
            "bound_s": slots * delta_max, "removed_op_max_s": max(removed.values()),
            "check_2a": 0 < shortening <= slots * delta_max + TOL_S,
            "check_2b": not over and max(fwd_moves, default=0.0) <= TOL_S,
            "ops_over": len(over), "fwd_move_max_s": max(fwd_moves, default=0.0),
            "over_ratio_max": max((d / r for _, d, r in over if r > 0), default=0.0)}


def main(ids: list[str]) -> int:
    runs, _ = load_runs()
    rows = [check_row(r) for r in runs if r.id in ids or (not ids and r.plan.get("recompute") == "full"
                                                          and r.plan.get("kernels") == "fused_blocks")]
    print("| row | step off s | step on s | shortened s | S | delta_max s | S x delta_max s | 2a | 2b |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['id']} | {r['step_off_s']:.3f} | {r['step_on_s']:.3f} | {r['shortening_s']:.3f} | "
              f"{r['slots']} | {r['delta_max_s']:.4f} | {r['bound_s']:.3f} | "
              f"{'holds' if r['check_2a'] else 'FAILS'} | "
              f"{'holds' if r['check_2b'] else 'FAILS (%d ops, up to %.3fx removed_op; fwd %.2g s)' % (r['ops_over'], r['over_ratio_max'], r['fwd_move_max_s'])} |")
    return 0 if all(r["check_2a"] and r["check_2b"] for r in rows) else 1




# ---- part E (docs/notes/s15tt_rule.md): ADOPT_AC_BLOCKS_ONLY, the ops outside the blocks not recomputed

def _run_blocks_only(sc, adopt: bool):
    saved = step_mod.ADOPT_AC_BLOCKS_ONLY
    step_mod.ADOPT_AC_BLOCKS_ONLY = adopt
    step_mod._PREPARED.clear()
    try:
        return step_mod.simulate_step(sc, record_events=True)
    finally:
        step_mod.ADOPT_AC_BLOCKS_ONLY = saved
        step_mod._PREPARED.clear()


def _by_op(result) -> tuple[dict, dict]:
    """(span per (rank, kind, micro-batch, chunk), recompute_* seconds per (rank, micro-batch, chunk) of backwards)."""
    spans, removed = {}, {}
    for rank, label, start, end in result.pipeline.op_spans:
        spans[(rank, label)] = end - start
    for e in result.pipeline.events:
        if e.name.startswith("recompute_"):
            key = (e.rank, e.microbatch, e.chunk)
            removed[key] = removed.get(key, 0.0) + e.end_s - e.start_s
    return spans, removed


def check_blocks_only(run) -> dict:
    sc = scenario_of(run)
    off, on = _run_blocks_only(sc, False), _run_blocks_only(sc, True)
    (s_off, r_off), (s_on, r_on) = _by_op(off), _by_op(on)
    ranks = off.pipeline.num_ranks
    chunks = 1 + max(k[2] for k in r_off) if r_off else 1
    ends = {(0, 0), (ranks - 1, chunks - 1)}     # the first stage's first chunk, the last stage's last
    worst_end, worst_other, deltas = 0.0, 0.0, []
    for (rank, label), d_off in s_off.items():
        delta = d_off - s_on[(rank, label)]
        if "B" in label:
            mb, ch = map(int, label.lstrip("BW").split("."))
            deltas.append(delta)
            if (rank, ch) in ends:
                rem = r_off.get((rank, mb, ch), 0.0) - r_on.get((rank, mb, ch), 0.0)
                worst_end = max(worst_end, abs(delta - rem))
                continue
        worst_other = max(worst_other, abs(delta))
    slots = backward_slots(sc)
    shortening = off.step_time_s - on.step_time_s
    delta_max = max(deltas) if deltas else 0.0
    return {"id": run.id, "step_off_s": off.step_time_s, "step_on_s": on.step_time_s, "shortening_s": shortening,
            "slots": slots, "delta_max_s": delta_max, "bound_s": slots * delta_max,
            "check_2": worst_end <= TOL_S and worst_other <= TOL_S, "end_mismatch_s": worst_end,
            "other_move_s": worst_other, "check_3": 0 < shortening <= slots * delta_max + TOL_S}


def main_blocks_only() -> int:
    runs, _ = load_runs()
    rows = [check_blocks_only(r) for r in runs
            if r.plan.get("recompute") == "full" and r.plan.get("kernels") == "fused_blocks"]
    print("| row | step off s | step on s | shortened s | S | delta_max s | S x delta_max s | 2 | 3 |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        two = "holds" if r["check_2"] else f"FAILS (ends {r['end_mismatch_s']:.2g} s, others {r['other_move_s']:.2g} s)"
        print(f"| {r['id']} | {r['step_off_s']:.3f} | {r['step_on_s']:.3f} | {r['shortening_s']:.3f} | {r['slots']} | "
              f"{r['delta_max_s']:.4f} | {r['bound_s']:.3f} | {two} | {'holds' if r['check_3'] else 'FAILS'} |")
    return 0 if all(r["check_2"] and r["check_3"] for r in rows) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--blocks-only"]:
        sys.exit(main_blocks_only())
    sys.exit(main(sys.argv[1:]))

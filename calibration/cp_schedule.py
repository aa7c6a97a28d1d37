"""Rank-by-rank compiled schedules of PyTorch's context parallelism, replayed in lock step (issue 14,
session s27cp; rule docs/notes/s27cp_rule.md).

PyTorch's load-balanced ring attention branches on the rank, so under torch.compile each rank runs its
own graph, and Inductor places each graph's collectives (waited at issue) among its kernels on its own.
A collective completes when the last rank issues it; a rank then waits at the collective's wait. So a
block's time on CP = W ranks is not one rank's kernels plus the transfers (what the twin charges, with
every rank alike) but the replay below, where every meeting costs the slowest rank's work since the
last one.

From a Chrome trace of one rank (real/bench/cp_block.py's real NCCL traces, real/bench/cp_schedule.py's
fake-process-group traces): `rank_sequence` lists, per repetition and phase (host ranges "fwd" / "bwd"),
the GPU kernels in launch order with their durations, and each `_c10d_functional` collective's issue and
wait where the host made them (NCCL kernels left out: the replay puts the transfer in). `replay` runs
the ranks' sequences together: a rank's clock advances by its kernels; an issue records its arrival; the
collective ends at max(arrivals, the previous collective's end) + its transfer; a wait moves the rank's
clock to that end. A chain of `chain` copies of the phase stands for consecutive blocks (training runs 32
forward blocks back to back), and `excess_s` is the chain's replayed time less the aligned time (the
slowest rank's own kernels plus the transfers, what the twin's model gives), per block.

`schedule_fracs` turns that into the quantity the twin takes (twin.costs.context_parallel
COMPILED_CP_SCHEDULE_WAIT_FRAC, behind ADOPT_COMPILED_CP_SCHEDULE_WAIT): per CP degree, the forward
phase's excess over its attention kernels' time (the mean rank's), and the backward phase's excess less
the recomputed forward's share (at the forward fraction) over the backward attention kernels' time. A
fraction of the attention core's time carries to another GPU as a ratio (the schedule is the compiled
graph's; the intervals scale with the kernels: the rule's transfer assumption).

    python -m calibration.cp_schedule TRACES_DIR [--pattern GLOB] [--json]     one CP degree's fractions
    python -m calibration.cp_schedule RUN_DIR --judge [--write]                the rule's judgement
    python -m calibration.cp_schedule RUN_DIR --judge-s29cp [--write]          s29cp's (the 405B TP 8 slice)
    python -m calibration.cp_schedule RUN_DIR --judge-s29cp2 [--write]         s29cp2's (both blocks, Float8)
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from calibration import judged_under
from calibration.entry import parser, script
from calibration.records_io import glob_traces, load_trace, trace_name, write_json_text

PHASES = ("fwd", "bwd")
ISSUE_PREFIX, WAIT_OP = "_c10d_functional::", "_c10d_functional::wait_tensor"


def kernel_class(name: str) -> str:
    """nccl | attention | gemm | other, from a GPU kernel's name (flash forward and backward both
    'attention'; 'attention_bwd' for FA2's backward kernels)."""
    n = name.lower()
    if "nccl" in n:
        return "nccl"
    if "flash" in n or "fmha" in n:
        return "attention_bwd" if "bwd" in n else "attention"
    if any(w in n for w in ("gemm", "nvjet", "sm90_xmma", "cutlass")):
        return "gemm"
    return "other"


def rank_sequence(trace: dict) -> dict[tuple[int, str], list[dict]]:
    """{(repetition, phase): [item]} of one rank's trace, items in host order: {"kind": "kernel",
    "cls", "dur_s"} for each GPU kernel or memset (its launch's host time places it; NCCL kernels kept
    with cls 'nccl'), {"kind": "issue", "op"} for a `_c10d_functional` collective, {"kind": "wait"}
    for its wait_tensor. Repetition k is the k-th "fwd" host range and the "bwd" range after it."""
    events = trace.get("traceEvents", [])
    ranges = sorted((e["name"], float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                    if e.get("cat") == "user_annotation" and e.get("name") in PHASES and e.get("ph") == "X")
    ranges.sort(key=lambda r: r[1])
    keyed, rep = [], -1
    for name, t0, t1 in ranges:
        rep += name == "fwd"
        keyed.append(((max(rep, 0), name), t0, t1))

    def where(ts: float):
        for key, t0, t1 in keyed:
            if t0 <= ts <= t1:
                return key
        return None
    launch = {e["args"]["correlation"]: float(e["ts"]) for e in events
              if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    items = []
    issues = [e for e in events if e.get("cat") == "cpu_op" and str(e.get("name", "")).startswith(ISSUE_PREFIX)]
    outer = [e for e in issues if e["name"] != WAIT_OP]
    for e in issues:
        ts = float(e["ts"])
        if e["name"] == WAIT_OP:
            items.append((ts, 1, {"kind": "wait"}))
        elif not any(o is not e and float(o["ts"]) <= ts < float(o["ts"]) + float(o.get("dur", 0))
                     and o.get("tid") == e.get("tid") for o in outer):   # not nested in another issue
            items.append((ts, 1, {"kind": "issue", "op": e["name"].removeprefix(ISSUE_PREFIX)}))
    for e in events:
        if e.get("cat") in ("kernel", "gpu_memset") and e.get("ph") == "X":
            ts = launch.get(e.get("args", {}).get("correlation"), float(e["ts"]))
            items.append((ts, 0, {"kind": "kernel", "cls": kernel_class(e["name"]) if e.get("cat") == "kernel"
                                  else "other", "dur_s": float(e.get("dur", 0.0)) * 1e-6}))
    out: dict = {}
    for ts, order, item in sorted(items, key=lambda x: (x[0], x[1])):
        key = where(ts)
        if key is not None:
            out.setdefault(key, []).append(item)
    return out


def compute_s(seq: list[dict], cls: str | None = None) -> float:
    """Seconds of a sequence's non-NCCL kernels (of class `cls` when given)."""
    return sum(i["dur_s"] for i in seq if i["kind"] == "kernel" and i["cls"] != "nccl" and (cls is None or i["cls"] == cls))


def replay(seqs: list[list[dict]], transfer_s: dict[str, float], chain: int = 1) -> tuple[float, float]:
    """(lock-step seconds, aligned seconds) of `chain` back-to-back copies of each rank's sequence:
    lock step as the module docstring says; aligned = the slowest rank's own kernels plus every
    collective's transfer (no waiting on another rank). `transfer_s` maps a collective's op name to
    its seconds. Every rank must issue the same collectives in the same order (ValueError otherwise)."""
    runs = [[i for i in s if not (i["kind"] == "kernel" and i["cls"] == "nccl")] * chain for s in seqs]
    ops = [[i["op"] for i in r if i["kind"] == "issue"] for r in runs]
    if any(o != ops[0] for o in ops):
        raise ValueError(f"ranks issue different collectives: {[len(o) for o in ops]} issues")
    clock = [0.0] * len(runs)
    pos = [0] * len(runs)
    ends: list[float] = []
    waited = [0] * len(runs)

    def advance(r: int, stop_at_issue: bool) -> None:
        while pos[r] < len(runs[r]):
            it = runs[r][pos[r]]
            if it["kind"] == "issue" and stop_at_issue:
                return
            if it["kind"] == "kernel":
                clock[r] += it["dur_s"]
            elif it["kind"] == "wait":
                clock[r] = max(clock[r], ends[waited[r]])
                waited[r] += 1
            pos[r] += 1
    for k, op in enumerate(ops[0]):
        arrive = []
        for r in range(len(runs)):
            advance(r, True)
            arrive.append(clock[r])
            pos[r] += 1
        ends.append(max(max(arrive), ends[-1] if ends else 0.0) + transfer_s.get(op, 0.0))
    for r in range(len(runs)):
        advance(r, False)
        if waited[r] < len(ends):   # an issue never waited in the sequence: the rank waits at its end
            clock[r] = max(clock[r], ends[-1])
    aligned = max(compute_s(r) for r in runs) + sum(transfer_s.get(op, 0.0) for op in ops[0])
    return max(clock), aligned


def excess_s(seqs: list[list[dict]], transfer_s: dict[str, float], chain: int = 8) -> float:
    """Seconds a block's phase loses to the ranks meeting at its collectives, per block of a chain."""
    lock, aligned = replay(seqs, transfer_s, chain)
    return (lock - aligned) / chain


def rank_traces(folder: Path | str, pattern: str) -> list[tuple[int, Path]]:
    """(rank, file) of each trace of `folder` named `pattern` (one '{rank}' field; the name the bench wrote,
    X.json.gz) in rank order, however the trace is stored (X.json, X.json.xz, X.json.gz: records_io)."""
    plain = trace_name(pattern)
    rx = re.compile(re.escape(plain).replace(r"\{rank\}", r"(\d+)") + "$")
    found = ((rx.match(trace_name(p)), p) for p in glob_traces(folder, plain.replace("{rank}", "*")))
    return sorted((int(m[1]), p) for m, p in found if m)


def load_ranks(folder: Path | str, pattern: str) -> list[dict]:
    """rank_sequence of each trace matching `pattern` (one '{rank}' field) in rank order."""
    return [rank_sequence(load_trace(p)) for _, p in rank_traces(folder, pattern)]


def schedule_fracs(ranks: list[dict], transfer_s: dict[str, float], rep: int = 1, chain: int = 8) -> dict:
    """{fwd, bwd, excess_fwd_s, excess_bwd_s, attn_fwd_s, attn_bwd_s, attn_recompute_s} of one CP
    degree's ranks (their rank_sequence dicts), repetition `rep` (the second of two: the first may
    carry the profiler's start): the fractions the module docstring defines."""
    fwd = [r[(rep, "fwd")] for r in ranks]
    bwd = [r[(rep, "bwd")] for r in ranks]
    mean = lambda xs: sum(xs) / len(xs)   # noqa: E731
    attn_fwd = mean([compute_s(s, "attention") for s in fwd])
    attn_re = mean([compute_s(s, "attention") for s in bwd])
    attn_bwd = mean([compute_s(s, "attention_bwd") for s in bwd])
    ex_f, ex_b = excess_s(fwd, transfer_s, chain), excess_s(bwd, transfer_s, chain)
    frac_f = ex_f / attn_fwd if attn_fwd > 0 else math.nan
    frac_b = max(0.0, ex_b - frac_f * attn_re) / attn_bwd if attn_bwd > 0 else math.nan
    return {"fwd": frac_f, "bwd": frac_b, "excess_fwd_s": ex_f, "excess_bwd_s": ex_b, "attn_fwd_s": attn_fwd,
            "attn_bwd_s": attn_bwd, "attn_recompute_s": attn_re}


# ---------------------------------------------------------------------------------------------
# The judgement of docs/notes/s27cp_rule.md (campaign s27cp)
# ---------------------------------------------------------------------------------------------

S17CP_DIR = Path(__file__).parent / "measurements" / "h200x4" / "cp_block"   # s17cp's real CP4 block (held out)
JUDGEMENT = Path(__file__).parent / "s27cp_judgement.json"
REAL_PATTERN = "trace_cp_block_compiled_S{S}_rank{{rank}}.json.gz"   # real/bench/cp_block.py's trace names
FAKE_PATTERN = "cp_schedule_cp{cp}_rank{{rank}}.json.gz"             # real/bench/cp_schedule.py's
LOCAL_LEN, HEADS, HEAD_DIM = 32768, 32, 128   # the block's positions a rank, K/V heads after repeat_kv, head dim
NCCL_OPS = {"allgather": "all_gather_into_tensor", "sendrecv": "all_to_all_single"}
C1_TOL, C3_TOL, C4_TOL = 0.03, 0.04, 0.03


def twin_transfer_s(cp: int, gpu: str = "h200", local_len: int = LOCAL_LEN, heads: int = HEADS) -> dict[str, float]:
    """The twin's catalog seconds of the block's collectives at CP = cp (twin.training.step's
    _torch_cp_exposed_s sizes): the K/V all-gather of cp x the rank's K/V bytes (BF16, `heads` heads after
    repeat_kv: 32 on the 8B block, 16 on the 405B TP 8 slice), each FP32 dK/dV hand-over (twice those
    bytes) as a send_recv."""
    from calibration.predict import gpu_spec  # lazy: the catalog, only for the judgement
    from twin.costs import comm  # lazy: as above
    g = gpu_spec(gpu)
    kv_bytes = local_len * heads * HEAD_DIM * 2 * 2
    return {"all_gather_into_tensor": comm.collective_time_s("all_gather", kv_bytes * cp, cp, g, True),
            "all_to_all_single": comm.collective_time_s("send_recv", 2 * kv_bytes, 2, g, True)}


def nccl_transfer_s(folder: Path | str, pattern: str) -> dict[str, float]:
    """{collective op: its smallest NCCL kernel time over the ranks' traces}: the rank that arrives
    last waits least, so its kernel is the transfer."""
    out: dict[str, float] = {}
    for _, p in rank_traces(folder, pattern):
        for e in load_trace(p).get("traceEvents", []):
            if e.get("cat") == "kernel" and "nccl" in e.get("name", "").lower():
                op = next((v for k, v in NCCL_OPS.items() if k in e["name"].lower()), None)
                if op:
                    out[op] = min(out.get(op, math.inf), float(e.get("dur", 0.0)) * 1e-6)
    return out


def attention_order(seq: list[dict]) -> list[str]:
    """A phase's collectives and flash calls in host order (C2's comparison)."""
    return [i["kind"] if i["kind"] != "kernel" else i["cls"] for i in seq
            if i["kind"] != "kernel" or i["cls"] in ("attention", "attention_bwd")]


def _lock_s(ranks: list[dict], transfer_s: dict[str, float], rep: int) -> float:
    return sum(replay([r[(rep, ph)] for r in ranks], transfer_s, 1)[0] for ph in PHASES)


def judge(run: Path | str, s17cp: Path | str = S17CP_DIR) -> dict:
    """C1-C4 and the fractions of docs/notes/s27cp_rule.md from a campaign s27cp folder (its
    cp2_real/, traces/ and sched/) and s17cp's CP4 block records."""
    from calibration.records_io import read_csv  # lazy: pandas, only for the judgement
    run, s17cp = Path(run), Path(s17cp)
    out: dict = {"run": run.name, "criteria": {}, "fractions": {}, "fractions_rep0": {}}
    real2 = REAL_PATTERN.format(S=2 * LOCAL_LEN)
    ranks2 = load_ranks(run / "traces", real2)
    measured2 = float(read_csv(run / "cp2_real" / "torch_cp.csv")["time_s"].iloc[0])
    replay2 = _lock_s(ranks2, nccl_transfer_s(run / "traces", real2), 1)
    c1 = replay2 / measured2 - 1
    out["criteria"]["C1"] = {"replay_s": replay2, "measured_s": measured2, "err": c1, "holds": abs(c1) <= C1_TOL}
    fake = {cp: load_ranks(run / "sched" / "traces", FAKE_PATTERN.format(cp=cp)) for cp in (4, 8)}
    real4 = load_ranks(s17cp / "traces", REAL_PATTERN.format(S=4 * LOCAL_LEN))
    same = len(fake[4]) == len(real4) == 4 and all(
        attention_order(f[(1, ph)]) == attention_order(r[(1, ph)]) for f, r in zip(fake[4], real4) for ph in PHASES)
    out["criteria"]["C2"] = {"holds": bool(same)}
    measured4 = float(read_csv(s17cp / "torch_cp_cp4.csv")["time_s"].iloc[0])
    if len(fake[4]) == 4:
        replay4 = _lock_s(fake[4], twin_transfer_s(4), 1)
        c3 = replay4 / measured4 - 1
        out["criteria"]["C3"] = {"replay_s": replay4, "measured_s": measured4, "err": c3, "holds": abs(c3) <= C3_TOL}
    else:
        out["criteria"]["C3"] = {"holds": False, "why": f"{len(fake[4])} CP4 rank traces"}
    stable = True
    for cp, ranks in ((2, ranks2), (4, fake[4]), (8, fake[8])):
        if len(ranks) != cp:
            continue
        f1, f0 = schedule_fracs(ranks, twin_transfer_s(cp), 1), schedule_fracs(ranks, twin_transfer_s(cp), 0)
        out["fractions"][cp], out["fractions_rep0"][cp] = f1, f0
        stable &= all(abs(f1[ph] - f0[ph]) <= C4_TOL for ph in PHASES)
    out["criteria"]["C4"] = {"holds": bool(stable and out["fractions"])}
    out["adopt"] = all(c["holds"] for c in out["criteria"].values())
    return out


# ---------------------------------------------------------------------------------------------
# The judgement of docs/notes/s29cp_rule.md (campaign s29cp): the 405B TP 8 slice's own fractions
# ---------------------------------------------------------------------------------------------

S29CP_JUDGEMENT = Path(__file__).parent / "s29cp_judgement.json"
S29CP_BLOCK = ("llama3.1-405b", 8)   # twin.costs.context_parallel COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK's key
S29CP_HEADS = 16                     # the slice's heads after repeat_kv (128 / 8; one K/V head repeated 16 times)
S29CP_ROWS = ("tt-405b-4d-cp2-64k", "tt-405b-4d-cp4-128k", "tt-405b-4d-cp8-256k")
S29CP_CPS = (2, 4, 8)


def s29cp_records(run: Path | str) -> dict:
    """C1-C4 of docs/notes/s29cp_rule.md and the fractions, from the campaign's folder alone (its
    cp2_real/, traces/ and sched/): the part of the judgement the published rows take no part in."""
    from calibration.records_io import read_csv  # lazy: pandas, only for the judgement
    run = Path(run)
    out: dict = {"run": run.name, "criteria": {}, "fractions": {}, "fractions_rep0": {}}
    real2 = REAL_PATTERN.format(S=2 * LOCAL_LEN)
    ranks2 = load_ranks(run / "traces", real2)
    measured2 = float(read_csv(run / "cp2_real" / "torch_cp.csv")["time_s"].iloc[0])
    replay2 = _lock_s(ranks2, nccl_transfer_s(run / "traces", real2), 1)
    c1 = replay2 / measured2 - 1
    out["criteria"]["C1"] = {"replay_s": replay2, "measured_s": measured2, "err": c1, "holds": abs(c1) <= C1_TOL}
    fake = {cp: load_ranks(run / "sched" / "traces", FAKE_PATTERN.format(cp=cp)) for cp in S29CP_CPS}
    fake2 = fake.get(2, [])
    same = len(fake2) == len(ranks2) == 2 and all(
        attention_order(f[(1, ph)]) == attention_order(r[(1, ph)]) for f, r in zip(fake2, ranks2) for ph in PHASES)
    out["criteria"]["C2"] = {"holds": bool(same)}
    status = read_csv(run / "sched" / "cp_schedule.csv")
    ok = {int(cp): bool((g["status"] == "ok").all()) and len(g) == int(cp) for cp, g in status.groupby("cp")}
    out["criteria"]["C3"] = {"ranks_ok": {str(cp): ok.get(cp, False) for cp in S29CP_CPS},
                             "holds": all(ok.get(cp, False) and len(fake[cp]) == cp for cp in S29CP_CPS)}
    stable = True
    for cp in S29CP_CPS:
        if len(fake[cp]) != cp:
            stable = False
            continue
        tr = twin_transfer_s(cp, heads=S29CP_HEADS)
        f1, f0 = schedule_fracs(fake[cp], tr, 1), schedule_fracs(fake[cp], tr, 0)
        out["fractions"][cp], out["fractions_rep0"][cp] = f1, f0
        stable &= all(abs(f1[ph] - f0[ph]) <= C4_TOL for ph in PHASES)
    out["criteria"]["C4"] = {"holds": bool(stable)}
    return out


def published_figures(fracs: dict | None) -> dict:
    """published_runs' rows and summary with the switch off (fracs None) or on with `fracs` ({cp: {fwd,
    bwd}}) as the 405B TP 8 block's own: {"rows": {id: rel_error}, "median", "within"}."""
    from calibration import published_runs  # lazy: the twin's whole step, only for the judgement
    from twin.costs import context_parallel as cpc  # lazy: as above
    saved = (cpc.ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK, dict(cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK))
    try:
        cpc.ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK = fracs is not None
        if fracs is not None:
            cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK[S29CP_BLOCK] = {
                int(cp): {ph: round(float(f[ph]), 4) for ph in PHASES} for cp, f in fracs.items()}
        r = published_runs.compare()
    finally:
        cpc.ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK = saved[0]
        cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK.clear()
        cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK.update(saved[1])
    rows = {x["id"]: x["rel_error"] for x in r["rows"] if x.get("rel_error") is not None}
    return {"rows": rows, "median": r["summary"]["median_abs_rel_error"],
            "within": r["summary"]["num_within_row_target"]}


def judge_s29cp(run: Path | str) -> dict:
    """docs/notes/s29cp_rule.md's judgement: the records' criteria (s29cp_records) and, with the fractions,
    P1-P3 on the published rows (switch off against on, this tree)."""
    out = s29cp_records(run)
    if not (out["criteria"]["C3"]["holds"] and out["fractions"]):
        for k in ("P1", "P2", "P3"):
            out["criteria"][k] = {"holds": False, "why": "no fractions (C3)"}
        out["adopt"] = False
        return out
    off, on = published_figures(None), published_figures(out["fractions"])
    out["published_off"], out["published_on"] = off, on
    out["criteria"]["P1"] = {"off": off["median"], "on": on["median"], "holds": on["median"] <= off["median"] + 1e-12}
    out["criteria"]["P2"] = {"off": off["within"], "on": on["within"], "holds": on["within"] >= off["within"]}
    lost = [k for k, e in off["rows"].items() if abs(e) <= 0.10 and abs(on["rows"].get(k, 1.0)) > 0.10]
    out["criteria"]["P3"] = {"rows_lost": lost, "holds": not lost}
    out["adopt"] = all(c["holds"] for c in out["criteria"].values())
    return out


def format_s29cp(j: dict) -> str:
    c = j["criteria"]
    lines = [f"s29cp judgement ({j['run']}); err = replay / measured - 1",
             f"  C1: replay {c['C1']['replay_s'] * 1e3:.1f} ms, measured {c['C1']['measured_s'] * 1e3:.1f} ms, "
             f"err {c['C1']['err']:+.2%} -> {c['C1']['holds']}",
             f"  C2 (fake CP2 schedule = real CP2 schedule, every rank and phase): {c['C2']['holds']}",
             f"  C3 (every rank of CP {S29CP_CPS} ran): {c['C3']['holds']} {c['C3'].get('ranks_ok', '')}",
             f"  C4 (fractions of repetitions 0 and 1 within {C4_TOL}): {c['C4']['holds']}"]
    for cp, f in j["fractions"].items():
        f0 = j["fractions_rep0"][cp]
        lines.append(f"  cp {cp}: fwd {f['fwd']:.4f} (rep0 {f0['fwd']:.4f}), bwd {f['bwd']:.4f} (rep0 {f0['bwd']:.4f}); "
                     f"per block excess fwd {f['excess_fwd_s'] * 1e3:.1f} ms, bwd {f['excess_bwd_s'] * 1e3:.1f} ms; "
                     f"attention fwd {f['attn_fwd_s'] * 1e3:.1f}, recompute {f['attn_recompute_s'] * 1e3:.1f}, "
                     f"bwd {f['attn_bwd_s'] * 1e3:.1f} ms")
    if "published_on" in j:
        off, on = j["published_off"], j["published_on"]
        for k in S29CP_ROWS:
            lines.append(f"  {k}: {off['rows'][k]:+.2%} -> {on['rows'][k]:+.2%}")
        lines.append(f"  P1 median |error| {off['median']:.2%} -> {on['median']:.2%}: {c['P1']['holds']}")
        lines.append(f"  P2 within 10% {off['within']} -> {on['within']}: {c['P2']['holds']}")
        lines.append(f"  P3 rows lost from within 10%: {c['P3']['rows_lost']} -> {c['P3']['holds']}")
    lines.append(f"  adopt: {j['adopt']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The judgement of docs/notes/s29cp2_rule.md (campaign s29cp2): both blocks with Float8 linears
# ---------------------------------------------------------------------------------------------

S29CP2_JUDGEMENT = Path(__file__).parent / "s29cp2_judgement.json"
REAL_FP8_PATTERN = "trace_cp_block_compiled_fp8_S{S}_rank{{rank}}.json.gz"   # cp_block's Float8 trace names
# part folder: (twin key (model name, TP degree), heads after repeat_kv, the published rows it applies to)
S29CP2_BLOCKS = {"sched8b": (("llama3.1-8b", 1), HEADS, ("tt-8b-cp2-64k", "tt-8b-cp4-128k", "tt-8b-cp8-256k")),
                 "sched405": (S29CP_BLOCK, S29CP_HEADS, S29CP_ROWS)}
C4_ROW_POINTS = 0.01   # s29cp2's C4: a row's error under repetition 0's fractions against repetition 1's


def published_figures_fp8(tables: dict | None) -> dict:
    """published_runs' rows and summary with ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK off (tables None) or on with
    `tables` ({(model, tp): {cp: {fwd, bwd}}}, 4 decimals): {"rows": {id: rel_error}, "median", "within"}."""
    from calibration import published_runs  # lazy: the twin's whole step, only for the judgement
    from twin.costs import context_parallel as cpc  # lazy: as above
    saved = (cpc.ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK, dict(cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK))
    try:
        cpc.ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK = tables is not None
        cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK.clear()
        for key, fracs in (tables or {}).items():
            cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK[tuple(key)] = {
                int(cp): {ph: round(float(f[ph]), 4) for ph in PHASES} for cp, f in fracs.items()}
        r = published_runs.compare()
    finally:
        cpc.ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK = saved[0]
        cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK.clear()
        cpc.COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK.update(saved[1])
    rows = {x["id"]: x["rel_error"] for x in r["rows"] if x.get("rel_error") is not None}
    return {"rows": rows, "median": r["summary"]["median_abs_rel_error"],
            "within": r["summary"]["num_within_row_target"]}


def judge_s29cp2(run: Path | str) -> dict:
    """docs/notes/s29cp2_rule.md's judgement from a campaign s29cp2 folder (cp2_real/, traces/, sched8b/,
    sched405/): C1-C3 on the records, the fractions of both Float8 blocks, C4 and P1-P3 on the published rows
    (the switch off against on, this tree)."""
    from calibration.records_io import csv_exists, read_csv  # lazy: pandas, only for the judgement
    run = Path(run)
    out: dict = {"run": run.name, "criteria": {}, "fractions": {}, "fractions_rep0": {}}
    real2 = REAL_FP8_PATTERN.format(S=2 * LOCAL_LEN)
    ranks2 = load_ranks(run / "traces", real2)
    if len(ranks2) == 2:
        measured2 = float(read_csv(run / "cp2_real" / "torch_cp.csv")["time_s"].iloc[0])
        replay2 = _lock_s(ranks2, nccl_transfer_s(run / "traces", real2), 1)
        c1 = replay2 / measured2 - 1
        out["criteria"]["C1"] = {"replay_s": replay2, "measured_s": measured2, "err": c1, "holds": abs(c1) <= C1_TOL}
    else:
        out["criteria"]["C1"] = {"holds": False, "why": f"{len(ranks2)} real CP2 Float8 traces"}
    fake: dict = {}
    ran = {}
    for part in S29CP2_BLOCKS:
        fake[part] = {cp: load_ranks(run / part / "traces", FAKE_PATTERN.format(cp=cp)) for cp in S29CP_CPS}
        st = read_csv(run / part / "cp_schedule.csv") if csv_exists(run / part / "cp_schedule.csv") else None
        for cp in S29CP_CPS:
            g = st[st["cp"] == cp] if st is not None else []
            ran[f"{part}_cp{cp}"] = st is not None and len(g) == cp and bool((g["status"] == "ok").all()) \
                and len(fake[part][cp]) == cp
    f2 = fake["sched8b"][2]
    same = len(f2) == len(ranks2) == 2 and all(
        attention_order(f[(1, ph)]) == attention_order(r[(1, ph)]) for f, r in zip(f2, ranks2) for ph in PHASES)
    out["criteria"]["C2"] = {"holds": bool(same)}
    out["criteria"]["C3"] = {"ran": ran, "holds": all(ran.values())}
    if not out["criteria"]["C3"]["holds"]:
        for k in ("C4", "P1", "P2", "P3"):
            out["criteria"][k] = {"holds": False, "why": "not every rank ran (C3)"}
        out["adopt"] = False
        return out
    tables1, tables0 = {}, {}
    for part, (key, heads, _) in S29CP2_BLOCKS.items():
        out["fractions"][part], out["fractions_rep0"][part] = {}, {}
        for cp in S29CP_CPS:
            tr = twin_transfer_s(cp, heads=heads)
            out["fractions"][part][cp] = schedule_fracs(fake[part][cp], tr, 1)
            out["fractions_rep0"][part][cp] = schedule_fracs(fake[part][cp], tr, 0)
        tables1[key], tables0[key] = out["fractions"][part], out["fractions_rep0"][part]
    off, on, on0 = published_figures_fp8(None), published_figures_fp8(tables1), published_figures_fp8(tables0)
    out["published_off"], out["published_on"], out["published_on_rep0"] = off, on, on0
    rows = [r for _, _, rs in S29CP2_BLOCKS.values() for r in rs]
    spread = {r: abs(on["rows"][r] - on0["rows"][r]) for r in rows}
    out["criteria"]["C4"] = {"row_spread": spread, "holds": max(spread.values()) <= C4_ROW_POINTS}
    out["criteria"]["P1"] = {"off": off["median"], "on": on["median"], "holds": on["median"] <= off["median"] + 1e-12}
    out["criteria"]["P2"] = {"off": off["within"], "on": on["within"], "holds": on["within"] >= off["within"]}
    lost = [k for k, e in off["rows"].items() if abs(e) <= 0.10 and abs(on["rows"].get(k, 1.0)) > 0.10]
    out["criteria"]["P3"] = {"rows_lost": lost, "holds": not lost}
    out["adopt"] = all(c["holds"] for c in out["criteria"].values())
    return out


def format_s29cp2(j: dict) -> str:
    c = j["criteria"]
    lines = [f"s29cp2 judgement ({j['run']}); err = replay / measured - 1"]
    v = c["C1"]
    lines.append("  C1: " + (f"replay {v['replay_s'] * 1e3:.1f} ms, measured {v['measured_s'] * 1e3:.1f} ms, "
                             f"err {v['err']:+.2%}" if "err" in v else v.get("why", "")) + f" -> {v['holds']}")
    lines.append(f"  C2 (fake CP2 Float8 8B schedule = real CP2 schedule): {c['C2']['holds']}")
    lines.append(f"  C3 (every rank ran): {c['C3']['holds']} {c['C3'].get('ran', '')}")
    for part, fr in j["fractions"].items():
        for cp, f in fr.items():
            f0 = j["fractions_rep0"][part][cp]
            lines.append(f"  {part} cp {cp}: fwd {f['fwd']:.4f} (rep0 {f0['fwd']:.4f}), bwd {f['bwd']:.4f} "
                         f"(rep0 {f0['bwd']:.4f}); excess fwd {f['excess_fwd_s'] * 1e3:.1f} ms, bwd "
                         f"{f['excess_bwd_s'] * 1e3:.1f} ms; attention fwd {f['attn_fwd_s'] * 1e3:.1f}, recompute "
                         f"{f['attn_recompute_s'] * 1e3:.1f}, bwd {f['attn_bwd_s'] * 1e3:.1f} ms")
    if "published_on" in j:
        off, on, on0 = j["published_off"], j["published_on"], j["published_on_rep0"]
        for _, _, rows in S29CP2_BLOCKS.values():
            for k in rows:
                lines.append(f"  {k}: {off['rows'][k]:+.2%} -> {on['rows'][k]:+.2%} (rep0 {on0['rows'][k]:+.2%})")
        lines.append(f"  C4 largest row spread rep0/rep1 {max(c['C4']['row_spread'].values()):.2%}: {c['C4']['holds']}")
        lines.append(f"  P1 median |error| {off['median']:.2%} -> {on['median']:.2%}: {c['P1']['holds']}")
        lines.append(f"  P2 within 10% {off['within']} -> {on['within']}: {c['P2']['holds']}")
        lines.append(f"  P3 rows lost from within 10%: {c['P3']['rows_lost']} -> {c['P3']['holds']}")
    lines.append(f"  adopt: {j['adopt']}")
    return "\n".join(lines)


def format_judgement(j: dict) -> str:
    c = j["criteria"]
    lines = [f"s27cp judgement ({j['run']}); err = replay / measured - 1"]
    for k in ("C1", "C3"):
        v = c[k]
        lines.append(f"  {k}: " + (f"replay {v['replay_s'] * 1e3:.1f} ms, measured {v['measured_s'] * 1e3:.1f} ms, "
                                   f"err {v['err']:+.2%}" if "err" in v else v.get("why", "")) + f" -> {v['holds']}")
    lines.append(f"  C2 (fake CP4 schedule = real CP4 schedule, every rank and phase): {c['C2']['holds']}")
    lines.append(f"  C4 (fractions of repetitions 0 and 1 within {C4_TOL}): {c['C4']['holds']}")
    for cp, f in j["fractions"].items():
        f0 = j["fractions_rep0"][cp]
        lines.append(f"  cp {cp}: fwd {f['fwd']:.4f} (rep0 {f0['fwd']:.4f}), bwd {f['bwd']:.4f} (rep0 {f0['bwd']:.4f}); "
                     f"per block excess fwd {f['excess_fwd_s'] * 1e3:.1f} ms, bwd {f['excess_bwd_s'] * 1e3:.1f} ms; "
                     f"attention fwd {f['attn_fwd_s'] * 1e3:.1f}, recompute {f['attn_recompute_s'] * 1e3:.1f}, "
                     f"bwd {f['attn_bwd_s'] * 1e3:.1f} ms")
    lines.append(f"  adopt: {j['adopt']}")
    return "\n".join(lines)


@script
def main(argv=None) -> int:
    ap = parser("calibration.cp_schedule", __doc__)
    ap.add_argument("folder", type=Path, help="a folder of one CP degree's per-rank Chrome traces")
    ap.add_argument("--pattern", default="cp_schedule_cp4_rank{rank}.json.gz",
                    help="the traces' file name with a {rank} field")
    ap.add_argument("--rep", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--judge", action="store_true", help="FOLDER is a campaign s27cp folder: the rule's judgement")
    ap.add_argument("--write", action="store_true", help="with --judge: write calibration/s27cp_judgement.json "
                    "(with --judge-s29cp / --judge-s29cp2: calibration/s29cp_judgement.json / s29cp2_judgement.json)")
    ap.add_argument("--judge-s29cp", action="store_true",
                    help="FOLDER is a campaign s29cp folder: docs/notes/s29cp_rule.md's judgement")
    ap.add_argument("--judge-s29cp2", action="store_true",
                    help="FOLDER is a campaign s29cp2 folder: docs/notes/s29cp2_rule.md's judgement")
    a = ap.parse_args(argv)
    if not a.folder.is_dir():
        print(f"error: folder {a.folder}: not a directory", file=sys.stderr)
        return 2
    if a.judge_s29cp2:
        j = judge_s29cp2(a.folder)
        print(json.dumps(j, indent=1) if a.json else format_s29cp2(j))
        if a.write:
            write_json_text(S29CP2_JUDGEMENT, json.dumps(judged_under.stamped(j), indent=1, sort_keys=True, default=list) + "\n")
        return 0
    if a.judge_s29cp:
        j = judge_s29cp(a.folder)
        print(json.dumps(j, indent=1) if a.json else format_s29cp(j))
        if a.write:
            write_json_text(S29CP_JUDGEMENT, json.dumps(judged_under.stamped(j), indent=1, sort_keys=True) + "\n")
        return 0
    if a.judge:
        j = judge(a.folder)
        print(json.dumps(j, indent=1) if a.json else format_judgement(j))
        if a.write:
            write_json_text(JUDGEMENT, json.dumps(judged_under.stamped(j), indent=1, sort_keys=True) + "\n")
        return 0
    ranks = load_ranks(a.folder, a.pattern)
    if len(ranks) < 2:
        print(f"error: --pattern {a.pattern!r}: {len(ranks)} rank traces in {a.folder}, need >= 2", file=sys.stderr)
        return 2
    fr = schedule_fracs(ranks, {}, a.rep)
    print(json.dumps(fr, indent=1) if a.json else
          "\n".join(f"{k:18} {v:.4f}" for k, v in fr.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

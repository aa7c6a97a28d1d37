"""The s24stall records (docs/notes/s24stall_rule.md, docs/notes/s24stall.md): what the stall trace says on each host,
and the clustered pause model's judgement, read live from the committed records."""

import pytest

from calibration import records as rec
from calibration import serve_clustered_pauses as scp
from calibration import serve_stall_causes as sc
from calibration.serve_load_validation import FIGURES
from twin.serving import engine as serve_engine

H100 = rec.MEASUREMENTS_DIR / "h100"
QUIET = (H100 / "s24stall", rec.MEASUREMENTS_DIR / "h200" / "s24stall")
STALLING = (H100 / "s24stall_host2", H100 / "s24stall_host3")


@pytest.mark.parametrize("folder", QUIET, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_quiet_hosts_do_not_stall(folder):
    v = sc.host_verdict(folder)
    assert not v["stalling"] and v["stalls"] == 0 and v["cause"] is None


@pytest.mark.parametrize("folder", STALLING, ids=lambda p: p.name)
def test_stalling_hosts_stall_on_cpu_and_the_gc_freeze_does_not_help(folder):
    v = sc.host_verdict(folder)
    print(folder.name, v)
    assert v["stalling"] and v["cause"] == "on_cpu" and v["freeze_removes"] is False
    for part in ("qwen3moe", "qwen2moe", "qwen3moe_gcfreeze"):
        s = sc.part_stalls(folder / part)
        on = s[s["cls"] == "on_cpu"]
        # the thread held its CPU through the stall: CPU time over 90% of the span, no run delay, no switch; the few
        # gen-0/1 collections that ran in a stall's span hold a small part of the stalls' excess
        assert (on["thread_cpu_s"] >= 0.9 * on["span_s"]).all() and (on["run_delay_s"] < 1e-3).all()
        assert (on["nvcsw"] == 0).all() and on["gc_s"].sum() < 0.1 * on["excess_s"].sum()


def test_round_3_pauses_were_not_seen_by_a_thread_beside_the_engine():
    rows = sc.vm_wide(H100 / "s24stall_host3")
    print(rows)
    assert [r["part"] for r in rows] == ["qwen2moe", "qwen3moe_gcfreeze"]
    assert sum(r["stalls"] for r in rows) == 9 and sum(r["pauses"] for r in rows) >= 50
    assert all(r["meter_gaps"] == 0 and r["stalls_vm_wide"] == 0 for r in rows)


@pytest.fixture(scope="module")
def judged():
    return [r for f in STALLING for r in scp.compare_set(f)]


def test_the_clustered_pause_model_is_not_adopted(judged):
    v = scp.verdict(judged)["clustered"]
    base, cand = v[v["base"]], v[v["candidate"]]
    print(f"base {base['checks_met']}/{base['checks']} ({base['median_abs_rel_error']:.2%}) clustered "
          f"{cand['checks_met']}/{cand['checks']} ({cand['median_abs_rel_error']:.2%}) by set {cand['by_gpu']}")
    assert not v["adopt"] and serve_engine.ADOPT_CLUSTERED_HOST_PAUSES is False


@pytest.mark.xfail(strict=True, reason="issue 15 targets on the stalling H100 sets: the committed twin misses ~28 of 60 "
                                       "(TTFT / TPOT P50 and the stall-driven TTFT P99); docs/notes/s24stall.md")
def test_the_committed_twin_meets_issue_15_targets_on_the_stalling_hosts(judged):
    base = [r for r in judged if r["twin"] == "base"]
    missed = [f"{r['gpu']} {r['run_id']} {k} {r[f'{k}_rel_error']:+.1%}" for r in base for k in FIGURES
              if not r[f"{k}_within_target"]]
    print(f"{len(missed)} of {len(base) * len(FIGURES)} checks missed:", *missed, sep="\n  ")
    assert not missed

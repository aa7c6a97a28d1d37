"""calibration.s29dec (session s29dec, docs/notes/s29dec_rule.md): probed decode / prefill on fresh leases. The
committed predictions cover the campaign's cases from one clean commit; the judge prices each record at its own
probes (ratio x probe on the committed grid) and counts a miss per lease and kind."""

import re

import numpy as np
import pandas as pd
import pytest

from calibration import records as rec
from calibration import s29dec, step_host
from calibration.records_io import read_csv, read_json
from twin.cli.calibration import _headline


@pytest.fixture(scope="module")
def pred():
    return s29dec.load_predictions()


def test_committed_predictions_cover_the_cases_from_one_commit(pred):
    key = s29dec.KEY
    assert sorted(tuple(r[k] for k in key) for r in pred["rows"]) == sorted(
        tuple(r[k] for k in key) for r in s29dec.case_rows())
    assert re.fullmatch(r"[0-9a-f]{40}", pred["code_commit"])
    grid = np.array(pred["host_grid_s_per_kernel"])
    assert np.allclose(grid, step_host.STEP_HOST_GRID_S)
    for r in pred["rows"]:
        g = np.array(r["grid_predicted_s"])
        assert len(g) == grid.size and (g > 0).all() and (np.diff(g) >= -1e-12).all()   # monotone in the host time
        assert r["plain_predicted_s"] > 0
    # the decode rows are host-paced: at twice the profile's host time per kernel a decode step costs >= 1.8x
    h200 = [r for r in pred["rows"] if r["gpu"] == "h200" and r["bench"] == "decode"]
    prof_h = h200[0]["profile_infer_host_s_per_kernel"]
    assert prof_h == pytest.approx(18.84e-6, rel=1e-3)
    for r in h200:
        lo, hi = np.interp([prof_h, 2 * prof_h], grid, r["grid_predicted_s"])
        assert hi / lo > 1.8, r["model"]


def _fake_lease(root, pred, ratio_probe_s, slow: dict):
    """A lease folder under `root`: the committed s22host H200 fitting repetitions (their ratio), and each H200 case's
    records with 3 probed steps probed at `ratio_probe_s` / ratio (so each step's host time per kernel is
    ratio_probe_s), measured at the grid's value there times slow.get((bench, model, batch), 1)."""
    src = rec.MEASUREMENTS_DIR / "h200" / "s22host"
    hd = read_csv(src / "host_dispatch.csv")
    fit_steps = read_csv(src / "serve_steps.csv")
    fit_steps = fit_steps[fit_steps["bench"] == "host_dispatch"]
    ratio = step_host.fit_step_ratio(hd, fit_steps, "h200")
    grid = np.array(pred["host_grid_s_per_kernel"])
    model, steps = [], [fit_steps]
    for r in pred["rows"]:
        if r["gpu"] != "h200":
            continue
        key = {k: r[k] for k in s29dec.KEY if k != "gpu"}
        t = float(np.interp(ratio_probe_s, grid, r["grid_predicted_s"])) * slow.get(
            (r["bench"], r["model"], r["batch"]), 1.0)
        model.append({**key, "time_s": t, "gpu_name": "NVIDIA H200"})
        steps.append(pd.DataFrame([{**key, "config": "", "phase": "", "step": i, "block": b,
                                    "host_probe_launch_s": ratio_probe_s / ratio if b == "probed" else np.nan,
                                    "step_s": t, "host_s": t / 2}
                                   for i, b in enumerate(["control", "probed"] * 3)]))
    folder = root / "h200" / "s29dec_a"
    folder.mkdir(parents=True)
    hd.to_csv(folder / "host_dispatch.csv", index=False)
    pd.concat(steps, ignore_index=True).to_csv(folder / "serve_steps.csv", index=False)
    pd.DataFrame(model).to_csv(folder / "model.csv", index=False)
    return ratio


def test_judge_prices_each_record_at_its_probe_and_counts_a_miss(tmp_path, pred):
    """Every record measured at the grid's value at 27 us a kernel (ratio x probe): |err| 0, but three olmoe decode
    rows 25% slower (|err| 1 - 1/1.25 = 20%): of 16 sorted decode errors, 13 zeros then three 20%; numpy's P90 sits at
    rank 0.9 x 15 = 13.5, between two 20% -> 20%: decode misses, its median 0; prefill meets."""
    slow = {("decode", "olmoe-slice", b): 1.25 for b in (8, 24, 48)}
    ratio = _fake_lease(tmp_path, pred, 27e-6, slow)
    sec = s29dec.judge(tmp_path, pred)
    lease = sec["leases"]["h200 s29dec_a"]
    assert lease["probe_ratio"] == pytest.approx(ratio) and lease["infer_host_s_per_kernel"] == pytest.approx(27e-6)
    d, p = lease["by_kind"]["decode"], lease["by_kind"]["prefill"]
    assert (d["num_cases"], p["num_cases"]) == (16, 6)
    errs = np.array([0.0] * 13 + [1 / 1.25 - 1] * 3)
    assert d["median_abs_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert d["p90_abs_rel_error"] == pytest.approx(np.percentile(np.abs(errs), 90), rel=1e-6)
    assert d["max_abs_rel_error"] == pytest.approx(0.2, rel=1e-6)
    assert p["median_abs_rel_error"] == pytest.approx(0.0, abs=1e-9) and p["meets_target"]
    assert not d["meets_target"] and not lease["meets_target"] and not sec["meets_target"]
    # the plain twin is priced at the profile's 18.84 us: too fast against a 27 us host
    assert d["plain"]["signed_mean_rel_error"] < -0.2
    text = s29dec.format_table(sec)
    assert "prereg-probed h200 s29dec_a decode: 16 rows" in text and "MISSED" in text
    # twin validate's headline keeps the per-lease verdict lines
    assert any(line.startswith("  prereg-probed h200 s29dec_a decode") for line in _headline([text]).splitlines())


# the verdicts on the committed records (calibration/s29dec_judgement.json, `python -m calibration.s29dec --json ...`),
# recomputed live once; a missed target is a strict xfail that prints the live figure
@pytest.fixture(scope="module")
def committed():
    return read_json(s29dec.JUDGEMENT_FILE)


@pytest.fixture(scope="module")
def live():
    return s29dec.judge()


def test_the_committed_judgement_is_the_live_one(committed, live):
    assert committed["predictions_commit"] == s29dec.load_predictions()["code_commit"]
    assert sorted(committed["leases"]) == sorted(live["leases"]) and committed["num_leases"] >= 1
    for lease, v in committed["leases"].items():
        for bench, g in v["by_kind"].items():
            now = live["leases"][lease]["by_kind"][bench]
            assert g["num_cases"] == now["num_cases"]
            for k in ("median_abs_rel_error", "p90_abs_rel_error", "max_abs_rel_error"):
                assert g[k] == pytest.approx(now[k], rel=1e-9), (lease, bench, k)


def _groups():
    data = read_json(s29dec.JUDGEMENT_FILE)
    return [pytest.param(lease, bench, marks=() if g["meets_target"] else pytest.mark.xfail(
                strict=True, reason=f"missed on the committed records: {g['median_abs_rel_error']:.1%} / "
                                    f"{g['p90_abs_rel_error']:.1%} (docs/notes/s29dec.md)"), id=f"{lease}-{bench}")
            for lease, v in sorted(data["leases"].items()) for bench, g in sorted(v["by_kind"].items())]


@pytest.mark.parametrize("lease,bench", _groups())
def test_issue13_targets_per_lease_and_kind(live, lease, bench):
    g = live["leases"][lease]["by_kind"][bench]
    print(f"{lease} {bench}: median {g['median_abs_rel_error']:.1%}, P90 {g['p90_abs_rel_error']:.1%}, "
          f"max {g['max_abs_rel_error']:.1%}")
    assert g["median_abs_rel_error"] <= s29dec.MEDIAN_TARGET and g["p90_abs_rel_error"] <= s29dec.P90_TARGET

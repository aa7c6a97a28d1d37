"""The host's measured speed as an input of the TP2/CP2 block rows (calibration.parallel_blocks
ADOPT_HOST_PROBE, calibration.block_host_speed; docs/notes/s15cp_rule.md): the fitting rows' host
measurements are brought to the folder's reference probe, each row's host terms scaled by its own
probe over it; held-out rows never set a term; rows without a probe do not move."""

import dataclasses

import pandas as pd
import pytest

from calibration import block_host_speed as bhs
from calibration import parallel_blocks as blocks
from calibration import records as rec
from calibration.fit import collectives_terms
from calibration.records_io import read_csv
from calibration.validate import load_fitted_profile

SOURCE = rec.MEASUREMENTS_DIR / "h200x2"
P = 5e-6   # a probe: seconds per small kernel launch


@pytest.fixture(scope="module")
def h200():
    prof, _ = load_fitted_profile("h200", None)
    return prof if prof.collectives else dataclasses.replace(prof, collectives=collectives_terms("h200")[0])


def _probed_folder(tmp_path, probe_of=lambda r: P, host_of=lambda r: 1.0):
    """A copy of h200x2's block records (no traces: component factors off in these tests) with a probe
    column `probe_of(row)` and host_time_s x `host_of(row)`."""
    d = tmp_path / "h200x2"
    d.mkdir(parents=True)
    for name in ("parallel_blocks.csv", "parallel_blocks_cp.csv", "collective_host.csv", "cp_chunks.csv"):
        df = read_csv(SOURCE / name)
        if name.startswith("parallel_blocks"):
            df["probe_launch_s"] = [probe_of(r) for _, r in df.iterrows()]
            df["host_time_s"] = [h * host_of(r) for h, (_, r) in zip(df["host_time_s"], df.iterrows())]
        elif name == "collective_host.csv":
            df["probe_launch_s"] = P
        df.to_csv(d / name, index=False)
    return d


def _pred(folder, prof, on):
    return {c["name"]: c["predicted_s"] for c in
            blocks.predict_folder(folder, "h200", prof, component_factors=False, host_probe=on)}


def test_probe_helpers():
    rows = pd.DataFrame([dict(bench="tp_block", split="fit", probe_launch_s=4e-6, host_time_s=1e-3),
                         dict(bench="cp_block", split="fit", probe_launch_s=6e-6, host_time_s=2e-3),
                         dict(bench="tp_block", split="holdout", probe_launch_s=1e-3, host_time_s=1e-3),
                         dict(bench="tp_block", split="fit", probe_launch_s=float("nan"), host_time_s=3e-3)])
    assert blocks.reference_probe_s(rows) == pytest.approx(5e-6)   # fitting rows with a probe only
    assert blocks.reference_probe_s(rows.drop(columns="probe_launch_s")) is None
    at = blocks.at_probe_ref(rows, 5e-6)
    assert list(at["host_time_s"]) == pytest.approx([1.25e-3, 2e-3 * 5 / 6, 5e-6, 3e-3])
    assert blocks.host_scale({"probe_launch_s": 1e-5}, 5e-6) == pytest.approx(2.0)
    assert blocks.host_scale({"probe_launch_s": ""}, 5e-6) == 1.0 and blocks.host_scale({"probe_launch_s": 1e-5}, None) == 1.0
    assert blocks._host_scaled([(1.0, 2.0), (None, 0.0)], 3.0) == [(3.0, 2.0), (None, 0.0)]


def test_one_host_speed_changes_nothing(h200, tmp_path):
    """Every row at one probe: P on predicts what P off does (the reference is that probe)."""
    d = _probed_folder(tmp_path)
    off, on = _pred(d, h200, False), _pred(d, h200, True)
    assert on.keys() == off.keys() and all(on[n] == pytest.approx(off[n], rel=1e-9) for n in off)


@pytest.mark.parametrize("synced", [False, True])
def test_a_slower_host_predicts_a_slower_host_bound_row(h200, tmp_path, monkeypatch, synced):
    """Held-out rows measured at twice the probe: with P their host terms double (the host-bound v2-lite
    rows grow by most of their host), without it nothing moves; the device-bound rows barely move where
    repetitions run back to back (`synced` False), and, where each starts synchronised (s17tp's
    ADOPT_TP_REP_SYNC, adopted), by their host-led start alone: less than the host-bound row."""
    monkeypatch.setattr(blocks, "ADOPT_TP_REP_SYNC", synced)
    slow = lambda r: 2 * P if r["split"] != "fit" else P   # noqa: E731
    d = _probed_folder(tmp_path, slow)
    off, on = _pred(d, h200, False), _pred(d, h200, True)
    host_bound = "tp_block mla v2-lite-slice t4096 tp2"
    assert on[host_bound] > 1.6 * off[host_bound]
    device_bound = "tp_block moe v3-slice-1l t4096 tp2"
    if synced:
        assert off[device_bound] < on[device_bound] < 1.15 * off[device_bound]
    else:
        assert on[device_bound] == pytest.approx(off[device_bound], rel=0.05)
    fit = {c["name"] for c in blocks.predict_folder(d, "h200", h200, component_factors=False) if not c["held_out"]}
    assert all(on[n] == pytest.approx(off[n], rel=1e-9) for n in fit)


def test_terms_read_the_fitting_hosts_at_the_reference_speed(h200, tmp_path):
    """Fitting rows measured on a host 1.5x slower whose probe says so: with P the terms are at the
    slower reference and the held-out TP rows (at the unslowed probe) predicted as from the unslowed
    records; held-out rows' probes and host times change no term."""
    base = _probed_folder(tmp_path / "a")
    slowed = _probed_folder(tmp_path / "b", lambda r: 1.5 * P if r["split"] == "fit" else P,
                            lambda r: 1.5 if r["split"] == "fit" else 1.0)
    ta = blocks.folder_terms(base, "h200", h200, component_factors=False, host_probe=True)
    tb = blocks.folder_terms(slowed, "h200", h200, component_factors=False, host_probe=True)
    assert tb.probe_ref_s == pytest.approx(1.5 * P) and ta.probe_ref_s == pytest.approx(P)
    for block, v in ta.kernel_host.items():
        assert tb.kernel_host[block] == pytest.approx(1.5 * v)     # at the slower reference
    held = ta.rows["split"] != "fit"
    # the held-out TP rows (every host term of theirs measured in the folder) predicted alike
    pa, pb = _pred(base, h200, True), _pred(slowed, h200, True)
    names = {blocks.block_name(r) for _, r in ta.rows[held & (ta.rows["bench"] == "tp_block")].iterrows()}
    assert names and all(pb[n] == pytest.approx(pa[n], rel=1e-9) for n in names)
    skewed = _probed_folder(tmp_path / "c", lambda r: 9 * P if r["split"] != "fit" else P,
                            lambda r: 10.0 if r["split"] != "fit" else 1.0)
    tc = blocks.folder_terms(skewed, "h200", h200, component_factors=False, host_probe=True)
    assert held.any() and tc.kernel_host == ta.kernel_host and tc.host == ta.host and tc.cp_terms == ta.cp_terms


@pytest.mark.parametrize("adopt", [False, True])
def test_both_settings_of_the_host_probe(h200, adopt, monkeypatch, tmp_path):
    """The switch sets the default; the committed records without a probe never move."""
    monkeypatch.setattr(blocks, "ADOPT_HOST_PROBE", adopt)
    d = _probed_folder(tmp_path, lambda r: 2 * P if r["split"] != "fit" else P)
    default = _pred(d, h200, None)
    assert default == _pred(d, h200, adopt)
    assert default != _pred(d, h200, not adopt)
    for gpu in ("h200", "h100"):
        rows = blocks.load_block_rows(rec.MEASUREMENTS_DIR / f"{gpu}x2")
        if blocks.reference_probe_s(rows) is None:   # records without the probe: P changes nothing
            t = blocks.folder_terms(rec.MEASUREMENTS_DIR / f"{gpu}x2", gpu, h200 if gpu == "h200" else
                                    load_fitted_profile(gpu, None)[0], component_factors=False, host_probe=True)
            assert t.probe_ref_s is None


def test_summary_and_criteria():
    def res(name, pred, tp=2, held=True):
        return {"row": {"tp": tp, "cp": 1}, "name": name, "measured_s": 1.0, "predicted_s": pred, "held_out": held}
    off = bhs.summary([res("a", 1.05), res("b", 1.2), res("r", 0.95, tp=1), res("f", 2.0, held=False)])
    on = bhs.summary([res("a", 1.08), res("b", 1.09), res("r", 0.96, tp=1), res("f", 2.0, held=False)])
    assert off["rows"] == 2 and off["within"] == 1 and on["within"] == 2 and off["references"] == {"r": pytest.approx(-0.05)}
    ok = bhs.criteria({"h200": {False: off, True: on}}, {"h200": {False: off, True: on}})
    assert all(ok.values())
    worse = bhs.summary([res("a", 1.11), res("b", 1.2), res("r", 0.95, tp=1)])
    bad = bhs.criteria({"h200": {False: off, True: worse}}, {"h200": None})
    assert not bad["1 count"] and not bad["2 none leaves"] and not bad["5 round 2"]


def test_fastest_rounds_keeps_each_configuration_at_its_fastest_round():
    def row(block, tokens, rnd, t, split="fit"):
        return dict(bench="tp_block", block=block, model="m", tp=2, cp=1, cp_kind=float("nan"), sequence_parallel=True,
                    tokens=tokens, round=rnd, time_s=t, host_time_s=t / 2, split=split)
    rows = pd.DataFrame([row("mla", 2048, 0, 3.0), row("moe", 2048, 0, 5.0, "holdout"), row("mla", 2048, 1, 2.5),
                         row("moe", 2048, 1, 5.5, "holdout"), row("mla", 4096, 2, 4.0), row("mla", 2048, 2, 0.0)])
    best = bhs.fastest_rounds(rows)
    assert list(zip(best["block"], best["tokens"], best["round"], best["time_s"])) == [
        ("mla", 2048, 1, 2.5), ("moe", 2048, 0, 5.0), ("mla", 4096, 2, 4.0)]
    assert list(best["host_time_s"]) == [1.25, 2.5, 2.0]   # the whole row of that round

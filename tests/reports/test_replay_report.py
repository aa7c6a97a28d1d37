import csv
import dataclasses

import pytest

from reports.replay_report import render_html, render_markdown, to_toml, write_report
from twin.core.scenario import from_dict, load_scenario


def test_markdown_shows_claims_errors_and_assumptions(replayed):
    sc, result, _ = replayed
    md = render_markdown(result, sc)
    for c in result["claims"]:
        assert c["id"] in md
    pre = next(c for c in result["claims"] if c["id"] == "train.cost.pretrain_gpu_hours")
    assert f"{pre['rel_error'] * 100:+.1f}%" in md
    assert "What drives the gap" in md and "Assumptions" in md and "PUE" in md


def test_html_is_self_contained(replayed):
    sc, result, _ = replayed
    page = render_html(result, sc, {"a.png": b"\x89PNG fake"})
    assert "data:image/png;base64," in page
    assert "src=\"http" not in page and "href=\"http" not in page


def test_csv_has_one_row_per_stage(tmp_path, replayed):
    sc, result, typed = replayed
    write_report(typed, sc, tmp_path / "r")
    rows = list(csv.DictReader((tmp_path / "r" / "results.csv").open()))
    assert [r["stage"] for r in rows] == [s["name"] for s in result["stages"]]


def test_resolved_scenario_round_trips():
    sc = load_scenario(overrides=["cluster.num_gpus=4096", "energy.carbon_kg_per_kwh=0.4"])
    import tomllib
    assert from_dict(tomllib.loads(to_toml(sc.to_dict()))) == sc


def test_interrupted_write_keeps_the_earlier_report(tmp_path, replayed, monkeypatch):
    sc, result, typed = replayed
    out = tmp_path / "r"
    write_report(typed, sc, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import reports.replay_report as rr

    def boom(*a, **k):
        raise KeyboardInterrupt("interrupted mid-write")
    monkeypatch.setattr(rr, "write_csv", boom)  # fails after the plots and html are written
    changed = dataclasses.replace(typed, scenario_name="SHOULD-NOT-APPEAR")
    with pytest.raises(KeyboardInterrupt):
        write_report(changed, sc, out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_atomic_write_text_keeps_old_file_on_error(tmp_path, monkeypatch):
    import os

    from twin.core import atomic
    p = tmp_path / "x.json"
    atomic.write_text(p, "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic.write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]

"""Paths in results: files the packages carry are named from the packages' root (twin.core.paths)."""

from __future__ import annotations

from pathlib import Path

from twin.core.paths import PACKAGES_ROOT, shown_path

ROOT = Path(__file__).resolve().parents[3]


def test_a_packaged_file_is_named_from_the_packages_root():
    assert PACKAGES_ROOT == ROOT   # a source checkout: its root holds twin/ and calibration/
    assert shown_path(ROOT / "calibration" / "published_runs" / "peers.csv") == "calibration/published_runs/peers.csv"
    assert shown_path(str(ROOT / "twin" / "data" / "profiles" / "h100.json")) == "twin/data/profiles/h100.json"


def test_a_path_outside_the_packages_is_shown_as_given(tmp_path):
    assert shown_path(tmp_path / "records" / "h100") == str(tmp_path / "records" / "h100")
    assert shown_path("my_profiles/h100.json") == "my_profiles/h100.json"

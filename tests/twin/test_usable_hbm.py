"""s21mem (docs/notes/s21mem_rule.md): a GPU's memory capacity as a process is given it
(torch's total_memory), under both settings of the two switches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twin.core import specs
from twin.core.scenario import load_scenario
from twin.serving.simulate import kv_capacity_tokens, kv_token_bytes_per_gpu

ROOT = Path(__file__).resolve().parents[2]
R1_H200 = ROOT / "scenarios" / "r1_serve_h200.toml"


def recorded_total_memory_bytes(gpu_dirs: str) -> set[int]:
    """Every total_memory_bytes our env files of `gpu_dirs` (a glob under calibration/measurements) hold (env files
    of campaigns that did not record the capacity, e.g. s23align's GEMM bench, are not readings)."""
    files = [f for d in (ROOT / "calibration" / "measurements").glob(gpu_dirs) for f in d.rglob("env*.json")]
    readings = [env["total_memory_bytes"] for env in (json.loads(f.read_text()) for f in files)
                if "total_memory_bytes" in env]
    assert readings, gpu_dirs
    return set(readings)


@pytest.fixture
def switches(monkeypatch):
    def set_(measured: bool, inferred: bool) -> None:
        monkeypatch.setattr(specs, "ADOPT_USABLE_HBM", measured)
        monkeypatch.setattr(specs, "ADOPT_USABLE_HBM_INFERRED", inferred)
    return set_


def test_the_h200_capacity_is_what_every_h200_record_read(switches):
    """The catalog's usable figure is the one total_memory every H200 env file holds (all alike)."""
    (recorded,) = recorded_total_memory_bytes("h200*")
    switches(True, False)
    assert specs.get_gpu("h200").hbm_bytes == recorded
    assert "total_memory" in specs.get_gpu("h200").sources["hbm_bytes"]
    switches(False, False)
    assert specs.get_gpu("h200").hbm_bytes == 141e9   # the datasheet's "141 GB" read as 1e9 bytes


def test_the_h800_carries_the_h100_reading_only_under_its_own_switch(switches):
    (h100,) = recorded_total_memory_bytes("h100*")
    assert specs.get_gpu("h100").hbm_bytes == h100   # the H100 uses its reading in every setting
    switches(True, False)
    assert specs.get_gpu("h800").hbm_bytes == 80e9
    switches(False, True)
    assert specs.get_gpu("h800").hbm_bytes == h100
    assert specs.get_gpu("h200").hbm_bytes == 141e9


@pytest.mark.parametrize("measured", [False, True])
def test_r1_on_h200_kv_cache_takes_exactly_the_capacity_added(switches, measured):
    """The serving KV cache gets the capacity the switch adds, after the same weights, activations
    and runtime reserve (the reserve is not counted twice)."""
    switches(False, False)
    sc = load_scenario(R1_H200)
    base_tokens, base = kv_capacity_tokens(sc.model, specs.get_gpu("h200"), sc.serve)
    switches(measured, False)
    tokens, mem = kv_capacity_tokens(sc.model, specs.get_gpu("h200"), sc.serve)
    # weights, activations and the reserve do not depend on the capacity; only the capacity moves
    assert {k: v for k, v in mem.items() if k != "capacity"} == {k: v for k, v in base.items() if k != "capacity"}
    assert mem["capacity"] == specs.get_gpu("h200").hbm_bytes and mem["runtime_reserved"] == sc.serve.runtime_reserved_bytes
    added_bytes = (150_109_880_320 - 141e9) if measured else 0.0
    expected = added_bytes * sc.serve.kv_memory_frac / kv_token_bytes_per_gpu(sc.model, sc.serve) * sc.serve.attention_dp
    assert tokens - base_tokens == pytest.approx(expected, rel=1e-9, abs=1e-6)

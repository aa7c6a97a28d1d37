"""calibration.memo: inside a sharing() block a memoised function runs once per argument values and
hands out copies; outside one it runs every time. validate() opens one around its whole work."""

import dataclasses
from pathlib import Path

import calibration.pipeline as pipe
from calibration import memo
from calibration import records as rec
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives


def _counted():
    calls = []

    @memo.memoised
    def rates(folder: Path, gpu: str, scale: float = 1.0, extra: dict | None = None) -> dict:
        calls.append((folder, gpu, scale))
        return {"fwd": 2e-5 * scale, "seen": list(calls)}
    return rates, calls


def test_outside_a_block_every_call_runs():
    rates, calls = _counted()
    rates(Path("a"), "h100")
    rates(Path("a"), "h100")
    assert len(calls) == 2


def test_inside_a_block_one_run_per_argument_values(tmp_path):
    rates, calls = _counted()
    (tmp_path / "a").mkdir()
    with memo.sharing():
        first = rates(tmp_path / "a", "h100")
        # the same values however they are passed: by keyword, the default spelled out, the folder
        # reached through another path
        assert rates(folder=tmp_path / "a", gpu="h100", scale=1.0) == first
        assert rates(tmp_path / "a" / ".." / "a", "h100") == first
        assert len(calls) == 1
        rates(tmp_path / "a", "h200")
        rates(tmp_path / "a", "h100", 2.0)
        rates(tmp_path / "a", "h100", extra={"x": 1})
        assert len(calls) == 4
        with memo.sharing():                     # a nested block shares the outer one's results
            rates(tmp_path / "a", "h200")
        assert len(calls) == 4
    rates(tmp_path / "a", "h100")                # the block has ended: nothing kept
    assert len(calls) == 5


def test_a_kept_result_is_handed_out_as_a_copy():
    rates, _ = _counted()
    with memo.sharing():
        first = rates(Path("a"), "h100")
        first["fwd"] = -1.0
        first["seen"].append("edited")
        again = rates(Path("a"), "h100")
        assert again["fwd"] == 2e-5 and "edited" not in again["seen"]
        again["seen"].clear()
        assert rates(Path("a"), "h100")["seen"]


def test_profiles_equal_but_for_their_collectives_are_other_keys():
    """Profile.collectives is left out of ==, so a key of equality would serve one host's NCCL fit's
    result to another's; the key holds every field."""
    prof, _ = load_fitted_profile("h200", None)
    a = dataclasses.replace(prof, collectives={"all_reduce": {"latency_s": 1e-5, "bus_bytes_per_s": 1e11}})
    b = dataclasses.replace(prof, collectives={"all_reduce": {"latency_s": 2e-5, "bus_bytes_per_s": 1e11}})
    assert a == b
    fn = pipe.measured_host_s.__wrapped__
    assert memo.call_key(fn, ("f", "h200", a), {}) != memo.call_key(fn, ("f", "h200", b), {})
    assert memo.call_key(fn, ("f", "h200", a), {}) == memo.call_key(fn, ("f", "h200", dataclasses.replace(a)), {})


def test_a_folders_host_rates_are_solved_once_in_a_block_to_the_same_figures(monkeypatch):
    folder = rec.MEASUREMENTS_DIR / "h200x2"
    prof, _ = load_fitted_profile("h200", None)
    prof = with_measured_collectives(prof, folder)
    acc = pipe.measured_accumulate(folder, "h200")
    alone = pipe.measured_host_s(folder, "h200", prof, acc)
    solves = []
    real = pipe.host_rates
    monkeypatch.setattr(pipe, "host_rates", lambda *a, **k: solves.append(1) or real(*a, **k))
    with memo.sharing():
        kept = [pipe.measured_host_s(folder, "h200", prof, acc),
                pipe.measured_host_s(Path(str(folder)), "h200", with_measured_collectives(prof, folder), dict(acc))]
    assert kept == [alone, alone]
    assert len(solves) == 1


def test_module_state_moves_with_a_switch_a_table_item_or_a_function_and_not_with_a_cache(monkeypatch):
    """(s33pack) memo.module_state, the key of work kept across switch settings (serve_engine_fit.design)."""
    from calibration import serve_load_validation as slv
    from twin.serving import engine

    base, _ = memo.module_state()
    assert memo.module_state()[0] == base
    slv._FIRST_MET_CACHE[Path("no-such.json")] = {}          # a memo's own cache filled: the same key
    assert memo.module_state()[0] == base
    for patch in ((engine, "ADOPT_COLD_KERNELS", not engine.ADOPT_COLD_KERNELS),
                  (pipe, "stage_ops", lambda *a, **k: None)):
        with monkeypatch.context() as m:
            m.setattr(*patch)
            assert memo.module_state()[0] != base, patch[1]
        assert memo.module_state()[0] == base
    with monkeypatch.context() as m:
        m.setitem(pipe.STAGE_KERNEL_SCALE, "a card", {})   # a public table's item
        assert memo.module_state()[0] != base
    slv._FIRST_MET_CACHE.pop(Path("no-such.json"))


def test_design_is_kept_per_records_arguments_and_switches_and_handed_out_as_copies(monkeypatch, tmp_path):
    """serve_engine_fit.design computes once per (records, split, only, module_state); a switch set between two
    calls computes again; a just-written record (no settled stamp) or an open read_scope is never kept."""
    import os
    import time

    import pandas as pd

    from calibration import records_io
    from calibration import serve_engine_fit as sef
    from twin.serving import engine

    for name in sef.DESIGN_FILES:
        (tmp_path / name).write_text("a\n1\n")
    calls = []

    def fake(folder, split, only, records):
        calls.append((split, only, engine.ADOPT_COLD_KERNELS))
        return pd.DataFrame({"x": [float(len(calls))]}), {"n": len(calls)}
    monkeypatch.setattr(sef, "_design", fake)
    monkeypatch.setattr(sef, "_design_records", lambda folder, stamps: {})
    monkeypatch.setattr(sef, "_DESIGN_KEPT", type(sef._DESIGN_KEPT)())
    sef.design(tmp_path)
    sef.design(tmp_path)
    assert len(calls) == 2                                   # just written: no stamp, computed each time
    old = time.time() - 60
    for name in sef.DESIGN_FILES:
        os.utime(tmp_path / name, (old, old))
    first, meta = sef.design(tmp_path)
    first.loc[0, "x"] = -1.0
    meta["n"] = -1
    again, meta2 = sef.design(tmp_path)
    assert len(calls) == 3 and again.x.tolist() == [3.0] and meta2 == {"n": 3}
    sef.design(tmp_path, "holdout")
    sef.design(tmp_path, only={"r2", "r1"})
    sef.design(tmp_path, only={"r1", "r2"})
    assert len(calls) == 5
    with monkeypatch.context() as m:
        m.setattr(engine, "ADOPT_COLD_KERNELS", not engine.ADOPT_COLD_KERNELS)
        sef.design(tmp_path)
        sef.design(tmp_path)
    sef.design(tmp_path)
    assert len(calls) == 6 and calls[-1][2] is not engine.ADOPT_COLD_KERNELS
    with records_io.read_scope():
        sef.design(tmp_path)
    assert len(calls) == 7


def test_stage_ops_are_computed_once_in_a_block_and_their_lists_copied_out(monkeypatch):
    """(s33pack) pipeline.stage_ops inside a sharing() block: one computation per argument values (host terms and
    the clock's factors by value), the same ops as outside one, op lists a caller may extend without reaching the
    next caller."""
    from twin.core.specs import get_model

    prof, _ = load_fitted_profile("h200", None)
    spec, gpu = get_model("v2-lite-slice"), pipe.gpu_spec("h200")
    args = (spec, range(2), True, False, 1, 512, "bf16", gpu, prof)
    fresh = pipe.stage_ops(*args, host={"fwd": 2e-5})
    runs = []
    real = pipe._stage_ops
    monkeypatch.setattr(pipe, "_stage_ops", lambda *a, **k: runs.append(1) or real(*a, **k))
    with memo.sharing():
        first = pipe.stage_ops(*args, host={"fwd": 2e-5})
        first.f.append((1.0, 1.0))
        first.components["F"]["gemm"] = -1.0
        again = pipe.stage_ops(*args, host=dict({"fwd": 2e-5}))
        other = pipe.stage_ops(*args, host={"fwd": 3e-5})
        clocked = pipe.stage_ops(*args, host={"fwd": 2e-5}, clock={("fb", "gemm"): 0.9})
    assert len(runs) == 3
    assert again == fresh and again.components == fresh.components and other != fresh and clocked != fresh


def test_block_ops_are_kept_per_arguments_and_kernel_scale_context(monkeypatch):
    """(s33pack) whole_step.block_ops inside a sharing() block: once per argument values and kernel-scale context
    (predict.stage_kernel_scale: the same arguments under another context cost other ops), Eagers handed out with
    their own lists, the same ops as outside a block."""
    from calibration import predict, whole_step
    from twin.core.specs import get_model

    prof, _ = load_fitted_profile("h200", None)
    args = (get_model("v2-lite-slice"), 1, 1, 512, "bf16", pipe.gpu_spec("h200"), prof)
    scale = {("fb", "gemm"): 0.5}
    fresh = whole_step.block_ops(*args)
    with predict.stage_kernel_scale(scale):
        scaled = whole_step.block_ops(*args)
    runs = []
    real = whole_step._block_ops
    monkeypatch.setattr(whole_step, "_block_ops", lambda *a, **k: runs.append(1) or real(*a, **k))
    with memo.sharing():
        f, b = whole_step.block_ops(*args)
        f.ops.append((1.0, 1.0))
        f.component_s["gemm"] = -1.0
        again = whole_step.block_ops(*args)
        with predict.stage_kernel_scale(scale):
            under = whole_step.block_ops(*args)
            whole_step.block_ops(*args)
    assert len(runs) == 2
    assert [e.ops for e in again] == [e.ops for e in fresh] and again[0].component_s == fresh[0].component_s
    assert [e.ops for e in under] == [e.ops for e in scaled] != [e.ops for e in fresh]

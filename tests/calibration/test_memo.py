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

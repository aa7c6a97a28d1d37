"""Every `python -m calibration.<module>` script (s25walk, docs/notes/s25walk.md D1-D3): `--help` prints its
usage under the name it is run by and does nothing else; a folder or file the user names that is missing or
garbled is refused in one line with exit 2, no traceback.

Until s25walk about half the scripts read sys.argv by hand: `--help` was read as a folder or a GPU
(`FileNotFoundError: '--help/ep.csv'`, `IndexError`), or ignored (block_host_speed ran its comparison,
kernel_map and serve_engine_fit rewrote their package data), and the argparse ones printed `attn_small.py`
as their program. The scripts are called in this process (`main(argv)`), not as subprocesses: one import
each, shared with the other calibration tests."""

import importlib
import re
from pathlib import Path

import pytest

from calibration import entry
from calibration import records as rec

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (ROOT / "calibration").glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8"))


def test_the_scripts_are_found():
    # the walk's count (62): a script dropped or added moves it, on purpose
    assert len(SCRIPTS) >= 60 and {"step_probe", "ep_phases", "prereg", "serve_eager_host", "trace"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_the_usage_and_runs_nothing(name, capsys):
    module = importlib.import_module(f"calibration.{name}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"usage: python -m calibration.{name} "), out.out[:200]
    assert out.err == ""


def test_an_unknown_argument_is_refused_before_any_work(capsys):
    """A script that takes no argument ran its whole computation whatever followed it (step_probe: minutes)."""
    step_probe = importlib.import_module("calibration.step_probe")
    with pytest.raises(SystemExit) as exc:
        step_probe.main(["h100x2/s21host2"])
    assert exc.value.code == 2
    assert "error: arguments in python -m calibration.step_probe: got 'h100x2/s21host2'" in capsys.readouterr().err


def test_every_scripts_argparse_refusal_is_one_named_line(capsys):
    """s27walk round 3: argparse printed the usage (2-6 lines) above its error in every script; now one line, exit 2,
    as twin's (calibration.entry.JudgeParser / OneLineParser). --help is unchanged (the test above)."""
    long = {}
    for name in SCRIPTS:
        module = importlib.import_module(f"calibration.{name}")
        try:
            rc = module.main(["--no-such-option"])
        except SystemExit as exc:
            rc = exc.code
        err = capsys.readouterr().err
        if rc != 2 or not re.fullmatch(r"error: [^\n]*(got|arguments)[^\n]*\n", err):
            long[name] = (rc, err[:200])
    assert not long, long
    async_tp = importlib.import_module("calibration.async_tp")   # a bad value: named with what is allowed
    with pytest.raises(SystemExit) as exc:
        async_tp.main(["--gpus", "two"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: --gpus: got 'two'; allowed: an integer (GPUS)\n"


def _garbled(tmp_path: Path) -> Path:
    """A folder whose CSVs (every name the scripts below read) hold two garbage lines."""
    folder = tmp_path / "garbled"
    folder.mkdir()
    for name in ("attention", "ep", "ep_kernels", "pipeline_ops", "pipeline_step", "long_attn", "gl_layer", "gl_ops"):
        (folder / f"{name}.csv").write_bytes(b"\x00\x01garbage\n1,2\n")
    return folder


# (script, arguments after the folder, the argument its refusal names)
# (ep_fresh and ep_phases refuse alike, after seconds of the committed host folder's inputs: not here)
FOLDER_SCRIPTS = [("ep_layer_kernels", ["h100"], "FOLDER"), ("gemm_in_layer", [], "FOLDER"), ("attn_small", [], "CAMPAIGN"),
                  ("long_attention", [], "FOLDER"), ("ep_postsync", ["h100"], "RUN_FOLDER")]


@pytest.mark.parametrize("name, rest, option", FOLDER_SCRIPTS)
def test_a_missing_or_garbled_folder_is_refused_in_one_line(name, rest, option, tmp_path, capsys):
    module = importlib.import_module(f"calibration.{name}")
    for folder in (_garbled(tmp_path), tmp_path / "missing"):
        try:
            rc = module.main([str(folder), *rest])
        except SystemExit as exc:
            rc = exc.code
        assert rc == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") <= 3, err
        assert re.search(rf"(error: {option}: got |argument {option}: got '|{option.lower()}.*not found|error: .*{folder.name})",
                         err), err


def test_a_gpu_without_records_is_refused_naming_those_with():
    ep_postsync = importlib.import_module("calibration.ep_postsync")
    with pytest.raises(SystemExit) as exc:
        ep_postsync.main(["h100x2", "h999"])
    assert exc.value.code == 2


class _Unprintable:
    """A cell whose text cannot be made: the CSV write stops at its row, as a killed process stops."""

    def __str__(self) -> str:
        raise RuntimeError("stopped mid-write")


def test_a_pre_registration_stopped_mid_write_leaves_no_file_to_block_the_next(tmp_path):
    """D9: write_registered wrote its CSV in place; a write stopped part-way left a partial predictions file, and the
    rule 'pre-registered predictions are never rewritten' then refused every later write."""
    import pandas as pd

    prereg = importlib.import_module("calibration.prereg")
    path = tmp_path / "predictions.csv"
    rows = pd.DataFrame({"case": ["a"] * 3000 + ["b"], "predicted_s": [0.1] * 3000 + [_Unprintable()]})
    with pytest.raises(RuntimeError, match="stopped mid-write"):
        prereg.write_registered(path, lambda: rows, allow_dirty=True)
    assert not path.exists() and not list(tmp_path.iterdir())
    written = prereg.write_registered(path, lambda: rows.iloc[:2].copy(), allow_dirty=True)
    assert path.read_text().splitlines()[0] == "case,predicted_s,code_commit,predicted_at_utc" and len(written) == 2


# ---- --records DIR, every script (s28prod) ----------------------------------------------------------------------

# the arguments a script needs before it reads anything (a folder or file of the user's: here empty ones)
_ARGS = {"attn_small": ["FOLDER"], "cp_traces": ["FOLDER"], "deepep_ll_fit": ["CSV"], "ep_host_compare": ["FOLDER"],
         "ep_phases": ["FOLDER"], "ep_tail": ["FOLDER"], "host_probe": ["CSV", "--gpu", "h100"],
         "long_attention": ["FOLDER"], "mla_rounds": ["CSV", "--gpu", "h100"], "mla_timeline": ["FOLDER"],
         "mlm_sustained": ["FOLDER"], "torch_cp": ["FOLDER"], "prereg": ["compare"], "prereg_pp": ["compare"],
         "prereg_pp4": ["compare"], "prereg_serve": ["compare"], "idle_terms": ["replay"], "serving_trace": ["compare"],
         "power_cap": ["CSV"], "copy_load": ["CSV"], "ep_bwd_run": ["FOLDER", "h100"], "ep_forward_host": ["judge"],
         "ep_fresh": ["FOLDER"], "ep_layer_kernels": ["FOLDER", "h100"], "ep_pace_during": ["judge"],
         "ep_postsync": ["FOLDER", "h100"], "ep_probe_rate": ["judge"], "ep_sort_host": ["judge"],
         "gemm_in_layer": ["FOLDER"], "pipe_op_terms": ["guards"], "serve_clustered_pauses": ["FOLDER"],
         "serve_stall_causes": ["FOLDER"], "te_ring_check": ["FOLDER"], "fit_inputs": ["--out", "OUT"],
         "refit_judge": ["--before", "CSV", "--after", "CSV", "--candidate", "x"]}
# read from calibration/measurements whatever --records says, on purpose: the pre-registered predictions (written
# by the committed code before the records they predict existed: a fresh root's rows are judged against them), and
# fit_inputs, which restores a manifest's records from the committed tree and its history into --out
_COMMITTED_ON_PURPOSE = {"fit_inputs"}
_PREREG = rec.MEASUREMENTS_DIR / "prereg"


def _package_data() -> dict[str, bytes]:
    """twin/data's files (profiles and tables, ~0.7 MB) and calibration's judgement JSONs, by path."""
    files = [p for p in (ROOT / "twin" / "data").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += sorted((ROOT / "calibration").glob("*.json"))
    return {str(p): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def records_roots(tmp_path_factory):
    """(an empty folder, a records root of empty <gpu>/ folders, {placeholder: a user's folder or file})."""
    base = tmp_path_factory.mktemp("records_roots")
    empty, root, folder = base / "empty", base / "root", base / "folder"
    for path in (empty, folder):
        path.mkdir()
    for gpu in ("h100", "h200", "h100x2", "h200x2", "h100x4", "h200x4", "prereg"):
        (root / gpu).mkdir(parents=True)
    (folder / "x.csv").write_text("a,b\n1,2\n")
    return empty, root, {"FOLDER": str(folder), "CSV": str(folder / "x.csv"), "OUT": str(base / "out")}


def _run(module, argv: list[str]) -> object:
    try:
        return module.main(argv)
    except SystemExit as exc:
        return exc.code
    except Exception as exc:   # noqa: BLE001 - a root without the script's records may end in its own error: reported
        return f"{type(exc).__name__}: {str(exc)[:120]}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_reads_the_records_root_records_names(name, records_roots, capsys, monkeypatch):
    """s28prod (s27walk's leftover: 36 scripts took no --records; others took it and still read the committed tree
    through their own paths or defaults): every script takes --records DIR (calibration.entry.JudgeParser, one place);
    a folder holding no folder is refused before any work, one line naming it, exit 2; and given a records root of
    empty <gpu>/ folders, the script asks for no record of calibration/measurements (a read_scope that allows none
    sees every record it asks for; the pre-registered predictions aside), rewrites no package data and ends in an exit
    status, not a reader's traceback (calibration.entry.script)."""
    from calibration import records_io

    monkeypatch.setattr(rec, "_ROOT", rec._ROOT)   # a run sets the process's root: restored after the test
    empty, root, places = records_roots
    module = importlib.import_module(f"calibration.{name}")
    args = [places.get(a, a) for a in _ARGS.get(name, [])]
    assert _run(module, [*args, "--records", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --records: got {str(empty)!r}; allowed: {entry.RECORDS_EXPECTED} (it holds no folder)\n", err
    if name in _COMMITTED_ON_PURPOSE:
        return
    before = _package_data()
    with records_io.read_scope(frozenset()) as scope:
        status = _run(module, [*args, "--records", str(root)])
    capsys.readouterr()
    committed = sorted(Path(k).relative_to(rec.MEASUREMENTS_DIR).as_posix() for k in scope.refused
                       if Path(k).is_relative_to(rec.MEASUREMENTS_DIR) and not Path(k).is_relative_to(_PREREG))
    assert rec.records_root() == root
    assert _package_data() == before, f"{name} rewrote package data from an empty records root (exit {status})"
    assert not committed, f"{name} (exit {status}) read committed records under --records: {committed[:5]}"
    # what it did not find ends in an exit status (one line naming the root: calibration.entry.script), no traceback
    assert status is None or isinstance(status, int), f"{name}: {status}"


def test_a_json_tail_writes_the_packed_file_and_prints_the_same_text(tmp_path, capsys):
    """entry.write_json / print_json (s33dedup): indent 1, keys sorted only when asked, `default` for what JSON lacks;
    the file (X.json.xz, records_io.write_json_text) holds the printed text and a newline; no path writes nothing."""
    from calibration.records_io import read_json_text
    out = {"b": 1.5, "a": [1, 2], "c": Path("x")}
    assert entry.print_json(tmp_path / "j.json", out, sort_keys=True, default=str) == 0
    printed = capsys.readouterr().out
    assert printed == '{\n "a": [\n  1,\n  2\n ],\n "b": 1.5,\n "c": "x"\n}\n'
    assert read_json_text(tmp_path / "j.json") == printed and (tmp_path / "j.json.xz").is_file()
    assert entry.write_json(None, {"b": 1, "a": 2}) == '{\n "b": 1,\n "a": 2\n}' and not capsys.readouterr().out
    with pytest.raises(TypeError):
        entry.write_json(tmp_path / "k.json", {"c": Path("x")})
    assert list(tmp_path.iterdir()) == [tmp_path / "j.json.xz"]

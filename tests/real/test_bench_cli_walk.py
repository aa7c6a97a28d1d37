"""`python -m real.bench` refuses what it cannot run before any work (s25walk D10, docs/notes/s25walk.md): argparse's
one line and exit 2, no env.json written."""

import re

import pytest

from real.bench.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--only", "gemm,bogus"], r"argument --only: got 'bogus'; allowed: a comma list of gemm,grouped,"),
    (["--only", "memory,ep"], r"argument --only: ep run on 2 or more ranks: torchrun --standalone --nproc-per-node 2 "
                              r"-m real.bench --out DIR --only ep"),
    (["--only", "memory", "--budget-s", "-5"], r"argument --budget-s: got -5.0; allowed: a positive number of seconds"),
    (["--only", "memory", "--min-time-s", "nan"], r"argument --min-time-s: got nan; allowed: a positive number"),
])
def test_what_cannot_run_is_refused_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "out"), "--quick", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()

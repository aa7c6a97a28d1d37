"""calibration/tree_size.py: the tracked tree stays under the warning line below the GPU tool's 64 MiB copy
cap (tree + carry), and over it the report names the records to pack and how."""

import gzip
import json
import subprocess

import pytest

from calibration import tree_size as ts
from calibration.records_io import csv_bytes, load_trace, read_json_text

MiB = 1024 * 1024


def test_the_tracked_tree_stays_under_the_warning_line():
    """Fails before a campaign is refused: the message says how large the tree is and what to pack."""
    ok, text = ts.report(ts.tracked_sizes())
    assert ok, text


def test_over_the_line_the_report_names_the_largest_packable_records_first():
    m = ts.MEASUREMENTS
    sizes = {m + "h100/a/serve_iterations.csv.gz": 3 * MiB, m + "h100/a/log.txt": 4 * MiB, m + "h100/a/env.json": 9 * MiB,
             m + "h100/b/gemm.csv": 5 * MiB, m + "h100/b/tiny.csv": 100, m + "prereg/x_predictions.csv": 7 * MiB,
             m + "h100/c/ops.csv.xz": 2 * MiB, "twin/step.py": 30 * MiB}
    ok, text = ts.report(sizes, warn_bytes=40 * MiB)
    assert not ok and "--pack" in text
    named = [line.split()[-1] for line in text.splitlines() if line.startswith("  ")]
    # largest first; no pre-registration, .xz, JSON or tiny file
    assert named == [m + "h100/b/gemm.csv", m + "h100/a/log.txt", m + "h100/a/serve_iterations.csv.gz"]
    ok, text = ts.report(sizes, warn_bytes=100 * MiB)
    assert ok and len(text.splitlines()) == 1


def test_pack_cli_packs_every_file_or_none(tmp_path, capsys):
    rows = "a,b\n" + "1,2\n" * 500
    (tmp_path / "r.csv").write_text(rows)
    (tmp_path / "s.csv").write_text(rows)
    assert ts.main(["--pack", str(tmp_path / "r.csv"), str(tmp_path / "env.json")]) == 2
    assert "env.json" in capsys.readouterr().err
    assert (tmp_path / "r.csv").read_text() == rows            # nothing packed: one name was bad
    assert ts.main(["--pack", str(tmp_path / "r.csv"), str(tmp_path / "s.csv")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv.xz", "s.csv.xz"]
    assert csv_bytes(tmp_path / "r.csv") == rows.encode()


def test_pack_tracked_packs_and_stages_only_what_packable_names(tmp_path):
    """A tmp git repository: the 4 KiB CSV and log and the Chrome traces (gzipped and plain) are packed and
    staged under their .xz names; the pre-registration, the small CSV, the env JSON (not a trace) and the
    untracked CSV stay; a record beside its .xz refuses all."""
    m = tmp_path / ts.MEASUREMENTS
    rows = "a,b\n" + "1,2\n" * 1200
    trace = json.dumps({"traceEvents": [{"ph": "X", "name": f"k{i}", "ts": i, "dur": 1} for i in range(200)]})
    env = json.dumps({"rows": list(range(2000))})
    for name, text in (("h100/r.csv", rows), ("h100/log.txt", rows), ("prereg/p.csv", rows), ("h100/s.csv", "a\n"),
                       ("h100/t/pipeline_trace_1f1b.json", trace), ("h100/env.json", env)):
        (m / name).parent.mkdir(parents=True, exist_ok=True)
        (m / name).write_text(text)
    big = json.dumps({"traceEvents": [{"ph": "X", "name": f"k{i * 7919 % 10007}", "ts": i * 1.37, "dur": i % 13}
                                      for i in range(2000)]})
    (m / "h100/t/trace_rank0.json.gz").write_bytes(gzip.compress(big.encode()))   # as a profiler writes it
    assert (m / "h100/t/trace_rank0.json.gz").stat().st_size >= ts.PACK_HINT_MIN_BYTES
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    (m / "h100" / "new.csv").write_text(rows)                     # not tracked: not packed
    done = ts.pack_tracked(tmp_path)
    packed = ("h100/log.txt.xz", "h100/r.csv.xz", "h100/t/pipeline_trace_1f1b.json.xz", "h100/t/trace_rank0.json.xz")
    assert sorted(new for _, new in done) == [ts.MEASUREMENTS + n for n in packed]
    staged = subprocess.run(["git", "ls-files"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert sorted(staged) == sorted(ts.MEASUREMENTS + n for n in (*packed, "h100/s.csv", "prereg/p.csv", "h100/env.json"))
    assert csv_bytes(m / "h100" / "r.csv") == rows.encode()
    assert load_trace(m / "h100/t/trace_rank0.json.gz") == json.loads(big)   # read by the name it was written under
    assert csv_bytes(m / "h100/t/trace_rank0.json.xz") == big.encode()
    subprocess.run(["git", "add", "--", ts.MEASUREMENTS + "h100/new.csv"], cwd=tmp_path, check=True)
    (m / "h100" / "new.csv.xz").write_text("x")                   # a packed copy beside it: refused, nothing packed
    with pytest.raises(ValueError, match="new.csv.xz is already there"):
        ts.pack_tracked(tmp_path)
    assert (m / "h100" / "new.csv").read_text() == rows


def test_pack_tracked_packs_the_json_records_of_calibration_at_any_size(tmp_path):
    """(s33pack) A branch's plain judgement at the top of calibration/ (small or not) is packed and staged as
    X.json.xz, the same text by its X.json name; a JSON in a subfolder of calibration/ and a pre-registration stay."""
    cal = tmp_path / "calibration"
    j = json.dumps({"adopt": False, "command": "python -m calibration.s99x judge"}, indent=1) + "\n"
    for name, text in (("s99x_judgement.json", j), ("s99x_fit.json", json.dumps({"x": list(range(900))})),
                       ("data/table.json", "{}"), ("measurements/prereg/s99x_predictions.json", j)):
        (cal / name).parent.mkdir(parents=True, exist_ok=True)
        (cal / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    done = ts.pack_tracked(tmp_path)
    assert sorted(new for _, new in done) == ["calibration/s99x_fit.json.xz", "calibration/s99x_judgement.json.xz"]
    staged = subprocess.run(["git", "ls-files"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert sorted(staged) == ["calibration/data/table.json", "calibration/measurements/prereg/s99x_predictions.json",
                              "calibration/s99x_fit.json.xz", "calibration/s99x_judgement.json.xz"]
    assert read_json_text(cal / "s99x_judgement.json") == j

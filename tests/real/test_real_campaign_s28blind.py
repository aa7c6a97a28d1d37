"""real/campaigns/s28blind.sh (session s28blind): its cases are the ones calibration.s28blind predicted, one two-GPU
part runs as a CPU dry run on two gloo ranks (the tiny model), and it stops cleanly without two GPUs."""

import csv
import re
from pathlib import Path

from calibration import s28blind
from real.bench.records import PIPELINE_STEP_COLS
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s28blind.sh"


def _var(text: str, name: str) -> str:
    return re.search(rf'^{name}="([^"]+)"', text, re.M)[1]


def test_campaign_cases_are_the_preregistered_ones():
    """TRAIN, SERVE, EP, PP and the two-GPU counts and schedules of the script are calibration.s28blind's."""
    text = SCRIPT.read_text()
    train = [(m, int(s), tuple(int(b) for b in bs.split(","))) for m, s, bs in
             (c.split(":") for c in _var(text, "TRAIN").split(";"))]
    assert tuple(train) == s28blind.TRAIN_CASES
    serve = [(m, int(p), int(g), tuple(map(int, a.split(","))), tuple(map(int, b.split(",")))) for m, p, g, a, b in
             (c.split(":") for c in _var(text, "SERVE").split(";"))]
    assert tuple(serve) == s28blind.SERVE_CASES
    for var, cases in (("EP", s28blind.EP_CASES), ("PP", s28blind.PP_CASES)):
        assert tuple((c.split(":")[0], int(c.split(":")[1])) for c in _var(text, var).split()) == cases
    assert re.search(r"--ep-microbatches (\S+)", text)[1] == ",".join(map(str, s28blind.EP_MICROBATCHES))
    assert re.search(r"--microbatches (\S+)", text)[1] == ",".join(map(str, s28blind.PP_MICROBATCHES))
    assert re.search(r"^schedules=(\S+)", text, re.M)[1] == ",".join(s28blind.SCHEDULES)
    assert text.count("--seq-len 4096") == 2 and s28blind.SEQ_LEN_2GPU == 4096
    # every part's timeout: <= 320 s in all (train 90, serve 60, two EP parts, two PP parts)
    limits = [int(x) for x in re.findall(r'part \S+ (\d+) ', text)]
    assert sum(limits[:2]) + 2 * sum(limits[2:]) <= 320


def test_s28blind_pp_part_cpu_dry_run(tmp_path):
    """One PP part (llama's; the others run the same command) on two gloo ranks, DualPipeV at 4 and 6 micro-batches:
    pipeline_step rows with the bench's environment columns and each rank's ops (~17 s wall: two ranks and the parent)."""
    d, log = dry_run("s28blind", tmp_path, 150, S28BLIND_PARTS="llama3-8b-slice-pp")
    assert "s28blind part llama3-8b-slice-pp rc=0" in log, log[-2000:]
    assert "part train" not in log and "part phi35moe-slice-pp" not in log   # parts not asked for do not run
    with (d / "pp" / "llama3-8b-slice" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert sorted((r["bench"], r["schedule"], r["pp"], r["num_microbatches"]) for r in rows) == [
        ("pipeline_step", "dualpipev", "2", str(n)) for n in s28blind.PP_MICROBATCHES]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    with (d / "pp" / "llama3-8b-slice" / "pipeline_ops.csv").open(newline="") as f:
        assert {r["rank"] for r in csv.DictReader(f)} == {"0", "1"}
    assert "CUDA_VISIBLE_DEVICES=" in (d / "host_s28blind.txt").read_text() and "s28blind done" in log


def test_s28blind_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s28blind", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "train").exists()

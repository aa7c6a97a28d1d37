"""The pipeline campaigns' scripts on CPU: real/campaigns/s9ep.sh (EP2, PP2, EP2 again on two gloo
ranks) and s10pp.sh (PP2 x EP2 on four, unpinned then pinned), tiny model. A module of their own,
apart from tests/real/test_real_pipeline.py: each dry run is minutes of CI's two cores, and
`pytest -n 2 --dist loadfile` runs a module on one worker, so the two halves can run side by side."""


def test_s9ep_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s9ep.sh's 2-GPU part (EP2, PP2, EP2 again) on two gloo ranks, tiny model,
    one schedule and count each: every step row and every op row with its split, every op row
    with the host's issue marks, each part's rows kept in its folder."""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    tiny = ("--tiny --schedules zb1p --microbatches 4 --ep-microbatches 2 --holdout 4 --ep-holdout 2 "
            "--trace-microbatches 4 --warmup 1 --reps-min 2 --reps-max 2")
    env = {**os.environ, "PY": sys.executable, "S9EP_ARGS": tiny, "S9EP_NPROC": "2",
           "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "S9EP_TIMEOUT_SCALE": "4"}
    subprocess.run(["bash", str(repo / "real/campaigns/s9ep.sh"), str(tmp_path)], cwd=repo, env=env,
                   check=True, capture_output=True, timeout=400)
    d = tmp_path / "s9ep"
    log = (d / "s9ep.log").read_text()
    for part in ("ep2", "pp2", "ep2r2"):
        assert f"s9ep part {part} rc=0" in log, log[-2000:]

    def rows(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    steps = rows(d / "x2" / "pipeline_step.csv")
    assert [(r["bench"], r["split"]) for r in steps] == [("ep_step", "holdout"), ("pipeline_step", "holdout")]
    ops = rows(d / "x2" / "pipeline_ops.csv")
    assert {o["split"] for o in ops} == {"holdout"} and {o["pp"] for o in ops} == {"1", "2"}
    assert all(float(o["host_start_s"]) <= float(o["host_end_s"]) for o in ops)
    assert [r["bench"] for r in rows(d / "x2_round2" / "pipeline_step.csv")] == ["ep_step"]


def test_s10pp_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s10pp.sh's two 4-GPU parts (PP2 x EP2 unpinned, then with each rank's main
    thread pinned) on four gloo ranks, tiny model, DualPipe at one count: step and op rows with
    their split and host marks in each part's folder, the routing loads of every rank's gates,
    each rank's pinned CPUs in the pinned part's environment record (none in the unpinned one)."""
    import csv
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    tiny = ("--tiny --schedules dualpipe --microbatches 4 --holdout 4 --trace-microbatches 4 --warmup 1 "
            "--reps-min 2 --reps-max 2 --budget-s 600")
    env = {**os.environ, "PY": sys.executable, "S10PP_ARGS": tiny, "S10PP_NPROC": "4", "S10PP_TIMEOUT_SCALE": "6",
           "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(repo / "real/campaigns/s10pp.sh"), str(tmp_path)], cwd=repo, env=env,
                   check=True, capture_output=True, timeout=900)
    d = tmp_path / "s10pp"
    log = (d / "s10pp.log").read_text()
    for part, folder in (("unpinned", "x4"), ("pinned", "x4_pinned")):
        assert f"s10pp part {part} rc=0" in log, log[-2000:]
        with open(d / folder / "pipeline_step.csv", newline="") as f:
            steps = list(csv.DictReader(f))
        assert [(r["schedule"], r["pp"], r["ep"], r["num_gpus"], r["split"]) for r in steps] == [
            ("dualpipe", "2", "2", "4", "holdout")]
        with open(d / folder / "pipeline_ops.csv", newline="") as f:
            ops = list(csv.DictReader(f))
        assert {o["rank"] for o in ops} == {"0", "1", "2", "3"} and {o["split"] for o in ops} == {"holdout"}
        assert all(0 <= float(o["host_start_s"]) <= float(o["host_end_s"]) for o in ops)
        pinned = json.loads((d / folder / "env_pipeline_pp2ep2.json").read_text())["pinned_cpus_by_rank"]
        assert len(pinned) == 4 and all(bool(p) == (part == "pinned") for p in pinned)
        # the routing loads: every rank's tokens per MoE gate and expert in a step; DualPipe's two
        # chunks each carry half the micro-batches, each token to top_k experts
        with open(d / folder / "pipeline_routing.csv", newline="") as f:
            routing = list(csv.DictReader(f))
        sums: dict = {}
        for r in routing:
            key = (r["rank"], r["chunk"], r["layer"])
            sums[key] = sums.get(key, 0.0) + float(r["tokens_per_step"])
        tokens_per_chunk = 4 // 2 * 2 * 16 * 2          # micro-batches x sequences x seq len x top_k (tiny)
        assert {k[0] for k in sums} == {"0", "1", "2", "3"} and {k[1] for k in sums} == {"0", "1"}
        assert set(sums.values()) == {tokens_per_chunk}

"""tests/torchrun_forked.py, the torchrun the campaigns' CPU dry runs run (tests/campaigns.py FORKED_PY):
its ranks see what torchrun's ranks see (the environment torchrun adds, argv, sys.path[0], __main__,
a gloo group across them), a failing rank fails the run and stops its siblings, an option it does
not implement is refused, and anything but `-m torch.distributed.run` runs the interpreter as is."""

import json
import os
import subprocess
import sys
import time

from tests.campaigns import FORKED_PY

RANK_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(total)
added = {k: v for k, v in os.environ.items() if k not in json.loads(os.environ["LAUNCHER_KEYS"])}
with open(os.path.join(sys.argv[1], f"{dist.get_rank()}.json"), "w") as f:
    json.dump({"env": added, "sum": total.item(), "argv": sys.argv, "path0": sys.path[0], "name": __name__}, f)
dist.destroy_process_group()
"""

# values a torchrun sets afresh each run, or sets and the stand-in does not (its docstring says why)
DIFFERENT = {"MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_ERROR_FILE"}


def _launch(python: str, cwd, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["LAUNCHER_KEYS"] = json.dumps(sorted([*env, "LAUNCHER_KEYS"]))
    return subprocess.run([python, "-m", "torch.distributed.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ranks(folder) -> list[dict]:
    return [json.loads((folder / f"{r}.json").read_text()) for r in range(2)]


def test_forked_ranks_see_what_torchrun_ranks_see(tmp_path):
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)   # run as a module, as every campaign runs its ranks
    for name, python in (("torchrun", sys.executable), ("forked", FORKED_PY)):
        (tmp_path / name).mkdir()
        done = _launch(python, tmp_path, "--standalone", "--nproc-per-node", "2", "-m", "rank", name)
        assert done.returncode == 0, done.stderr[-3000:]
    real, forked = _ranks(tmp_path / "torchrun"), _ranks(tmp_path / "forked")
    for rank, (want, got) in enumerate(zip(real, forked)):
        assert want["sum"] == got["sum"] == 3.0   # one gloo group across both ranks
        script = str(tmp_path / "rank.py")
        assert (want["argv"], want["path0"], want["name"]) == ([script, "torchrun"], str(tmp_path), "__main__")
        assert (got["argv"], got["path0"], got["name"]) == ([script, "forked"], str(tmp_path), "__main__")
        want_env = {k: v for k, v in want["env"].items() if k not in DIFFERENT}
        got_env = {k: v for k, v in got["env"].items() if k not in DIFFERENT}
        assert got_env == want_env and want_env["RANK"] == want_env["LOCAL_RANK"] == str(rank)
        assert set(got["env"]) - set(want["env"]) == set()
        assert got["env"]["MASTER_PORT"].isdigit()


def test_a_failing_rank_fails_the_run_and_stops_the_others(tmp_path):
    (tmp_path / "fail.py").write_text(
        "import os, sys, time\nif os.environ['RANK'] == '1':\n    sys.exit(3)\ntime.sleep(60)\n")
    start = time.monotonic()
    done = _launch(FORKED_PY, tmp_path, "--standalone", "--nproc-per-node", "2", "fail.py", timeout=50)
    assert done.returncode == 1 and time.monotonic() - start < 50


def test_options_it_does_not_implement_are_refused(tmp_path):
    done = _launch(FORKED_PY, tmp_path, "--nnodes", "2", "--nproc-per-node", "2", "-m", "json.tool")
    assert done.returncode == 2 and "nnodes not implemented" in done.stderr
    bad = _launch(FORKED_PY, tmp_path, "--no-such-option", "x.py")   # torchrun's parser: exit 2
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_other_commands_run_the_interpreter_unchanged(tmp_path):
    done = subprocess.run([FORKED_PY, "-c", "import sys; print(sys.executable)"], capture_output=True,
                          text=True, env=os.environ, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == sys.executable

"""tests/torchrun_forked.py, the torchrun the campaigns' CPU dry runs run (tests/campaigns.py FORKED_PY):
its ranks see what torchrun's ranks see (the environment torchrun adds, argv, sys.path[0], __main__,
a gloo group across them), a failing rank fails the run and stops its siblings, a signal to it ends its
ranks, an option it does not implement is refused, `-m real.*` runs through tests/python_frozen.py (as
`python -m` runs it, torch's heap frozen first), and anything else runs the interpreter as is."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def _running(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie waiting for its reaper has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_signal_to_the_launcher_alone_ends_its_ranks(tmp_path):
    """torchrun's agent ends its workers when it is signalled; a `timeout` signals the whole process
    group, but a SIGTERM to the launcher alone must not leave ranks running (holding the caller's pipes)."""
    (tmp_path / "wait.py").write_text("import os, time\nopen(f\"{os.environ['RANK']}.pid\", 'w').write(str(os.getpid()))\n"
                                      "time.sleep(60)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([FORKED_PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                 "wait.py"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"{r}.pid").exists() for r in range(2)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)   # each rank wrote its pid file in full
        ranks = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
        launcher.terminate()
        assert launcher.wait(timeout=30) == -15
        deadline = time.monotonic() + 20
        while any(_running(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in ranks)
    finally:
        launcher.kill()


def test_options_it_does_not_implement_are_refused(tmp_path):
    done = _launch(FORKED_PY, tmp_path, "--nnodes", "2", "--nproc-per-node", "2", "-m", "json.tool")
    assert done.returncode == 2 and "nnodes not implemented" in done.stderr
    bad = _launch(FORKED_PY, tmp_path, "--no-such-option", "x.py")   # torchrun's parser: exit 2
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_other_commands_run_the_interpreter_unchanged(tmp_path):
    done = subprocess.run([FORKED_PY, "-c", "import sys; print(sys.executable)"], capture_output=True,
                          text=True, env=os.environ, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == sys.executable


PROBE_MODULE = """
import gc, json, os, sys
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "frozen": gc.get_freeze_count() > 0}))
if sys.argv[1] == "raise":
    raise ValueError("probe")
sys.exit(int(sys.argv[1]))
"""


def test_python_frozen_runs_a_module_as_python_m_does(tmp_path):
    """tests/python_frozen.py (what FORKED_PY runs for `-m real.*`): the module sees the argv,
    sys.path[0] and __name__ of `python -m`, its exit status and a raised error's traceback and status
    are `python -m`'s; only the heap it starts with is frozen."""
    (tmp_path / "probe.py").write_text(PROBE_MODULE)
    frozen_main = str(Path(__file__).resolve().parents[1] / "python_frozen.py")
    for arg, status in (("3", 3), ("raise", 1)):
        plain = subprocess.run([sys.executable, "-m", "probe", arg], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
        frozen = subprocess.run([sys.executable, frozen_main, "probe", arg], cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert plain.returncode == frozen.returncode == status, frozen.stderr[-2000:]
        want, got = json.loads(plain.stdout), json.loads(frozen.stdout)
        assert want == {"argv": [str(tmp_path / "probe.py"), arg], "path0": str(tmp_path), "name": "__main__",
                        "frozen": False}
        assert got == {**want, "frozen": True}
        if arg == "raise":
            assert "ValueError: probe" in plain.stderr and "ValueError: probe" in frozen.stderr


def test_forked_py_runs_real_modules_through_python_frozen(tmp_path):
    done = subprocess.run([FORKED_PY, "-m", "real.no_such_module"], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, env=os.environ, timeout=60)
    assert done.returncode == 1 and "python_frozen.py" in done.stderr and "real.no_such_module" in done.stderr

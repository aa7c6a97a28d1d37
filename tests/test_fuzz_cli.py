"""The whole `twin` command, fuzzed in-process (issue 16): mutated scenarios, overrides, options and
output paths through step, replay, serve and plan end in exit 0, 2 or 3, never in an exception;
every refusal is one line naming the field or option; --json is strict JSON.

Inputs come from benchmarks/fuzz_cli.py's generator (`make_case`), driven here by hypothesis's
random source so a failure shrinks and replays; the benchmark runs 10,000 of them and prints the
counts. Valid inputs use small scenarios (a 3-layer model on 8 GPUs), so ~150 examples take about a
minute.
"""

import contextlib
import importlib.util
import random
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

# imported here, once: a valid replay writes its report in a process forked while it simulates
# (twin.cli.prefork), which imported the report's plotting stack afresh for every example (~0.4 s of
# CPU each); forked from this process it finds them loaded
import reports.replay_report  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_cli", ROOT / "benchmarks" / "fuzz_cli.py")
fuzz = sys.modules["fuzz_cli"] = importlib.util.module_from_spec(_spec)   # dataclasses look their module up
_spec.loader.exec_module(fuzz)

# a hang guard, not a timing assertion: the largest step the work limit admits runs in ~15 s
LIMIT_S = 300


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), command=st.sampled_from(fuzz.COMMANDS))
def test_fuzzed_cli_inputs_end_in_0_2_or_3_with_a_named_refusal(tmp_path_factory, rng, command):
    workdir = tmp_path_factory.mktemp("fuzz")
    case = fuzz.make_case(rng, command, workdir, heavy=False)
    with contextlib.chdir(workdir):
        outcome = fuzz.run_case(case, LIMIT_S)
    assert outcome.status in ("0", "2", "3", "argparse"), (case.argv, case.note, outcome.detail)
    assert outcome.named, (case.argv, outcome.detail)
    assert outcome.json_ok, (case.argv, outcome.detail)


def test_the_generator_reaches_every_kind_of_input(tmp_path):
    # the fuzz is only as good as its inputs: over a few hundred cases each command sees valid
    # runs, refusals by the loader and by argparse (exit status from the cases' notes, not run)
    rng = random.Random(0)
    notes = [fuzz.make_case(rng, c, tmp_path).note for _ in range(100) for c in fuzz.COMMANDS]
    for kind in ("valid base", "file: deep", "file: big", "--set: deepvalue", "--json", "one path", "section", "options"):
        assert any(kind in n for n in notes), kind

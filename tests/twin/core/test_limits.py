"""Input limits (issue 16): every number finite, every count, size and list bounded, a training step
bounded as a whole, TOML nesting bounded before parsing, options and output paths checked before
any work. Each refusal names the field or option and prints the numbers."""

import dataclasses
import math
import os
import re
import shutil
import stat
import sys
import types
import typing
from pathlib import Path

import pytest

import twin.cli.main as cli
from twin.core.atomic import check_output, staged_dir, write_text
from twin.core.errors import ScenarioError, show_value
from twin.core.run_specs import StageSpec
from twin.core.scenario import (MAX_SCENARIO_BYTES, MAX_TOML_DEPTH, SECTIONS, STEP_TASK_LIMIT, from_dict, load_scenario, parse_override,
                                read_raw, toml_depth)
from twin.core.specs import ModelSpec
from twin.training.step import simulate_step

ROOT = Path(__file__).resolve().parents[3]
PROFILES = ROOT / "twin" / "data" / "profiles"
SPEC_CLASSES = [("model", ModelSpec), ("run.stages", StageSpec), *SECTIONS.items()]


def _spec_fields():
    for section, cls in SPEC_CLASSES:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield section, f, hints[f.name]


def _base(tp) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return _base(args[0]) if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp


# --- every field bounded ------------------------------------------------------------------------

def test_every_count_has_an_upper_bound_and_every_list_a_length_limit():
    missing = []
    for section, f, tp in _spec_fields():
        base = _base(tp)
        if typing.get_origin(base) is tuple:
            if f.metadata.get("max_items") is None:
                missing.append(f"{section}.{f.name}: no max_items")
        elif base is int and not f.metadata.get("choices") and f.metadata.get("le") is None:
            missing.append(f"{section}.{f.name}: no le")
    assert not missing


def _raw_of(section: str):
    """Raw tables of a scenario that has `section`, and the path prefix of that section's fields."""
    if section in ("serve", "traffic"):   # serving sections live in a serving scenario
        return read_raw(ROOT / "scenarios" / "r1_serve_h200.toml")[0], section
    if section == "search":
        return read_raw(ROOT / "scenarios" / "v3_plan.toml")[0], "search"
    return read_raw(None)[0], section


def _put(raw: dict, section: str, name: str, value) -> None:
    if section == "run.stages":
        raw["run"]["stages"][0][name] = value
    else:
        raw.setdefault(section, {})[name] = value


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_field_refuses_non_finite_values(value):
    for section, f, tp in _spec_fields():
        if _base(tp) is not float:
            continue
        raw, _ = _raw_of(section)
        _put(raw, section, f.name, value)
        with pytest.raises(ScenarioError) as exc:
            from_dict(raw)
        field = f"{section.replace('run.stages', 'run.stages[0]')}.{f.name}"
        assert exc.value.field == field, (field, str(exc.value))
        assert "finite number" in exc.value.allowed


@pytest.mark.parametrize("override, pattern", [
    ("workload.routing_imbalance=1e308", r"workload.routing_imbalance.*got 1e\+308; allowed: number >= 1 and <= 1,000$"),
    ("workload.routing_imbalance=inf", r"got inf; allowed: finite number >= 1 and <= 1,000"),
    ("model.num_layers=1001", r"model.num_layers.*got 1001; allowed: integer >= 1 and <= 1,000"),
    ("model.num_mtp_modules=1000000000", r"model.num_mtp_modules.*<= 16"),
    ("workload.global_batch_seqs=1000000000000", r"workload.global_batch_seqs.*<= 10,000,000"),
    ("cluster.num_gpus=1000001", r"cluster.num_gpus.*<= 1,000,000"),
    ("uncertainty.num_samples=1000000000000", r"uncertainty.num_samples.*<= 1,000,000"),
    ("moe.dynamic_steps=1000000000000", r"moe.dynamic_steps.*<= 1,000"),
    ("cost.size_sweep_gpus=[0]", r"cost.size_sweep_gpus\[0\].*got 0; allowed: integer >= 1"),
    ("run.fallback_schedules=['gpipe']", r"run.fallback_schedules\[0\].*'gpipe'.*one of '1f1b'"),
])
def test_bounds_name_the_field(override, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        load_scenario(overrides=[override])


def test_a_huge_list_is_refused_before_its_items_are_built():
    raw = read_raw(None)[0]
    raw["run"]["fallback_schedules"] = ["1f1b"] * 100_000
    with pytest.raises(ScenarioError, match=r"run.fallback_schedules.*got \['1f1b', .*\.\.\.\]; allowed: a list of at most 16 "
                                            r"entries \(got 100,000\)$"):
        from_dict(raw)
    raw = read_raw(None)[0]
    raw["run"]["stages"] = [{"name": f"s{i}", "steps": 1} for i in range(65)]
    with pytest.raises(ScenarioError, match=r"run.stages.*at most 64 entries \(got 65\)"):
        from_dict(raw)


def test_a_search_with_too_many_combinations_is_refused():
    sc = ROOT / "scenarios" / "v3_plan.toml"
    lists = ["search.num_gpus=" + str(list(range(2048, 2048 + 64))), "search.pp=" + str(list(range(1, 65))),
             "search.ep=" + str(list(range(1, 65)))]
    with pytest.raises(ScenarioError, match=r"search.num_gpus.*at most 250,000 candidates \(now 2 gpu x 64 num_gpus x 64 pp x 64 ep = 524,288\)"):
        load_scenario(sc, lists)


def test_values_are_shown_short():
    assert show_value(list(range(100_000))) == "[0, 1, 2, 3, 4, 5, 6, 7, ...]"
    assert show_value("<missing> (a training scenario)") == "'<missing> (a training scenario)'"
    deep: dict = {}
    node = deep
    for _ in range(5000):   # printing this whole would exhaust the recursion limit
        node["a"] = node = {}
    assert show_value(deep).count("{") <= 5


# --- the work estimate --------------------------------------------------------------------------

def test_the_default_step_is_well_inside_the_work_limit(v3):
    work = v3.step_work()
    # 16 ranks x 120 micro-batches x 1 pass x (ceil(61 / 16) = 4 layers + 1 MTP block) x 16 tasks
    assert work == {"tasks": 153_600, "ranks": 16, "microbatches": 120, "passes": 1, "blocks": 5,
                    "op_blocks2": 16 * 120 * 5**2}
    assert work["tasks"] * 16 <= STEP_TASK_LIMIT


@pytest.mark.parametrize("schedule", ["1f1b", "zb1p", "dualpipe", "dualpipev"])
def test_the_estimate_bounds_the_simulated_tasks(schedule):
    # a 16-layer model on 4 ranks: the estimate is within 2x above what the step twin simulates
    sc = load_scenario(overrides=["model.num_layers=16", "plan.pp=4", "cluster.num_gpus=64", "plan.ep=16",
                                  "workload.global_batch_seqs=256", f"plan.schedule='{schedule}'"])
    simulated = len(simulate_step(sc, check_memory=False).pipeline.events)
    assert simulated <= sc.step_work()["tasks"] <= 2 * simulated


def test_a_step_too_large_to_simulate_names_the_batch():
    # 30x the default batch: 3,600 micro-batches per pipeline
    with pytest.raises(ScenarioError, match=r"^workload.global_batch_seqs.*got 460800; allowed: a training step of at most "
                                            r"2,500,000 simulated tasks; this one has ~4,608,000 = 16 pipeline ranks x 3,600 "
                                            r"micro-batches x 1 pass x 5 blocks per stage x 16 tasks per block"):
        load_scenario(overrides=["workload.global_batch_seqs=460800"])


def test_a_step_too_deep_to_simulate_names_the_layers():
    # 1,000 layers on 2 ranks: 501 blocks per stage outnumber the 300 micro-batches
    with pytest.raises(ScenarioError, match=r"^model.num_layers.*got 1000;.*~4,809,600 = 2 pipeline ranks x 300 micro-batches "
                                            r"x 1 pass x 501 blocks per stage"):
        load_scenario(overrides=["model.num_layers=1000", "plan.pp=2", "workload.global_batch_seqs=307200"])


def test_the_dynamic_load_model_is_bounded_by_its_draws():
    with pytest.raises(ScenarioError, match=r"moe.dynamic_steps.*got 1000;.*1,000 steps x 1,024 experts x 4,096 tokens x 4 runs"):
        load_scenario(overrides=["moe.load_model='dynamic'", "moe.dynamic_steps=1000", "model.num_routed_experts=1024"])
    assert load_scenario(overrides=["moe.load_model='dynamic'", "moe.dynamic_steps=1000"]).moe.dynamic_steps == 1000


# --- TOML nesting -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, depth", [
    ('a = [[1, 2], [3]]', 2),
    ('[run]\n[[run.stages]]\nname = "x.y.z"\n', 3),
    ('a = "[[[[[["  # [[[[[[\nb = \'{{{{\'\n', 0),
    ('a = """\n[[[[\n\\"""\n"""\n', 0),
    ('a.b.c = 1.5', 2),
    ('t = {x = {y = [1]}}', 3),
])
def test_toml_depth_counts_brackets_and_dotted_keys_outside_strings(text, depth):
    assert toml_depth(text) == depth


@pytest.mark.parametrize("deep", [
    "a = " + "[" * 500 + "]" * 500,
    "a = " + "{b = " * 500 + "1" + "}" * 500,
    "[" + ".".join(["t"] * 500) + "]\nx = 1",
    ".".join(["k"] * 500) + " = 1",
])
def test_deep_toml_is_refused_before_parsing(tmp_path, deep):
    path = tmp_path / "deep.toml"
    path.write_text('[model]\nname = "tiny"\n' + deep + "\n")
    with pytest.raises(ScenarioError, match=rf"^SCENARIO: got .*deep.toml.; allowed: TOML nested at most {MAX_TOML_DEPTH} levels deep"):
        read_raw(path)


def test_a_scenario_file_past_the_size_limit_is_refused_at_once(tmp_path):
    """A scenario is a few KB: a file past MAX_SCENARIO_BYTES is refused without parsing it (until
    s19ux a 50 MB file took 34 s to parse before failing, and a larger one would exhaust memory)."""
    path = tmp_path / "big.toml"
    path.write_text('[model]\nname = "tiny"\n# ' + "x" * MAX_SCENARIO_BYTES + "\n")
    with pytest.raises(ScenarioError, match=r"^SCENARIO: got .*big.toml.; allowed: a TOML file of at most 1,048,576 bytes"):
        read_raw(path)
    path.write_text('[model]\nname = "tiny"\n# ' + "x" * (MAX_SCENARIO_BYTES - 100) + "\n")
    assert read_raw(path)[0]["model"] == {"name": "tiny"}   # at the limit: read as before


def test_deep_overrides_are_refused():
    with pytest.raises(ScenarioError, match=r"^--set: got 'plan.pp=\[\[\[.*TOML nested at most 32"):
        parse_override("plan.pp=" + "[" * 3000 + "]" * 3000)
    with pytest.raises(ScenarioError, match=r"^--set: got .*; allowed: a key of at most 32 dotted parts \(this has 300\)"):
        parse_override(".".join(["a"] * 300) + "=1")


def test_integers_past_pythons_digit_limit_are_refused_not_raised(tmp_path):
    """tomllib turns an integer literal with int(), which refuses more digits than
    sys.get_int_max_str_digits() with a plain ValueError (not a TOMLDecodeError): found by the CLI
    fuzzer as `twin plan ... --num-gpus <5,000 digits>` ending in a traceback."""
    huge = "9" * (sys.get_int_max_str_digits() + 1)
    path = tmp_path / "huge.toml"
    path.write_text(f"[plan]\npp = {huge}\n")
    with pytest.raises(ScenarioError, match=r"^SCENARIO: got .*huge.toml.; allowed: integers of at most [\d,]+ digits"):
        read_raw(path)
    with pytest.raises(ScenarioError, match=r"^--set: got 'plan.pp=999.*; allowed: integers of at most [\d,]+ digits"):
        parse_override(f"plan.pp={huge}")
    with pytest.raises(ScenarioError, match="TOML"):   # a malformed file is still the parser's error, as before
        path.write_text("[plan\n")
        read_raw(path)


# --- the command line ---------------------------------------------------------------------------

def _cli(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("argv, pattern", [
    (["model", "deepseek-v3", "--seq-len", "0"], r"--seq-len: got 0; allowed: integer >= 1 and <= 10,000,000"),
    # `twin model` reads only [model]: --set plan.pp=4 was ignored without a word until s21walk
    (["model", "deepseek-v3", "--set", "plan.pp=4"], r"^error: --set: got 'plan.pp=4'; allowed: model.FIELD=VALUE"),
    (["schedule", "1f1b", "--pp", "0", "--microbatches", "8"], r"--pp: got 0; allowed: integer >= 1 and <= 1,024"),
    (["schedule", "1f1b", "--pp", "4", "--microbatches", "100000"], r"--microbatches: got 100000; allowed: --pp x --microbatches <= 50,000"),
    (["schedule", "1f1b", "--pp", "4", "--microbatches", "8", "--f", "inf"], r"--f: got inf; allowed: finite number > 0"),
    (["schedule", "1f1b", "--pp", "4", "--microbatches", "8", "--fb", "nan"], r"--fb: got nan"),
    # the schedule's own rules name the options too (plan.pp, schedule.w_s, plan.num_microbatches until s21walk)
    (["schedule", "dualpipe", "--pp", "3", "--microbatches", "8"], r"^error: --pp: got 3; allowed: an even number of ranks"),
    (["schedule", "zb1p", "--pp", "4", "--microbatches", "8", "--w", "3"], r"^error: --w: got 3.0; allowed: <= --b = 2.0 "),
    (["schedule", "1f1b", "--pp", "4", "--microbatches", "8", "--w", "1", "--fb", "0.5"], r"^error: --fb: got 0.5; allowed: >= --w = 1.0"),
    (["schedule", "dualpipev", "--pp", "4", "--microbatches", "3"], r"^error: --microbatches: got 3; allowed: >= 2 x --pp = 8 "),
    (["schedule", "interleaved-1f1b", "--pp", "4", "--microbatches", "6", "--virtual-stages", "2"],
     r"^error: --microbatches: got 6; allowed: a multiple of --pp = 4 "),
    (["plan", "scenarios/v3_plan.toml", "--price", "h800=nan"], r"--price: got nan; allowed: finite number >= 0"),
    (["plan", "--tokens", "1e12", "--days", "inf"], r"^error: --days: got inf; allowed: finite number > 0 and <= 36,500"),
])
def test_numeric_options_are_checked_like_fields(argv, pattern, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, err = _cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert re.search(pattern, err), err


@pytest.mark.parametrize("option, target", [
    ("--json", "/proc/x/y.json"),
    ("--json", "/dev/null/x"),
    ("--json", "{tmp}/afile/x.json"),
    ("--json", "{tmp}"),
    ("--out", "{tmp}/afile"),
])
def test_unwritable_outputs_exit_2_before_any_simulation(option, target, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("a file\n")
    monkeypatch.setattr(cli, "simulate_step", lambda *a, **k: pytest.fail("simulated before checking the output path"))
    monkeypatch.setattr(cli, "serve", lambda *a, **k: pytest.fail("simulated before checking the output path"))
    command = ["step", "--set", "model.num_layers=4"] if option == "--json" else ["serve"]
    code, err = _cli([*command, option, target.format(tmp=tmp_path)], capsys)
    assert code == 2 and err.startswith(f"error: {option}: got ") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", [["replay", "--quiet"], ["serve", "--quiet"], ["plan", "scenarios/v3_plan.toml", "--quiet"],
                                     ["validate", "--quiet"]])
def test_one_path_for_two_outputs_exits_2_before_any_work(command, tmp_path, capsys, monkeypatch):
    """--out DIR --json DIR: the JSON was written after the whole run onto the report's folder and
    ended in a traceback (until s19ux); now refused first, naming both options."""
    monkeypatch.chdir(ROOT)
    same = str(tmp_path / "same")
    code, err = _cli([*command, "--json", same, "--out", same], capsys)
    assert code == 2 and err == f"error: --out: got '{same}'; allowed: a path other than --json's\n"
    assert not (tmp_path / "same").exists()


@pytest.mark.parametrize("argv", [["validate", "--records", "{tmp}/none"], ["validate", "--profiles", "{tmp}/none"],
                                  ["validate", "--records", "{tmp}/afile"], ["fit", "--records", "{tmp}/none"]])
def test_missing_input_folders_exit_2_naming_the_option(argv, tmp_path, capsys):
    """validate --records MISSING ended in a traceback and --profiles MISSING validated silently with
    profiles fitted in memory (until s19ux)."""
    (tmp_path / "afile").write_text("a file\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, err = _cli(argv, capsys)
    assert code == 2 and err == f"error: {argv[1]}: got '{argv[2]}'; allowed: an existing directory\n"


def test_fit_names_the_gpu_folders_it_has(capsys):
    code, err = _cli(["fit", "--gpu", "h999", "--profiles", "unused"], capsys)
    assert code == 2 and err.startswith("error: --gpu: got 'h999'; allowed: a GPU folder with timed records under "
                                        "the records root: one of h100, h200"), err


def test_check_output_accepts_new_nested_paths_and_creates_nothing(tmp_path):
    check_output("--json", tmp_path / "a" / "b" / "x.json")
    check_output("--out", tmp_path / "report", "dir")
    assert list(tmp_path.iterdir()) == []


# --- atomic outputs follow the umask ------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_text(tmp_path / "x.json", "{}\n")
        with staged_dir(tmp_path / "report") as tmp:
            assert stat.S_IMODE(tmp.stat().st_mode) == 0o777 & ~mask
            (tmp / "a.txt").write_text("a")
            write_text(tmp / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "report" / "b.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o777 & ~mask



def test_deep_stages_are_refused_by_their_quadratic_placement_cost():
    # 2,000 layers on 2 ranks: 1,000 blocks per stage; 16 ops x 1,000^2 = 16M > 2M (a few minutes)
    with pytest.raises(ScenarioError, match=r"model\.num_layers.*ops x blocks\^2 per simulated step"):
        load_scenario(overrides=["model.name='tiny'", "model.num_layers=1000", "cluster.num_gpus=8", "plan.pp=1",
                                 "plan.ep=4", "plan.schedule='1f1b'", "workload.seq_len=512", "workload.global_batch_seqs=32"])
    # the default V3: 1,920 ops x 5^2 blocks
    assert load_scenario().step_work()["op_blocks2"] == 1920 * 25


@pytest.mark.parametrize("command", [["fit", "--quiet", "--profiles", "{tmp}/profiles"], ["validate", "--quiet"]])
@pytest.mark.parametrize("content", [bytes(range(128, 256)) * 4, b"a,b\n1,2\n"])
def test_unreadable_records_of_ones_own_exit_2_naming_records(command, content, tmp_path, capsys):
    """A --records folder whose CSV is binary (fit) or has no timed rows (validate) ended in a
    traceback (until s19ux)."""
    (tmp_path / "rec" / "h100").mkdir(parents=True)
    (tmp_path / "rec" / "h100" / "gemm.csv").write_bytes(content)
    argv = [a.format(tmp=tmp_path) for a in command] + ["--records", str(tmp_path / "rec")]
    code, err = _cli(argv, capsys)
    assert code == 2 and err.startswith(f"error: --records: got '{tmp_path / 'rec'}'; allowed: folders as `twin calibrate` "
                                        "(records: <gpu>/*.csv) and `twin fit` (profiles: <gpu>.json) write them (") \
        and err.count("\n") == 1, err


def test_an_unreadable_profile_of_ones_own_exits_2_naming_profiles(tmp_path, capsys):
    (tmp_path / "h100.json").write_bytes(bytes(range(128, 256)))
    shutil.copy(PROFILES / "h200.json", tmp_path / "h200.json")
    code, err = _cli(["validate", "--quiet", "--profiles", str(tmp_path)], capsys)
    assert code == 2 and err.startswith(f"error: --profiles: got '{tmp_path}'; allowed: folders as `twin calibrate`") \
        and "UnicodeDecodeError" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("only", [None, "sm_reserve", "h800_trace"])
def test_validate_refuses_a_profiles_folder_without_a_validated_gpus_profile(only, tmp_path, capsys):
    """--profiles DIR lacking a GPU's profile validated that GPU with one fitted in memory (the records part) or
    the committed one (calibration.bwd_grouped.committed_profile), unsaid (until s28prod); now refused first."""
    kept, gone = ("h200", "h100") if only == "h800_trace" else ("h100", "h200")
    shutil.copy(PROFILES / f"{kept}.json", tmp_path / f"{kept}.json")
    code, err = _cli(["validate", "--quiet", "--profiles", str(tmp_path)] + (["--only", only] if only else []), capsys)
    needed = "h100.json" if only == "h800_trace" else "h100.json, h200.json"
    assert code == 2 and err == f"error: --profiles: got '{tmp_path}'; allowed: a folder with the profile of each GPU " \
        f"validated ({needed}; `twin fit --profiles DIR` writes them); missing: {gone}.json\n", err


def test_validate_refuses_records_of_ones_own_with_nothing_to_predict(tmp_path, capsys):
    code, err = _cli(["validate", "--quiet", "--records", str(tmp_path)], capsys)
    assert code == 2 and err == f"error: --records: got '{tmp_path}'; allowed: a records root with <gpu>/ folders of timed records " \
                                "(`twin calibrate --out DIR` writes them)\n"

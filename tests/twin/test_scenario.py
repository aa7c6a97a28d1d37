"""Strict loading: every bad input names the field, the value and what is allowed."""

import fnmatch
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from twin.core.errors import ScenarioError
from twin.cli.main import main
from twin.core.scenario import PACKAGED_SCENARIOS, SERVING, apply_overrides, from_dict, load_scenario, packaged_scenario, read_raw

ROOT = Path(__file__).resolve().parents[2]


def test_default_scenario_resolves_v3_layout(v3):
    assert (v3.cluster.gpu, v3.cluster.num_gpus) == ("h800", 2048)
    assert (v3.plan.tp, v3.plan.pp, v3.plan.ep) == (1, 16, 64)
    assert v3.dp == 128                 # 2048 / (1 * 16)
    assert v3.num_microbatches == 120   # 15360 sequences / (128 pipelines * 1 sequence)


@pytest.mark.parametrize("override, pattern", [
    ("plan.pp=7", r"cluster.num_gpus.*got 2048.*multiple of plan.tp \* plan.cp \* plan.pp = 1 \* 1 \* 7 = 7"),
    ("plan.foo=1", r"plan.foo.*known keys: .*comm_sms"),
    ("plan.schedule='gpipe'", r"plan.schedule.*'gpipe'.*one of '1f1b', 'zb1p', 'dualpipe', 'dualpipev'"),
    ("cluster.num_gpus=0", r"cluster.num_gpus.*got 0.*integer >= 1"),
    ("workload.seq_len='long'", r"workload.seq_len.*'long'.*integer"),
    ("plan.ep=3", r"plan.ep.*got 3.*divisor of data-parallel x context-parallel x tensor-parallel ranks = 128 x 1 x 1 = 128"),
    ("cluster.gpu='a100'", r"cluster.gpu.*'a100'.*one of b200, h100, h100-hbm2e-500w, h200, h800"),
    ("workload.global_batch_seqs=100", r"workload.global_batch_seqs.*got 100.*multiple of .* 128 x 1 = 128"),
    ("model.top_k=300", r"model.top_k.*300.*1..num_routed_experts = 256"),
    ("plan.comm_sms=132", r"plan.comm_sms.*132.*< the GPU's 132 SMs"),
    ("workload.global_batch_seqs=1920", r"workload.global_batch_seqs.*even number >= 2\*plan.pp = 32 .*1920 / \(128 x 1\) = 15"),
    ("plan.zero_stage=4", r"plan.zero_stage.*one of 0, 1, 2, 3"),
    ("model.route_scale=nan", r"model.route_scale.*nan"),
])
def test_bad_overrides_name_field_value_and_allowed(override, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        load_scenario(overrides=[override])


def test_unknown_section_and_missing_model(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[modle]\nname = "deepseek-v3"\n')
    with pytest.raises(ScenarioError, match=r"modle.*known sections"):
        load_scenario(bad)
    bad.write_text("[cluster]\nnum_gpus = 8\n")
    with pytest.raises(ScenarioError, match=r"model.*<missing>"):
        load_scenario(bad)


def test_inline_model_needs_required_fields():
    raw, _ = read_raw(None)
    raw = apply_overrides(raw, ["model.name='my-moe'"])
    with pytest.raises(ScenarioError, match=r"model.num_layers.*required"):
        from_dict({**raw, "model": {"name": "my-moe"}})


def test_cli_exits_2_without_traceback_on_bad_input(tmp_path, capsys):
    """The first as a process (exit status and stderr as a shell sees them), the others through the
    same entry point in this process (what they check is the message, not the process)."""
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "step", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    for argv in (["step", "--set", "plan.pp=7"], ["step", str(tmp_path / "missing.toml")],
                 ["replay", "--set", "cluster.gpu=tpu"], ["model", "gpt-5"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)


# Malformed scenarios: random values in random fields must give ScenarioError, never another exception.
_values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_keys = st.sampled_from(["plan.tp", "plan.pp", "plan.ep", "plan.schedule", "plan.comm_sms", "plan.zero_stage",
                         "cluster.gpu", "cluster.num_gpus", "workload.seq_len", "workload.global_batch_seqs",
                         "workload.routing_imbalance", "model.num_layers", "model.top_k", "model.attention",
                         "model.num_heads", "model.num_kv_heads", "plan.bogus", "name", "model", "plan"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_keys, _values), min_size=1, max_size=3))
def test_malformed_scenarios_never_raise_anything_but_scenario_error(edits):
    raw, _ = read_raw(None)
    for key, value in edits:
        parts = key.split(".")
        table = raw
        for p in parts[:-1]:
            table = table.setdefault(p, {}) if isinstance(table.get(p, {}), dict) else {}
        table[parts[-1]] = value
    try:
        from_dict(raw)
    except ScenarioError as exc:
        assert exc.field and str(exc)


def test_rental_price_follows_the_gpu_unless_the_scenario_names_one():
    from twin.core.specs import get_gpu, gpu_names
    assert load_scenario().cluster.price_usd_per_gpu_hour == 2.0   # the V3 report's H800 assumption
    h200 = load_scenario(overrides=["cluster.gpu=h200"]).cluster
    assert h200.price_usd_per_gpu_hour == get_gpu("h200").rental_usd_per_gpu_hour != 2.0
    named = load_scenario(overrides=["cluster.gpu=h200", "cluster.price_usd_per_gpu_hour=5.0"]).cluster
    assert named.price_usd_per_gpu_hour == 5.0
    for g in gpu_names():   # every catalog GPU has a price and says where it comes from
        spec = get_gpu(g)
        assert spec.rental_usd_per_gpu_hour > 0 and "rental_usd_per_gpu_hour" in spec.sources


# --- kinds: one loader tells training, plan and serving scenarios apart by their tables --------

def test_loader_tells_the_kind_from_the_tables():
    from twin.core.scenario import PLAN, SERVING, TRAINING, PlanScenario, ServeScenario
    assert load_scenario().kind == TRAINING
    serving = load_scenario(ROOT / "scenarios" / "r1_serve_h200.toml")
    assert isinstance(serving, ServeScenario) and serving.kind == SERVING
    assert not hasattr(serving, "plan") and not hasattr(serving, "workload")   # no training placeholders
    plan = load_scenario(ROOT / "scenarios" / "v3_plan.toml")
    assert isinstance(plan, PlanScenario) and plan.kind == PLAN
    assert plan.search.pp == (8, 16) and plan.base().kind == TRAINING
    assert plan.base().plan == plan.plan


def test_a_serving_scenario_takes_no_training_sections():
    raw = read_raw(ROOT / "scenarios" / "r1_serve_h200.toml")[0]
    with pytest.raises(ScenarioError, match=r"workload.*a training section does not belong in a serving scenario"):
        from_dict(apply_overrides(raw, ["workload.seq_len=4096"]))


@pytest.mark.parametrize("path, kind, pattern", [
    ("scenarios/r1_serve_h200.toml", "training", r"serve.*a training scenario for this command"),
    (None, "serving", r"serve.*<missing>.*this command takes a serving scenario"),
    ("scenarios/v3_plan.toml", "training", r"search.*a training scenario for this command"),
])
def test_a_command_refuses_a_scenario_of_another_kind(path, kind, pattern):
    raw = read_raw(ROOT / path if path else None)[0]
    with pytest.raises(ScenarioError, match=pattern):
        from_dict(raw, None, kind)


def test_search_lists_are_checked_item_by_item():
    with pytest.raises(ScenarioError, match=r"search\.pp\[1\].*got 0"):
        load_scenario(ROOT / "scenarios" / "v3_plan.toml", ["search.pp=[8, 0]"])
    with pytest.raises(ScenarioError, match=r"search\.tokens.*got nan"):
        load_scenario(ROOT / "scenarios" / "v3_plan.toml", ["search.tokens=nan"])
    with pytest.raises(ScenarioError, match=r"serve\.batch_sweep\[0\].*got -4"):
        load_scenario(ROOT / "scenarios" / "r1_serve_h200.toml", ["serve.batch_sweep=[-4]"])


@pytest.mark.parametrize("name", PACKAGED_SCENARIOS)
def test_packaged_scenarios_are_package_data_and_scenarios_links_them(name):
    """The serving scenarios the twin runs itself (the default; DeepSeek's published conditions, which
    `twin validate` compares) are package data, so an installed wheel has them (until s19ux the
    DeepSeek two lived only in the checkout's scenarios/ and an installed validate compared nothing),
    and scenarios/ holds a link to each, not a second copy."""
    path = packaged_scenario(name)
    assert path.parent == ROOT / "twin" / "data" and path.is_file() and not path.is_symlink()
    assert any(fnmatch.fnmatch(f"data/{path.name}", pattern) for pattern in _package_data("twin"))
    listed = ROOT / "scenarios" / path.name
    assert listed.is_symlink() and listed.resolve() == path.resolve()
    assert load_scenario(path, kind=SERVING).serve is not None


@pytest.mark.parametrize("name", PACKAGED_SCENARIOS)
def test_a_scenario_link_checked_out_as_text_is_refused_naming_its_target(tmp_path, capsys, name):
    """With git's core.symlinks=false (Windows' default) a link in scenarios/ is checked out as a text file
    holding the link's target (the blob git stores, os.readlink's text): the loader says so and names the
    file to load instead of reporting invalid TOML; the CLI exits 2 with that line."""
    target = os.readlink(ROOT / "scenarios" / f"{name}.toml")
    stub = tmp_path / "scenarios" / f"{name}.toml"
    stub.parent.mkdir()
    stub.write_text(target)
    with pytest.raises(ScenarioError, match="symbolic link checked out as a text file") as err:
        load_scenario(stub, kind=SERVING)
    assert repr(target) in str(err.value) and str(stub.parent / target) in str(err.value)
    assert main(["serve", str(stub)]) == 2
    assert "core.symlinks" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text("twin/data/r1_serve_h200")          # no .toml: any other bad text stays invalid TOML
    with pytest.raises(ScenarioError, match=r"valid TOML \("):
        load_scenario(other, kind=SERVING)


def test_a_scenario_saved_with_a_byte_order_mark_loads_as_without(tmp_path):
    """s28prod: a scenario saved by an editor that writes UTF-8 with a byte-order mark (Windows Notepad's
    'UTF-8 with BOM') was refused as "valid TOML (Invalid statement (at line 1, column 1))", a line that points
    at nothing the user can see; the mark is not text, the loader now reads past it."""
    src = ROOT / "scenarios" / "v3_on_h200.toml"
    marked = tmp_path / "v3_on_h200.toml"
    marked.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    assert load_scenario(marked) == load_scenario(src)


def test_packaged_scenario_refuses_a_name_the_package_does_not_ship():
    with pytest.raises(ValueError, match="the package ships"):
        packaged_scenario("v3_plan")


def _package_data(package: str) -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]["package-data"][package]


def test_an_unknown_kind_is_named_not_taken_for_a_missing_table():
    """load_scenario(kind="serve") (a typo of "serving") said the file lacks a [search] table (until s19ux)."""
    with pytest.raises(ScenarioError, match=r"^kind: got 'serve'; allowed: one of 'training', 'plan', 'serving'$"):
        load_scenario(None, kind="serve")


def test_dualpipe_on_an_odd_pipeline_names_plan_pp_not_the_batch():
    """DualPipe's even pipeline is the plan's own constraint: the loader named it as a bad
    workload.global_batch_seqs ('a batch giving an even number of ranks for dualpipe micro-batches
    per pipeline'), which no batch mends (until s20ux; found by a sweep over plan.pp and the schedule)."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(overrides=["plan.pp=1", "cluster.num_gpus=128", "plan.schedule='dualpipe'"])
    assert info.value.field == "plan.pp"
    # the value came from the override, which the error names (s27walk; it said "in <default: ...>")
    assert str(info.value).startswith("plan.pp (--set plan.pp=1): got 1; allowed: an even number of ranks for dualpipe")


def test_a_traffic_rate_the_arrivals_never_read_is_refused():
    """The default serving traffic is a closed loop, which has no rate: `twin sweep --grid
    traffic.rate_per_s=...` on it gave the same figures at every rate, silently (until s20ux)."""
    with pytest.raises(ScenarioError, match=r"^traffic.rate_per_s .*got 5.0; allowed: 1 \(the default\) when "
                                            r"traffic.arrival = 'closed' \(only 'poisson' and 'gamma' arrivals have a rate"):
        load_scenario(overrides=["traffic.rate_per_s=5"], kind=SERVING)
    with pytest.raises(ScenarioError, match=r"^traffic.arrival_cv .*allowed: 2 \(the default\) when traffic.arrival = 'poisson'"):
        load_scenario(overrides=['traffic.arrival="poisson"', "traffic.rate_per_s=5", "traffic.arrival_cv=3"], kind=SERVING)
    sc = load_scenario(overrides=['traffic.arrival="gamma"', "traffic.rate_per_s=5", "traffic.arrival_cv=3"], kind=SERVING)
    assert (sc.traffic.rate_per_s, sc.traffic.arrival_cv) == (5.0, 3.0)

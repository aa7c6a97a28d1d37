"""Scenarios: the one strict TOML loader, and the two kinds of scenario it produces.

The kind follows from the tables (`kind_of`):
- a *training* scenario (`Scenario`) has [model], [cluster], [plan], [workload] and, for whole-run
  replay, [run], [cost], [energy], [failures], [uncertainty]; [moe] picks the expert-load model;
- a *plan* scenario (`PlanScenario`) is a training scenario, the base plan, with a [search] table:
  the tokens, the deadline and the lists of values a plan search tries;
- a *serving* scenario (`ServeScenario`) has [model], [cluster] and [serve], and nothing of training. Unknown keys, wrong types, out-of-range values,
tables of the other kind and plans whose degrees don't fit the cluster raise ScenarioError naming
the field, the value and what is allowed. `--set a.b=value` overrides are applied to the raw tables
before validation, so they are checked exactly like file values.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from twin.core.errors import ScenarioError
from twin.core.fields import build, to_dict
from twin.core.moe_specs import MoeLoadSpec
from twin.core.search_specs import SearchSpec
from twin.core.serve_specs import ServeSpec
from twin.core.run_specs import CostSpec, EnergySpec, FailureSpec, RunSpec, UncertaintySpec
from twin.core.specs import ClusterSpec, GPUSpec, ModelSpec, ParallelPlan, Workload, _catalog, get_gpu
from twin.core.schedules import build_schedule, num_stages

TRAINING, PLAN, SERVING = "training", "plan", "serving"
# the embedded default of each kind (package data, twin/data)
DEFAULT_SCENARIO = {TRAINING: "deepseek_v3_pretrain.toml", SERVING: "r1_serve_h200.toml"}


@dataclass(frozen=True)
class Scenario:
    name: str
    model: ModelSpec
    cluster: ClusterSpec
    plan: ParallelPlan
    workload: Workload
    run: RunSpec = RunSpec()
    cost: CostSpec = CostSpec()
    energy: EnergySpec = EnergySpec()
    failures: FailureSpec = FailureSpec()
    uncertainty: UncertaintySpec = UncertaintySpec()
    moe: MoeLoadSpec = MoeLoadSpec()

    kind = TRAINING

    @property
    def gpu(self) -> GPUSpec:
        return get_gpu(self.cluster.gpu)

    @property
    def dp(self) -> int:
        """Data-parallel degree: pipelines in the job."""
        return self.cluster.num_gpus // (self.plan.tp * self.plan.pp)

    @property
    def num_microbatches(self) -> int:
        return self.workload.global_batch_seqs // (self.dp * self.plan.micro_batch_seqs)

    @property
    def tokens_per_microbatch(self) -> int:
        return self.plan.micro_batch_seqs * self.workload.seq_len

    def to_dict(self) -> dict:
        return to_dict(self)

    def check(self, source: str | None = None) -> None:
        """Cross-section invariants; each error prints the numbers involved."""
        m, c, p, w = self.model, self.cluster, self.plan, self.workload
        gpus_per_pipeline = p.tp * p.pp
        if c.num_gpus % gpus_per_pipeline:
            raise ScenarioError("cluster.num_gpus", c.num_gpus, f"a multiple of plan.tp * plan.pp = {p.tp} * {p.pp} = {gpus_per_pipeline}", source)
        dp = c.num_gpus // gpus_per_pipeline
        if m.num_heads % p.tp:
            raise ScenarioError("plan.tp", p.tp, f"a divisor of model.num_heads = {m.num_heads}", source)
        if p.tp > self.gpu.gpus_per_node:
            raise ScenarioError("plan.tp", p.tp, f"<= GPUs per node = {self.gpu.gpus_per_node} (TP stays inside a node)", source)
        if m.is_moe:
            if (dp * p.tp) % p.ep:
                raise ScenarioError("plan.ep", p.ep, f"a divisor of data-parallel x tensor-parallel ranks = {dp} x {p.tp} = {dp * p.tp}", source)
            if m.num_routed_experts % p.ep:
                raise ScenarioError("plan.ep", p.ep, f"a divisor of model.num_routed_experts = {m.num_routed_experts}", source)
        elif p.ep != 1:
            raise ScenarioError("plan.ep", p.ep, "1 for a dense model", source)
        per_pipeline = dp * p.micro_batch_seqs
        if w.global_batch_seqs % per_pipeline:
            raise ScenarioError("workload.global_batch_seqs", w.global_batch_seqs,
                                f"a multiple of data-parallel degree x plan.micro_batch_seqs = {dp} x {p.micro_batch_seqs} = {per_pipeline}", source)
        try:
            build_schedule(p.schedule, p.pp, w.global_batch_seqs // per_pipeline)
        except ScenarioError as exc:
            raise ScenarioError("workload.global_batch_seqs", w.global_batch_seqs,
                                f"a batch giving {exc.allowed.replace('pp', 'plan.pp')} micro-batches per pipeline "
                                f"(now {w.global_batch_seqs} / ({dp} x {p.micro_batch_seqs}) = {w.global_batch_seqs // per_pipeline})",
                                source) from None
        stages = num_stages(p.schedule, p.pp)
        if m.num_layers < stages:
            raise ScenarioError("plan.pp", p.pp, f"at most {m.num_layers} model stages for {m.num_layers} layers (schedule {p.schedule} makes {stages} stages)", source)
        if p.comm_sms >= self.gpu.num_sms:
            raise ScenarioError("plan.comm_sms", p.comm_sms, f"< the GPU's {self.gpu.num_sms} SMs", source)


def _load_model(table: dict, source: str | None) -> ModelSpec:
    """[model] names a catalog entry, optionally overriding fields, or defines a model inline."""
    if not isinstance(table, dict):
        raise ScenarioError("model", table, "a table", source)
    catalog = _catalog("models.toml")["models"]
    name = table.get("name", "custom")
    base = dict(catalog.get(name, {})) if isinstance(name, str) else {}
    return build(ModelSpec, {**base, **table}, "model", source)


@dataclass(frozen=True)
class PlanScenario(Scenario):
    """A training scenario (the base plan) with the question a plan search answers ([search])."""

    search: SearchSpec = None   # always given by the loader

    kind = PLAN

    def base(self) -> Scenario:
        """The base training scenario, without the search."""
        return Scenario(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Scenario)})


@dataclass(frozen=True)
class ServeScenario:
    """A serving deployment: the model, the GPUs, and how they serve it ([serve])."""

    name: str
    model: ModelSpec
    cluster: ClusterSpec
    serve: ServeSpec

    kind = SERVING

    @property
    def gpu(self) -> GPUSpec:
        return get_gpu(self.cluster.gpu)

    def to_dict(self) -> dict:
        return to_dict(self)

    def check(self, source: str | None = None) -> None:
        self.serve.check_against(self.model, self.gpu, self.cluster.num_gpus, source)


TRAINING_SECTIONS = {
    "cluster": ClusterSpec,
    "plan": ParallelPlan,
    "workload": Workload,
    "run": RunSpec,
    "cost": CostSpec,
    "energy": EnergySpec,
    "failures": FailureSpec,
    "uncertainty": UncertaintySpec,
    "moe": MoeLoadSpec,
}
SERVING_SECTIONS = {"cluster": ClusterSpec, "serve": ServeSpec}
SECTIONS = {**TRAINING_SECTIONS, **SERVING_SECTIONS}   # every section of every kind (docs/scenario.md)
KINDS = {TRAINING: (Scenario, TRAINING_SECTIONS), PLAN: (PlanScenario, {**TRAINING_SECTIONS, "search": SearchSpec}),
         SERVING: (ServeScenario, SERVING_SECTIONS)}
SECTIONS["search"] = SearchSpec


def kind_of(raw: dict) -> str:
    """A scenario with a [serve] table is a serving scenario, one with a [search] table a plan
    scenario; otherwise it is a training one."""
    if not isinstance(raw, dict) or "serve" in raw:
        return SERVING if isinstance(raw, dict) else TRAINING
    return PLAN if "search" in raw else TRAINING


def from_dict(raw: dict, source: str | None = None, kind: str | tuple[str, ...] | None = None
              ) -> Scenario | PlanScenario | ServeScenario:
    """Validate raw scenario tables (as parsed from TOML) into a scenario of their kind; `kind`
    demands one or several (a serving scenario given to a training command is an error naming [serve])."""
    if not isinstance(raw, dict):
        raise ScenarioError("<scenario>", raw, "a TOML document of tables", source)
    found = kind_of(raw)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and found not in kinds:
        raise _wrong_kind(found, kinds, source)
    cls, sections = KINDS[found]
    allowed = {"name", "model", *sections}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        other = "a training" if found == SERVING and unknown[0] in TRAINING_SECTIONS else None
        raise ScenarioError(unknown[0], raw[unknown[0]],
                            f"{other} section does not belong in a serving scenario ([serve]); its sections are "
                            + ", ".join(sorted(allowed)) if other else "known sections: " + ", ".join(sorted(allowed)), source)
    name = raw.get("name", "scenario")
    if not isinstance(name, str):
        raise ScenarioError("name", name, "a string", source)
    if "model" not in raw:
        raise ScenarioError("model", "<missing>", "a [model] table (name = a catalog model, or inline fields)", source)
    parts = {key: build(spec, raw.get(key, {}), key, source) for key, spec in sections.items()}
    scenario = cls(name=name, model=_load_model(raw["model"], source), **parts)
    scenario.check(source)
    # the price of the GPU type the scenario runs on, unless it names one (so --set cluster.gpu=...
    # also switches the price); the resolved scenario written beside outputs carries it
    return dataclasses.replace(scenario, cluster=scenario.cluster.resolved())


def _wrong_kind(found: str, wanted: tuple[str, ...], source: str | None) -> ScenarioError:
    """The error for a scenario of one kind given to a command that takes another: it names the
    table that makes the difference."""
    want = " or ".join(wanted)
    if found == SERVING:
        return ScenarioError("serve", "a [serve] table (a serving scenario)",
                             f"a {want} scenario for this command; `twin serve` takes serving scenarios", source)
    if found == PLAN:
        return ScenarioError("search", "a [search] table (a plan scenario)",
                             f"a {want} scenario for this command; `twin plan` takes plan scenarios", source)
    if SERVING in wanted:
        return ScenarioError("serve", "<missing> (a training scenario)",
                             "a [serve] table: this command takes a serving scenario (see scenarios/r1_serve_*.toml)", source)
    return ScenarioError("search", "<missing> (a training scenario)",
                         "a [search] table (tokens, days): this command takes a plan scenario", source)


def parse_override(text: str) -> tuple[list[str], object]:
    """'plan.pp=8' -> (['plan', 'pp'], 8). The value is read as TOML, else as a bare string."""
    if "=" not in text:
        raise ScenarioError("--set", text, "KEY=VALUE with a dotted key, e.g. plan.pp=8")
    key, value_text = text.split("=", 1)
    path = [k.strip() for k in key.strip().split(".")]
    if not all(path):
        raise ScenarioError("--set", text, "KEY=VALUE with a dotted key, e.g. plan.pp=8")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        table = raw
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ScenarioError("--set", text, f"'{part}' is a value, not a table")
        table[path[-1]] = value
    return raw


def read_raw(path: str | Path | None, kind: str = TRAINING) -> tuple[dict, str]:
    """Raw tables and a source label; None reads the embedded default scenario of `kind`."""
    if path is None:
        default = DEFAULT_SCENARIO[kind]
        with resources.files("twin.data").joinpath(default).open("rb") as fh:
            return tomllib.load(fh), f"<default: {default}>"
    p = Path(path)
    if not p.is_file():
        raise ScenarioError("SCENARIO", str(path), "an existing TOML file")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh), str(p)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("SCENARIO", str(path), f"valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ScenarioError("SCENARIO", str(path), "a UTF-8 TOML file") from None


def load_scenario(path: str | Path | None = None, overrides: list[str] | tuple = (),
                  kind: str | tuple[str, ...] | None = None) -> Scenario | PlanScenario | ServeScenario:
    """A validated scenario from a TOML file (None: the embedded default of `kind`, training if
    unset), with `--set` overrides applied first. Its kind follows from its tables; `kind` demands
    one, or one of several."""
    default_kind = kind if isinstance(kind, str) else (kind[0] if kind else TRAINING)
    raw, source = read_raw(path, SERVING if default_kind == SERVING else TRAINING)
    return from_dict(apply_overrides(raw, list(overrides)), source, kind)


def replace(scenario: Scenario, **sections) -> Scenario:
    """A variant with some sections replaced by keyword (workload=..., plan=...), re-checked."""
    new = dataclasses.replace(scenario, **sections)
    new.check()
    return new

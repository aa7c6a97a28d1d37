"""The space a plan search walks: one table of axes, candidates, and their stable ids.

An axis is a scenario field a candidate may change: the cluster's GPU type and count, and the fields
of the parallel plan (`twin.core.specs.ParallelPlan`), keyed by their field names. `DEFAULT_VALUES`
holds what a search tries for an axis the question leaves open; `axes()` turns a [search] table into
the (key, values) lists, and `candidates()` enumerates their product, dropping combinations that
are the same plan twice (`_redundant`: e.g. SMs reserved for an all-to-all that a plan without
expert parallelism never runs).

Every candidate has a stable id: a hash of its (key, value) pairs, so a re-run of the same search
names the same candidate the same way whatever the order it is evaluated in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

from twin.core.errors import ScenarioError
from twin.core.fields import build, to_dict
from twin.core.scenario import Scenario
from twin.core.schedules import SCHEDULE_NAMES
from twin.core.search_specs import MAX_CANDIDATES, PLAN_AXES, SearchSpec
from twin.core.specs import EP_COMM_SMS_DEFAULT, PRECISIONS, RECOMPUTE, ClusterSpec, ParallelPlan, get_gpu, gpu_names

# The values a search tries for an axis the question leaves open. With none of the lists given,
# the default scenario's space is 5 GPU types x 3 counts x 2^8 x 3 recomputations x 5 schedules =
# 115,200 combinations, 57,600 candidates once virtual stages are kept to interleaved 1F1B (_redundant):
# the planner screens them all (~2.3 ms of CPU each: ~130 CPU-seconds with the simulations, about a
# minute on two cores, s21ux) and simulates the best.
DEFAULT_VALUES: dict[str, tuple] = {
    "tp": (1, 2),
    "pp": (8, 16),
    "virtual_stages": (1, 2),
    "ep": (32, 64),
    "cp": (1, 2),
    "zero_stage": (1, 2),
    "micro_batch_seqs": (1, 2),
    "schedule": SCHEDULE_NAMES,
    "comm_sms": (20, 32),
    # 'none' keeps every activation: never fits a large MoE; 'megatron_selective' is Megatron-LM's
    # meaning of the word, a choice to name rather than to search by default
    "recompute": tuple(r for r in RECOMPUTE if r not in ("none", "megatron_selective")),
    "gemm_precision": PRECISIONS,
    # sequence_parallel, tp_comm_overlap and stage_cut keep the base plan's value unless listed: they
    # refine TP or the pipeline rather than choose a plan, and would multiply the default space by 5
}
CLUSTER_AXES = ("gpu", "num_gpus")
# GPU counts tried when none is given: the base scenario's count, half and twice it (whole nodes)
DEFAULT_COUNT_FACTORS = (0.5, 1.0, 2.0)


def plan_axis_fields() -> tuple[str, ...]:
    """The plan axes a search varies: PLAN_AXES, every one a field of ParallelPlan (a test keeps
    them so)."""
    return PLAN_AXES


def axis_key(name: str) -> str:
    return f"cluster.{name}" if name in CLUSTER_AXES else f"plan.{name}"


@dataclass(frozen=True)
class Candidate:
    """One point of the space: (scenario key, value) pairs, e.g. (('cluster.gpu', 'h800'), ('plan.tp', 1))."""

    settings: tuple[tuple[str, object], ...]

    @property
    def id(self) -> str:
        """Stable id: the first 12 hex digits of the SHA-1 of its sorted settings as JSON."""
        text = json.dumps(sorted(self.settings), separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def value(self, key: str, default=None):
        return dict(self.settings).get(key, default)

    def overrides(self) -> list[str]:
        """`--set` overrides that make this candidate from the base scenario."""
        return [f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}"
                for k, v in self.settings]

    def label(self) -> str:
        """The plan in a few words (LABEL_LEGEND reads them)."""
        s = dict(self.settings)
        parts = [f"{s.get('cluster.num_gpus', '?')}x{s.get('cluster.gpu', '?')}"]
        short = {"plan.tp": "TP", "plan.pp": "PP", "plan.virtual_stages": "V", "plan.ep": "EP", "plan.cp": "CP",
                 "plan.zero_stage": "ZeRO", "plan.micro_batch_seqs": "mb", "plan.comm_sms": "SM"}
        for key, value in self.settings:
            if key in short:
                # comm_sms None is the default (20 with EP, else 0): "SMdef", not "SMNone"
                parts.append(f"{short[key]}{'def' if value is None else value}")
            elif key in ("plan.schedule", "plan.recompute", "plan.gemm_precision"):
                parts.append(str(value))
            elif key == "plan.sequence_parallel" and value:
                parts.append("SP")
            elif key == "plan.tp_comm_overlap" and value:
                parts.append("TPoverlap")
            elif key == "plan.stage_cut" and value != "even":
                parts.append(f"cut-{value}")
        return " ".join(parts)


# what Candidate.label's words mean, for the reader of a plan's summary and report ("SMdef" was nowhere explained, s27walk)
LABEL_LEGEND = ("a plan: GPUs x GPU type, TP, PP, V (virtual stages), EP, CP, ZeRO stage, mb (sequences a micro-batch), "
                f"schedule, SM (SMs held for EP communication; def: {EP_COMM_SMS_DEFAULT} with EP, else 0), recomputation, "
                "GEMM precision; SP (sequence parallelism), TPoverlap and cut-balanced where they are on")


def apply(base: Scenario, cand: Candidate) -> Scenario:
    """The candidate's scenario, unchecked (call .check() to validate it like the loader does).
    Its price is the catalog's for its GPU type unless the base scenario's GPU type is kept."""
    s = dict(cand.settings)
    plan = dataclasses.replace(base.plan, **{k[5:]: v for k, v in s.items() if k.startswith("plan.")})
    gpu = s.get("cluster.gpu", base.cluster.gpu)
    cluster = dataclasses.replace(base.cluster, gpu=gpu, num_gpus=s.get("cluster.num_gpus", base.cluster.num_gpus),
                                  price_usd_per_gpu_hour=base.cluster.price_usd_per_gpu_hour if gpu == base.cluster.gpu else None)
    return dataclasses.replace(base, plan=plan, cluster=cluster.resolved())


def _default_counts(base: Scenario, gpus: tuple[str, ...]) -> tuple[int, ...]:
    """Whole nodes of the largest node size among the GPU types (the catalog's are all 8 GPUs)."""
    node = max(get_gpu(g).gpus_per_node for g in gpus)
    return tuple(sorted({max(node, int(base.cluster.num_gpus * f) // node * node) for f in DEFAULT_COUNT_FACTORS}))


def model_default_values(base: Scenario) -> dict[str, tuple]:
    """DEFAULT_VALUES as the base's model can take them: V3's EP degrees (32, 64) and communication
    SMs (20, 32) refused every candidate of a dense model ('plan.ep: 1 for a dense model') and of
    Mixtral's 8 experts (until s23walk). A dense model keeps EP 1 and the base plan's SMs where
    they hold (0 or absent; else absent); a MoE model keeps the default EP degrees that divide its routed experts, or, with none,
    its two largest divisors up to the largest default degree (Mixtral's 8 experts: 4, 8)."""
    values = dict(DEFAULT_VALUES)
    experts = base.model.num_routed_experts if base.model.is_moe else 0
    if not experts:   # the base's SMs where they hold (0 or absent), else absent: V3's 20 on a dense base (D23)
        values["ep"], values["comm_sms"] = (1,), (base.plan.comm_sms if not base.plan.comm_sms else None,)
        return values
    dividing = tuple(v for v in DEFAULT_VALUES["ep"] if experts % v == 0)
    divisors = [d for d in range(1, min(experts, max(DEFAULT_VALUES["ep"])) + 1) if experts % d == 0]
    values["ep"] = dividing or tuple(divisors[-2:])
    return values


def axes(base: Scenario, search: SearchSpec) -> list[tuple[str, tuple]]:
    """(scenario key, values) of every axis of the search. A list the search gives is used as is;
    an axis it leaves empty keeps the base scenario's value, unless the search gives no list at all
    (or asks for `full_space`), when it takes DEFAULT_VALUES (GPU types: the catalog's)."""
    active = plan_axis_fields()
    defaults = model_default_values(base)
    given = {name: tuple(getattr(search, name)) for name in (*CLUSTER_AXES, *PLAN_AXES) if getattr(search, name)}
    full = search.full_space or not given
    out: list[tuple[str, tuple]] = []
    gpus = given.get("gpu") or (tuple(gpu_names()) if full else (base.cluster.gpu,))
    out.append(("cluster.gpu", gpus))
    out.append(("cluster.num_gpus", given.get("num_gpus") or (_default_counts(base, gpus) if full else (base.cluster.num_gpus,))))
    for name in active:
        base_value = (getattr(base.plan, name),)
        out.append((axis_key(name), given.get(name) or (defaults.get(name, base_value) if full else base_value)))
    return _interleaved_takes_chunks(out, given, defaults)


def _interleaved_takes_chunks(space: list[tuple[str, tuple]], given: dict, defaults: dict) -> list[tuple[str, tuple]]:
    """Interleaved 1F1B searched without a virtual-stage list runs with the default space's chunks
    per rank: with the base's one chunk it is 1F1B under another name, dropped beside 1F1B and
    invalid alone (`--schedules 1f1b,interleaved-1f1b` searched 1F1B only, until s23walk). With
    interleaved 1F1B the only schedule, its chunk counts above one; beside others, one chunk first
    (the value they keep, _redundant)."""
    values = dict(space)
    if "virtual_stages" in given or "interleaved-1f1b" not in values.get("plan.schedule", ()) \
            or values.get("plan.virtual_stages") != (1,):
        return space
    chunks = defaults["virtual_stages"]
    alone = set(values["plan.schedule"]) == {"interleaved-1f1b"}
    chunks = tuple(v for v in chunks if v > 1) if alone else (1, *(v for v in chunks if v > 1))
    return [(k, chunks if k == "plan.virtual_stages" else v) for k, v in space]


def check_axis_values(base: Scenario, space: list[tuple[str, tuple]]) -> None:
    """Each value of each axis is checked like the scenario field it sets (range, choices, type),
    the error naming search.<axis>."""
    plan_raw, cluster_raw = to_dict(base.plan), to_dict(base.cluster)
    for key, values in space:
        section, name = key.split(".")
        for v in values:
            raw = {**(plan_raw if section == "plan" else cluster_raw), name: v}
            try:
                built = build(ParallelPlan if section == "plan" else ClusterSpec, raw, section)
                if section == "cluster":
                    built.check()
            except ScenarioError as exc:
                raise ScenarioError(f"search.{name}", list(values), exc.allowed) from None


def space_size(space: list[tuple[str, tuple]]) -> int:
    return math.prod(len(v) for _, v in space)


def check_size(space: list[tuple[str, tuple]], limit: int = MAX_CANDIDATES) -> None:
    """Refuse a space larger than `limit` candidates, naming the longest list."""
    total = space_size(space)
    if total > limit:
        key, values = max(space, key=lambda kv: len(kv[1]))
        product = " x ".join(f"{len(v)} {k.split('.')[1]}" for k, v in space if len(v) > 1)
        raise ScenarioError(f"search.{key.split('.')[1]}", list(values),
                            f"lists whose combinations number at most {limit:,} candidates "
                            f"(now {product} = {total:,}); shorten search.{key.split('.')[1]}")


def _redundant(s: dict, first: dict, schedules: tuple = ()) -> bool:
    """A combination that is another candidate under a second name: knobs that only act with a
    degree the plan doesn't have keep their first value (SMs for an all-to-all without EP,
    virtual stages outside the interleaved schedule, TP sequence parallelism / overlap without TP, a
    stage cut without pipeline stages),
    and interleaved 1F1B with one chunk per rank is 1F1B (dropped where '1f1b' is searched too).
    `first`: each axis's first value, the one such a knob keeps; `schedules`: the schedule axis."""
    if s.get("plan.ep") == 1 and s.get("plan.comm_sms", first.get("plan.comm_sms")) != first.get("plan.comm_sms"):
        return True
    if s.get("plan.schedule") != "interleaved-1f1b" and s.get("plan.virtual_stages", 1) != first.get("plan.virtual_stages", 1):
        return True
    if s.get("plan.schedule") == "interleaved-1f1b" and s.get("plan.virtual_stages", 1) == 1 and "1f1b" in schedules:
        return True
    if s.get("plan.pp") == 1 and "plan.stage_cut" in s and s["plan.stage_cut"] != first["plan.stage_cut"]:
        return True
    if s.get("plan.tp") == 1:
        for key in ("plan.sequence_parallel", "plan.tp_comm_overlap"):
            if key in s and s[key] != first[key]:
                return True
    return False


def candidates(space: list[tuple[str, tuple]]) -> Iterator[Candidate]:
    """Every combination of the axes' values, in a fixed order, less the redundant ones."""
    keys = [k for k, _ in space]
    first = {k: v[0] for k, v in space}
    schedules = dict(space).get("plan.schedule", ())
    for values in itertools.product(*(v for _, v in space)):
        if not _redundant(dict(zip(keys, values)), first, schedules):
            yield Candidate(tuple(zip(keys, values)))

"""`twin fit`, `twin validate`, `twin calibrate` (registered by twin/cli/main.py via add_commands)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from calibration import records as rec
from calibration import sm_reserve, trace
from calibration.fit import PROFILES_DIR, fit_gpu, write_profile
from calibration.publish import publish_expert_loads
from calibration.validate import failures, format_table, validate
from real.bench.sections import SECTION_NAMES
from reports.validation_report import write_report
from twin.costs.profile import simulation_profile

EXIT_INVALID = 2


def cmd_fit(args) -> int:
    root = Path(args.records) if args.records else rec.MEASUREMENTS_DIR
    gpus = [args.gpu] if args.gpu else rec.gpu_dirs(root)
    if not gpus:
        print(f"error: no records under {root}; run `twin calibrate --out DIR` on a GPU first",
              file=sys.stderr)
        return EXIT_INVALID
    out = {}
    for gpu in gpus:
        try:
            prof, stats = fit_gpu(gpu, root)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
        path = write_profile(prof, args.profiles) if args.profiles else write_profile(prof)
        if not args.profiles:   # the measured expert loads the twin replays ship beside the profiles
            publish_expert_loads(gpu, root)
        print(f"{gpu}: {stats['num_fit_points']} fitting points, rms log residual {stats['rms_log_residual']:.3f}, "
              f"fit median |error| {stats['median_abs_rel_error_fit']:.1%} -> {path}")
        out[gpu] = {"profile_path": str(path), **stats, "profile": prof.to_json()}
    args.write_json(args.json, out)
    return 0


def profile_from_json_file(path: Path):
    """A fitted profile file as the twin simulates with it (twin.costs.profile.simulation_profile)."""
    return simulation_profile(json.loads(Path(path).read_text()))


def cmd_validate(args) -> int:
    profiles = Path(args.profiles) if args.profiles else PROFILES_DIR
    result = validate(Path(args.records) if args.records else rec.MEASUREMENTS_DIR, profiles)
    print(format_table(result))
    h100 = profiles / "h100.json"
    tr_profile = None
    if h100.is_file():
        # the H800 derivation (calibration/H800.md) simulates DeepSeek's FP8 stack on H100 silicon
        tr_profile = profile_from_json_file(h100)
    tr = trace.compare(tr_profile)
    print(trace.format_table(tr))
    result["h800_trace"] = tr
    records_root = Path(args.records) if args.records else rec.MEASUREMENTS_DIR
    result["sm_reserve"] = {}
    for gpu in result["gpus"]:
        prof_path = profiles / f"{gpu}.json"
        if not prof_path.is_file():
            continue
        rows = sm_reserve.compare(gpu, profile_from_json_file(prof_path), records_root)
        if rows:
            print(sm_reserve.format_table(rows))
            result["sm_reserve"][gpu] = rows
    if args.out:
        for p in write_report(result, Path(args.out)):
            print(f"wrote {p}")
    args.write_json(args.json, result)
    fails = failures(result)
    for f in fails:
        print(f"target missed: {f}", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    try:
        import torch  # lazy: torch is an optional extra; only a GPU campaign needs it
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        print("error: `twin calibrate` measures a GPU and needs CUDA (torch with a visible GPU); none here. "
              "Run it on an H100/H200 host, then copy DIR/*.csv to calibration/measurements/<gpu>/ and run `twin fit`.",
              file=sys.stderr)
        return EXIT_INVALID
    # every single-GPU section the fit reads, sustained load included (power, the per-kernel
    # profiles and multi-GPU EP are separate runs: `python -m real.bench --only ...`)
    sections = [s for s in SECTION_NAMES if s not in ("power", "kernels", "ep")]
    cmd = ([sys.executable, "-m", "real.bench", "--out", args.out, "--only", ",".join(sections)]
           + (["--quick"] if args.quick else []))
    return subprocess.call(cmd)


def _add_dirs(p) -> None:
    p.add_argument("--records", metavar="DIR", help="records root with <gpu>/*.csv (default calibration/measurements)")
    p.add_argument("--profiles", metavar="DIR", help="profiles directory (default twin/data/profiles, the package data the twin reads)")


def add_commands(sub, write_json) -> None:
    p = sub.add_parser("fit", help="fit efficiency profiles to calibration/measurements -> twin/data/profiles")
    p.add_argument("--gpu", metavar="NAME", help="one GPU folder (h100, h200); default all with records")
    p.add_argument("--json", metavar="FILE", help="write fitted parameters as JSON (- for stdout)")
    _add_dirs(p)
    p.set_defaults(func=cmd_fit, write_json=write_json)

    p = sub.add_parser("validate", help="predict held-out measurements and the H800 trace; report errors")
    p.add_argument("--json", metavar="FILE", help="write cases and summaries as JSON (- for stdout)")
    p.add_argument("--out", metavar="DIR", help="write plots (scatter, error by op kind, the H800 trace beside the twin) and CSVs here")
    _add_dirs(p)
    p.set_defaults(func=cmd_validate, write_json=write_json)

    p = sub.add_parser("calibrate", help="run the GPU benchmark campaign (python -m real.bench); CUDA only")
    p.add_argument("--out", metavar="DIR", required=True, help="directory for the CSVs")
    p.add_argument("--quick", action="store_true", help="small shapes (a dry run)")
    p.set_defaults(func=cmd_calibrate, write_json=write_json)

"""Restore a fit-input manifest's records from this repository's git history into a records folder, so that
`twin fit --inputs MANIFEST --records FOLDER` refits from exactly those records (s26refit).

A manifest (twin/data/profiles/fit_inputs.json, written by `twin fit`) names every record file a profile's
fit read and the sha256 of its decompressed bytes. Where calibration/measurements holds a record as the
manifest names it, the folder gets a copy of it; where the tree holds another version (a record re-taken
since the fit), the version whose bytes hash as the manifest says is taken from `git log` of that record
(plain, .csv.gz or .csv.xz: calibration.records_io's forms) and written as plain X.csv. A record no commit
holds is an error naming it.

    python -m calibration.fit_inputs --out DIR [--inputs MANIFEST] [--gpu h100]
    twin fit --inputs MANIFEST --records DIR --profiles OUT
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

from calibration import entry
from calibration import records as rec
from calibration.fit import FIT_INPUTS_FILE, PROFILES_DIR, read_fit_inputs
from calibration.records_io import GZ, XZ, csv_exists, csv_sha256, resolve_csv

REPO = Path(__file__).resolve().parents[1]
TREE_PREFIX = "calibration/measurements"


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True)


def version_from_git(name: str, sha256: str) -> tuple[str, bytes]:
    """(commit, bytes) of the committed version of record `name` (relative to calibration/measurements)
    whose decompressed bytes have this sha256, newest first. LookupError naming the record where no
    commit holds it (or git or the history is missing: a shallow clone)."""
    forms = [f"{TREE_PREFIX}/{name}{suffix}" for suffix in ("", GZ, XZ)]
    log = _git("log", "--format=%H", "--", *forms)
    for commit in log.stdout.decode().split():
        for form in forms:
            blob = _git("show", f"{commit}:{form}")
            if blob.returncode:
                continue
            data = blob.stdout
            data = lzma.decompress(data) if form.endswith(XZ) else gzip.decompress(data) if form.endswith(GZ) else data
            if hashlib.sha256(data).hexdigest() == sha256:
                return commit, data
    raise LookupError(f"{name}: no commit of {TREE_PREFIX}/{name}[.gz|.xz] holds sha256 {sha256[:12]} "
                      f"(git log: {log.stderr.decode().strip()[:120] or 'searched'}; a shallow clone lacks the history)")


def restore(records: dict, out: Path | str) -> dict:
    """Write `records` ({name: sha256}, a manifest entry's) under `out` -> {name: where it came from:
    "tree" or the commit}."""
    out = Path(out)
    where = {}
    for name, sha in sorted(records.items()):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tree = rec.MEASUREMENTS_DIR / name
        if csv_exists(tree) and csv_sha256(tree) == sha:
            src = resolve_csv(tree)
            shutil.copyfile(src, target.with_name(src.name))
            where[name] = "tree"
            continue
        commit, data = version_from_git(name, sha)
        target.write_bytes(data)
        where[name] = commit[:12]
    return where


def main(argv=None) -> int:
    ap = entry.parser("calibration.fit_inputs", __doc__)
    ap.add_argument("--out", required=True, type=Path, help="the records folder to write (created)")
    ap.add_argument("--inputs", type=Path, default=PROFILES_DIR / FIT_INPUTS_FILE,
                    help="the fit-input manifest (default: the committed profiles')")
    ap.add_argument("--gpu", action="append", help="only this GPU's records (repeatable; default every GPU listed)")
    args = ap.parse_args(argv)
    with entry.user_inputs("--inputs", args.inputs, f"a fit-input manifest as `twin fit` writes it ({FIT_INPUTS_FILE})"):
        manifest = read_fit_inputs(args.inputs)
        if not manifest:
            raise FileNotFoundError(f"{args.inputs}: no manifest entries")
    unknown = [g for g in args.gpu or [] if g not in manifest]
    if unknown:
        print(f"error: --gpu {unknown[0]}: allowed: a GPU the manifest lists ({', '.join(sorted(manifest))})", file=sys.stderr)
        return entry.EXIT_INVALID
    for gpu in args.gpu or sorted(manifest):
        try:
            where = restore(manifest[gpu]["records"], args.out)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        from_git = {n: w for n, w in where.items() if w != "tree"}
        print(f"{gpu}: {len(where)} records -> {args.out}; from git history: "
              f"{', '.join(f'{n} ({c})' for n, c in from_git.items()) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

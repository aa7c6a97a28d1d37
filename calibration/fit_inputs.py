"""Restore a fit-input manifest's records into a records folder, so that
`twin fit --inputs MANIFEST --records FOLDER` refits from exactly those records (s26refit).

A manifest (twin/data/profiles/fit_inputs.json, written by `twin fit`) names every record file a profile's
fit read and the sha256 of its decompressed bytes. Each record is looked for, in this order:
1. calibration/measurements as it is (the record not re-taken since the fit): copied as it is;
2. the tree's earlier versions, `<folder>/fit_inputs_<YYYYMMDD>/<rest of the name>` beside the current
   record (ARCHIVE_PREFIX; `--archive` writes them, xz-packed): a clean clone of any depth restores from these;
3. git history only where the tree has neither (another manifest): the version whose bytes hash as the
   manifest says, from `git log` of that record (plain, .csv.gz or .csv.xz), written as plain X.csv.
A record none of these holds is an error naming it.

    python -m calibration.fit_inputs --out DIR [--inputs MANIFEST] [--gpu h100] [--no-git-history]
    python -m calibration.fit_inputs --out DIR --archive      # file the missing versions under the tree
    python -m calibration.fit_inputs --out DIR --refit-json calibration/s26refit_refit.json
    twin fit --inputs MANIFEST --records DIR --profiles OUT

`--refit-json FILE` refits every GPU of the manifest from the restored records (calibration.fit.fit_gpu_inputs,
the whole fit: ~10 s of CPU a GPU) and writes each one's profile and the records it read and was refused:
tests/calibration/test_fit_inputs.py refits one GPU live, checks it equals this file's entry, and judges the
other GPUs on this file (with a cheap live recompute of their record-only terms).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

from calibration import entry
from calibration import records as rec
from calibration.fit import FIT_INPUTS_FILE, PROFILES_DIR, fit_gpu_inputs, git_commit, read_fit_inputs
from calibration.records_io import csv_exists, csv_sha256, GZ, pack_record, resolve_csv, write_json_text, XZ

REPO = Path(__file__).resolve().parents[1]
TREE_PREFIX = "calibration/measurements"
# <folder>/fit_inputs_<YYYYMMDD>/: the versions of that folder's records a manifest's fit of that day read,
# kept in the tree where the records were re-taken since (no reader of current records looks in them:
# the fit's and validate's globs name a GPU folder's top level or their campaigns' folders)
ARCHIVE_PREFIX = "fit_inputs_"


def archived_name(name: str, date: str) -> str:
    """Where the tree keeps the version of record `name` that a fit of `date` (YYYYMMDD) read."""
    top, _, rest = name.partition("/")
    return f"{top}/{ARCHIVE_PREFIX}{date}/{rest}"


def version_from_tree(name: str, sha256: str, tree: Path | str | None = None) -> Path | None:
    """The tree's file of record `name` whose decompressed bytes have this sha256: the record as it is,
    else an earlier version under <folder>/fit_inputs_*/ (newest date first); None where neither is."""
    tree = rec.records_root() if tree is None else tree
    tree = Path(tree)
    top, _, rest = name.partition("/")
    candidates = [tree / name] + [d / rest for d in sorted((tree / top).glob(ARCHIVE_PREFIX + "*"), reverse=True)]
    for path in candidates:
        if csv_exists(path) and csv_sha256(path) == sha256:
            return resolve_csv(path)
    return None


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


def restore(records: dict, out: Path | str, tree: Path | str | None = None,
            git_history: bool = True) -> dict:
    """Write `records` ({name: sha256}, a manifest entry's) under `out` -> {name: where it came from:
    "tree", "tree <folder>" (an earlier version the tree keeps) or the commit}. `git_history` False: a
    record the tree lacks is a LookupError, git is never asked."""
    tree = rec.records_root() if tree is None else tree
    out, tree = Path(out), Path(tree)
    where = {}
    for name, sha in sorted(records.items()):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        src = version_from_tree(name, sha, tree)
        if src is not None:
            shutil.copyfile(src, target.with_name(src.name))
            folder = src.parent.relative_to(tree).as_posix()
            where[name] = "tree" if folder == Path(name).parent.as_posix() else f"tree {folder}"
            continue
        if not git_history:
            raise LookupError(f"{name}: the tree holds no version with sha256 {sha[:12]} (neither {name} nor "
                              f"{archived_name(name, 'YYYYMMDD')}); git history not searched")
        commit, data = version_from_git(name, sha)
        target.write_bytes(data)
        where[name] = commit[:12]
    return where


def archive(records: dict, date: str, tree: Path | str | None = None) -> list[Path]:
    """File under the tree (archived_name, xz-packed) every record of `records` that the tree holds in no
    version (taken from git history) -> the files written."""
    tree = rec.records_root() if tree is None else tree
    tree, written = Path(tree), []
    for name, sha in sorted(records.items()):
        if version_from_tree(name, sha, tree) is not None:
            continue
        _, data = version_from_git(name, sha)
        target = tree / archived_name(name, date)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(pack_record(target))
    return written


def refit_json(manifest: dict, records_dir: Path | str, gpus: list[str]) -> dict:
    """Each GPU refitted from its manifest records under `records_dir` -> the --refit-json document."""
    out = {"written_by": "python -m calibration.fit_inputs --out DIR --refit-json FILE",
           "about": "Each GPU's profile refitted from exactly the records of the committed fit-input manifest "
                    "(calibration.fit.fit_gpu_inputs) by the code of git_commit, with the records it read and "
                    "those on disk it asked for and was refused (tests/calibration/test_fit_inputs.py).",
           "git_commit": git_commit(), "gpus": {}}
    for gpu in gpus:
        prof, _, read, refused = fit_gpu_inputs(gpu, records_dir, manifest[gpu]["records"])
        out["gpus"][gpu] = {"read": read, "refused": refused, "profile": prof.to_json()}
    return out


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.fit_inputs", __doc__)
    ap.add_argument("--out", required=True, type=Path, help="the records folder to write (created)")
    ap.add_argument("--inputs", type=Path, default=PROFILES_DIR / FIT_INPUTS_FILE,
                    help="the fit-input manifest (default: the committed profiles')")
    ap.add_argument("--gpu", action="append", help="only this GPU's records (repeatable; default every GPU listed)")
    ap.add_argument("--no-git-history", action="store_true",
                    help="restore from the tree only (a record it lacks is an error)")
    ap.add_argument("--archive", action="store_true",
                    help="first file under calibration/measurements/<folder>/fit_inputs_<date of the fit>/ "
                         "(xz-packed) every record the tree holds in no version, from git history")
    ap.add_argument("--refit-json", type=Path,
                    help="then refit each GPU from the restored records and write its profile here")
    args = ap.parse_args(argv)
    with entry.user_inputs("--inputs", args.inputs, f"a fit-input manifest as `twin fit` writes it ({FIT_INPUTS_FILE})"):
        manifest = read_fit_inputs(args.inputs)
        if not manifest:
            raise FileNotFoundError(f"{args.inputs}: no manifest entries")
    unknown = [g for g in args.gpu or [] if g not in manifest]
    if unknown:
        print(f"error: --gpu {unknown[0]}: allowed: a GPU the manifest lists ({', '.join(sorted(manifest))})", file=sys.stderr)
        return entry.EXIT_INVALID
    gpus = args.gpu or sorted(manifest)
    for gpu in gpus:
        try:
            if args.archive:
                date = manifest[gpu].get("fitted_utc", "")[:10].replace("-", "")
                if len(date) != 8:
                    print(f"error: --archive: {gpu}'s entry has no fitted_utc date (got {date!r}); allowed: "
                          "a manifest `twin fit` wrote", file=sys.stderr)
                    return entry.EXIT_INVALID
                for path in archive(manifest[gpu]["records"], date):
                    print(f"{gpu}: filed {path.relative_to(rec.MEASUREMENTS_DIR).as_posix()}")
            where = restore(manifest[gpu]["records"], args.out, git_history=not args.no_git_history)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        earlier = {n: w for n, w in where.items() if w != "tree"}
        print(f"{gpu}: {len(where)} records -> {args.out}; earlier versions: "
              f"{', '.join(f'{n} ({w})' for n, w in earlier.items()) or 'none'}")
    if args.refit_json:
        data = refit_json(manifest, args.out, gpus)
        write_json_text(args.refit_json, json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"refits of {', '.join(gpus)} -> {args.refit_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The tracked tree's size against the GPU tool's copy cap, and the records to pack when it grows.

    python -m calibration.tree_size                 # the size; exit 1 over WARN_BYTES, with what to pack
    python -m calibration.tree_size --pack FILE...  # X.csv / X.csv.gz (.txt, .log, a trace's .json, calibration/X.json) -> X.csv.xz
    python -m calibration.tree_size --pack-tracked  # every tracked record, trace and JSON record packable() names, staged in git

The lent GPU machines receive the tracked tree plus a campaign's carry, 64 MiB in all (the device
tool's README; session 22 had a 6 MB carry refused beside a 56 MiB tree). Session 30 packed the last
unpacked files, the Chrome traces (gzipped 8.7 MB -> 5.2 MB as xz, the plain ones 0.8 -> 0.1 MB), which took
the tree from 52.2 to 48.25 MiB with every CSV, log and trace of 4 KiB or more packed, so nothing large is left
to pack when the line is crossed. The line was set at 51 MiB then (the packed tree plus ~2.75 MiB of new records);
session 30's own records (eight campaigns, packed) took the tree to 51.0 MiB within the session, so it went back to
53 MiB, where a campaign still has 11 MiB to carry (session 30's packs carried 4-8 MB; session 29's 4-11 MB; the
line was 53 MiB in session 29, 48 MiB before). Session 32 crossed it by 0.33 MiB with ~0.95 MB of packed records and
judgements, nothing left to pack; its campaign carries were 4.2-4.4 MB, so the line went to 54 MiB, and to 55 MiB the
same session when s32kern2's kernel traces took the tree to 54.30 (9 MiB left to a carry). Session 33 (s33pack) packed
the JSON records at the top of calibration/ (judgements, fits, evidence: 80 files, 1.97 MB -> 0.31 MB as xz), which took
the tree from 54.31 to 52.74 MiB (53.22 with s33loop's and s33pub's records, merged the same session, packed); readers open them by their X.json name through records_io.read_json, judges write
X.json.xz (records_io.write_json_text), and a plain one a branch files is packed by --pack-tracked at any size (one
form for every JSON record). Left plain: the pre-registrations under measurements/prereg/ (their committed bytes are
the registration: a rule and its notes cite them, a reviewer diffs them), env files and profiles. Records under
calibration/measurements/ are committed xz-compressed (calibration/measurements/README.md); every reader finds
them by their plain `X.csv` name, and a trace by the name it was written under (`X.json` or `X.json.gz`:
records_io.load_trace).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from calibration import entry
from calibration.records_io import (GZ, JSON_RECORD_DIR, PACKABLE_SUFFIXES, TRACE_SUFFIX, XZ, is_chrome_trace,
                                    pack_problem, pack_record, unpacked_name)

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = "calibration/measurements/"
PREREG = MEASUREMENTS + "prereg/"   # pre-registrations keep the exact committed bytes their notes cite
JSON_RECORDS = "calibration/"   # (s33pack) the judges' JSON records at its top (not its subfolders), packed at any size
DEVICE_CAP_BYTES = 64 * 1024 * 1024   # tree + carry, the device tool's limit
WARN_BYTES = 55 * 1024 * 1024   # see the docstring: 9 MiB left to a campaign's carry under the tool's 64 MiB
PACK_HINT_MIN_BYTES = 4096   # smaller records gain little from packing (the .xz container is ~60 bytes)


def tracked_sizes(root: Path = ROOT) -> dict[str, int]:
    """{path relative to root: bytes} of every file git tracks that is on disk (a deletion not yet
    committed counts as gone, as the device's copy of the working tree would have it)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    sizes = {}
    for name in out.decode().split("\0"):
        path = root / name
        if name and path.is_file():
            sizes[name] = path.stat().st_size
    return sizes


def is_json_record(name: str) -> bool:
    """Whether the tracked `name` is a JSON record of calibration/ (X.json or X.json.gz at its top)."""
    return (name.startswith(JSON_RECORDS) and "/" not in name[len(JSON_RECORDS):]
            and unpacked_name(name).endswith(TRACE_SUFFIX) and not name.endswith(XZ))


def packable(sizes: dict[str, int], min_bytes: int = PACK_HINT_MIN_BYTES, root: Path = ROOT) -> list[tuple[str, int]]:
    """(path, bytes) of the records pack_record would shrink: plain and gzipped CSVs, logs and Chrome traces
    (a .json under `root` holding traceEvents; env files and profiles stay plain) under
    calibration/measurements/ (pre-registrations left out), min_bytes or larger; and the JSON records at the top of
    calibration/ (is_json_record), any size; largest first."""
    kinds = PACKABLE_SUFFIXES + tuple(s + GZ for s in PACKABLE_SUFFIXES)
    found = [(name, size) for name, size in sizes.items()
             if (name.startswith(MEASUREMENTS) and not name.startswith(PREREG) and size >= min_bytes
                 and name.endswith(kinds)
                 and (not unpacked_name(name).endswith(TRACE_SUFFIX) or is_chrome_trace(root / name)))
             or is_json_record(name)]
    return sorted(found, key=lambda item: (-item[1], item[0]))


def report(sizes: dict[str, int], warn_bytes: int = WARN_BYTES) -> tuple[bool, str]:
    """(within the warning line, the lines to print): the total against the cap, and over the line the
    largest packable records and the command that packs them."""
    total = sum(sizes.values())
    mib = 1024 * 1024
    lines = [f"tracked tree: {total / mib:.2f} MiB in {len(sizes)} files (warn above {warn_bytes / mib:.0f} MiB; "
             f"the GPU tool takes tree + carry up to {DEVICE_CAP_BYTES / mib:.0f} MiB)"]
    ok = total <= warn_bytes
    if not ok:
        candidates = packable(sizes)
        lines.append(f"over the line by {(total - warn_bytes) / mib:.2f} MiB. Pack records (lossless; readers find "
                     f"X.csv{XZ} by its X.csv name): python -m calibration.tree_size --pack FILE... then git add "
                     f"the .xz and git rm the old name; and grep docs/tests for the old name.")
        lines += [f"  {size:>10d}  {name}" for name, size in candidates[:20]]
        if not candidates:
            lines.append("  no CSV, log or trace left to pack: look at the largest tracked files "
                         "(git ls-files -z | xargs -0 du -b | sort -n | tail)")
    return ok, "\n".join(lines)


def pack_tracked(root: Path = ROOT, min_bytes: int = PACK_HINT_MIN_BYTES) -> list[tuple[str, str]]:
    """Pack every tracked record `packable` names and stage each change in git (the old name out of the
    index, the .xz in): [(old, new)] relative to root. For the tree after merging branches that filed
    plain or gzipped records. Packs nothing where one cannot be packed (ValueError naming each)."""
    names = [name for name, _ in packable(tracked_sizes(root), min_bytes, root)]
    problems = [p for p in (pack_problem(root / name, is_json_record(name)) for name in names) if p]
    if problems:
        raise ValueError("; ".join(problems))
    done = []
    for name in names:
        new = str(pack_record(root / name, is_json_record(name)).relative_to(root))
        subprocess.run(["git", "rm", "-q", "--cached", "--", name], cwd=root, check=True)
        subprocess.run(["git", "add", "--", new], cwd=root, check=True)
        done.append((name, new))
    return done


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.tree_size", description=__doc__.split("\n")[0])
    ap.add_argument("--pack", nargs="+", type=Path, metavar="FILE",
                    help="records X.csv or X.csv.gz (.txt, .log, a Chrome trace's .json, a JSON record of "
                         "calibration/) to replace by X.csv.xz "
                         "(same bytes decompressed)")
    ap.add_argument("--pack-tracked", action="store_true",
                    help=f"pack every tracked CSV, log and Chrome trace of {PACK_HINT_MIN_BYTES} bytes or more under {MEASUREMENTS} "
                         f"(not prereg/) and every JSON record at the top of {JSON_RECORDS}, and stage the renames in "
                         "git (after merging branches that filed records or judgements)")
    args = ap.parse_args(argv)
    if args.pack_tracked:
        try:
            done = pack_tracked()
        except ValueError as err:
            print(f"error: --pack-tracked: {err}", file=sys.stderr)
            return 2
        print("\n".join(f"{old} -> {new}" for old, new in done) or "nothing to pack")
        return 0
    if args.pack:
        records = [path.resolve().parent == JSON_RECORD_DIR for path in args.pack]   # a judge's JSON record
        problems = [p for p in map(pack_problem, args.pack, records) if p]
        if problems:   # nothing packed unless every file can be
            print("\n".join(f"error: --pack {p}" for p in problems), file=sys.stderr)
            return 2
        for path, record in zip(args.pack, records):
            target = pack_record(path, record)
            print(f"{path} -> {target} ({target.stat().st_size} bytes)")
        return 0
    ok, text = report(tracked_sizes())
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

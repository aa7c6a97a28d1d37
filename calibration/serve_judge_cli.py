"""The command line the serving judges share: a part to run, --no-committed, --json FILE, --records DIR.

Until s28prod each serving judge (serve_eager_host, serve_load_host, serve_graph_ops, serve_graph_floor,
serve_graph_floor_h200, serve_start_sync, serve_pipeline, serve_prefill_kernels, serve_prefill_kernels2) built these
options, its refusal of a records root without its records and its --json write by hand, copies of each other (the
before-stop review's duplication findings). Here once: `parser`, `refuse` (one line naming the root, exit 2),
`judgement` (print, then --json), `write_json` (atomic: a stopped run leaves the earlier record whole). Records missing
or garbled under a --records root end in one line naming the root, exit 2, as in every script (calibration.entry.script:
`serve_start_sync fit` on a root without s24eager's fitting rows ended in a ValueError traceback until s28prod).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from calibration import entry

NO_COMMITTED_HELP = "leave out the committed sets (no verdict then)"
JSON_HELP = "write the judgement's rows, criteria and verdict"


def parser(module: str, doc: str | None, parts: tuple[str, ...] = (), part_help: str = "", default: str | None = "judge",
           dest: str = "what", json_help: str | None = JSON_HELP) -> argparse.ArgumentParser:
    """`python -m <module>`'s parser (calibration.entry.parser: --records DIR): the optional positional `dest` (one of
    `parts`, `default` when left out) where `parts` are given, --no-committed, and --json FILE unless `json_help` is
    None. The judge adds its own options after."""
    ap = entry.parser(module, doc)
    if parts:
        ap.add_argument(dest, nargs="?", choices=parts, default=default, help=part_help)
    ap.add_argument("--no-committed", action="store_true", help=NO_COMMITTED_HELP)
    if json_help is not None:
        ap.add_argument("--json", type=Path, metavar="FILE", help=json_help)
    return ap


def parse(argv: list[str] | None, *args, **kwargs) -> argparse.Namespace:
    """`parser(*args, **kwargs)`'s reading of `argv` (None: the process's arguments)."""
    return parser(*args, **kwargs).parse_args(sys.argv[1:] if argv is None else argv)


def refuse(what: str, root: Path | str, layout: str) -> int:
    """Say that the records root `root` holds no `what` records where the judge looks (`<root>/<gpu>/<layout>`), on
    one line of stderr; the exit status of bad input (2)."""
    print(f"no {what} records under {root}/<gpu>/{layout}", file=sys.stderr)
    return entry.EXIT_INVALID


def judgement(args: argparse.Namespace, out: dict, show: Callable[[dict], None], record: Callable[[dict], dict]) -> int:
    """A judge's last step: print the judgement `out` (`show`), write `record(out)` to --json FILE where one is given;
    exit status 0."""
    show(out)
    if args.json:
        write_json(args.json, record(out))
    return 0


def write_json(path: Path | str, doc: dict) -> None:
    """A judge's record as JSON (sorted keys, one space of indent), written atomically (calibration.entry.write_json)."""
    entry.write_json(Path(path), doc, sort_keys=True)


def judge_command(module: str, args: argparse.Namespace, *flags: str) -> str:
    """The command a judge's code record names (s33dedup: serve_idle_wake, serve_first_met, serve_lookup and s32cold
    each built it): `python -m <module> <what> [flags] [--no-committed] --json FILE`."""
    return " ".join([f"python -m {module}", args.what, *flags] + (["--no-committed"] if args.no_committed else [])
                    + ["--json", args.json.as_posix()])

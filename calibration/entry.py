"""The command line of a `python -m calibration.<module>` script: one parser and one refusal of bad input.

Each script prints figures from records: the committed ones under calibration/measurements/, or a
folder or file the user names. Until s25walk about half of them read `sys.argv` by hand, so
`--help` was taken for a folder or a GPU name (a traceback: `FileNotFoundError: '--help/ep.csv'`,
`IndexError`) or ignored (the whole computation ran, minutes of it for some), and a missing or
garbled folder ended in pandas' traceback. Now every script builds its parser here (its module
docstring's first paragraph is its help) and reads what the user named inside `user_inputs`, which
turns a file that cannot be read into one line naming the argument, the value and what is expected,
and exit status 2 (the twin's rule for bad input, twin/cli/main.py). The committed records' errors
stay bugs with their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from calibration import records as rec
from calibration.records_io import csv_exists, write_json_text
from twin.core.arg_errors import OneLineParser

EXIT_INVALID = 2
# a file error's own text, cut so that one line stays one line
REASON_CHARS = 200


def _description(doc: str | None) -> str:
    """The first paragraph of a module docstring (the rest is the reader's, not --help's)."""
    return (doc or "").strip().split("\n\n", 1)[0]


RECORDS_HELP = ("records root to read in place of calibration/measurements (<gpu>/ folders, as `twin validate "
                "--records` takes): the readers keyed by a GPU alone and the records loaded without a folder read under "
                "it (calibration.records.records_root)")


# the parsed --records DIR's name in a script's arguments (None: the committed records); not `records`, which two
# scripts' positional file argument is called (cp_traces, power_cap)
RECORDS_DEST = "records_root"
RECORDS_EXPECTED = ("a records root holding what this script reads (<gpu>/ folders and files named as under "
                    "calibration/measurements)")


class JudgeParser(OneLineParser):
    """A script's parser with `--records DIR` (s27walk round 2: the judges run through `__main__` read
    calibration/measurements whatever the user wanted judged). DIR becomes the records root of the process
    (calibration.records.records_root) before the script's own arguments are read (a GPU name is one of DIR's). A
    script with its own --records keeps it. Its refusals are one line, exit 2 (OneLineParser, s27walk round 3: argparse's
    own printed the usage above the error); --help is argparse's."""

    def parse_known_args(self, args=None, namespace=None):
        if "--records" not in self._option_string_actions:
            self.add_argument("--records", type=records_root_folder, metavar="DIR", dest=RECORDS_DEST, help=RECORDS_HELP)
            pre = argparse.ArgumentParser(add_help=False)
            pre.add_argument("--records", type=records_root_folder, dest=RECORDS_DEST)
            pre.error = self.error
            given = getattr(pre.parse_known_args(args)[0], RECORDS_DEST)
            if given is not None:
                rec.set_records_root(given)
        return super().parse_known_args(args, namespace)


def parser(module: str, doc: str | None, usage_note: str = "") -> argparse.ArgumentParser:
    """The parser of `python -m <module>`, described by its docstring's first paragraph (and
    `usage_note`, printed after the options), with --records DIR (JudgeParser)."""
    return JudgeParser(prog=f"python -m {module}", description=_description(doc), epilog=usage_note or None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)


def folder(text: str) -> Path:
    """An argparse type: a folder that exists (argparse prints the refusal, exit 2)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an existing folder of records")
    return path


def records_root_folder(text: str) -> Path:
    """An argparse type: a records root, a folder that holds at least one folder (a `<gpu>/`); an empty one is a
    mistyped or unfilled path whose every reader would find nothing (s28prod: serve_start_sync's fit ended in a
    ValueError traceback there)."""
    path = folder(text)
    if not any(p.is_dir() for p in path.iterdir()):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: {RECORDS_EXPECTED} (it holds no folder)")
    return path


def csv_file(text: str) -> Path:
    """An argparse type: a records CSV that exists, plain or gzipped (records_io.resolve_csv)."""
    path = Path(text)
    if not csv_exists(path):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an existing .csv (or .csv.gz) file")
    return path


def records_folder(text: str) -> Path:
    """An argparse type: a folder under calibration/measurements/ named from there (`h100`,
    `h100/s8srv_round2`) or by any path."""
    for path in (Path(text), rec.records_root() / text):
        if path.is_dir():
            return path
    raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a records folder, as a path or under "
                                     f"{rec.MEASUREMENTS_DIR.name}/ (e.g. h100, h100/s8srv_round2)")


def gpu_name(text: str) -> str:
    """An argparse type: a GPU with committed records (a folder calibration/measurements/<gpu>/)."""
    gpus = rec.gpu_dirs(rec.records_root())
    if text not in gpus:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: one of {', '.join(gpus)}")
    return text


def script(main: Callable[..., int | None]) -> Callable[..., int | None]:
    """The `main` of a `python -m calibration.<script>` (a decorator): under a records root the user named (--records
    DIR, JudgeParser), a record missing or garbled there (OSError, ValueError, KeyError, IndexError) ends in one line
    naming the root, exit 2, as `user_inputs` refuses a file; under the committed records (no --records) an error stays
    a bug's traceback. s28prod: given a root without its records, 13 scripts ended in their reader's traceback
    (serve_start_sync fit's ValueError, host_rate_rows' FileNotFoundError, cp_block's 'No objects to concatenate')."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            root = rec.records_root()
            if root == rec.MEASUREMENTS_DIR:
                raise
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:REASON_CHARS]
            print(f"error: --records: got {root}; allowed: {RECORDS_EXPECTED} ({reason})", file=sys.stderr)
            raise SystemExit(EXIT_INVALID) from None
    return run


@contextlib.contextmanager
def user_inputs(option: str, value: object, expected: str) -> Iterator[None]:
    """Run the body that reads what the user named (`option` = `value`); a file that is missing or
    cannot be read as `expected` (no such file, binary, missing columns, no rows) prints one line
    and exits 2, no traceback. `value` None (the user named nothing: the committed records) refuses
    nothing."""
    if value is None:
        yield
        return
    try:
        yield
    except (OSError, ValueError, KeyError, IndexError) as exc:
        reason = f"{type(exc).__name__}: {str(exc)[:REASON_CHARS]}"
        print(f"error: {option}: got {value}; allowed: {expected} ({reason})", file=sys.stderr)
        raise SystemExit(EXIT_INVALID) from None


def write_json(path: Path | None, out: object, sort_keys: bool = False, default: Callable | None = None) -> str:
    """A script's `--json FILE` (s33dedup: 30 scripts wrote it by hand): `out` as JSON, indent 1, written to `path` with a
    final newline (records_io.write_json_text: packed where the tree packs it) unless `path` is None; returns the text
    without the newline."""
    text = json.dumps(out, indent=1, sort_keys=sort_keys, default=default)
    if path is not None:
        write_json_text(path, text + "\n")
    return text


def print_json(path: Path | None, out: object, sort_keys: bool = False, default: Callable | None = None) -> int:
    """A judge's tail: `out` written to `path` as `write_json` does, then printed; returns exit status 0."""
    print(write_json(path, out, sort_keys, default))
    return 0

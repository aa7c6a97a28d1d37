"""What a committed judgement (calibration/*_judgement.json) was computed under, and what has moved since.

A judgement records what its rule decided on the twin of its day; it is history, never redone to choose a
candidate. But the twin moves on: a switch adopted later (e.g. ADOPT_SLOWEST_BOARD_PACE, adopted after
calibration/s29cp2_judgement.json was written) changes the figures a live recompute gives, and a test or a
`twin validate` section that shows the committed figures would otherwise show them as if they were today's
(docs/notes/s30stale.md). Each judgement therefore carries

    "commit": the code's commit it was computed under (8 hex digits), and
    "computed_under": {"<file>:<ADOPT_NAME>": value, ...}, every module-level ADOPT_* switch of twin/ and
                      calibration/ at that commit (read from the source, not imported),

and `drift` compares those with the switches of this tree: moved (both have it, values differ), added since
with a value other than off (False, (), None), and removed since. `note` is the line a section prints:
"as judged at <commit>; live: <what moved>". The judge's own candidate switch is toggled by the judge itself,
so its entry says what was in force around the judgement, not what the judgement measured.

    python -m calibration.judged_under                      # every judgement: its commit and what moved since
    python -m calibration.judged_under stamp FILE... [--at COMMIT]   # add commit / computed_under (git needed)
    python -m calibration.judged_under recheck FILE LIVE.json [--at COMMIT]   # the writer's command rerun, beside

`stamp` takes the commit from the file's own code_commit where it has one, else the last commit (not a merge)
that wrote the file; it refuses a file already stamped. Writers stamp their own output with `stamped(out)`
(prereg.write_code_record does). `recheck` records what the writer's own command wrote at a later commit
(LIVE.json, written in a scratch copy of the tree) as "rechecked": same or not, how many figures differ and
which true/false/text fields; where the same, the switches moved by then are inert for that file (drift and
note leave them out while they keep those values). `as_judged` sets moved switches back for a recompute (a
test's proof that the switches alone moved a file's figures).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from calibration import entry
from calibration.records_io import (PACKED_SUFFIXES, decompressed, glob_json, json_exists, json_record_name, read_json,
                                    read_json_text, write_json_text)

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("twin", "calibration")
SOURCE_GLOBS = ("twin/**/*.py", "calibration/*.py")   # calibration/'s modules are flat (measurements/ is records)
JUDGEMENT_GLOB = "calibration/*_judgement.json"
OFF_VALUES = (False, (), None, 0)


def _assigned(body: list) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id.startswith("ADOPT_") and node.value is not None:
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    value = ast.unparse(node.value)
                out[t.id] = list(value) if isinstance(value, tuple) else value
    return out


def switches_in_source(text: str) -> dict[str, object]:
    """The module-level ADOPT_* assignments of one file's source, {name: literal value} (a value that is not a
    literal: its source text). Each assignment's own line is parsed (a whole module's tree costs ~50 times more);
    one that spans lines sends the whole file to the parser."""
    out: dict[str, object] = {}
    for line in text.splitlines():
        if line.startswith("ADOPT_"):
            try:
                out.update(_assigned(ast.parse(line).body))
            except SyntaxError:
                return _assigned(ast.parse(text).body)
    return out


def live_switches(repo: Path = REPO) -> dict[str, object]:
    """Every ADOPT_* switch of this tree's twin/ and calibration/ sources, {"<path>:<NAME>": value} (as the files
    say, read once a process: a switch set on a module at run time is not seen)."""
    return dict(_live_switches(Path(repo)))


@functools.lru_cache(maxsize=4)
def _live_switches(repo: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for pattern in SOURCE_GLOBS:
        for path in sorted(repo.glob(pattern)):
            text = path.read_text()
            if "\nADOPT_" in text:
                rel = path.relative_to(repo).as_posix()
                out.update({f"{rel}:{k}": v for k, v in switches_in_source(text).items()})
    return out


def _git(*args: str, repo: Path = REPO) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=repo, check=True).stdout


def switches_at(commit: str, repo: Path = REPO) -> dict[str, object]:
    """live_switches as they were at `commit` (git needed)."""
    files = _git("grep", "-l", "^ADOPT_", commit, "--", *SOURCE_DIRS, repo=repo).split()
    out: dict[str, object] = {}
    for f in files:
        rel = f.split(":", 1)[1]
        if rel.endswith(".py"):
            text = _git("show", f"{commit}:{rel}", repo=repo)
            out.update({f"{rel}:{k}": v for k, v in switches_in_source(text).items()})
    return out


def head_commit(repo: Path = REPO) -> str:
    return _git("rev-parse", "--short=8", "HEAD", repo=repo).strip()


def stamped(out: dict, repo: Path = REPO) -> dict:
    """A writer's judgement `out` with the commit and switches of this tree (HEAD; the tree's own switch values)."""
    return {**out, "commit": head_commit(repo), "computed_under": live_switches(repo)}


def drift(judgement: dict, live: dict | None = None) -> dict:
    """What moved between a judgement's computed_under and `live` (this tree's switches): {"moved": {key: [then,
    now]}, "added": {key: now} (values other than off only), "removed": [key]}; None where it records none. A
    switch its `rechecked` record found inert (a live recompute with it at today's value gave the same figures) is
    left out while it keeps that value."""
    then = judgement.get("computed_under")
    if then is None:
        return None
    live = live_switches() if live is None else live
    inert = judgement.get("rechecked", {}).get("inert_switches", {})
    live = {k: v for k, v in live.items() if not (k in inert and inert[k] == v)}
    return {"moved": {k: [then[k], v] for k, v in live.items() if k in then and then[k] != v},
            "added": {k: v for k, v in live.items() if k not in then and v not in OFF_VALUES and v != []},
            "removed": sorted(k for k in then if k not in live and k not in inert)}


@contextlib.contextmanager
def as_judged(judgement: dict, live: dict | None = None) -> Iterator[dict]:
    """Inside, every switch that moved since the judgement (drift's "moved") set back to its recorded value on its
    imported module, and every switch added since as True set to False (a candidate's switch is born off: the code
    of the judgement's day ran without it); yields {key: value set}. A switch removed since, or added with another
    value, is left as it is: a recompute inside reproduces the judgement only where nothing but these switches
    changed what it computes (profiles, records and code move too)."""
    d = drift(judgement, live) or {"moved": {}, "added": {}}
    back = {k: then for k, (then, _) in d["moved"].items()}
    back.update({k: False for k, v in d["added"].items() if v is True})
    saved = []
    try:
        for key, then in back.items():
            path, name = key.rsplit(":", 1)
            module = importlib.import_module(path[:-len(".py")].replace("/", "."))
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, tuple(then) if isinstance(then, list) else then)
        yield back
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def _short(key: str) -> str:
    return key.rsplit(":", 1)[1]


def read_note(path: Path) -> str | None:
    """note() of a committed judgement file, plain or packed (None where it is absent)."""
    return note(read_json(path)) if json_exists(path) else None


def note(judgement: dict, live: dict | None = None) -> str | None:
    """"as judged at <commit>; live: <what moved>" where a switch moved since the judgement; None where nothing did
    (the figures may still differ: profiles, records and code move too), or where it records no computed_under."""
    d = drift(judgement, live)
    r = judgement.get("rechecked", {})
    if d is None or not any(d.values()):
        return None
    parts = [f"{_short(k)} {then} -> {now}" for k, (then, now) in sorted(d["moved"].items())]
    parts += [f"{_short(k)} added ({v})" for k, v in sorted(d["added"].items())]
    parts += [f"{_short(k)} removed" for k in d["removed"]]
    out = f"as judged at {judgement.get('commit', '?')}; live: {', '.join(parts)} since (the committed figures are that day's)"
    if r and not r.get("same"):
        verdicts = "; ".join(f"{p} {a} -> {b}" for p, a, b in r.get("verdict_fields", []))
        out += f"; rechecked at {r['commit']}: {r['num_differing']} figures differ" + (f", {verdicts}" if verdicts else "")
    return out


IGNORED_KEYS = {"code_commit", "commit", "computed_under", "rechecked"}


def differences(then: object, now: object, path: str = "") -> list[tuple[str, object, object]]:
    """The leaves of two judgements that differ, (path, then, now): numbers beyond 1e-6 relative (1e-12 absolute),
    anything else unequal; the stamp's keys (IGNORED_KEYS) left out."""
    if isinstance(then, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(then) | set(now), key=str):
            if k in IGNORED_KEYS and not path:
                continue
            p = f"{path}/{k}" if path else str(k)
            out += differences(then[k], now[k], p) if k in then and k in now else \
                [(p, then.get(k, "<absent>"), now.get(k, "<absent>"))]
        return out
    if isinstance(then, list) and isinstance(now, list):
        out = [] if len(then) == len(now) else [(f"{path}/len", len(then), len(now))]
        return out + [d for i, (a, b) in enumerate(zip(then, now)) for d in differences(a, b, f"{path}/{i}")]
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (then, now))
    if numbers:
        same = math.isclose(then, now, rel_tol=1e-6, abs_tol=1e-12) or (math.isnan(then) and math.isnan(now))
        return [] if same else [(path, then, now)]
    return [] if then == now else [(path, then, now)]


def recheck_file(path: Path, live_path: Path, commit: str | None = None, repo: Path = REPO) -> dict:
    """Record beside a committed judgement what its writer's command gave at this tree's HEAD (`live_path`, the
    file it wrote): "rechecked": {commit, same, num_differing, verdict_fields (the true/false/null/text leaves that
    differ), inert_switches (where the same: every switch that had moved since, at its value now)}. Appended
    before the closing brace; replaces nothing (refuses a file rechecked already). The file, plain or packed, is
    written back packed (records_io.write_json_text)."""
    text = read_json_text(path)
    j = json.loads(text)
    if "rechecked" in j or "computed_under" not in j:
        raise SystemExit(f"{path}: rechecked already, or not stamped (stamp first)")
    diffs = differences(j, read_json(live_path))
    verdict = [[p, a, b] for p, a, b in diffs if not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                      for x in (a, b))]
    d = drift(j, live_switches(repo))
    inert = {**{k: now for k, (_, now) in d["moved"].items()}, **d["added"]} if not diffs else {}
    r = {"commit": commit or head_commit(repo), "same": not diffs, "num_differing": len(diffs), "verdict_fields": verdict[:12],
         "inert_switches": inert}
    end = text.rstrip().rfind("}")
    write_json_text(path, text[:end].rstrip() + f',\n "rechecked": {json.dumps(r, default=str)}\n}}\n')
    assert read_json(path)["rechecked"] == json.loads(json.dumps(r, default=str))
    return r


def written_at(path: Path, repo: Path = REPO) -> str:
    """The commit a judgement file was computed under: its own code_commit, else the last non-merge commit that changed
    its text under any of its names (X.json, X.json.xz, X.json.gz: a commit that only packed it changed no text)."""
    j = read_json(path)
    if j.get("code_commit"):
        return _git("rev-parse", "--short=8", j["code_commit"], repo=repo).strip()
    plain = Path(path).resolve().with_name(json_record_name(path))
    rels = [p.relative_to(repo).as_posix() for p in (plain, *(plain.with_name(plain.name + s) for s in PACKED_SUFFIXES))]
    commits = _git("log", "--no-merges", "--format=%h", "--abbrev=8", "--", *rels, repo=repo).split()
    for commit in commits:
        if _text_at(commit, rels, repo) != _text_at(commit + "^", rels, repo):
            return commit
    return commits[0] if commits else ""


def _text_at(commit: str, rels: list[str], repo: Path) -> bytes | None:
    """The file's text (decompressed) at `commit` under the first of `rels` it has there; None where it has none."""
    for rel in rels:
        got = subprocess.run(["git", "show", f"{commit}:{rel}"], capture_output=True, cwd=repo)
        if got.returncode == 0:
            return decompressed(rel, got.stdout)
    return None


def stamp_file(path: Path, commit: str | None = None, repo: Path = REPO) -> str:
    """Add "commit" and "computed_under" to a committed judgement file, its bytes before kept as they are (the two
    keys appended before its closing brace), written back packed (records_io.write_json_text: X.json.xz, atomically;
    a plain X.json, e.g. from a branch that predates the packing, is replaced); refuses one already stamped. Returns
    the commit used."""
    text = read_json_text(path)
    j = json.loads(text)
    if "computed_under" in j:
        raise SystemExit(f"{path}: already records computed_under (commit {j.get('commit')}); a judgement is not restamped")
    commit = commit or written_at(path, repo)
    under = switches_at(commit, repo)
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(under.items()))
    end = text.rstrip().rfind("}")
    new = (text[:end].rstrip() + f',\n "commit": {json.dumps(commit)},\n "computed_under": {{\n{body}\n }}\n}}\n')
    assert json.loads(new) == {**j, "commit": commit, "computed_under": under}
    write_json_text(path, new)
    return commit


def judgement_files(repo: Path = REPO) -> list[Path]:
    """Every committed judgement (JUDGEMENT_GLOB), packed (X_judgement.json.xz) or plain (one a branch wrote before the
    packing was merged), each once, in the order of their plain names (records_io.glob_json)."""
    folder, pattern = JUDGEMENT_GLOB.rsplit("/", 1)
    return glob_json(Path(repo) / folder, pattern)


def table(repo: Path = REPO) -> list[dict]:
    """Every committed judgement: its file (plain name), commit and what moved since (drift)."""
    live = live_switches(repo)
    rows = []
    for path in judgement_files(repo):
        j = read_json(path)
        rows.append({"file": json_record_name(path), "commit": j.get("commit"), "drift": drift(j, live)})
    return rows


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.judged_under", __doc__)
    sub = ap.add_subparsers(dest="command")
    s = sub.add_parser("stamp", help="add commit / computed_under to committed judgement files (git needed)")
    s.add_argument("files", type=Path, nargs="+", metavar="FILE")
    s.add_argument("--at", default=None, metavar="COMMIT", help="the commit it was computed under (default: its "
                   "code_commit, else the last commit that wrote it)")
    c = sub.add_parser("recheck", help="record beside a judgement what its writer's command wrote at HEAD (LIVE.json)")
    c.add_argument("file", type=Path, metavar="FILE")
    c.add_argument("live", type=Path, metavar="LIVE.json")
    c.add_argument("--at", default=None, metavar="COMMIT", help="the commit the command ran at (default HEAD; its "
                   "switches must be this tree's)")
    a = ap.parse_args(argv)
    if a.command == "recheck":
        for f in (a.file, a.live):
            if not json_exists(f):
                print(f"error: {f}: not a file; expected a judgement JSON", file=sys.stderr)
                return entry.EXIT_INVALID
        r = recheck_file(a.file, a.live, a.at)
        print(f"{a.file.name}: {'same' if r['same'] else str(r['num_differing']) + ' differ'} at {r['commit']}")
        return 0
    if a.command == "stamp":
        for f in a.files:
            if not json_exists(f):
                print(f"error: FILE {f}: not a file; expected a calibration/*_judgement.json", file=sys.stderr)
                return entry.EXIT_INVALID
            print(f"{f.name}: computed under {stamp_file(f, a.at)}")
        return 0
    for r in table():
        d = r["drift"]
        if d is None:
            print(f"{r['file']:32} (no computed_under)")
            continue
        moved = [f"{_short(k)} {t}->{n}" for k, (t, n) in sorted(d["moved"].items())]
        moved += [f"{_short(k)} added" for k in sorted(d["added"])] + [f"{_short(k)} removed" for k in d["removed"]]
        print(f"{r['file']:32} {r['commit']}  {'; '.join(moved) or 'no switch moved since'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""real/campaigns/serve_parts.sh, the serving campaigns' shared lines (s33dedup): the part loop's labels, caps and
skips, the campaign log's gate, and host.txt's sections, run in bash with a stub part (no engine, ~0.1 CPU-s)."""

import re
import subprocess
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "real" / "campaigns" / "serve_parts.sh"


def _bash(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = f'set -u\n. "{LIB}"\nDIR="{tmp_path}"\n' + body
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


STUB = 'serve_part() { echo "part [$1] [$2] cap $3"; return 3; }\n'


def _lines(out: str) -> list[str]:
    """The lines with each UTC time (date -u +%FT%TZ) as DATE and the seconds spent (bash's SECONDS, which may tick
    during the run) as N."""
    out = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "DATE", out)
    for pattern, repl in ((r"\(\d+ s\)", "(N s)"), (r"after \d+ s", "after N s"), (r"\d+ s of", "N s of")):
        out = re.sub(pattern, repl, out)
    return out.splitlines()


def test_parts_run_in_turn_labelled_by_kind_each_capped_by_what_is_left(tmp_path):
    # PART_S 50 s, TOTAL_S 1000 s: each part's cap is min(1000 - spent, 50) = 50; a bare plan has no kind
    got = _bash(STUB + 'PART_S=50; TOTAL_S=1000; SECONDS=0\nserve_parts "set:p1 p2 trace-eager:p3"\n', tmp_path)
    assert got.returncode == 0, got.stderr
    assert _lines(got.stdout) == ["part [set] [p1] cap 50", "set p1 exit 3 at DATE (N s)",
                                  "part [] [p2] cap 50", "p2 exit 3 at DATE (N s)",
                                  "part [trace-eager] [p3] cap 50", "trace-eager p3 exit 3 at DATE (N s)"]
    # TOTAL_S 45 s: the cap is what is left, 45 s less the second bash's clock may have ticked
    got = _bash(STUB + 'PART_S=50; TOTAL_S=45; SECONDS=0\nserve_parts "p1"\n', tmp_path)
    assert _lines(got.stdout)[0] in ("part [] [p1] cap 45", "part [] [p1] cap 44")


def test_parts_under_20_s_of_the_whole_left_are_skipped_and_without_a_whole_each_gets_its_cap(tmp_path):
    got = _bash(STUB + 'PART_S=50; TOTAL_S=19; SECONDS=0\nserve_parts "set:p1 p2"\n', tmp_path)
    assert _lines(got.stdout) == ["set p1 skipped: N s of 19 spent", "p2 skipped: N s of 19 spent"]
    got = _bash(STUB + 'PART_S=50; SECONDS=0\nserve_parts "p1"\n', tmp_path)
    assert _lines(got.stdout)[0] == "part [] [p1] cap 50"


def test_the_campaign_log_is_gated_on_the_gpus_it_needs_and_drops_usdt_lines(tmp_path):
    body = 'work() { echo ran; echo "USDT: probe" >&2; echo err >&2; }\n'
    got = _bash(body + 'NGPU=1; DEVICE=auto\nserve_campaign demo "$DIR/demo.log" "1 GPU(s), parts x" work\n', tmp_path)
    log = (tmp_path / "demo.log").read_text()
    assert got.stdout == log and _lines(log) == ["demo start DATE, 1 GPU(s), parts x", "ran", "err",
                                                  "demo end DATE after N s"]
    got = _bash(body + 'NGPU=0; DEVICE=auto\nserve_campaign demo "$DIR/demo.log" "0 GPU(s)" work\n', tmp_path)
    assert _lines(got.stdout)[1:] == ["skipped: no GPU", "demo end DATE after N s"]
    got = _bash(body + 'NGPU=0; DEVICE=cpu\nserve_campaign demo "$DIR/demo.log" "0 GPU(s)" work\n', tmp_path)
    assert "ran" in got.stdout.splitlines()
    got = _bash(body + 'NGPU=1; DEVICE=auto\nSERVE_NEED_GPUS=2 serve_campaign demo "$DIR/demo.log" "" work\n', tmp_path)
    assert "skipped: 1 GPU(s), needs 2" in got.stdout.splitlines()


def test_host_txt_holds_the_named_sections_in_order_and_an_unknown_one_is_refused(tmp_path):
    got = _bash('serve_host "$DIR/host.txt" nproc loadavg\n', tmp_path)
    lines = (tmp_path / "host.txt").read_text().splitlines()
    assert got.returncode == 0 and lines[0] == "== nproc" and lines[2] == "== loadavg" and len(lines) == 4
    got = _bash('serve_host "$DIR/host.txt" nproc clocks\n', tmp_path)
    assert got.returncode == 2 and "serve_host: unknown section clocks" in (tmp_path / "host.txt").read_text()

"""s27walk: no record names a machine's temporary or home folder. real.pipeline's environment record named its
--out as given (57 committed env_pipeline JSONs said /tmp/tmp.FxA3w5UH0r/out/s26eprate/bench-small-4l or
/root/out/...; s22dg's and s24bwd3's logs the device's temp checkout): the writer now records OUTDIR/<lane>/<part>,
and the committed files were scrubbed the same way. Under a second."""

import lzma
import re
import subprocess
from pathlib import Path

from real.pipeline.bench import recorded_out

REPO = Path(__file__).resolve().parents[2]
MACHINE_PATH = re.compile(rb'/tmp/tmp\.[A-Za-z0-9]{6,}|"/(?:tmp|root|home|work)/')


def test_the_environment_record_names_out_without_the_machines_prefix():
    assert recorded_out("/tmp/tmp.FxA3w5UH0r/out/s26eprate/bench-small-4l") == "OUTDIR/s26eprate/bench-small-4l"
    assert recorded_out(Path("/root/out/b1/c/s10pp/x4")) == "OUTDIR/s10pp/x4"
    assert recorded_out("/x") == "OUTDIR/x"
    assert recorded_out("out/s7pipe") == "out/s7pipe"   # a relative folder is the caller's own words


def test_no_committed_record_log_or_environment_names_a_machine_folder():
    tracked = subprocess.run(["git", "ls-files", "calibration/measurements"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(tracked) > 1000
    named = []
    for name in tracked:
        path = REPO / name
        if name.endswith((".txt.xz", ".log.xz")):
            data = lzma.decompress(path.read_bytes())
        elif name.endswith((".json", ".txt", ".log")):
            data = path.read_bytes()
        else:   # records (CSV) carry no paths; their columns are checked where they are read
            continue
        if MACHINE_PATH.search(data):
            named.append(name)
    # a campaign filed from code before recorded_out (or a log quoting its temp checkout): scrub as the others were,
    # e.g. sed -i -E 's#"out": "/[^"]*/([^/"]+/[^/"]+)"#"out": "OUTDIR/\1"#' FILE (a packed log: unpack, edit, repack)
    assert named == [], f"machine folders in {named}"

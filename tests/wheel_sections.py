"""The sections of `twin validate` that tests/test_wheel.py runs with the installed wheel, and the source tree's.

Run as a script by the fresh environment's interpreter (`python tests/wheel_sections.py OUT.json`): its own folder
is put on sys.path, not the checkout, so every import below resolves to the installed packages. Imported by the test
to compute the same sections in the source tree. Together they read every data family `twin validate` reads through
the packages' own paths: the folders of the records root (each GPU's records, each multi-GPU host's, the serving load
campaigns), each GPU's timed rows (plain and gzipped CSVs), each multi-GPU host's NCCL sweep, a campaign's records two
folders down with the predictions committed for them (s20new: <gpu>/s20new/<model>/), the fitted profiles, the H800
trace phases, the published runs' table and the two packaged serving scenarios (DeepSeek's serving profiles; read
from the checkout's scenarios/ until s19ux). Seconds of CPU, where the whole `twin validate` took over a minute."""

from __future__ import annotations

import json
import sys


def sections() -> dict:
    from calibration import nccl, prereg, published_runs, serving_trace, trace
    from calibration import records as rec
    from calibration.fit import PROFILES_DIR
    from calibration.serve_load_validation import serve_load_dirs
    from calibration.validate import multi_gpu_dirs, validate_parts
    from twin.costs.profile import simulation_profile
    from twin.core.results import to_json

    records = {gpu: rec.load_records(gpu) for gpu in rec.gpu_dirs()}
    h100 = simulation_profile(json.loads((PROFILES_DIR / "h100.json").read_text()))
    out = {"validate_parts": validate_parts(),
           "records": {gpu: {"rows": len(df), "benches": sorted(df["bench"].unique())} for gpu, df in records.items()},
           "serve_load_folders": [d.name for d in serve_load_dirs(rec.MEASUREMENTS_DIR)],
           "nccl": {folder: nccl.sweep_summary(rec.MEASUREMENTS_DIR / folder) for folder in multi_gpu_dirs()},
           "prereg_s20new": prereg.validate_section(rec.MEASUREMENTS_DIR),
           "h800_trace": trace.compare(h100),
           "published_runs": published_runs.compare(),
           "deepseek_serving_profiles": serving_trace.compare()}
    return json.loads(json.dumps(to_json(out), allow_nan=False))


if __name__ == "__main__":
    import calibration
    with open(sys.argv[1], "w") as f:
        json.dump({"calibration_file": calibration.__file__, "sections": sections()}, f)

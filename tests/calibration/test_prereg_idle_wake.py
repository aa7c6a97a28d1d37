"""calibration.prereg_idle_wake registers set O's planned runs: they are real/serve's plans gpu1-s29o-* exactly (the
campaign real/campaigns/s29serve.sh runs those), and its registered file (written once before the run) holds both
settings for every run."""

from calibration import prereg_idle_wake as pw
from calibration.records_io import csv_exists, read_csv
from real.serve.plans import PLANS, S29O_MODELS


def test_registered_runs_are_the_campaign_plans():
    for model, short in S29O_MODELS.items():
        plan = PLANS[f"gpu1-s29o-{short}"]
        assert plan.token_budget == pw.ps.ENGINE["token_budget"] and plan.runs[0].warm_shapes == pw.WARM_TOKENS
        got = [(pw.run_id(model, r), r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency, r.load_s, r.seed)
               for r in pw.runs(model)]
        want = [(r.name, r.arrival, r.input_len, r.output_len, r.rate_per_s if r.arrival == "poisson" else 0.0,
                 r.concurrency if r.arrival == "closed" else 0, r.load_s, r.seed) for r in plan.runs]
        assert got == want


def test_registered_file_holds_both_settings_for_every_run():
    assert csv_exists(pw.PREDICTIONS_FILE)   # written once before set O ran, committed
    df = read_csv(pw.PREDICTIONS_FILE)
    ids = {pw.run_id(m, r) for m in pw.MODELS for r in pw.runs(m)}
    for setting in pw.SETTINGS:
        sub = df[(df.twin == setting) & (df.host_launch_s == 0)]
        assert set(sub.run_id) == ids and (sub.ttft_p50_s > 0).all()
    assert df.code_commit.nunique() == 1

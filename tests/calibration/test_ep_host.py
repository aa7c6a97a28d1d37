"""calibration/ep_host.py (s13ep, issue 13): an EP forward's host interval split by real/ep.py's host
marks, the .tolist() waits split by their CUDA events, the EP host terms from the fitting split, and
how the twin's forward takes them (calibration.pipeline._with_host, ADOPT_EP_HOST_TERMS)."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_host
from calibration.records_io import csv_exists, read_csv
from calibration.predict import EpBwdTokensCall, EpCountsCall, EpOp, EpRecvSync, EpSendSync, EpTokensCall, gpu_spec
from twin.core.specs import get_model
from calibration.fit import PROFILES_DIR
from twin.costs.profile import profile_from_json

CFG = dict(model="m", schedule="1f1b", pp=1, ep=2, num_microbatches=1, micro_batch_seqs=1, seq_len=16,
           precision="bf16")
LABELS = ["dispatch", "counts_a2a", "tolist_send", "tolist_recv", "gather", "tokens_a2a", "dispatch_post",
          "dispatch_end", "combine", "combine_a2a", "combine_post", "combine_end"]


def _records(split="fit", late_rank=1, late_s=0.0):
    """Two ranks, one forward of two MoE layers each: marks every 10 us (the send-splits wait 100 us,
    rank `late_rank`'s stream reaching the exchange `late_s` later), CUDA events at the exchange."""
    marks, ops = [], []
    for rank in (0, 1):
        t = 1e-3
        ops.append(dict(CFG, rep=0, rank=rank, op_index=0, kind="F", microbatch=0, host_start_s=0.0,
                        host_end_s=0.0, start_s=0.0, end_s=0.0, split=split))
        for layer in range(2):
            for label in LABELS:
                gpu = float("nan")
                if label == "counts_a2a":       # the stream reaches the exchange 50 us after the host calls .tolist()
                    gpu = t + 10e-6 + 50e-6 + (late_s if rank == late_rank else 0.0)
                marks.append(dict(CFG, rep=0, rank=rank, op_index=0, kind="F", microbatch=0, layer=layer, mark=label,
                                  thread="main", host_s=t, gpu_s=gpu, split=split))
                t += 100e-6 + late_s if label == "tolist_send" else 10e-6
        ops[-1]["host_end_s"] = t + 20e-6
    m, o = pd.DataFrame(marks), pd.DataFrame(ops)
    # the exchange ends 40 us before the host returns from .tolist() (the return)
    send = m["mark"] == "tolist_send"
    m.loc[send, "gpu_s"] = m.loc[send, "host_s"].to_numpy() + 60e-6 + late_s
    return m, o


def test_forward_segments_split_the_host_interval_into_issue_calls_and_waits():
    marks, ops = _records()
    seg = ep_host.forward_segments(marks, ops)
    per_op = seg.groupby(["rank"])["seconds"].sum()
    assert per_op.to_numpy() == pytest.approx([ops["host_end_s"].iloc[0]] * 2)  # head .. tail cover the op
    s = ep_host.forward_summary(seg).iloc[0]
    assert s["wait"] == pytest.approx(2 * (100e-6 + 10e-6))          # per layer: the send wait + the recv
    assert s["collective"] == pytest.approx(2 * 3 * 10e-6)           # three calls a layer
    assert s["seg_head"] == pytest.approx(1e-3) and s["seg_tail"] == pytest.approx(30e-6)
    assert s["host"] == pytest.approx(s["issue"] + s["collective"] + s["wait"])


def test_sync_split_tells_the_local_gpu_the_exchange_and_the_return_apart():
    marks, _ = _records(late_s=30e-6)
    w = ep_host.sync_split(marks).set_index(["rank", "layer"])
    mine, late = w.loc[(0, 0)], w.loc[(1, 0)]
    assert mine["local"] == pytest.approx(50e-6)                        # its stream 50 us behind the host
    assert mine["a2a_peer"] + mine["local"] + mine["return"] == pytest.approx(mine["wait"])
    assert mine["return"] == pytest.approx(40e-6)
    assert mine["peer_late"] == pytest.approx(30e-6) and late["peer_late"] == pytest.approx(0.0)


def test_host_terms_come_from_the_fitting_split_only():
    marks, ops = _records()
    terms = ep_host.ep_host_terms(marks, ops, fwd_rate_s=2e-6)
    # the calls as marked; each .tolist() less the twin's two launches before it (2 x 2 us)
    assert terms == pytest.approx({"ep_counts_a2a": 10e-6, "ep_tokens_a2a": 10e-6,
                                   "ep_send_sync": 100e-6 - 4e-6, "ep_recv_sync": 10e-6 - 4e-6})
    held_marks, held_ops = _records(split="holdout")
    assert ep_host.ep_host_terms(held_marks, held_ops, 2e-6) == {}


def test_terms_are_the_pacing_ranks():
    """At each exchange the rank whose host reached the send-splits .tolist() last paces the step:
    only its segments count (rank 1 at layer 0, rank 0 at layer 1 here)."""
    marks, ops = _records()
    late = {(1, 0), (0, 1)}                                  # (rank, layer) that arrive 50 us late
    for (rank, layer) in late:
        sel = (marks["rank"] == rank) & (marks["layer"] == layer) & (marks["mark"] == "tolist_send")
        marks.loc[sel, "host_s"] += 50e-6
    seg = ep_host.pacing_segments(ep_host.forward_segments(marks, ops), marks)
    assert set(zip(seg["rank"], seg["layer"])) == late
    # the late rank's counts call (its segment runs to its late .tolist()) is what the term takes
    assert ep_host.ep_host_terms(marks, ops, 2e-6)["ep_counts_a2a"] == pytest.approx(10e-6 + 50e-6)


def test_twin_forward_counts_launches_and_waits():
    ops = [(1.0, 5.0), (None, 0.0), (1.0, 1.0), (1.0, 1.0)]
    t = ep_host.twin_forward(ops)
    assert t["launch_s"] == 3.0 and t["waits_s"] == [5.0] and t["host_s"] == 8.0 and t["gpu_s"] == 9.0


def test_with_host_applies_the_terms_to_the_ep_ops_only():
    ops = [(3.0, 1.0), EpCountsCall((3.0, 0.5)), EpSendSync((None, 0.0)), (3.0, 1.0), EpRecvSync((None, 0.0)),
           EpTokensCall((3.0, 2.0))]
    plain = pipe._with_host(ops, 2.0)
    assert plain == [(2.0, 1.0), (2.0, 0.5), (None, 0.0), (2.0, 1.0), (None, 0.0), (2.0, 2.0)]
    terms = {"ep_counts_a2a": 7.0, "ep_tokens_a2a": 9.0, "ep_send_sync": 0.25, "ep_recv_sync": 0.5}
    assert pipe._with_host(ops, 2.0, terms) == [(2.0, 1.0), (7.0, 0.5), (None, 0.0), (0.25, 0.0), (2.0, 1.0),
                                                (None, 0.0), (0.5, 0.0), (9.0, 2.0)]
    assert pipe._with_host(ops, 2.0, {}) == plain


def test_an_ep_stage_forward_carries_its_dispatch_and_combine_ops():
    spec = dataclasses.replace(get_model("v2-lite-slice"), num_layers=3, num_mtp_modules=0)
    moe_layers = spec.num_layers - spec.num_dense_layers
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    ops = pipe.stage_ops(spec, range(spec.num_layers), True, True, 1, 256, "bf16", gpu_spec("h100"), prof, ep=2)
    kinds = [type(op) for op in ops.f if isinstance(op, EpOp)]
    assert kinds == [EpCountsCall, EpSendSync, EpRecvSync, EpTokensCall, EpTokensCall] * moe_layers
    # the backward carries only the all-to-alls' backward nodes (s23bwd2's markers, two a MoE layer: plain launches
    # unless calibration.pipeline.ADOPT_EP_BWD_HOST), none of the forward's terms
    assert [type(op) for op in ops.b if isinstance(op, EpOp)] == [EpBwdTokensCall] * (2 * moe_layers)
    one = pipe.stage_ops(spec, range(spec.num_layers), True, True, 1, 256, "bf16", gpu_spec("h100"), prof, ep=1)
    assert not any(isinstance(op, EpOp) for op in one.f)                 # no EP, no EP ops


def test_between_syncs_measures_the_host_from_each_return_to_the_next_call():
    marks, ops = _records()
    b = ep_host.between_syncs(marks, ops).iloc[0]
    # marks 10 us apart, the send wait 100 us: a layer spans 210 us, its call 20 us in, its return 130 us in
    assert (b["first"], b["mid"], b["last"]) == pytest.approx((1e-3 + 20e-6, 100e-6, 100e-6))
    t = ep_host.twin_forward([(1.0, 0.0), (None, 0.0), (2.0, 0.0), (None, 0.0), (4.0, 0.0)])
    assert t["between_s"] == [1.0, 2.0, 4.0]


def test_backward_calls_pair_each_all_to_all_node_begin_with_its_end():
    rows = [dict(CFG, rep=0, rank=0, op_index=1, kind="BW", microbatch=0, layer=layer, mark=mark, thread="autograd",
                 host_s=t, gpu_s=float("nan"), split="fit")
            for layer, base in ((1, 0.010), (0, 0.020))
            for mark, t in (("bwd_combine_a2a", base), ("bwd_combine_a2a_end", base + 50e-6),
                            ("bwd_dispatch_a2a", base + 1e-3), ("bwd_dispatch_a2a_end", base + 1e-3 + 30e-6))]
    ops = pd.DataFrame([dict(CFG, rep=0, rank=0, op_index=1, kind="BW", microbatch=0, host_start_s=0.005,
                             host_end_s=0.030, start_s=0.0, end_s=0.0, split="fit")])
    b = ep_host.backward_calls(pd.DataFrame(rows), ops).iloc[0]
    assert b["calls"] == 4 and b["call_s"] == pytest.approx(2 * 80e-6) and b["host"] == pytest.approx(0.025)


def test_measured_and_twin_groups_cut_a_layer_alike():
    marks, ops = _records()
    groups = ep_host.measured_groups(ep_host.forward_segments(marks, ops))
    first, second = groups[groups["rank"] == 0].sort_values("layer").to_dict("records")
    assert first["to_counts"] == pytest.approx(1e-3 + 10e-6)       # the head, then dispatch's first segment
    assert second["to_counts"] == pytest.approx(3 * 10e-6)          # combine_post, combine_end, dispatch
    assert first["send_sync"] == pytest.approx(100e-6) and first["experts"] == pytest.approx(30e-6)
    assert second["after"] == pytest.approx(10e-6 + 30e-6)          # combine_post and the tail
    twin_layer = [(1.0, 0.0), EpCountsCall((2.0, 0.0)), (3.0, 0.0), EpSendSync((None, 0.0)), (4.0, 0.0),
                  EpRecvSync((None, 0.0)), (5.0, 0.0), EpTokensCall((6.0, 0.0)), (7.0, 0.0), EpTokensCall((8.0, 0.0))]
    t = ep_host.twin_groups(twin_layer * 2 + [(9.0, 0.0)])
    assert t[0] == {"to_counts": 1.0, "counts_call": 2.0, "send_sync": 3.0, "recv_sync": 4.0, "gather": 5.0,
                    "tokens_call": 6.0, "experts": 7.0, "combine_call": 8.0}
    assert t[1]["after"] == 9.0


# ---- the committed records (s13ep's rule: D adopted on the 2xH200 folder, and since s14ep on the 2xH100
# folder, each carrying the marks of a host run of its own machine kind)

COMMITTED = Path(__file__).resolve().parents[2] / "calibration/measurements"


def _profile(gpu, folder):
    from calibration import records as rec
    from calibration.validate import load_fitted_profile
    from calibration.whole_step import with_measured_collectives
    prof, _ = load_fitted_profile(gpu, rec.load_records(gpu), PROFILES_DIR)
    return with_measured_collectives(prof, folder)


@pytest.mark.parametrize("name,gpu", [("h200x2", "h200"), ("h100x2", "h100")])
def test_committed_terms_lengthen_the_ep_forward_by_what_they_add(monkeypatch, name, gpu):
    from calibration.ep_host_compare import twin_forward_of
    folder = COMMITTED / name
    prof = _profile(gpu, folder)
    rates = pipe.measured_host_s(folder, gpu, prof, pipe.measured_accumulate(folder, gpu))
    terms = {k: rates[k] for k in pipe.EP_HOST_TERMS}
    # an all-to-all call costs the host several launches (s13ep: ~140-180 us against 28 us a launch on
    # the 2xH200, s14ep: ~160-190 us against 25 us on the 2xH100)
    assert rates["fwd"] < terms["ep_counts_a2a"] < 1e-3 and rates["fwd"] < terms["ep_tokens_a2a"] < 1e-3
    cfg = dict(model="v2-lite-slice", schedule="1f1b", pp=1, ep=2, num_microbatches=1, micro_batch_seqs=1,
               seq_len=4096, precision="bf16")
    on = twin_forward_of(folder, gpu, cfg)
    monkeypatch.setattr(pipe, "ADOPT_EP_HOST_TERMS", False)
    off = twin_forward_of(folder, gpu, cfg)
    moe_layers = 7                                           # v2-lite-slice x 8 layers: the first is dense
    added = moe_layers * (terms["ep_counts_a2a"] + 2 * terms["ep_tokens_a2a"] - 3 * rates["fwd"]
                          + terms["ep_send_sync"] + terms["ep_recv_sync"])
    assert on["launch_s"] - off["launch_s"] == pytest.approx(added, rel=1e-6)
    assert on["host_s"] > off["host_s"]


def test_folders_without_marks_take_no_terms_of_their_own(monkeypatch):
    """Without carried terms (s15dp's ADOPT_CARRIED_EP_HOST_TERMS off) a folder without marks has no
    EP terms; with it (adopted) it takes the same GPU's 2-GPU folder's: test_s15dp_carried_ep_terms."""
    monkeypatch.setattr(pipe, "ADOPT_CARRIED_EP_HOST_TERMS", False)
    folder = COMMITTED / "h100x4"                      # PP2 x EP2 records; no host-marks run of that host
    assert not csv_exists(folder / "ep_host_marks.csv")   # plain or compressed
    prof = _profile("h100", folder)
    rates = pipe.measured_host_s(folder, "h100", prof, pipe.measured_accumulate(folder, "h100"))
    assert rates and "fwd" in rates
    assert not set(pipe.EP_HOST_TERMS) & set(rates)


def test_compare_cli_reads_the_committed_run_and_refuses_a_folder_without_marks(tmp_path, capsys):
    from calibration.ep_host_compare import main
    run = COMMITTED / "h200x2/s13ep_20261126_2254/x2/marks_host"
    assert main([str(run), "--fit-only", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["num_microbatches"] for r in rows) == [1, 4] and {r["split"] for r in rows} == {"fit"}
    for r in rows:   # a forward's host splits into its classes; the backward issues 14 all-to-all calls
        assert 0 < r["collective"] < r["issue"] < r["host"] and r["wait"] > 0
        assert r["backward"]["calls"] == 14
    assert main([str(tmp_path)]) == 2
    assert "ep_host_marks.csv" in capsys.readouterr().err


# ---- the ep.csv rows (s13epl: the same calls, the same terms; flag off by its rule)

def _ep_rows(*benches):
    df = read_csv(COMMITTED / "h200x2" / "ep.csv")   # plain or compressed
    return [df[(df["bench"] == b) & (df["tokens_per_rank"] == 1024) & (df["skew"] == 0)
               & (df["precision"] == "bf16")].iloc[0] for b in benches]


def test_ep_rows_take_the_terms_on_their_calls_only():
    from calibration.whole_step import predict_ep_row
    prof = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    gpu = gpu_spec("h200")
    counts = {"ep_counts_a2a": 5e-3, "ep_tokens_a2a": 0.0, "ep_send_sync": 0.0, "ep_recv_sync": 0.0}
    for row in _ep_rows("ep_dispatch", "moe_layer_ep_fwd"):
        base = predict_ep_row(row, gpu, prof)
        assert predict_ep_row(row, gpu, prof, {}) == base == predict_ep_row(row, gpu, prof, None)
        # the counts call holds the host 5 ms where the zero terms hold it none; the send-splits
        # sync right after it waits for that call's exchange, so the 5 ms land in the window, less
        # what of it the host spends while the GPU still runs work queued before (at most one
        # window: the previous repetition's tail)
        zero = dict.fromkeys(counts, 0.0)
        window = predict_ep_row(row, gpu, prof, zero)
        assert window <= base                                     # the calls' eager launches taken away
        assert 5e-3 - window < predict_ep_row(row, gpu, prof, counts) - window <= 5e-3
        sync = dict(counts, ep_counts_a2a=0.0, ep_send_sync=2e-3)          # host time after the sync
        assert predict_ep_row(row, gpu, prof, sync) - predict_ep_row(row, gpu, prof, dict(sync, ep_send_sync=0.0)) \
            == pytest.approx(2e-3, rel=0.05)
    combine, = _ep_rows("ep_combine")                    # no counts call, no sync: those terms do nothing
    assert predict_ep_row(combine, gpu, prof, {"ep_counts_a2a": 5e-3, "ep_send_sync": 1.0}) \
        == predict_ep_row(combine, gpu, prof)


def test_validation_passes_the_folder_terms_to_the_ep_rows_under_the_flag(tmp_path, monkeypatch):
    import calibration.whole_step as whole
    from calibration.validate import predict_multi_gpu
    prof = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    pd.DataFrame(_ep_rows("ep_dispatch")).to_csv(tmp_path / "ep.csv", index=False)
    terms = {"ep_counts_a2a": 5e-3, "ep_tokens_a2a": 0.0, "ep_send_sync": 0.0, "ep_recv_sync": 0.0}
    seen = []
    monkeypatch.setattr(pipe, "folder_ep_terms", lambda folder, gpu, profile: seen.append(folder) or terms)
    monkeypatch.setattr(whole, "ADOPT_EP_LAYER_HOST_TERMS", False)
    off, = [c["predicted_s"] for c in predict_multi_gpu(tmp_path, "h200", 2, prof)[0]]
    assert seen == []
    monkeypatch.setattr(whole, "ADOPT_EP_LAYER_HOST_TERMS", True)
    on, = [c["predicted_s"] for c in predict_multi_gpu(tmp_path, "h200", 2, prof)[0]]
    assert seen == [tmp_path] and 4.5e-3 < on - off < 5e-3     # 5 ms less the launches replaced


@pytest.mark.parametrize("name,gpu", [("h200x2", "h200"), ("h100x2", "h100")])
def test_the_marked_folders_terms_are_their_steps_terms(name, gpu):
    folder = COMMITTED / name
    prof = _profile(gpu, folder)
    terms = pipe.folder_ep_terms(folder, gpu, prof)
    rates = pipe.measured_host_s(folder, gpu, prof, pipe.measured_accumulate(folder, gpu))
    assert set(terms) == set(pipe.EP_HOST_TERMS) and terms == {k: rates[k] for k in pipe.EP_HOST_TERMS}
    # the same GPU's 4-GPU folder has no marks of its own: it carries these terms where s15dp's
    # ADOPT_CARRIED_EP_HOST_TERMS is on (adopted), none otherwise
    four = COMMITTED / f"{gpu}x4"
    carried = pipe.folder_ep_terms(four, gpu, _profile(gpu, four))
    assert carried == (pytest.approx(terms) if pipe.ADOPT_CARRIED_EP_HOST_TERMS else {})

"""Published runs beyond DeepSeek (issue 14): the rows as data, the scenario built from each, the
twin's live predictions against the issue's targets, and the committed peers table (read only for
the report). The targets are asserted as the issue states them; see calibration/published_runs.py."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from calibration import published_runs as pr
from calibration.power_cap import clock_frac_at, fa2_catalog_entry
from twin.core.specs import get_gpu, get_model
from twin.costs.flops import matmul_params_per_token, param_counts, train_flops_per_token
from twin.training.step import simulate_step


@pytest.fixture(scope="module")
def result():
    return pr.compare()


def test_rows_carry_their_source_and_the_configuration_they_publish():
    runs, sources = pr.load_runs()
    assert len(runs) >= 8 and len({r.source for r in runs}) >= 2   # issue 14: two sources at least
    for r in runs:
        assert r.source in sources and sources[r.source]["url"].startswith("https://")
        assert r.where and r.published > 0
        assert {"tp", "pp", "micro_batch_seqs", "gemm_precision", "recompute", "zero_stage"} <= set(r.plan)
        get_model(r.model), get_gpu(r.gpu)   # every model and GPU is in the catalog
        assert r.global_batch_seqs * r.seq_len > 0


def test_a_neutral_field_is_dropped_and_a_needed_one_named():
    run = pr.PublishedRun(id="x", source="torchtitan", where="-", model="llama3.1-8b", gpu="h100", num_gpus=8,
                          seq_len=4096, global_batch_seqs=8, metric="tokens_per_s_per_gpu", published=1.0,
                          plan={"tp": 1, "pp": 1, "cp": 1, "cp_kind": "allgather", "tp_comm_overlap": False})
    known = {"tp", "pp"}
    assert pr.missing_fields(run, known) == []
    needs = dataclasses.replace(run, plan={**run.plan, "cp": 2})
    assert pr.missing_fields(needs, known) == ["cp", "cp_kind"]


def test_the_scenario_is_the_row_s_plan():
    runs, _ = pr.load_runs()
    run = next(r for r in runs if r.id == "tt-8b-fsdp8")
    sc = pr.scenario_of(run)
    assert (sc.model.name, sc.cluster.gpu, sc.cluster.num_gpus) == ("llama3.1-8b", "h100-hbm2e-500w", 8)
    assert (sc.plan.zero_stage, sc.plan.micro_batch_seqs, sc.plan.comm_sms, sc.plan.gemm_precision) == (3, 2, 0, "bf16")
    assert sc.workload.seq_len == 8192 and sc.num_microbatches == 1


def test_megatron_flop_count_of_a_gpt_model():
    # Narayanan et al. eq. 3 without recomputation: 72 L h^2 (1 + s/(6h) + V/(12 L h)) per token;
    # the 1.7B row: 72 x 24 x 2048^2 x (1 + 4096/12288 + 131072/589824) = 1.1275e10
    m = get_model("megatron-gpt-1.7b")
    expected = 72 * 24 * 2048**2 * (1 + 4096 / 12288 + 131072 / (12 * 24 * 2048))
    assert pr.megatron_flops_per_token(m, 4096) == pytest.approx(expected, rel=2e-4)   # 8h/3 rounded


def test_palm_flop_count_is_6n_plus_12lhqt():
    # Chowdhery et al. 2022 App. B as torchtitan's get_num_flop_per_token counts it: 6 x the
    # parameters less the embedding table (the untied head counts) + 12 L H Q T, the full score matrix
    m = get_model("llama3.1-405b")
    counts = param_counts(m)
    n = counts["total_params"] - counts["embedding_params"]
    assert pr.palm_flops_per_token(m, 8192) == pytest.approx(6 * n + 12 * 126 * 128 * 128 * 8192, rel=1e-12)
    # linear in T (no causal halving): above the twin's causal count by 6 L H Q T
    assert pr.palm_flops_per_token(m, 16384) - pr.palm_flops_per_token(m, 8192) == pytest.approx(12 * 126 * 16384 * 8192)
    gap = pr.palm_flops_per_token(m, 8192) - train_flops_per_token(m, 8192, True)
    assert gap == pytest.approx(6 * 126 * 16384 * 8192 + 6 * (n - matmul_params_per_token(m)), rel=1e-9)


def test_llama3_rows_count_flops_as_the_paper_cites():
    runs, sources = pr.load_runs()
    rows = [r for r in runs if r.source == "llama3"]
    assert rows and all(r.flop_basis == "palm" for r in rows)
    assert "Chowdhery" in sources["llama3"]["metric_note"]


def test_llama3_rows_run_the_attention_kernel_of_their_dates():
    """The paper names no attention kernel; by date (pre-training ended before FlashAttention-3 and
    before PyTorch's SDPA ran cuDNN on H100, torch 2.5) the rows assume FlashAttention-2, and say so.
    At 128K the attention core is most of the step, so the kernel moves the row by a fifth and more."""
    runs, _ = pr.load_runs()
    rows = [r for r in runs if r.source == "llama3"]
    assert len(rows) == 3
    for r in rows:
        assert r.plan["attention_kernel"] == "fa2"
        assert any(a.startswith("attention_kernel = 'fa2'") for a in r.assumed)
    sc = pr.scenario_of(next(r for r in rows if r.id == "l3-405b-128k-cp16"))
    fa2 = simulate_step(sc, record_events=False)
    cudnn = simulate_step(dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, attention_kernel="cudnn")),
                          record_events=False)
    # (s33pub: with TP's collectives exposed the step holds more that is not attention: 1.249, was 1.28)
    assert fa2.step_time_s > 1.2 * cudnn.step_time_s


def test_the_500w_clock_follows_our_measurements():
    # the catalog figure is the derivation from the committed H100 power and clock records
    assert get_gpu("h100-hbm2e-500w").clock_frac == pytest.approx(clock_frac_at(500.0), abs=5e-4)
    # no slower above the measured draw (713 W at the 700 W limit), slower the lower the cap
    assert clock_frac_at(800.0) == 1.0 and clock_frac_at(400.0) < clock_frac_at(500.0) < clock_frac_at(700.0) < 1.0


def test_the_500w_attention_factor_follows_fa2_s_own_draw():
    # the catalog's per pass and length factors are the s11fa2 derivation from the committed records
    gpu = get_gpu("h100-hbm2e-500w")
    entry = fa2_catalog_entry(500.0)
    assert [list(p) for p in gpu.attention_clock_fracs] == [[d, float(n), f] for d, n, f in entry["attention_clock_fracs"]]
    # FA2 keeps more of its speed under 500 W than the GEMM's clock and the class ratio gave it
    twin_before = gpu.clock_frac
    assert all(twin_before < f <= 1.0 for _, _, f in gpu.attention_clock_fracs)
    assert gpu.peak_flops_per_s("bf16") == gpu.peak_bf16_flops_per_s * gpu.clock_frac   # GEMMs unchanged


def test_rows_the_twin_cannot_express_are_named_not_guessed(result):
    for r in result["rows"]:
        if r["status"] == "missing_fields":
            assert r["predicted"] is None and r["missing_fields"]
            assert set(r["missing_fields"]) <= {"cp", "cp_kind", "virtual_stages", "sequence_parallel", "tp_comm_overlap",
                                                "tp_overlap_kind"}
    assert result["summary"]["num_evaluated"] >= 1


# row -> relative error when last run (twin / published - 1; None: refused). Issue 14's targets
# (every row within 10%, median at most 5%) are not met for these: strict xfails, listed and never
# loosened; a row that starts passing fails its test until it is taken off this list. Modelled
# since the first list (median 13.7%, 8 of 28 within 10%): torchtitan's eager elementwise kernels
# (plan.kernels), its repeated GQA K/V and PyTorch's allgather context parallelism (plan.kv_repeat,
# cp_kind 'torch_allgather'), torchao's tensorwise FP8 (plan.fp8_recipe, with its FP8 TP all-gathers;
# the blockwise costs had kept torchtitan's Float8 rows low) and each GEMM kernel's own measured sustained-load clock
# (Profile.sustained_curves); then (s8dense) FSDP2's root unit and copies, gradient clipping and
# torch's foreach AdamW, torch.compile per block (plan.kernels 'fused_blocks'), Megatron's unfused
# loss (plan.loss_kernel), and from a measured dense block (dense_block.csv) FA2's speed against
# cuDNN and torch eager's elementwise bandwidth; the H100 collectives measured on 2xH100 (s8nccl);
# PyTorch CP's merge kernels at their measured rate (s8cp). Median 12.0% -> 7.6%. Then (s9cp) Llama 3's
# all-gather CP as its calls (each query chunk over the keys before it), its 8K rows without
# activation checkpointing as the paper says, and the FP32 gradient reduce-scatter that Megatron and
# Llama 3 run, overlapped with the last backward (plan.grad_reduce_dtype, plan.overlap_grad_reduce):
# Megatron's 119B +10.7% -> +8.8%, Llama 3 128K CP16 -15.0% -> -10.6%. And (s9tt) torch's
# micro-pipelined TP as the inductor pass fuses it (plan.tp_overlap_kind 'torch_async_tp': the
# input-gradient reduce-scatters unfused, the partial sums' reduction kernel), torchtitan's separate
# wq/wk/wv and w1/w3 linears (plan.unfused_linears) and its PP rows as the twin's ZeRO-3 under PP
# (FSDP2 without resharding): 70B AsyncTP +19.3% -> +6.9%, 405B 32K +15.9% -> +8.2%. Together median
# 7.6% -> 6.9%, 21 of 29 within 10%. Then (s10atp) the fused reduce-scatter's partial-sum reduction
# at its rate measured per W (Profile.partials_reduce_eff: 0.44 of HBM at W = 2, 0.85 at 8), the
# fused GEMMs as torch's chunk GEMMs, the fused all-gather's shard copy, FSDP2's FP32 gradient
# accumulation after each backward under PP, and torchtitan's Float8 output projection in BF16:
# 405B 3D +13.8% -> +10.9% (interleaved +14.1% -> +10.6%), 405B 32K +8.2% -> +6.7%, 70B AsyncTP
# +6.9% -> +5.5%, the 8B Float8 rows about a point lower. And (s10mem) Llama 3's layout as the paper
# gives it, one layer per virtual stage (V = 8 at PP 16, the first chunk only the embedding, the
# last only the head), the H100's capacity as torch reports it (79.2 GiB, was 80e9 B) and the FFN
# norm output counted once: the 8,192-GPU row runs (76.9 GiB) at +28.6%; the interleaving's smaller
# bubble takes the 16,384-GPU row from +2.0% to +26.3% and the 128K row from -10.6% to +12.8% (at
# V = 2 the overstated bubble had offset an optimistic step). Together median 7.1% over 30 rows, 20
# within 10%.
# Then (s10l3) Llama 3's TFLOPs counted as the paper counts them: it cites PaLM (Chowdhery et al.)
# for its MFU, 6N + 12LHQT with the full score matrix (flop_basis 'palm'), where the rows had used the
# twin's causal count; no step time moves: +28.6% -> +33.7%, +26.3% -> +31.3%, 128K +12.8% -> +58.0%.
# Median 7.1% unchanged, 20 of 30 within 10%.
# Then (s11l3) Llama 3's attention as FlashAttention-2, the fast H100 kernel of the run's dates (the
# rows had taken the profile's cuDNN, which PyTorch's SDPA ran on H100 only from torch 2.5, 2024-10):
# +33.7% -> +28.1%, +31.3% -> +26.1%, 128K +58.0% -> +19.6%. Median 6.5% unchanged, 23 of 30.
# Still unexplained: ~+11% on torchtitan's 405B 3D rows (candidates with figures in the
# README: whether December's torch fused the Float8 reduce-scatters, torchao's per-micro-batch weight
# casts, the chunk GEMMs' measured two-stream cost), its CP at 128K-256K (the published step per
# attention pair jumps from CP2 to CP4 at the same call shapes), Llama 3's step at V = 8; see
# calibration/published_runs/README.md.
# Then (s11pp) pipeline terms from the sources: a tied embedding's copy on the last stage and its
# FP32 gradient all-reduce with the first stage after the DP sync (Megatron finalize_model_grads):
# Megatron's PP rows 0.2-0.6 points lower; FSDP2 under torch.distributed.pipelining reduce-scatters
# each stage's gradients only after its last backward, exposed on the rank and no longer holding up
# the input gradients it sends: 405B 1F1B +10.9% -> +10.7%, interleaved +10.6% -> +12.2% (the chunk
# reduced first hides beside the other), 4D rows -0.1 points. Median 6.5%, 23 of 30 within 10%.
# Then (s11tpo) Megatron's --tp-comm-overlap as TransformerEngine's userbuffers runs it with its
# default configuration (plan.tp_overlap_kind 'te_userbuffers', twin/costs/tp_overlap.py): the
# ring-exchange GEMMs in tp chunks, the forward reduce-scatter in 4 chunks with the last exposed,
# the backward's re-gathered layer input, and the GEMMs slowed beside TE's 16-SM kernels at the
# measured untold slowdown; Llama 3's rows keep the ideal overlap they had (their stack names none).
# Megatron's PP rows +0.8..+8.3% -> -4.7..-0.2%, its one-stage TP rows 2-8 points lower: 16B -7.4% ->
# -12.0%, 32B -6.6% -> -14.0% (their exposed FP32 gradient reduce-scatter at the assumed micro-batch
# of 1 already held them low: see the README). Median 6.5% -> 5.7%, 21 of 30 within 10%.
# (s11cp8b) The 8B CP4/CP8 rows taken apart (benchmarks/published_runs_cp_breakdown.py): every CP
# mechanism the code shows is modelled and measured within 2% at CP4 on one host, the per-rank calls
# within 3% at their shapes; FA2's own draw at those calls (h100/sustained_cp_attention.csv) makes
# the twin's 500 W attention 11% slow, which would widen the gap (CP4 +36%, CP8 +42%; not applied).
# The table is not linear in the work (CP2 18% off the CP1-CP4-CP8 line). Figures unchanged.
# (s11dp) Megatron core_r0.8.0's gradient reduction checked (FP32 buckets reduce-scattered beside
# the last micro-batch's backward): as the twin had it. What it had wrong is the ring's bandwidth
# across nodes: a DP group with G/TP ranks a node goes out through that many NICs (NVIDIA/nccl#412),
# not one. 1.7B (TP 1) +6.4% -> +27.2%, 7.1B (TP 2) -5.7% -> +18.0%, 16B (TP 4) -12.0% -> +5.8%,
# 32B (TP 8) unchanged: the one-stage rows' per-micro-batch work is fast, no longer offset. Median
# 5.7% -> 5.8%, 20 of 30 within 10%.
# Tenth pass (s11gpt): Megatron's GPT models untied (the table's model sizes): 1.7B +27.2% -> +27.1%,
# 7.1B +18.0%, 16B +5.8% -> +4.7%, 32B -14.0% -> -14.8%, the pipelined rows 0.2..0.5 points up.
# Median 5.8% -> 5.6%, 20 of 30 within 10%.
# Eleventh pass (s11drop): Megatron's GPT specs with learned absolute positions (no RoPE in the
# block) and Megatron's default dropout (hidden 0.1 as fused bias-dropout-add bytes; attention 0.1 at
# cuDNN's measured slowdown, x1.90 forward / x1.23 backward, Profile.attention_dropout from
# h100/dense_dropout.csv): 1.7B +27.1% -> +20.0%, 7.1B +18.0% -> +13.6%, 16B +4.7% -> +2.3%,
# 32B -14.8% -> -16.1%, 70B -3.9% -> -5.5%. Median 5.6% -> 5.6% (5.65), 20 of 30 within 10%.
# Twelfth pass (s11fa2, after s11drop): FlashAttention-2's own factor under torchtitan's 500 W limit, measured per
# pass and call length (0.826-0.855 of its burst speed, the twin had 0.779): every torchtitan row
# faster. 8B CP1 +5.8% -> +11.6%, CP2 -5.2% -> +1.0%, CP4 +24.9% -> +34.1%, CP8 +29.3% -> +39.4%,
# 405B 3D +10.7/+12.2% -> +11.8/+13.3%, 405B 4D CP2 +9.0% -> +13.3%, CP8 +7.9% -> +13.9%. Median
# 5.6% -> 6.4%, 17 of 30 within 10% (with s11drop merged: 1.7B +20.0%, 7.1B +13.6%, 32B -16.1%).
# Thirteenth pass (s12mlm): Megatron's --overlap-param-gather as core_r0.8.0 runs it (plan.param_gather_kind
# 'megatron_chained': the BF16 parameter all-gather bucket by bucket into the first forward on pipeline
# rank 0, one bucket from the step's start on the later ranks): 1.7B +20.0% -> +19.2%, 7.1B +13.6% ->
# +12.7%, 16B +2.3% -> -1.6%, 32B -16.1% -> -23.4%, 70B -5.5% -> -10.1%, 119B -1.6% -> -4.4%, 177B
# -1.2% -> -3.3%, 314B -5.5% -> -7.1%, 462B -3.0% -> -3.8%. Two rows added from the README's strong-scaling
# text (the 177B at 96 and 4,608 GPUs, MFU 47% and 42%): +13.9% and -17.4%. Median 6.4% -> 10.0% over
# 32 rows, 16 within 10% (17 of 30 before). Then Megatron's selective recomputation as Megatron means it
# (plan.recompute 'megatron_selective': the core attention re-run in the backward, attention.py
# checkpoint_core_attention @ core_r0.8.0; the twin's 'selective' had been V3's norms): 1.7B +19.2% ->
# +12.3%, 7.1B +12.7% -> +8.3% (met), 16B -1.6% -> -3.5%, 32B -23.4% -> -24.4%, 70B -10.1% -> -11.6%, 119B
# -5.9%, 177B -4.7%, 314B -8.2%, 462B -4.9%, strong scaling +12.1% / -18.6%. Median 10.0% -> 9.1%, 17 of 32.
# Thirteenth pass (s12fsdp): FSDP's cross-node collectives on every NIC of the group's ranks on a node
# (tt-8b-fsdp128 -3.1% -> +1.8%, compile +3.0% -> +9.5%, compile-fp8 -5.9% -> +1.2%; median 6.4% ->
# 8.3%); Megatron's single gradient bucket on later pipeline ranks (no row moves); ZeRO-2 under PP as
# FSDP2 under torch.distributed.pipelining runs it, gradients accumulated unsharded in FP32: Llama 3's
# 8K rows no longer fit by the twin's count (88.6 / 81.9 GiB; ignoring memory +28.1% -> +23.9%,
# +26.1% -> +22.1%), 128K +19.6% -> +18.1%. Median 6.3% over the 28 rows evaluated (the two refused
# rows leave it: a statistic of fewer rows, not an improvement), 17 within 10%.
# Fourteenth pass (s12l3mem): Llama 3's ZeRO-2 under PP as the paper describes its FSDP (it "shards
# optimizer states and gradients", reduces them "asynchronously": plan.pp_grad_sync 'every_backward',
# each (micro-batch, chunk)'s FP32 reduce-scatter queued beside the pipeline, the waiting gradients
# counted): 8K 16,384 GPUs refused (81.9 GiB) -> 72.6 GiB, +5.9% (met); 8K 8,192 GPUs still refused
# (88.6 -> 79.4 GiB of 79.2; +16.0% ignoring memory, was +23.9%); 128K +18.1% -> +21.8% (78.0 -> 67.7
# GiB). Median 8.9% -> 8.3% over 31 rows evaluated of 32, 18 within 10%.
# Fifteenth pass (s13mlm): Megatron's --overlap-param-gather audited against core_r0.8.0; the one
# disagreement, the FP32 gradient buffer's memset before the first forward and gather (train_step's
# zero_grad_buffer; step.grad_buffer_zero_s), charged on every Megatron row: 1.7B +12.3% -> +11.7%,
# 7.1B +8.3% -> +7.6%, 16B -3.5% -> -4.0%, 32B -24.4% -> -24.7%, 70B -11.6% -> -11.8%, 119B -6.0%,
# 177B -4.8%, 314B -8.3%, 462B -4.9%, strong scaling +12.1% / -18.7%. Then each gradient bucket's
# NaN-check norm and 1/DP scaling on the compute stream before its reduce-scatter (Bucket.start_grad_sync;
# step.megatron_grad_prep_s): 1.7B +11.7% -> +9.9% (met), 7.1B +7.6% -> +5.7%, 70B -11.8% -> -12.2%,
# the TP 8 rows decided on rank 0 unchanged. Median 8.3% (8.28 -> 8.29), 19 within 10%.
# Sixteenth pass (s14mlm, docs/notes/s14mlm_rule.md): the README's pipeline-parallel communication
# overlap exists at core_r0.8.0 only under the interleaved schedule (validate_args sets
# overlap_p2p_comm False otherwise), so the PP > 1 Megatron rows run interleaved 1F1B at the least V
# the code accepts (smallest divisor > 1 of the layers a stage), with each later chunk's parameter
# all-gather held (step.later_chunk_gathers): 70B -12.2% -> -7.7% (met), 119B -6.0% -> +16.2% (V 23),
# 177B -4.8% -> +6.2%, 314B -8.3% -> +2.2%, 462B -4.9% -> +13.3% (V 7), strong scaling +12.1% ->
# +12.6% and -18.7% -> -2.0% (met). Median 8.3% -> 7.7% over 31 rows of 32, 19 within 10%.
# Sixteenth pass (s14pp): torchtitan's pipeline as torch.distributed.pipelining runs it (plan.pp_runtime
# 'torch_pipelining', docs/notes/s14pp_rule.md): Interleaved1F1B through PipelineScheduleMulti's lock-step
# time steps, 405B 3D interleaved +13.3% -> +12.1%; Schedule1F1B's loop is the dataflow (every other row
# unchanged).
# Seventeenth pass (s15mlm, docs/notes/s15mlm_rule.md): the V of every interleaved row kept (the same author's
# SC21 Table 1 script took the smallest V > 1 on each of its interleaved rows, one layer a chunk on a prime
# stage); Megatron's default --delay-grad-reduce under interleaving (step.megatron_delays_grad_sync: every
# chunk's buckets launched after a backward, chunk c of rank r after the rank's backward last(c) + r, rank
# 0's first chunk no longer beside its last backward): 119B +16.2% -> +16.0%, 177B +6.2% -> +4.8%, 314B
# +2.2% -> +1.2%, 462B +13.3% -> +13.2%, strong scaling +12.6% -> +12.5% and -2.0% -> -4.2%; 70B (its
# first chunk's reduce-scatter queued behind the second's either way) and the PP 1 rows unchanged.
# Median 7.7%, 19 within 10%, both unchanged.
# Eighteenth pass (s15tt part E, docs/notes/s15tt_rule.md): full AC recomputes the transformer blocks
# only (torchtitan's apply_ac wraps model.layers; the head, final norm, loss and embedding run once a
# micro-batch): the 12 full-AC rows +0.0..+1.6 points (the twin had re-run the output head), 405B 4D CP1
# +9.9% -> +10.1% (out). Median 7.7% (7.67 -> 7.69), 18 of 31 within 10%.
# Nineteenth pass (s17cp part C, docs/notes/s17cp_rule.md): compiled, torch's CP backward runs no K/V
# all-gather of its own (CSE'd with the forward's; one a layer's backward under full AC, the
# recomputation's, measured): 8B CP2/CP4/CP8 +1.8/+34.7/+39.7% -> +2.2/+35.5/+40.8%, 405B 4D
# CP2/CP4/CP8 +13.5/+4.8/+13.9% -> +15.6/+8.3/+19.1%. Median 7.69% -> 8.34%, 18 of 31 within 10%.
# Twentieth pass (s20tt, docs/notes/s20tt.md, no figure moves): the pipelined rows side by side
# (benchmarks/pipelined_rows_components.py): their pipeline terms are small or fixed by the code; what
# the too-fast ones share is TP 8 with its collectives credited as overlapped (credit 1.07-1.17 of the
# pipeline, about what they need), the one published A/B (torchtitan 70B) at half the twin's credit.
# Its rule (docs/notes/s20tt_rule.md: torch's fused ops pay at least f of their collective) was not
# adopted: its campaign came on H200s (f 0.166 there; 405B 3D would read +11.2 / +11.6%).
# s21tt (docs/notes/s21tt.md, no live figure moves): every input of these rows re-read against its source,
# none mis-transcribed. ADOPT_GRAD_QUEUE_AFTER_FREES (not adopted, docs/notes/s21tt_rule.md) would evaluate
# l3-405b-8k-gpus8192 at +16.0% (78.99 of 79.18 GiB): 32 of 32 evaluated, 18 within 10%, median 8.91%.
# Twenty-first pass (s21tth, docs/notes/s20tt_rule.md adopted on the campaign's 2xH100 rows, f 0.210):
# torch's fused ops pay at least f of their collective: 70B async +7.7% -> +5.1%, 405B 3D +12.7/+13.1% ->
# +10.8/+11.2%, 4D CP1/CP2/CP4/CP8 +10.1/+15.6/+8.3/+19.1% -> +8.7% (met)/+14.6/+7.8/+18.7%; no other row
# moves. Median 8.34% -> 7.76%, 19 of 31 within 10%.
# s26mem (docs/notes/s26mem.md): torchtitan's per-op policy sees torchao's Float8 linears as aten.mm (a
# dispatch mode before the subclass) and saves every second one as for BF16: 8B Float8 rows -2.4% ->
# +5.8%, +1.2% -> +9.8% (less recomputed). Median 7.76% -> 8.66%, 19 of 31 within 10%.
# s26mem (docs/notes/s26mem_rule.md, ADOPT_GRAD_QUEUE_AFTER_FREES adopted): l3-405b-8k-gpus8192 refused
# (79.42 GiB) -> evaluated at +16.0% (78.99 of 79.18 GiB). Median 8.66% -> 9.07%, 19 of 32 within 10%.
# s26mem: torchtitan's op policy leaves the head and the loss alone (apply_ac wraps the blocks only; the
# twin had re-run the final norm and the eager FP32 loss): 8B op-AC rows +0.8..+1.4 points, fsdp128-compile
# +9.5% -> +10.6%, its Float8 row +9.8% -> +11.2% (out). Median 9.07% -> 9.28%, 17 of 32 within 10%.
# s27mlm (docs/notes/s27mlm.md, no figure moves): no Megatron input mis-read; ADOPT_TE_RING_EXCESS (TE's ring
# all-gathers at torch's fused-op floor) not adopted: with it 119B +13.5%, 462B +11.3%, strong-96 +10.4%,
# 32B -25.9%, 70B -9.6%, median 9.58%.
# s28mlm (docs/notes/s28mlm_rule.md, ADOPT_MLM_SC21_MICRO_BATCH adopted): the Megatron rows' unpublished
# micro-batch read in tokens from the SC21 weak-scaling script, the table's predecessor: 1.7B / 7.1B / 16B /
# 32B at four sequences, 70B at two: 1.7B +9.9% -> +11.8% (out), 7.1B +5.7% -> +9.7%, 16B -4.0% -> +6.4%,
# 32B -24.7% -> +4.9% (in), 70B -7.7% -> -5.7%. Median 7.67% -> 7.12%, 18 of 31 within 10% both ways.
# s29mlm (docs/notes/s29mlm_rule.md, ADOPT_SLOWEST_BOARD_PACE adopted): a step on N boards at the expected slowest
# board's held rate (cv 0.645% over four H200 boards held together): every row's step longer by 1 + cv z(N) on its
# compute; tt-8b-fsdp128-compile +10.6% -> +9.0%, its Float8 row +11.2% -> +9.8%, tt-405b-3d-1f1b +10.8% -> +9.2%,
# -interleaved +11.2% -> +9.6%, 1.7B +10.5% -> +9.2% (all in), 119B +15.6% -> +13.7%, 462B +12.9% -> +10.6%,
# strong-96 +12.2% -> +10.7%, 70B -6.0% -> -7.3%. Median 7.12% -> 6.97%, 18 -> 23 of 31 within 10%.
# s30mlm (docs/notes/s30mlm_rule.md round 3, ADOPT_TP_TRAFFIC_MEASURED adopted): TE's ring-exchange GEMMs slowed
# x1.155 while their copy-engine transfers run (4x H200 held, h200x4/s30mlm3): 119B +13.7% -> +12.1%, 462B +10.6% ->
# +9.4% (in), strong-96 +10.7% -> +9.3% (in), 70B -7.3% -> -8.5%, strong-4608 -6.1% -> -7.1%. Median 6.97% -> 6.97%,
# 23 -> 25 of 31 within 10%.
# s31pub (docs/notes/s31pub_rule.md, ADOPT_COMPILED_ELEMENTWISE_EFF adopted): inside torch.compile'd blocks the
# elementwise kernels and FP8 casts at 0.629 of memory_eff (the eager estimator on the H100's compiled block records;
# judged on the 8B rows' own step, h200/s31pub): tt-8b-cp1-32k +12.3% -> +6.8% (in), tt-405b-4d-cp2-64k +12.8% ->
# +8.8% (in), tt-8b-cp4-128k +30.3% -> +28.2%, tt-405b-4d-cp8-256k -11.6% -> -12.5%; median 6.97% -> 4.31% (the
# median target met), 25 -> 27 of 31 within 10%.
# s33pub (docs/notes/s33pub_rule.md, ADOPT_LLAMA3_ISCA_COMMS and ADOPT_ZERO2_PP_GRADS_WHEN_BORN adopted): the Llama 3
# rows' communication as Meta's ISCA'25 paper states it (TP exposed, ZeRO-1 at bs >= 2 pp else ZeRO-2, one
# reduce-scatter a stage): l3-405b-128k-cp16 +23.3% -> +11.0%, l3-405b-8k-gpus16384 +5.2% -> +2.2%, the 8,192-GPU row
# still refused (88.6 GiB; +14.7% -> +6.0% ignoring memory); median 4.31% -> 3.74%, 27 of 31 within 10%.
NOT_MET = {
    "tt-8b-cp4-128k": 0.282, "tt-405b-4d-cp8-256k": -0.125,
    "mlm-gpt-119b": 0.121,
    "l3-405b-8k-gpus8192": 0.060, "l3-405b-128k-cp16": 0.110,
}
# s12l3mem, s13mlm: median 8.3% over the 31 rows evaluated of 32 (Llama 3's 8K row on 8,192 GPUs refused
# by memory), 19 within 10%; s14mlm: 7.7%, 19 within 10%; s15mlm: 7.7% (7.667%), 19 within 10%; with
# s15tt: 7.7%, 18 within 10%; s17cp: 8.3% (8.34%), 18 within 10%; s21tth: 7.8% (7.76%), 19 within 10%;
# s26mem (Float8 linears under the op policy): 8.7% (8.66%), 19 within 10%; with the queue joined after
# the backward's frees: 9.1% (9.07%) over all 32 rows, 19 within 10%; the head and loss outside the op
# policy: 9.3% (9.28%), 17 within 10%; s26mem round 2 (the memory outside the allocator reserved,
# docs/notes/s26mem3_rule.md): the 8,192-GPU row refused again, 8.7% (8.66%) over 31 rows, 17 within 10%;
# s27cp (the compiled ring attention's ranks meeting at their own graphs' collectives, docs/notes/
# s27cp_rule.md): 7.7% (7.67%), 18 within 10% (tt-8b-cp8-256k +40.8% -> -2.3%); s28mlm (Megatron's micro-batch
# from the SC21 script): 7.1% (7.12%), 18 within 10%; s29mlm (the slowest board's pace): 7.0% (6.97%), 23 within 10%;
# s30mlm (the copy engine's cost to TE's ring GEMMs): 7.0% (6.97%), 25 within 10%; s31pub (compiled blocks'
# elementwise at the measured rate): 4.3% (4.31%), 27 within 10%: the median target met; s33pub (the Llama 3 rows'
# communication as Meta's ISCA'25 paper states it): 3.7% (3.74%), 27 within 10%


MEGATRON_TABLE_SIZES_B = {"1.7b": 1.7, "7.1b": 7.1, "16b": 16, "32b": 32, "70b": 70, "119b": 119,
                          "177b": 177, "314b": 314, "462b": 462}


@pytest.mark.parametrize("size", list(MEGATRON_TABLE_SIZES_B))
def test_megatron_gpt_specs_are_untied_as_the_tables_model_sizes_say(size):
    """Megatron-LM's model table names each model by its size; with one V x h matrix (tied) the
    specs' parameter counts fall short of every name, with two (untied) they match it."""
    m = get_model(f"megatron-gpt-{size}")
    named = MEGATRON_TABLE_SIZES_B[size] * 1e9
    count = param_counts(m)["total_params"]
    other = param_counts(dataclasses.replace(m, tie_embeddings=not m.tie_embeddings))["total_params"]
    assert not m.tie_embeddings
    assert abs(count - named) < abs(other - named) and abs(count / named - 1) < 0.03


def _row_params():
    runs, _ = pr.load_runs()
    for run in runs:
        rid = run.id
        marks = []
        if rid in NOT_MET:
            got = "refused" if NOT_MET[rid] is None else f"{NOT_MET[rid]:+.0%}"
            marks = [pytest.mark.xfail(strict=True, reason=f"not met: {got} against 10% (issue 14 open)")]
        yield pytest.param(rid, marks=marks, id=rid)


@pytest.mark.parametrize("row_id", list(_row_params()))
def test_published_row_within_10_percent(result, row_id):
    """Issue 14 target, per row. A row the twin refuses counts as a miss."""
    r = next(r for r in result["rows"] if r["id"] == row_id)
    assert r["status"] == "ok", f"{row_id}: {r['status']}"
    assert abs(r["rel_error"]) <= pr.ROW_TARGET, f"{row_id}: {r['rel_error']:+.1%}"


def test_median_error_at_most_5_percent(result):
    """Issue 14 target, over the rows the twin can express."""
    med = result["summary"]["median_abs_rel_error"]
    assert med is not None and med <= pr.MEDIAN_TARGET, f"median |error| {med:.1%} > {pr.MEDIAN_TARGET:.0%}"


def test_the_committed_peers_table_covers_the_rows():
    peers = pd.read_csv(pr.PEERS_CSV)
    runs, _ = pr.load_runs()
    assert set(peers["id"]) == {r.id for r in runs}
    for col in ("published", "twin", "calculon", "llm_analysis", "calculon_rel_error", "llm_analysis_rel_error",
                "calculon_version", "llm_analysis_version", "calculon_config", "llm_analysis_config"):
        assert col in peers
    assert peers["calculon_config"].notna().all() and peers["llm_analysis_config"].notna().all()
    assert peers["llm_analysis_version"].str.startswith("llm-analysis==").all()


def test_the_committed_peers_table_gives_calculon_each_rows_layout_and_virtual_stages():
    """Calculon is given the plan the twin runs (s15peers: its columns had stayed at V = 1 after
    s14mlm made Megatron's pipelined rows interleaved); a row with context parallelism is not
    expressible to either peer and is said so."""
    peers = pd.read_csv(pr.PEERS_CSV).set_index("id")
    runs, _ = pr.load_runs()
    for r in runs:
        config = peers.loc[r.id, "calculon_config"]
        if r.plan.get("cp", 1) > 1:
            assert config.startswith("not expressible: context parallelism"), r.id
            assert pd.isna(peers.loc[r.id, "llm_analysis"]), r.id
            continue
        assert f" tp{r.plan['tp']} pp{r.plan['pp']} " in config, r.id
        assert f" interleave={r.plan.get('virtual_stages', 1)} " in config, r.id
        assert peers.loc[r.id, "calculon"] > 0 and peers.loc[r.id, "llm_analysis"] > 0, r.id


def test_the_validate_table_and_report_section_name_every_row(result):
    from reports.page import Page
    from reports.validation_report import _published_runs_section
    table = pr.format_table(result)
    page = Page("t", "v")
    _published_runs_section(page, result)
    md = page.markdown()
    for r in result["rows"]:
        assert r["id"] in table and r["id"] in md
    verdict = next(line for line in table.splitlines() if line.startswith("Published runs:"))
    assert ("NOT met" in verdict) == (not result["summary"]["meets_targets"])
    # a miss is listed by id (the CLI prints these as 'target missed')
    misses = [r["id"] for r in result["rows"] if r["status"] == "ok" and abs(r["rel_error"]) > pr.ROW_TARGET]
    assert all(m in " ".join(pr.failures(result)) for m in misses)


# Memory (brief s10mem): the twin's count per GPU against the memory each source publishes
# (torchtitan's tables: the allocator's peak reserved memory) and against the GPU each run ran on.
# rows whose count does not fit the GPU the run ran on (None: none now), and rows counted above the
# published reserved peak; strict xfails carrying the figure, as NOT_MET
# (s12l3mem) Llama 3's 8K row on 8,192 GPUs: sharded FP32 gradients (0.19 GiB) and 2.47 GiB of them
# waiting for their reduce-scatter at the joint peak with 141 layer micro-batches of activations
# (70.02 GiB): counted 79.42 GiB against the H100's 79.18 (s12fsdp's unsharded accumulator: 88.6; the
# 16,384-GPU row now fits at 72.6), the counted / capacity - 1 below
# (s21tt) with the queue joined after the backward's frees the row counts 78.99 GiB and fits; adopted in
# s26mem (docs/notes/s26mem_rule.md): 0.19 GiB left, less than the CUDA context and NCCL buffers the
# count leaves out (docs/notes/s26mem.md)
# s26mem round 2 (docs/notes/s26mem3_rule.md, ADOPT_OUTSIDE_ALLOCATOR_RESERVE adopted): a training rank fits
# within the capacity less the 2.95 GiB a 2-rank NCCL process held outside torch's allocator on our H200s
# (context, kernels, cuBLAS, three communicators, p2p): 76.2 GiB. The row is refused before its pipeline
# is simulated, at 76.9 GiB counted without the reduce-scatter queue (78.99 with it)
# s33pub (docs/notes/s33pub.md 3b): as Meta's ISCA'25 paper states the row (ZeRO-1: every FP32 accumulator unsharded
# beside the 141 saved sets) it counts 88.6 GiB, over the whole card; Meta kept a smaller saved set (unpublished)
MEMORY_NOT_FITTING: dict[str, float] = {"l3-405b-8k-gpus8192": 0.163}
# s26mem: with torch's loss parallel counted (16 B a logit, twin.costs.memory) the 405B interleaved row's
# last stage counted 73.5 GiB against its published 72.7 (+1.1%). s26mem round 2: ZeRO-3 under PP counts
# a stage's FP32 accumulators from its first backward and the sharded gradients after the last
# (step.ADOPT_FSDP_PP_GRADS_WHEN_BORN): an interleaved rank's earlier chunk has none at the loss's peak;
# the row counts 62.9 GiB (-13.5%), its last rank peaking in the cooldown
MEMORY_ABOVE_PUBLISHED: dict[str, float] = {}
# rows whose count is off the published figure by more than pr.MEMORY_ROW_TARGET (15%): the count
# leaves out the allocator's reserve. Median -13.7%, 12 of 18 within 15% (at the session's start
# -47.6%, before the loss's working set and the block recomputed in the backward were counted).
# s26mem: under Float8 the op-level policy saves the linears' outputs as under BF16 (it sees torchao's
# aten.mm, not torch._scaled_mm): 8B Float8 rows -34.9% -> -5.0%, -44.6% -> -7.4%; median -12.1%, 14 of 18
# s26mem: torch's loss parallel (every TP row's loss) holds 16 B a logit, not 12: 70B -29.2% -> -18.3%,
# -24.7% -> -13.1% (in), 405B rows +1.5..+2.0 GiB; median -12.1% -> -11.7%, 15 of 18
# s26mem round 2: ZeRO-3 under PP counts its gradients when alive (the sharded ones, 2.9 GiB, only
# after the last backward): every 405B row 2.9 GiB lower (the interleaved one 11.4), cp1/cp2/cp4 cross
# 15%; median -11.7% -> -12.8%, 12 of 18 within 15%, none above its published peak. Then without PP (one
# micro-batch: the sharded gradients are born in the backward, after the forward's peak): 8B FSDP 8
# and CP rows -3.7 GiB, 70B -1.0; median -15.3%, 9 of 18
# s27mlm round 2 (docs/notes/s27mlm2_rule.md, candidate A adopted): ZeRO-3 keeps no BF16 shard (FSDP2 casts its
# FP32 shard into each all-gather; measured on 2xH200: a steady step starts at 1.00 x 12 B a shard parameter):
# every torchtitan row 2 B a shard parameter lower; median -15.3% -> -17.2%, 4 of 18 within 15%
MEMORY_NOT_MET = {
    "tt-405b-3d-1f1b": -0.247, "tt-405b-3d-interleaved": -0.155, "tt-405b-4d-cp1-32k": -0.175,
    "tt-405b-4d-cp2-64k": -0.175, "tt-405b-4d-cp4-128k": -0.181, "tt-405b-4d-cp8-256k": -0.245,
    "tt-70b-fsdp32-tp8": -0.205, "tt-70b-fsdp32-tp8-async": -0.154, "tt-8b-cp1-32k": -0.192,
    "tt-8b-cp2-64k": -0.183, "tt-8b-cp4-128k": -0.169, "tt-8b-cp8-256k": -0.15, "tt-8b-fsdp128": -0.151,
    "tt-8b-fsdp8": -0.182, "tt-8b-fsdp8-compile": -0.177, "tt-8b-fsdp8-compile-fp8": -0.175,
}


def test_memory_is_compared_with_every_published_figure_and_reported(result):
    runs, sources = pr.load_runs()
    with_figure = {r.id: r.published_memory_gib for r in runs if r.published_memory_gib is not None}
    assert len(with_figure) >= 18 and "memory_note" in sources["torchtitan"]   # every torchtitan row publishes one
    rows = {r["id"]: r for r in result["rows"]}
    for rid, gib in with_figure.items():
        r = rows[rid]
        counted = sum(r["memory_breakdown_bytes"].values())
        assert r["memory_per_gpu_bytes"] == pytest.approx(counted) and counted > 0
        assert r["published_memory_bytes"] == pytest.approx(gib * 2**30)
        assert r["memory_rel_error"] == pytest.approx(counted / (gib * 2**30) - 1)
    m = result["summary"]["memory"]
    assert m["num_compared"] == len(with_figure) and m["num_counted"] == len(result["rows"])
    assert m["median_abs_rel_error"] == pytest.approx(
        float(pd.Series([rows[i]["memory_rel_error"] for i in with_figure]).abs().median()))
    # printed by `twin validate` and in the report's section, every row named with its figures
    table = pr.format_memory_table(result)
    assert table in pr.format_table(result)
    from reports.page import Page
    from reports.validation_report import _published_runs_section
    page = Page("t", "v")
    _published_runs_section(page, result)
    md = page.markdown()
    assert "Memory per GPU (GiB)" in md
    for rid, gib in with_figure.items():
        line = next(x for x in table.splitlines() if x.startswith(rid + " "))
        assert f"{gib:.1f}" in line and f"{rows[rid]['memory_rel_error']:+.1%}" in line


def _memory_params(not_met: dict[str, float], only_published: bool):
    runs, _ = pr.load_runs()
    for run in runs:
        if only_published and run.published_memory_gib is None:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=f"not met: {not_met[run.id]:+.1%}")] if run.id in not_met else []
        yield pytest.param(run.id, marks=marks, id=run.id)


@pytest.mark.parametrize("row_id", list(_memory_params(MEMORY_NOT_FITTING, False)))
def test_a_published_run_fits_the_gpu_it_ran_on(result, row_id):
    """Each source ran its configuration, so the memory the twin counts must fit that GPU."""
    r = next(r for r in result["rows"] if r["id"] == row_id)
    assert r["memory_fits"], f"{row_id}: {r['memory_per_gpu_bytes'] / 2**30:.1f} of {r['memory_capacity_bytes'] / 2**30:.1f} GiB"


@pytest.mark.parametrize("row_id", list(_memory_params(MEMORY_ABOVE_PUBLISHED, True)))
def test_counted_memory_is_at_most_the_published_reserved_peak(result, row_id):
    """The allocator reserves at least the tensors alive at its peak: a count above the published
    reserved peak counts a tensor the run did not hold."""
    r = next(r for r in result["rows"] if r["id"] == row_id)
    assert r["memory_rel_error"] <= 0.0, f"{row_id}: {r['memory_rel_error']:+.1%}"


@pytest.mark.parametrize("row_id", list(_memory_params(MEMORY_NOT_MET, True)))
def test_counted_memory_within_15_percent_of_the_published(result, row_id):
    """A yardstick for the count, not issue 14's target: the published figure is the allocator's
    reserved peak, which the twin does not model."""
    r = next(r for r in result["rows"] if r["id"] == row_id)
    assert abs(r["memory_rel_error"]) <= pr.MEMORY_ROW_TARGET, f"{row_id}: {r['memory_rel_error']:+.1%}"


def _breakdown_module():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "published_runs_breakdown.py"
    spec = importlib.util.spec_from_file_location("published_runs_breakdown", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llama3_pipeline_is_the_idealised_interleaved_bubble_plus_its_hops():
    """Llama 3's layout (PP 16, V 8, one layer a chunk, 16 micro-batches): with p2p free the
    pipeline adds to the busiest rank's compute the idealised (PP - 1) / (V M) of it, and the p2p
    hops what they cost; the twin's bubble_frac is the largest idle, rank 0's (embedding-only chunk)."""
    runs, _ = pr.load_runs()
    b = _breakdown_module().breakdown(next(r for r in runs if r.id == "l3-405b-8k-gpus16384"))
    # TP's collectives exposed (Meta's ISCA'25 paper; published_runs.ADOPT_LLAMA3_ISCA_COMMS): what the rest holds is
    # theirs on the critical path, at most the exposed communication the step counts
    assert 0.0 < b["rest_s"] <= b["exposed_comm_s"] + b["p2p_s"]
    assert b["ideal_bubble_s"] == pytest.approx(15 / 128 * b["busiest_compute_s"])
    assert 0.0 < b["p2p_s"] < 0.05 * b["step_s"]
    busy = b["busy_per_rank_s"]
    assert min(busy) == busy[0] < max(busy)


def test_the_breakdown_leaves_the_row_s_step_as_it_was():
    """The breakdown's free-p2p pipeline is a counterfactual on a copy: a later step of the same
    scenario (which reuses the prepared costs) is the row's own."""
    runs, _ = pr.load_runs()
    run = next(r for r in runs if r.id == "l3-405b-8k-gpus16384")
    sc = pr.scenario_of(run)
    before = simulate_step(sc, record_events=False, check_memory=False).step_time_s
    _breakdown_module().breakdown(run)
    assert simulate_step(sc, record_events=False, check_memory=False).step_time_s == before


def test_megatron_and_llama3_blocks_run_their_gemms_at_one_rate():
    """Where Llama 3's rows differ from Megatron's (TP 8, PP across nodes, H100, BF16): not in the
    GEMMs, which the twin runs at the same rate per FLOP on both models' TP-8 shapes, but in the
    attention kernel, the recomputation and the pipeline (the README's seventh pass)."""
    runs, _ = pr.load_runs()
    rates = {}
    for rid in ("mlm-gpt-462b", "l3-405b-8k-gpus16384"):
        r = _breakdown_module().block_rates(next(x for x in runs if x.id == rid))
        rates[rid] = r["gemm_flops"] / r["gemm_s"]
        assert r["gemm_s"] + r["attn_s"] + r["memory_s"] + r["tp_overlap_compute_s"] == pytest.approx(r["compute_s"], rel=0.02)
    assert rates["l3-405b-8k-gpus16384"] == pytest.approx(rates["mlm-gpt-462b"], rel=0.02)


@pytest.mark.parametrize("row_id", ["l3-405b-8k-gpus8192", "l3-405b-8k-gpus16384"])
def test_llama3_8k_busiest_rank_holds_the_audited_terms(row_id):
    """Llama 3 405B at 8K (TP 8 with SP, PP 16, V 8, one layer a chunk, no recomputation): the busiest
    rank's count, term by term from first principles (brief s12l3mem's audit). Per layer and token,
    Korthikanti et al. 2022 without dropout, with GQA, SwiGLU and FlashAttention (no S^2 scores): four
    hidden-width tensors split over the TP ranks by SP (two norm inputs, two linear inputs), q and
    one K and one V head per rank, the attention output with FP32 softmax statistics, and the FFN's
    gate, up and their product. In flight on pipeline rank r: Megatron's interleaved warm-up
    (PP - r - 1) 2 + (V - 1) PP plus the first steady forward, at most M V. Weights in BF16 (not
    resharded after the forward), 12 B of optimizer state over DP, one gathered SP input. Gradients as
    Meta's ISCA'25 paper states (published_runs.ADOPT_LLAMA3_ISCA_COMMS, docs/notes/s33pub_rule.md): at
    8,192 GPUs (32 sequences a DP group = 2 x PP) ZeRO-1, every FP32 accumulator unsharded beside the peak (each is
    born at its chunk's first backward, all inside the 1F1B steady phase); at 16,384 GPUs (16 = PP) ZeRO-2 with
    every forward first, one reduce-scatter a stage: at the peak one chunk's accumulator, born at the first
    backward beside every saved set (step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN)."""
    runs, _ = pr.load_runs()
    run = next(r for r in runs if r.id == row_id)
    sc = pr.scenario_of(run)
    step = simulate_step(sc, record_events=False, check_memory=False)
    d, heads, kv, hd, f, t, pp, v = 16384, 128, 8, 128, 53248, 8, 16, 8
    m, tokens, dp = sc.num_microbatches, 8192, sc.dp
    per_token = 2 * 4 * d / t + 2 * (heads + 2 * kv) * hd / t + 2 * heads * hd / t + 4 * heads / t + 3 * 2 * f / t
    layer_params = (2 * d * heads * hd + 2 * d * kv * hd + 3 * d * f) / t + 2 * d
    rank = 1   # rank 0's first chunk is the embedding alone: rank 1 holds the most in flight
    in_flight = min((pp - rank - 1) * 2 + (v - 1) * pp + 1, m * v)
    params = v * layer_params   # one layer a chunk
    zero1 = row_id == "l3-405b-8k-gpus8192"
    assert sc.plan.zero_stage == (1 if zero1 else 2) and sc.plan.pp_grad_sync == "last_backward"
    want = {"weights": 2 * params, "gradients": 4 * (params if zero1 else layer_params), "optimizer": 12 * params / dp,
            "activations": in_flight * tokens * per_token, "comm_buffers": 2 * tokens * d}
    got = step.memory_breakdown_bytes
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key

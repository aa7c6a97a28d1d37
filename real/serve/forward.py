"""One engine iteration through the model: T tokens of a mixed batch, flattened.

Legend as in `real/model.py`, plus: T tokens in the iteration (decode rows first, then prefill
chunks back to back), Bd decode rows, M page-table width, Ps page size, Pg pages, n a chunk's
tokens, Lc a chunk's context (its cached prefix + n).

Every token's projections, MoE and norms run over the whole flat batch; attention splits:
- decode rows (one token each) attend over their cached latents with the up-projections absorbed
  into the query and output (as `MLA._attend_absorbed`), the latents gathered from the pages of a
  padded page table, positions past each row's length masked;
- each prefill chunk expands its request's cached latents (prefix + chunk) into per-head keys and
  values and calls SDPA with a causal mask offset by the prefix (plain causal when no prefix).
The latents of all T tokens are written into their cache slots before attention, so a chunk sees
itself and its prefix, a decode row its whole context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from real.fp8 import BF16, Precision, linear
from real.model import MLA, Transformer
from real.serve.paged_cache import PagedMLACache


@dataclass
class PrefillChunk:
    """Rows [row_start, row_start + num_tokens) of the flat batch: prompt positions
    [start_pos, start_pos + num_tokens) of a request whose page ids are `pages_P` (device)."""

    row_start: int
    num_tokens: int
    start_pos: int
    pages_P: torch.Tensor


@dataclass
class StepInputs:
    """Device tensors of one iteration. Decode rows are the first `num_decode` rows."""

    tokens_T: torch.Tensor
    positions_T: torch.Tensor
    slots_T: torch.Tensor
    num_decode: int
    block_table_BdM: torch.Tensor | None = None  # page ids of each decode row (padded)
    seq_lens_Bd: torch.Tensor | None = None  # cached tokens of each decode row, this one included
    chunks: list[PrefillChunk] = field(default_factory=list)
    logit_rows_N: torch.Tensor | None = None  # rows whose next token is sampled; None = decode rows


def decode_attention(attn: MLA, q_nope_BdHP, q_pe_BdHR, c_PgPsC, kpe_PgPsR, block_table_BdM,
                     seq_lens_Bd):
    """Absorbed attention of one query per row over its paged latents -> o_BdHO."""
    Bd, M = block_table_BdM.shape
    Ps = c_PgPsC.shape[1]
    c_BdLC = c_PgPsC[block_table_BdM].view(Bd, M * Ps, -1)
    kpe_BdLR = kpe_PgPsR[block_table_BdM].view(Bd, M * Ps, -1)
    wk_HPC, wv_HOC = attn.wkv_b_WC.view(attn.H, attn.P + attn.O, attn.C).split([attn.P, attn.O], dim=1)
    q_abs_BdHC = torch.einsum("bhp,hpc->bhc", q_nope_BdHP, wk_HPC)
    scores_BdHL = (torch.einsum("bhc,blc->bhl", q_abs_BdHC, c_BdLC)
                   + torch.einsum("bhr,blr->bhl", q_pe_BdHR, kpe_BdLR)).float()
    past_end_BdL = torch.arange(M * Ps, device=c_BdLC.device)[None, :] >= seq_lens_Bd[:, None]
    scores_BdHL = scores_BdHL.masked_fill(past_end_BdL[:, None, :], float("-inf"))
    p_BdHL = torch.softmax(scores_BdHL * attn.softmax_scale, dim=-1).to(c_BdLC.dtype)
    o_BdHC = torch.einsum("bhl,blc->bhc", p_BdHL, c_BdLC)
    return torch.einsum("bhc,hoc->bho", o_BdHC, wv_HOC)


def prefill_attention(attn: MLA, q_nope_nHP, q_pe_nHR, c_PgPsC, kpe_PgPsR, chunk: PrefillChunk,
                      precision: Precision):
    """Expanded attention of a chunk over its request's prefix and itself -> o_nHO."""
    n, H, _ = q_nope_nHP.shape
    Lc = chunk.start_pos + n
    c_LcC = c_PgPsC[chunk.pages_P].flatten(0, 1)[:Lc]
    kpe_LcR = kpe_PgPsR[chunk.pages_P].flatten(0, 1)[:Lc]
    kv_LcHW = linear(c_LcC, attn.wkv_b_WC, precision).view(Lc, H, attn.P + attn.O)
    k_nope_LcHP, v_LcHO = kv_LcHW.split([attn.P, attn.O], dim=-1)
    q_HnX = torch.cat([q_nope_nHP, q_pe_nHR], dim=-1).transpose(0, 1)
    k_HLcX = torch.cat([k_nope_LcHP, kpe_LcR[:, None, :].expand(Lc, H, attn.R)], dim=-1).transpose(0, 1)
    v_HLcO = v_LcHO.transpose(0, 1)
    if chunk.start_pos == 0:
        o_HnO = F.scaled_dot_product_attention(q_HnX, k_HLcX, v_HLcO, is_causal=True,
                                               scale=attn.softmax_scale)
    else:  # query i sits at start_pos + i and sees keys 0..start_pos + i
        key_pos_Lc = torch.arange(Lc, device=q_HnX.device)
        query_pos_n = torch.arange(chunk.start_pos, Lc, device=q_HnX.device)
        allowed_nLc = key_pos_Lc[None, :] <= query_pos_n[:, None]
        o_HnO = F.scaled_dot_product_attention(q_HnX, k_HLcX, v_HLcO, attn_mask=allowed_nLc,
                                               scale=attn.softmax_scale)
    return o_HnO.transpose(0, 1)


def paged_mla(attn: MLA, x_1TD, cos_TR, sin_TR, c_PgPsC, kpe_PgPsR, inp: StepInputs,
              precision: Precision):
    """MLA over a flat mixed batch with the paged cache -> (1, T, D)."""
    q_nope_1THP, q_pe_1THR = attn._queries(x_1TD, cos_TR, sin_TR, precision)
    c_1TC, kpe_1TR = attn._latents(x_1TD, cos_TR, sin_TR, precision)
    c_PgPsC.view(-1, attn.C).index_copy_(0, inp.slots_T, c_1TC[0])
    kpe_PgPsR.view(-1, attn.R).index_copy_(0, inp.slots_T, kpe_1TR[0])
    q_nope_THP, q_pe_THR = q_nope_1THP[0], q_pe_1THR[0]
    parts = []
    Bd = inp.num_decode
    if Bd:
        parts.append(decode_attention(attn, q_nope_THP[:Bd], q_pe_THR[:Bd], c_PgPsC, kpe_PgPsR,
                                      inp.block_table_BdM, inp.seq_lens_Bd))
    for ch in inp.chunks:
        rows = slice(ch.row_start, ch.row_start + ch.num_tokens)
        parts.append(prefill_attention(attn, q_nope_THP[rows], q_pe_THR[rows], c_PgPsC, kpe_PgPsR,
                                       ch, precision))
    o_THO = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return linear(o_THO.flatten(1)[None], attn.wo_DU, precision)


@torch.no_grad()
def step_forward(model: Transformer, cache: PagedMLACache, inp: StepInputs,
                 precision: Precision = BF16) -> torch.Tensor:
    """Run one iteration; returns the greedy next token of each logit row (decode rows by
    default), int64 on the device. No host synchronisation on the decode-only path, so a
    decode-only call can be captured in a CUDA graph (without expert parallelism)."""
    cos_TR, sin_TR = model.cos_LR[inp.positions_T], model.sin_LR[inp.positions_T]
    x_1TD = model.embed_YD(inp.tokens_T)[None]
    for i, layer in enumerate(model.layers):
        c_PgPsC, kpe_PgPsR = cache.layer(i)
        x_1TD = x_1TD + paged_mla(layer.attn, layer.attn_norm(x_1TD), cos_TR, sin_TR, c_PgPsC,
                                  kpe_PgPsR, inp, precision)
        x_1TD = x_1TD + layer.ffn(layer.ffn_norm(x_1TD), precision)
    rows = inp.logit_rows_N if inp.logit_rows_N is not None else slice(0, inp.num_decode)
    return model.logits(x_1TD[0, rows], precision).argmax(dim=-1)

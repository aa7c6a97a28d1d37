"""Inference entry points: batched prefill and decode with the KV cache (MLA's compressed latents, or GQA's K and V).

Prefill runs the prompt through the expanded attention and fills each layer's cache with the
latents (C + R values per token); decode steps one token at a time over the cache with the
absorbed up-projections (`MLA._attend_absorbed`). Greedy sampling; all prompts share a length.
"""

from __future__ import annotations

import torch

from real.fp8 import BF16, Precision
from real.model import GQACache, MLACache, Transformer


@torch.no_grad()
def prefill(model: Transformer, prompt_BS: torch.Tensor, caches: list[MLACache | GQACache],
            precision: Precision = BF16, max_batch: int | None = None) -> torch.Tensor:
    """Fill the caches with the prompt; returns the next token for each sequence, (B, 1).
    max_batch: prefill at most this many sequences at a time (bounds activation memory)."""
    B = prompt_BS.shape[0]
    step = max_batch or B
    next_tokens = []
    for i in range(0, B, step):
        part = [c.rows(i, i + step) for c in caches]
        h_BSD = model.hidden(prompt_BS[i:i + step], precision, part, start_pos=0)
        next_tokens.append(model.logits(h_BSD[:, -1:], precision).argmax(dim=-1))
    return torch.cat(next_tokens, dim=0)


@torch.no_grad()
def decode_step(model: Transformer, token_B1: torch.Tensor, caches: list[MLACache | GQACache], pos: int,
                precision: Precision = BF16) -> torch.Tensor:
    """One decoding step for the token at position `pos`; returns the next token (B, 1)."""
    h_B1D = model.hidden(token_B1, precision, caches, start_pos=pos)
    return model.logits(h_B1D, precision).argmax(dim=-1)


@torch.no_grad()
def generate(model: Transformer, prompt_BS: torch.Tensor, gen_len: int,
             precision: Precision = BF16) -> torch.Tensor:
    """Greedy generation: prompt (B, S) -> generated tokens (B, gen_len)."""
    B, S = prompt_BS.shape
    caches = model.new_caches(B, S + gen_len)
    token_B1 = prefill(model, prompt_BS, caches, precision)
    out = [token_B1]
    for pos in range(S, S + gen_len - 1):
        token_B1 = decode_step(model, token_B1, caches, pos, precision)
        out.append(token_B1)
    return torch.cat(out, dim=1)

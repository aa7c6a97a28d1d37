"""CUDA graphs of decode-only iterations, captured per (batch bucket, page-table width bucket).

A decode-only iteration of Bd rows whose longest context needs m pages replays the graph of the
smallest batch bucket b >= Bd and page bucket w >= m; rows Bd..b-1 are padding (token 0 at
position 0 in the scratch page, context length 1). All graphs read one set of static input
buffers (views of the largest shape) and share one memory pool.
"""

from __future__ import annotations

import bisect

import torch

from real.serve.forward import StepInputs, step_forward
from real.serve.paged_cache import SCRATCH_PAGE


def default_batch_buckets(max_running: int) -> list[int]:
    """1, 2, 4, 8, then steps of 8 to 32, then of 16 (to 128), then of 32 up to max_running."""
    out, b = [], 1
    while b < min(8, max_running):
        out.append(b)
        b *= 2
    b = 8
    while b < max_running:
        out.append(b)
        b += 8 if b < 32 else 16 if b < 128 else 32
    out.append(max_running)
    return sorted(set(x for x in out if x <= max_running))


def default_page_buckets(max_pages: int) -> list[int]:
    """Powers of two up to max_pages, and max_pages itself."""
    out, w = [], 1
    while w < max_pages:
        out.append(w)
        w *= 2
    out.append(max_pages)
    return out


class DecodeGraphs:
    def __init__(self, model, cache, precision, batch_buckets: list[int], page_buckets: list[int]):
        self.model, self.cache, self.precision = model, cache, precision
        self.batch_buckets, self.page_buckets = sorted(batch_buckets), sorted(page_buckets)
        dev = cache.c_LyrPgPsC.device
        B, M = self.batch_buckets[-1], self.page_buckets[-1]
        self.tokens_B = torch.zeros(B, dtype=torch.long, device=dev)
        self.positions_B = torch.zeros(B, dtype=torch.long, device=dev)
        self.slots_B = torch.zeros(B, dtype=torch.long, device=dev)
        self.block_table_BM = torch.full((B, M), SCRATCH_PAGE, dtype=torch.long, device=dev)
        self.seq_lens_B = torch.ones(B, dtype=torch.long, device=dev)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None

    def _inputs(self, b: int, w: int) -> StepInputs:
        return StepInputs(self.tokens_B[:b], self.positions_B[:b], self.slots_B[:b], b,
                          self.block_table_BM[:b, :w], self.seq_lens_B[:b])

    def _pad(self):
        self.tokens_B.zero_()
        self.positions_B.zero_()
        self.slots_B.fill_(SCRATCH_PAGE * self.cache.page_size)
        self.block_table_BM.fill_(SCRATCH_PAGE)
        self.seq_lens_B.fill_(1)

    def capture(self) -> int:
        """Capture every bucket pair (largest first, so the pool is sized once); returns the count."""
        self._pad()
        self.pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # every shape runs once eagerly before any capture
            for b in self.batch_buckets:
                for w in self.page_buckets:
                    step_forward(self.model, self.cache, self._inputs(b, w), self.precision)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        for b in reversed(self.batch_buckets):
            for w in reversed(self.page_buckets):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self.pool):
                    out = step_forward(self.model, self.cache, self._inputs(b, w), self.precision)
                self.graphs[(b, w)] = (g, out)
        torch.cuda.synchronize()
        return len(self.graphs)

    def bucket(self, num_rows: int, num_pages: int) -> tuple[int, int] | None:
        i = bisect.bisect_left(self.batch_buckets, num_rows)
        j = bisect.bisect_left(self.page_buckets, num_pages)
        if i == len(self.batch_buckets) or j == len(self.page_buckets):
            return None
        return self.batch_buckets[i], self.page_buckets[j]

    def replay(self, bucket, tokens, positions, slots, block_rows, seq_lens) -> torch.Tensor:
        """Fill the static buffers (host lists -> device) and replay; returns the first Bd tokens."""
        b, w = bucket
        Bd = len(tokens)
        self._pad()
        dev = self.tokens_B.device
        self.tokens_B[:Bd].copy_(torch.tensor(tokens), non_blocking=True)
        self.positions_B[:Bd].copy_(torch.tensor(positions), non_blocking=True)
        self.slots_B[:Bd].copy_(torch.tensor(slots), non_blocking=True)
        table = torch.full((Bd, w), SCRATCH_PAGE, dtype=torch.long)
        for r, pages in enumerate(block_rows):
            table[r, :len(pages)] = torch.tensor(pages)
        self.block_table_BM[:Bd, :w].copy_(table.to(dev, non_blocking=True))
        self.seq_lens_B[:Bd].copy_(torch.tensor(seq_lens), non_blocking=True)
        g, out = self.graphs[bucket]
        g.replay()
        return out[:Bd]

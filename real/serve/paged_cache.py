"""The paged MLA cache: per layer, latents c (C values) and rope keys kpe (R values) of every
cached token, stored in fixed-size pages; a request holds a list of page ids (its page table).

Shapes: Lyr layers, Pg pages, Ps page size (tokens), C kv_lora_rank, R qk_rope_head_dim.
Token position p of a request lives in page `pages[p // Ps]`, row `p % Ps`: its flat slot is
`pages[p // Ps] * Ps + p % Ps`. Page 0 is never handed out: padding rows (CUDA-graph batches,
idle EP ranks) write there.
"""

from __future__ import annotations

import torch

SCRATCH_PAGE = 0


class OutOfPages(RuntimeError):
    """The pool has fewer free pages than asked for."""


class PagedMLACache:
    def __init__(self, num_layers: int, num_pages: int, page_size: int, kv_lora_rank: int,
                 rope_dim: int, dtype=torch.bfloat16, device=None):
        if num_pages < 2:
            raise ValueError(f"num_pages must be >= 2 (page 0 is scratch), got {num_pages}")
        self.page_size = page_size
        self.num_pages = num_pages
        self.c_LyrPgPsC = torch.zeros(num_layers, num_pages, page_size, kv_lora_rank, dtype=dtype,
                                      device=device)
        self.kpe_LyrPgPsR = torch.zeros(num_layers, num_pages, page_size, rope_dim, dtype=dtype,
                                        device=device)
        self._free = list(range(num_pages - 1, SCRATCH_PAGE, -1))  # pop() hands out low ids first

    @property
    def num_free_pages(self) -> int:
        return len(self._free)

    @property
    def bytes_per_token(self) -> int:
        c, k = self.c_LyrPgPsC, self.kpe_LyrPgPsR
        return (c.shape[0] * c.shape[-1] * c.element_size()) + (k.shape[0] * k.shape[-1] * k.element_size())

    def pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def allocate(self, num_pages: int) -> list[int]:
        if num_pages > len(self._free):
            raise OutOfPages(f"asked for {num_pages} pages, {len(self._free)} free")
        return [self._free.pop() for _ in range(num_pages)]

    def free(self, pages: list[int]) -> None:
        self._free.extend(reversed(pages))

    def slot(self, pages: list[int], pos: int) -> int:
        return pages[pos // self.page_size] * self.page_size + pos % self.page_size

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i's (c_PgPsC, kpe_PgPsR) views."""
        return self.c_LyrPgPsC[i], self.kpe_LyrPgPsR[i]

"""The GEMM kernels a flat batch size launches, as regions along M per weight (issue 15, s16srv;
docs/notes/s16srv_rule.md).

real/serve's eager iteration of a flat size M runs each flat-size weight's GEMM at M; a kernel the
process never launched costs a one-off ~2.2-2.9 ms on its first launch (the s16srv campaign:
calibration/measurements/h100/s16srv, 334 first launches over M = 1..2048 in every order), beside the
cuBLASLt look-ups of an exact new M (new_size_s). Each weight's kernels change at measured region
starts (twin/data/kernel_regions.toml, calibration/kernel_regions.py): the regions a size falls in are
the (weight, region) pairs it launches, and an iteration pays new_bin_s per pair its process had not
met (the engine tables' new_bin_regions = 1; else the 16-token bins)."""

from __future__ import annotations

import bisect
import functools

from twin.core.specs import _catalog


@functools.cache
def region_starts() -> dict[str, tuple[int, ...]]:
    """weight -> sorted M where its first-launched kernel changes (twin/data/kernel_regions.toml)."""
    return {w: tuple(s) for w, s in _catalog("kernel_regions.toml")["region_starts"].items()}


@functools.cache
def regions(flat_size: int) -> frozenset[tuple[str, int]]:
    """The (weight, region) pairs an eager iteration of `flat_size` rows launches."""
    return frozenset((w, bisect.bisect_right(s, flat_size)) for w, s in region_starts().items())


# (s17srv, docs/notes/s17srv_rule.md) The kernels themselves: a kernel first launched costs once per process
# whichever weight launches it (the s16srv2 campaign named them: the region pairs above count a shared kernel
# once per weight). twin/data/kernel_map.toml (calibration/kernel_map.py) holds, per gpu kind and flat-size
# weight, segments [first M, [kernel ids]] along M; an engine table with new_bin_kernels = 1 pays new_bin_s
# per kernel of a flat size its process had not launched.
KERNEL_MAP_FALLBACK = "h100"   # a gpu kind without its own map (none in the fits) counts on the H100's


@functools.cache
def gpu_kind(gpu: str) -> str:
    """The hardware catalog's key (twin/data/hardware.toml: 'h200') of a GPU given by key or by its spec's
    name ('NVIDIA H200 SXM5 141GB'); the name itself where the catalog has neither."""
    gpus = _catalog("hardware.toml")["gpus"]
    return next((key for key, spec in gpus.items() if gpu in (key, spec.get("name"))), gpu)


@functools.cache
def kernel_segments(gpu: str) -> dict[str, tuple[tuple[int, ...], tuple[frozenset[int], ...]]]:
    """weight -> (segment starts along M, each segment's kernel ids) of `gpu`'s map (catalog key or spec
    name; the fallback's where it has none)."""
    maps = _catalog("kernel_map.toml")
    table = maps.get(gpu_kind(gpu), maps[KERNEL_MAP_FALLBACK])
    return {w: (tuple(m for m, _ in seg), tuple(frozenset(ks) for _, ks in seg))
            for w, seg in table.items() if isinstance(seg, list)}


@functools.cache
def kernels(gpu: str, flat_size: int) -> frozenset[int]:
    """The kernel ids an eager iteration of `flat_size` rows launches through its flat-size weights on `gpu`."""
    out: set[int] = set()
    for starts, sets in kernel_segments(gpu).values():
        out |= sets[max(0, bisect.bisect_right(starts, flat_size) - 1)]
    return frozenset(out)

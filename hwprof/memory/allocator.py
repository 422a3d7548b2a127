"""A model of PyTorch's CUDA caching allocator, driven by malloc/free events.

What it reproduces (``c10/cuda/CUDACachingAllocator.cpp``, default configuration: no
``PYTORCH_CUDA_ALLOC_CONF``, no expandable segments, one stream):

* **Block rounding** (``round_size``): a request of ``n`` bytes becomes a block of
  ``max(512, 512 * ceil(n / 512))`` bytes (``kMinBlockSize = 512``). Zero-byte tensors
  allocate nothing.
* **Two pools**: blocks of at most 1 MiB (``kSmallSize``) live in the small pool, larger
  ones in the large pool; a pool never serves the other's requests.
* **Segment sizes** (``get_allocation_size``, one ``cudaMalloc`` each): 2 MiB
  (``kSmallBuffer``) for small requests; 20 MiB (``kLargeBuffer``) for requests of
  1 MiB to 10 MiB (``kMinLargeAlloc``); otherwise the request rounded up to a multiple of
  2 MiB (``kRoundLarge``).
* **Best fit**: a request takes the smallest free cached block of its pool that is large
  enough (ties: lowest address); only when none fits is a new segment allocated.
* **Splitting** (``should_split``): the unused tail of the chosen block becomes a free
  block if it is at least 512 B (small pool) or more than 1 MiB (large pool). Otherwise the
  whole block is handed out and **counted in full** by ``allocated_bytes`` - so
  ``max_memory_allocated`` can exceed the sum of 512-rounded sizes.
* **Freeing** returns a block to its pool and merges it with free neighbours of the same
  segment; segments are never returned to the driver (no ``empty_cache``), so *reserved*
  only grows, as it does within one training run.

What it does not model: OOM-time cache flushing and retry, ``max_split_size_mb``,
``roundup_power2_divisions``, expandable segments, multiple streams, CUDA graphs, and
memory that bypasses the allocator (the CUDA context, cuDNN/cuBLAS handles' internal state).

``AllocatorModel`` follows ``allocated``/``reserved`` and their peaks exactly as the real
allocator's ``allocated_bytes``/``reserved_bytes`` statistics do, given the same sequence of
requests; ``ExactAllocatorModel`` is the trivial model (no rounding, nothing cached) used for
CPU, where glibc's malloc rounding is negligible at tensor sizes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = [
    "MIN_BLOCK_BYTES", "SMALL_SIZE_BYTES", "SMALL_BUFFER_BYTES", "LARGE_BUFFER_BYTES",
    "MIN_LARGE_ALLOC_BYTES", "ROUND_LARGE_BYTES", "round_block_bytes", "segment_bytes",
    "AllocatorModel", "CachingAllocatorModel", "ExactAllocatorModel", "make_allocator",
]

MIN_BLOCK_BYTES = 512                  # kMinBlockSize
SMALL_SIZE_BYTES = 1 << 20             # kSmallSize: largest "small" request (1 MiB)
SMALL_BUFFER_BYTES = 2 << 20           # kSmallBuffer: small-pool segment (2 MiB)
LARGE_BUFFER_BYTES = 20 << 20          # kLargeBuffer: segment for 1..10 MiB requests (20 MiB)
MIN_LARGE_ALLOC_BYTES = 10 << 20       # kMinLargeAlloc (10 MiB)
ROUND_LARGE_BYTES = 2 << 20            # kRoundLarge: large segments round up to 2 MiB


def round_block_bytes(nbytes: int) -> int:
    """Block size for a request of ``nbytes``: ``max(512, 512 * ceil(nbytes / 512))``; 0 for 0."""
    if nbytes <= 0:
        return 0
    return max(MIN_BLOCK_BYTES, -(-nbytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES)


def segment_bytes(block_bytes: int) -> int:
    """Size of the segment (``cudaMalloc``) opened for a block that fits no cached block."""
    if block_bytes <= SMALL_SIZE_BYTES:
        return SMALL_BUFFER_BYTES
    if block_bytes < MIN_LARGE_ALLOC_BYTES:
        return LARGE_BUFFER_BYTES
    return -(-block_bytes // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES


class AllocatorModel:
    """Interface: ``malloc(key, nbytes)`` / ``free(key)`` and the four statistics."""

    allocated_bytes: int = 0
    reserved_bytes: int = 0
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    requested_bytes: int = 0         # sum of live request sizes, no rounding

    def malloc(self, key: int, nbytes: int) -> int:  # pragma: no cover - interface
        """Allocate ``nbytes`` under ``key``; return the bytes counted as allocated."""
        raise NotImplementedError

    def free(self, key: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def resize(self, key: int, nbytes: int) -> None:
        """A storage changed size (``resize_``): free and re-allocate, as the real allocator does."""
        self.free(key)
        self.malloc(key, nbytes)


class ExactAllocatorModel(AllocatorModel):
    """No rounding and no caching: allocated = reserved = the bytes requested (CPU)."""

    def __init__(self) -> None:
        self._live: dict[int, int] = {}

    def malloc(self, key: int, nbytes: int) -> int:
        self._live[key] = nbytes
        self.requested_bytes += nbytes
        self.allocated_bytes += nbytes
        self.reserved_bytes = self.allocated_bytes
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        self.peak_reserved_bytes = self.peak_allocated_bytes
        return nbytes

    def free(self, key: int) -> None:
        nbytes = self._live.pop(key, None)
        if nbytes is None:
            return
        self.requested_bytes -= nbytes
        self.allocated_bytes -= nbytes
        self.reserved_bytes = self.allocated_bytes


@dataclass(eq=False)
class _Block:
    addr: int
    size: int
    small: bool
    segment: int
    allocated: bool = False
    requested: int = 0
    prev: _Block | None = field(default=None, repr=False)
    next: _Block | None = field(default=None, repr=False)


class CachingAllocatorModel(AllocatorModel):
    """The CUDA caching allocator's block/segment bookkeeping (see the module docstring)."""

    def __init__(self) -> None:
        self._live: dict[int, _Block] = {}
        # free blocks per pool, sorted by (size, addr): bisect gives the best fit
        self._free: dict[bool, list[tuple[int, int, _Block]]] = {True: [], False: []}
        self._next_addr = 0
        self.segments = 0

    # ------------------------------------------------------------------ public
    def malloc(self, key: int, nbytes: int) -> int:
        size = round_block_bytes(nbytes)
        if size == 0:
            return 0
        small = size <= SMALL_SIZE_BYTES
        block = self._take_free_block(size, small)
        if block is None:
            seg = segment_bytes(size)
            block = _Block(self._next_addr, seg, small, self.segments)
            self._next_addr += seg
            self.segments += 1
            self.reserved_bytes += seg
            self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        remaining = block.size - size
        if (remaining >= MIN_BLOCK_BYTES) if small else (remaining > SMALL_SIZE_BYTES):
            tail = _Block(block.addr + size, remaining, small, block.segment, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next = tail
            block.size = size
            self._insert_free(tail)
        block.allocated = True
        block.requested = nbytes
        self._live[key] = block
        self.allocated_bytes += block.size
        self.requested_bytes += nbytes
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block.size

    def free(self, key: int) -> None:
        block = self._live.pop(key, None)
        if block is None:
            return
        self.allocated_bytes -= block.size
        self.requested_bytes -= block.requested
        block.allocated = False
        block.requested = 0
        for nb in (block.prev, block.next):
            if nb is not None and not nb.allocated:
                self._remove_free(nb)
                if nb is block.prev:
                    nb.size += block.size
                    nb.next = block.next
                    if block.next is not None:
                        block.next.prev = nb
                    block = nb
                else:
                    block.size += nb.size
                    block.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = block
        self._insert_free(block)

    # ------------------------------------------------------------------ pools
    def _insert_free(self, block: _Block) -> None:
        bisect.insort(self._free[block.small], (block.size, block.addr, block))

    def _remove_free(self, block: _Block) -> None:
        pool = self._free[block.small]
        i = bisect.bisect_left(pool, (block.size, block.addr), key=lambda e: (e[0], e[1]))
        assert pool[i][2] is block, "allocator model: free list out of sync"
        del pool[i]

    def _take_free_block(self, size: int, small: bool) -> _Block | None:
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1), key=lambda e: (e[0], e[1]))
        if i == len(pool):
            return None
        return pool.pop(i)[2]


def make_allocator(device_type: str) -> AllocatorModel:
    """The caching-allocator model for ``"cuda"``, the exact (no rounding) model otherwise."""
    return CachingAllocatorModel() if device_type == "cuda" else ExactAllocatorModel()

"""Tiling a kernel matrix into blocks of image pairs: sizing, scheduling, OOM retry, progress."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._recursion import LAYOUTS

logger = logging.getLogger("dlclaims.cntk")

# The recursion holds 4 buffers of a block's largest offset class (Σ, Θ, two scratch; see
# `block_kernels`): the peak resident size grows by 4.1 of them (measured in
# tests/test_cntk.py); 8 leaves room for allocator slack between blocks of other shapes.
WORKSPACE_TENSORS_PER_PAIR = 8
# Share of the free memory a computation plans to use (the rest: other processes, caches).
MEMORY_FRACTION = 0.5
# On CPU, elementwise kernels slow down once operands leave the cache: CNTK-V at 32×32 ran
# fastest with 8–16 images per block edge (2^16–2^18 elements per launch) on a 2-core EPYC.
CPU_ELEMENTS_PER_LAUNCH = 1 << 18


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: torch.cuda.mem_get_info, or MemAvailable from /proc/meminfo."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # no /proc (not Linux): assume a modest machine


@dataclass(frozen=True)
class MemoryPlan:
    """What one kernel computation keeps resident, in bytes, as a function of the block side."""

    per_pair: int  # recursion workspace of one image pair (its largest offset class)
    per_image: int  # one image plus its per-layer variance maps (rows and columns of a block)
    fixed: int  # inputs and outputs, independent of the block size
    elements_per_pair: int  # elements of one pair in each elementwise launch

    def peak(self, block_size: int) -> int:
        return self.fixed + block_size * block_size * self.per_pair + 2 * block_size * self.per_image


def memory_plan(n_rows: int, n_cols: int, *, channels: int, height: int, width: int,
                pooling: str, n_layers: int, n_depths: int, dtype: torch.dtype,
                device: torch.device) -> MemoryPlan:
    """The memory model `choose_block_size` sizes blocks with (see `WORKSPACE_TENSORS_PER_PAIR`)."""
    item = torch.empty((), dtype=dtype).element_size()
    positions = LAYOUTS[pooling].band_positions(height, width)
    per_image = (channels + 2 * n_layers) * height * width * item
    inputs = (n_rows + n_cols) * channels * height * width * item
    outputs = n_depths * n_rows * n_cols * 8  # float64 results live on the host
    return MemoryPlan(per_pair=WORKSPACE_TENSORS_PER_PAIR * positions * item, per_image=per_image,
                      fixed=inputs + (outputs if device.type == "cpu" else 0),
                      elements_per_pair=positions)


def choose_block_size(plan: MemoryPlan, *, max_size: int, device: torch.device,
                      memory_budget: int | None = None) -> int:
    """Largest block side (images per block edge) whose peak memory fits the budget.

    The budget defaults to `MEMORY_FRACTION` of the free memory of ``device``. On CPU
    the block is further capped at about `CPU_ELEMENTS_PER_LAUNCH` elements per
    elementwise launch, where throughput is best; CUDA takes the largest block that fits.
    Raises MemoryError when not even one pair fits.
    """
    budget = memory_budget if memory_budget is not None else int(
        MEMORY_FRACTION * available_memory_bytes(device))
    if plan.peak(1) > budget:
        raise MemoryError(f"one image pair needs {plan.peak(1) / 2**30:.2f} GiB with the inputs "
                          f"and outputs, more than the {budget / 2**30:.2f} GiB budget")
    size = max(1, math.isqrt((budget - plan.fixed) // plan.per_pair))
    while size > 1 and plan.peak(size) > budget:
        size -= 1
    if device.type == "cpu":
        size = min(size, max(1, math.isqrt(CPU_ELEMENTS_PER_LAUNCH // plan.elements_per_pair)))
    return max(1, min(size, max_size))


@dataclass(frozen=True)
class Block:
    """Rows ``[row_start, row_stop)`` × columns ``[col_start, col_stop)`` of the kernel matrix."""

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def n_pairs(self) -> int:
        return (self.row_stop - self.row_start) * (self.col_stop - self.col_start)

    def halves(self, symmetric: bool) -> list[Block]:
        """Split both sides in two; below-diagonal quarters of a symmetric matrix are dropped."""
        row_mid = (self.row_start + self.row_stop + 1) // 2
        col_mid = (self.col_start + self.col_stop + 1) // 2
        quarters = [Block(r0, r1, c0, c1)
                    for r0, r1 in ((self.row_start, row_mid), (row_mid, self.row_stop))
                    for c0, c1 in ((self.col_start, col_mid), (col_mid, self.col_stop))]
        return [q for q in quarters
                if q.n_pairs > 0 and not (symmetric and q.col_stop <= q.row_start)]


def tile(n_rows: int, n_cols: int, block_size: int, symmetric: bool) -> list[Block]:
    """Row-major blocks covering the matrix; only the upper block triangle when symmetric."""
    starts_r = range(0, n_rows, block_size)
    starts_c = range(0, n_cols, block_size)
    return [Block(r, min(r + block_size, n_rows), c, min(c + block_size, n_cols))
            for r in starts_r for c in starts_c if not (symmetric and c < r)]


@dataclass(frozen=True)
class Progress:
    """Passed to a progress callback after each block."""

    pairs_done: int
    pairs_total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        if self.pairs_done == 0:
            return math.inf
        return self.elapsed_s * (self.pairs_total - self.pairs_done) / self.pairs_done


ProgressCallback = Callable[[Progress], None]


def log_progress(every_s: float = 10.0) -> ProgressCallback:
    """A callback that logs pairs done and the ETA at INFO, at most every ``every_s`` seconds."""
    last = -math.inf

    def report(progress: Progress) -> None:
        nonlocal last
        finished = progress.pairs_done == progress.pairs_total
        if finished or progress.elapsed_s - last >= every_s:
            last = progress.elapsed_s
            logger.info("CNTK: %d/%d pairs (%.1f%%), %.0f s elapsed, ETA %.0f s",
                        progress.pairs_done, progress.pairs_total,
                        100.0 * progress.pairs_done / progress.pairs_total,
                        progress.elapsed_s, progress.eta_s)

    return report


def run_blocks(blocks: list[Block], compute: Callable[[Block], None], *, symmetric: bool,
               on_progress: ProgressCallback | None, empty_cache: Callable[[], None]) -> None:
    """Compute every block; a block that runs out of memory is split in four and retried.

    ``compute`` must write its results only after it has finished, so a failed attempt
    leaves nothing behind. Once a block size has failed, later blocks at least that
    large are split before they are tried.
    """
    pairs_total = sum(b.n_pairs for b in blocks)
    pairs_done = 0
    failed_pairs = math.inf
    start = time.perf_counter()
    pending = list(reversed(blocks))

    def split(block: Block) -> None:
        nonlocal pairs_done
        parts = block.halves(symmetric)
        pairs_done += block.n_pairs - sum(p.n_pairs for p in parts)  # mirrored, not computed
        pending.extend(reversed(parts))

    while pending:
        block = pending.pop()
        if block.n_pairs >= failed_pairs:
            split(block)
            continue
        try:
            compute(block)
        except torch.OutOfMemoryError:
            if block.n_pairs == 1:
                raise
            empty_cache()
            failed_pairs = block.n_pairs
            logger.warning("CNTK: out of memory on a %d-pair block; retrying in smaller blocks",
                           block.n_pairs)
            split(block)
            continue
        pairs_done += block.n_pairs
        if on_progress is not None:
            on_progress(Progress(pairs_done, pairs_total, time.perf_counter() - start))

"""Scale-out of a big kernel Gram matrix over processes and machines, tile by tile, restartable.

A 60k × 60k CNTK is days of one GPU. The matrix is cut into tiles (`plan_tiles`); rank r of
W processes computes tiles r, r + W, r + 2W, ... (`compute_gram_tiled`) and writes each one to
`<out_dir>/tiles/rows<a>-<b>_cols<c>-<d>.npy` atomically (a temporary file, then a rename), so
a crash loses only the tiles in flight, and a restart — by hand, or torchrun's
`--max-restarts` — skips every finished tile. `assemble` reads the tiles back into one matrix
(optionally straight into a memory-mapped .npy: a 60k² float64 Gram is 29 GB).
`<out_dir>/manifest.json` pins the plan and a fingerprint of the inputs and the kernel, so a
restart with other inputs, another kernel or another tile size refuses instead of mixing tiles.

Engine: torch.distributed, one process per GPU, launched by torchrun (nccl on GPUs, gloo on
CPUs). It is already part of torch — no new dependency — and torchrun brings multi-node
rendezvous, LOCAL_RANK → GPU and elastic restarts. The plan is static and embarrassingly
parallel and the tiles travel through a shared file system, so the only collective is one
check at start-up that every rank holds the same inputs; Ray or Dask would add a scheduler,
a dependency and a second way to launch jobs for no gain here.

    # 2 machines × 4 GPUs; gram/ on a file system both machines mount
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        --max-restarts 3 -m dlclaims.tiles compute --inputs x.npy --tile 2500 \\
        --kernel dlclaims.cntk:cntk --kernel-kwargs '{"depth": 11, "pooling": "gap"}' --out gram/
    python -m dlclaims.tiles status gram/
    python -m dlclaims.tiles assemble gram/ --to gram.npy
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .cntk._blocks import Block
from .cntk._blocks import tile as _block_tiles

MANIFEST = "manifest.json"
TILE_DIR = "tiles"
_TMP_SUFFIX = ".tmp"

KernelFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | np.ndarray"]


class ManifestMismatch(RuntimeError):
    """out_dir holds tiles of another plan, other inputs or another kernel."""


def plan_tiles(n_rows: int, n_cols: int, tile: int, symmetric: bool) -> list[Block]:
    """Row-major tiles covering an n_rows × n_cols matrix; only the upper tile triangle when symmetric."""
    if tile < 1:
        raise ValueError(f"tile must be ≥ 1, got {tile}")
    if symmetric and n_rows != n_cols:
        raise ValueError(f"a symmetric Gram matrix is square, got {n_rows} × {n_cols}")
    return _block_tiles(n_rows, n_cols, tile, symmetric)


def tiles_of_rank(plan: list[Block], rank: int, world_size: int) -> list[Block]:
    """Rank's share of the plan: round-robin, so every rank gets near-equal work."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return plan[rank::world_size]


def tile_path(out_dir: str | os.PathLike, t: Block) -> Path:
    return Path(out_dir, TILE_DIR, f"rows{t.row_start}-{t.row_stop}_cols{t.col_start}-{t.col_stop}.npy")


def _shape(t: Block) -> tuple[int, int]:
    return (t.row_stop - t.row_start, t.col_stop - t.col_start)


def is_done(out_dir: str | os.PathLike, t: Block) -> bool:
    """A tile counts as done when its file reads back with the tile's shape (header only)."""
    try:
        return np.load(tile_path(out_dir, t), mmap_mode="r").shape == _shape(t)
    except (OSError, ValueError):
        return False


def fingerprint(*arrays) -> str:
    """sha256 of the inputs' shapes, dtypes and bytes: the identity of a Gram matrix's inputs."""
    digest = hashlib.sha256()
    for x in arrays:
        if x is None:
            digest.update(b"<none>")
            continue
        a = np.ascontiguousarray(torch.as_tensor(x).detach().cpu().numpy())
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def _write_atomic(path: Path, write: Callable, tag: str) -> None:
    """write(binary_file) into a temporary file, then rename: readers see the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{tag}{_TMP_SUFFIX}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename makes it visible
    os.replace(tmp, path)


def _manifest_for(x1, x2, tile: int, key: str) -> dict:
    n_cols = len(x1) if x2 is None else len(x2)
    return {"format": 1, "n_rows": len(x1), "n_cols": n_cols, "tile": tile, "symmetric": x2 is None,
            "key": key, "inputs_sha256": fingerprint(x1, x2)}


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir, MANIFEST)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {out_dir} holds no tiled Gram matrix")
    return json.loads(path.read_text())


def ensure_manifest(out_dir: str | os.PathLike, manifest: dict, tag: str = "") -> dict:
    """Write the manifest, or check that the one already there describes the same job.

    Idempotent, so every rank may call it: ranks agreeing on the job write identical bytes.
    """
    path = Path(out_dir, MANIFEST)
    if path.is_file():
        existing = read_manifest(out_dir)
        if existing != manifest:
            differ = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
            raise ManifestMismatch(
                f"{path} describes another job (differs in {', '.join(differ)}); use a new out_dir, "
                f"or delete {out_dir} to start over")
        return existing
    _write_atomic(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()), tag or str(os.getpid()))
    return manifest


def compute_gram_tiled(kernel_fn: KernelFn, x1, x2, out_dir: str | os.PathLike, tile: int,
                       rank: int = 0, world_size: int = 1, *, key: str = "") -> list[Block]:
    """Compute this rank's missing tiles of kernel_fn(x1, x2) (x2=None: the symmetric Gram of x1).

    kernel_fn(x_a, x_b) returns the len(x_a) × len(x_b) block (a tensor or an array, any device).
    `key` names the kernel and its settings in the manifest (a restart with another key refuses).
    Returns the tiles computed by this call; finished tiles on disk are skipped.
    """
    manifest = ensure_manifest(out_dir, _manifest_for(x1, x2, tile, key), tag=f"rank{rank}")
    cols = x1 if x2 is None else x2
    plan = plan_tiles(manifest["n_rows"], manifest["n_cols"], tile, manifest["symmetric"])
    computed = []
    for t in tiles_of_rank(plan, rank, world_size):
        if is_done(out_dir, t):
            continue
        block = kernel_fn(x1[t.row_start:t.row_stop], cols[t.col_start:t.col_stop])
        values = torch.as_tensor(block).detach().cpu().numpy()
        if values.shape != _shape(t):
            raise ValueError(f"kernel_fn returned shape {values.shape} for tile {t}, expected {_shape(t)}")
        _write_atomic(tile_path(out_dir, t), lambda f, values=values: np.save(f, values), f"rank{rank}")
        computed.append(t)
    return computed


def planned_tiles(out_dir: str | os.PathLike) -> list[Block]:
    m = read_manifest(out_dir)
    return plan_tiles(m["n_rows"], m["n_cols"], m["tile"], m["symmetric"])


def missing_tiles(out_dir: str | os.PathLike) -> list[Block]:
    return [t for t in planned_tiles(out_dir) if not is_done(out_dir, t)]


def remove_partial_writes(out_dir: str | os.PathLike) -> int:
    """Delete temporary files left by killed writers (call while no rank is writing)."""
    stale = list(Path(out_dir, TILE_DIR).glob(f"*{_TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def assemble(out_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> np.ndarray:
    """The full Gram matrix from its tiles (mirrored when symmetric); `out` → a memory-mapped .npy."""
    m = read_manifest(out_dir)
    missing = missing_tiles(out_dir)
    if missing:
        names = ", ".join(tile_path(out_dir, t).name for t in missing[:5])
        raise FileNotFoundError(f"{len(missing)} tile(s) of {out_dir} are not computed ({names}"
                                f"{', ...' if len(missing) > 5 else ''}); run compute again to finish them")
    plan = planned_tiles(out_dir)
    dtype = np.load(tile_path(out_dir, plan[0]), mmap_mode="r").dtype
    shape = (m["n_rows"], m["n_cols"])
    gram = (np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape) if out is not None
            else np.empty(shape, dtype=dtype))
    for t in plan:
        block = np.load(tile_path(out_dir, t))
        if m["symmetric"] and t.row_start == t.col_start:  # a diagonal tile: its upper triangle rules
            block = np.triu(block) + np.triu(block, 1).T
        gram[t.row_start:t.row_stop, t.col_start:t.col_stop] = block
        if m["symmetric"] and t.row_start != t.col_start:
            gram[t.col_start:t.col_stop, t.row_start:t.row_stop] = block.T
    if out is not None:
        gram.flush()
    return gram


# ---------------------------------------------------------------- torchrun entry point


def load_kernel(spec: str, kwargs: dict, device: torch.device | str | None = None) -> KernelFn:
    """"package.module:function" plus keyword arguments → kernel_fn(x_a, x_b).

    `device` (this rank's device) is passed as the kernel's `device=` keyword when the function
    takes one and the kwargs do not set it: a kernel that defaults to "cuda" (dlclaims.cntk) would
    otherwise compute on the current CUDA device whatever --device chose.
    """
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--kernel must look like package.module:function, got {spec!r}")
    fn = getattr(importlib.import_module(module), name)
    kwargs = dict(kwargs)
    if device is not None and "device" not in kwargs and _takes_keyword(fn, "device"):
        kwargs["device"] = str(device)
    return lambda a, b: fn(a, b, **kwargs)


def _takes_keyword(fn, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def rank_device(requested: str, local_rank: int, local_world_size: int, cuda_available: bool,
                gpu_count: int) -> tuple[torch.device, str]:
    """(device, distributed backend) of one rank: its own GPU `cuda:<LOCAL_RANK>`, or the CPU.

    "auto" means CUDA when available. On CUDA every local rank needs its own GPU: more ranks per
    node than visible GPUs would silently share one (half the speed each and twice the memory), so
    that is an error naming the counts, as is asking for CUDA where there is none.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    use_cuda = requested == "cuda" or (requested == "auto" and cuda_available)
    if not use_cuda:
        return torch.device("cpu"), "gloo"
    if not cuda_available or gpu_count < 1:
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    if local_world_size > gpu_count or local_rank >= gpu_count:
        raise RuntimeError(
            f"{local_world_size} ranks on this node but {gpu_count} visible GPU(s): rank {local_rank} would "
            f"share a GPU; start at most {gpu_count} processes per node (torchrun --nproc-per-node {gpu_count})")
    return torch.device("cuda", local_rank), "nccl"


def _distributed_compute(args) -> int:
    """One torchrun worker: join the group, check inputs agree across ranks, compute the share."""
    import torch.distributed as dist

    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    cuda = torch.cuda.is_available()
    device, backend = rank_device(args.device, local_rank, local_world_size, cuda,
                                  torch.cuda.device_count() if cuda else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    x1 = torch.from_numpy(np.load(args.inputs)).to(device)
    x2 = torch.from_numpy(np.load(args.inputs2)).to(device) if args.inputs2 else None
    kwargs = json.loads(args.kernel_kwargs)
    key = args.key or f"{args.kernel} {json.dumps(kwargs, sort_keys=True)}"
    manifest = _manifest_for(x1, x2, args.tile, key)

    distributed = "MASTER_ADDR" in os.environ  # launched by torchrun; plain python runs one rank
    if distributed:
        # Start-up only: tiles may take hours, so no collective waits on them later.
        dist.init_process_group(backend, timeout=_dt.timedelta(minutes=30))
        fingerprints = [None] * world_size
        dist.all_gather_object(fingerprints, manifest["inputs_sha256"])
        if len(set(fingerprints)) > 1:
            raise ManifestMismatch(f"ranks hold different inputs: {fingerprints}")
        if rank == 0:
            remove_partial_writes(args.out)
            ensure_manifest(args.out, manifest, tag="rank0")
        dist.barrier()
    try:
        done = compute_gram_tiled(load_kernel(args.kernel, kwargs, device), x1, x2, args.out, args.tile,
                                  rank, world_size, key=key)
        print(f"rank {rank}/{world_size}: computed {len(done)} tile(s); "
              f"{len(missing_tiles(args.out))} of {len(planned_tiles(args.out))} not done yet", flush=True)
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlclaims.tiles", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    compute = sub.add_parser("compute", help="compute this rank's missing tiles (run under torchrun)")
    compute.add_argument("--inputs", required=True, help=".npy of the row inputs (N, ...)")
    compute.add_argument("--inputs2", help=".npy of the column inputs; omitted: the symmetric Gram of --inputs")
    compute.add_argument("--kernel", required=True, help="package.module:function taking (x_a, x_b, **kwargs)")
    compute.add_argument("--kernel-kwargs", default="{}", help="JSON keyword arguments of the kernel")
    compute.add_argument("--key", default="", help="kernel identity in the manifest (default: --kernel + kwargs)")
    compute.add_argument("--tile", type=int, required=True, help="rows/columns per tile")
    compute.add_argument("--out", required=True, help="tile folder (shared by all machines)")
    compute.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="auto: GPU LOCAL_RANK with nccl when CUDA is available, else CPU with gloo; "
                              "the kernel computes there (its device= keyword); more ranks per node than "
                              "GPUs is an error")
    status = sub.add_parser("status", help="count finished and missing tiles")
    status.add_argument("out")
    asm = sub.add_parser("assemble", help="write the full matrix once every tile is done")
    asm.add_argument("out")
    asm.add_argument("--to", required=True, help="output .npy (memory-mapped while written)")
    args = parser.parse_args(argv)

    if args.command == "compute":
        return _distributed_compute(args)
    if args.command == "status":
        missing = missing_tiles(args.out)
        print(f"{len(planned_tiles(args.out)) - len(missing)} done, {len(missing)} missing")
        return 1 if missing else 0
    assemble(args.out, args.to)
    print(f"wrote {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

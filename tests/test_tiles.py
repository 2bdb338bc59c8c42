"""Tiled, restartable Gram matrices (dlclaims.tiles): coverage, ranks, crash + resume, torchrun."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import traceback

import numpy as np
import pytest
import torch

from dlclaims import tiles


def indexed_inputs(n: int, d: int = 3, offset: int = 0) -> torch.Tensor:
    """Rows whose first feature is their index, so a kernel can tell which tile it was given."""
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n + offset))
    x[:, 0] = torch.arange(n, dtype=torch.float64) + offset
    return x


class LinearKernel:
    """x_a @ x_bᵀ that logs each tile (by its first row/column index) and may crash once."""

    def __init__(self, crash_at: tuple[int, int] | None = None):
        self.calls: list[tuple[int, int]] = []
        self.crash_at = crash_at

    def __call__(self, a, b):
        tile = (int(a[0, 0]), int(b[0, 0]))
        if tile == self.crash_at:
            self.crash_at = None
            raise RuntimeError(f"simulated crash in tile {tile}")
        self.calls.append(tile)
        return a @ b.T


def starts(t) -> tuple[int, int]:
    return (t.row_start, t.col_start)


@pytest.mark.parametrize("n_rows,n_cols,tile,symmetric", [
    (7, 7, 3, True), (7, 7, 3, False), (6, 6, 2, True), (5, 9, 4, False), (4, 4, 10, True), (1, 1, 1, True),
])
def test_plan_covers_every_entry_exactly_once(n_rows, n_cols, tile, symmetric):
    covered = np.zeros((n_rows, n_cols), dtype=int)
    for t in tiles.plan_tiles(n_rows, n_cols, tile, symmetric):
        covered[t.row_start:t.row_stop, t.col_start:t.col_stop] += 1
        if symmetric and t.row_start != t.col_start:  # assemble mirrors off-diagonal tiles
            covered[t.col_start:t.col_stop, t.row_start:t.row_stop] += 1
    assert (covered == 1).all()


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        tiles.plan_tiles(4, 5, 2, symmetric=True)
    with pytest.raises(ValueError, match="tile must be"):
        tiles.plan_tiles(4, 4, 0, symmetric=False)


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_ranks_partition_the_plan(world_size):
    plan = tiles.plan_tiles(10, 10, 3, symmetric=True)
    shares = [tiles.tiles_of_rank(plan, r, world_size) for r in range(world_size)]
    assert sorted(map(starts, sum(shares, []))) == sorted(map(starts, plan))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError):
        tiles.tiles_of_rank(plan, world_size, world_size)


@pytest.mark.parametrize("symmetric", [True, False])
def test_two_ranks_assemble_the_direct_gram(tmp_path, symmetric):
    x1 = indexed_inputs(7)
    x2 = None if symmetric else indexed_inputs(5, offset=100)
    kernel = LinearKernel()
    for rank in range(2):
        tiles.compute_gram_tiled(kernel, x1, x2, tmp_path, tile=3, rank=rank, world_size=2)
    direct = (x1 @ (x1 if symmetric else x2).T).numpy()
    np.testing.assert_array_equal(tiles.assemble(tmp_path), direct)
    mapped = tiles.assemble(tmp_path, out=tmp_path / "gram.npy")  # memory-mapped output
    np.testing.assert_array_equal(np.load(tmp_path / "gram.npy"), direct)
    assert isinstance(mapped, np.memmap)


def test_crash_loses_one_tile_and_resume_computes_only_missing(tmp_path):
    x = indexed_inputs(8)
    plan = tiles.plan_tiles(8, 8, 3, symmetric=True)  # 6 tiles; rank 0 gets 3 of them
    rank0 = [starts(t) for t in tiles.tiles_of_rank(plan, 0, 2)]
    crashing = LinearKernel(crash_at=rank0[1])
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiles.compute_gram_tiled(crashing, x, None, tmp_path, tile=3, rank=0, world_size=2)
    tiles.compute_gram_tiled(crashing, x, None, tmp_path, tile=3, rank=1, world_size=2)
    missing = {starts(t) for t in tiles.missing_tiles(tmp_path)}
    assert missing == set(rank0[1:])  # the crashed tile and the ones rank 0 had not reached
    assert tiles.main(["status", str(tmp_path)]) == 1
    with pytest.raises(FileNotFoundError, match="not computed"):
        tiles.assemble(tmp_path)

    resumed = LinearKernel()
    for rank in range(2):
        tiles.compute_gram_tiled(resumed, x, None, tmp_path, tile=3, rank=rank, world_size=2)
    assert sorted(resumed.calls) == sorted(missing)
    assert tiles.main(["assemble", str(tmp_path), "--to", str(tmp_path / "gram.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "gram.npy"), (x @ x.T).numpy())


def test_interrupted_write_leaves_no_tile(tmp_path, monkeypatch):
    def dies_mid_write(f, values):
        f.write(b"\x93NUMPY half a header")
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(tiles.np, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        tiles.compute_gram_tiled(LinearKernel(), indexed_inputs(4), None, tmp_path, tile=4)
    monkeypatch.undo()
    assert tiles.missing_tiles(tmp_path) == tiles.plan_tiles(4, 4, 4, symmetric=True)
    assert tiles.remove_partial_writes(tmp_path) == 1


def test_restart_with_another_job_refuses(tmp_path):
    x = indexed_inputs(6)
    tiles.compute_gram_tiled(LinearKernel(), x, None, tmp_path, tile=3, key="linear")
    tiles.compute_gram_tiled(LinearKernel(), x.clone(), None, tmp_path, tile=3, key="linear")  # same job
    for differs_in, x1, tile, key in [("tile", x, 2, "linear"), ("inputs_sha256", x + 1, 3, "linear"),
                                      ("key", x, 3, "rbf")]:
        with pytest.raises(tiles.ManifestMismatch, match=differs_in):
            tiles.compute_gram_tiled(LinearKernel(), x1, None, tmp_path, tile, key=key)


def test_kernel_of_the_wrong_shape_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        tiles.compute_gram_tiled(lambda a, b: a @ a.T[:, :1], indexed_inputs(4), None, tmp_path, tile=2)


def test_tiled_cntk_equals_the_whole_cntk(tmp_path):
    from dlclaims.cntk import cntk

    x = torch.randn(5, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def kernel(a, b):
        return cntk(a, b, depth=3, pooling="gap", device="cpu")

    tiles.compute_gram_tiled(kernel, x, None, tmp_path, tile=2)
    whole = cntk(x, depth=3, pooling="gap", device="cpu").numpy()
    np.testing.assert_allclose(tiles.assemble(tmp_path), whole, rtol=1e-12, atol=0)


CRASHING_KERNEL = '''
import os

def linear(a, b, *, log, crash_flag, crash_at):
    """x_a @ x_bᵀ; crashes once (the first time crash_flag is absent) on tile crash_at."""
    tile = [int(a[0, 0]), int(b[0, 0])]
    if tile == crash_at and not os.path.exists(crash_flag):
        open(crash_flag, "w").close()
        raise RuntimeError(f"simulated crash in tile {tile}")
    with open(log, "a") as f:
        f.write(f"{tile[0]} {tile[1]}\\n")
    return a @ b.T
'''
CRASH_AT = [3, 6]  # of the 6-tile plan of 8 × 8 by 3: tile 3, rank 1's second tile


class CrashAndResume:
    """Two launches of `python -m dlclaims.tiles compute` on 2 CPU ranks; the first crashes once."""

    def __init__(self, folder):
        self.folder = folder
        (folder / "crashing_kernel.py").write_text(CRASHING_KERNEL)
        self.x = indexed_inputs(8)
        np.save(folder / "x.npy", self.x.numpy())
        self.out = folder / "gram"

    def argv(self, attempt: int) -> list[str]:
        kwargs = {"log": str(self.folder / f"calls{attempt}.txt"), "crash_flag": str(self.folder / "crashed"),
                  "crash_at": CRASH_AT}
        return ["compute", "--inputs", str(self.folder / "x.npy"), "--kernel", "crashing_kernel:linear",
                "--kernel-kwargs", json.dumps(kwargs), "--key", "linear", "--tile", "3", "--out", str(self.out),
                "--device", "cpu"]

    def calls(self, attempt: int) -> set[tuple[int, int]]:
        log = self.folder / f"calls{attempt}.txt"
        return {tuple(map(int, line.split())) for line in log.read_text().splitlines()} if log.exists() else set()

    def check(self, launch) -> None:
        """launch(argv) runs both ranks and returns (exit codes, output)."""
        codes, output = launch(self.argv(1))
        assert any(codes) and "simulated crash" in output, output
        missing = {starts(t) for t in tiles.missing_tiles(self.out)}
        assert tuple(CRASH_AT) in missing
        finished = {starts(t) for t in tiles.plan_tiles(8, 8, 3, True)} - missing
        assert finished and finished <= self.calls(1)  # the tiles finished before the crash stay on disk

        codes, output = launch(self.argv(2))
        assert not any(codes), output
        assert self.calls(2) == missing  # the relaunch computes only what the crash left undone
        np.testing.assert_array_equal(tiles.assemble(self.out), (self.x @ self.x.T).numpy())


def _rank_process(rank: int, world_size: int, port: int, kernel_dir: str, argv: list[str]) -> None:
    sys.path.insert(0, kernel_dir)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        code = tiles.main(argv)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_crash_then_resume(tmp_path, capfd):
    """Two forked ranks in a gloo group (no fresh interpreter: seconds); rank 1 crashes once."""
    job = CrashAndResume(tmp_path)
    context = multiprocessing.get_context("fork")

    def launch(argv):
        port = _free_port()
        ranks = [context.Process(target=_rank_process, args=(r, 2, port, str(tmp_path), argv)) for r in range(2)]
        for p in ranks:
            p.start()
        for p in ranks:
            p.join(timeout=60)
        out, err = capfd.readouterr()
        return [p.exitcode for p in ranks], out + err

    job.check(launch)


@pytest.mark.slow
def test_torchrun_two_processes_crash_then_resume(tmp_path):
    """The documented launch path: torchrun --standalone --nproc-per-node 2 (fresh interpreters)."""
    job = CrashAndResume(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")

    def launch(argv):
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                              "2", "--max-restarts", "0", "-m", "dlclaims.tiles", *argv],
                             env=env, capture_output=True, text=True, timeout=300)
        return [run.returncode], run.stdout + run.stderr

    job.check(launch)

"""The GPU/XLA code paths that CPU CI cannot run, tested on the CPU with fakes (issue 16):
worker → GPU claims for replacement xdist workers, XLA availability, generators on devices
without one, TF32, training without a host sync per step, kernel regression without an identity
matrix and on the kernel's device, tiles' device forwarding and rank/GPU checks, and the
--require-data / class-balance handling of too-small datasets."""

from __future__ import annotations

import json
import os
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dlclaims import data, runtime, tiles, train
from dlclaims.cntk import _regression, kernel_regression

pytest_plugins = ["pytester"]


# ---------------------------------------------------------------- worker → GPU


def test_the_preferred_gpu_is_the_worker_index_modulo_the_gpu_count():
    visible = ["0", "1", "2", "3"]
    assert [runtime.gpu_for_worker(f"gw{i}", visible) for i in range(10)] == visible * 2 + ["0", "1"]
    assert runtime.worker_index("gw12") == 12 and runtime.worker_index("gwx") is None
    assert runtime.gpu_for_worker("gwx", visible) is None


def test_a_replacement_worker_takes_the_gpu_its_crashed_predecessor_freed(tmp_path):
    visible = ["0", "1", "2", "3"]
    held = {f"gw{i}": [] for i in range(4)}
    for i in range(4):
        assert runtime.claim_worker_gpu(f"gw{i}", visible, tmp_path, held[f"gw{i}"]) == (str(i), "preferred")
    for lock in held.pop("gw2"):  # gw2 crashes: the kernel releases its flock
        lock.close()
    replacement = []
    # Modulo alone would put gw4 on GPU 0 beside gw0; the lock files send it to the free GPU 2.
    assert runtime.claim_worker_gpu("gw4", visible, tmp_path, replacement) == ("2", "free")
    # Every GPU held (5 workers, 4 GPUs): the next worker shares its preferred GPU.
    assert runtime.claim_worker_gpu("gw5", visible, tmp_path, []) == ("1", "shared")
    for locks in [*held.values(), replacement]:
        for lock in locks:
            lock.close()


def test_worker_gpu_locks_belong_to_one_xdist_run(tmp_path, monkeypatch):
    env = {runtime.GPU_COUNT_ENV: "2", "PYTEST_XDIST_WORKER": "gw3", "PYTEST_XDIST_TESTRUNUID": "abc",
           "DLCLAIMS_GPU_LOCKS": str(tmp_path)}
    assert runtime.gpu_lock_dir(env) == tmp_path / "dlclaims-gpus-abc"
    held = []
    monkeypatch.setattr(runtime, "_HELD_GPU_LOCKS", held)
    assert runtime.pin_worker_gpu(env) == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert (tmp_path / "dlclaims-gpus-abc" / "gpu-1.lock").read_text().strip() == str(os.getpid())
    for lock in held:
        lock.close()
    assert runtime.gpu_lock_dir({"PYTEST_XDIST_WORKER": "gw0"}) is None  # no run id: plain modulo


# ---------------------------------------------------------------- XLA


def test_xla_counts_only_with_an_accelerator_device():
    def probe(kind, count):
        return lambda: (kind, count)

    assert runtime.xla_unavailable_reason(probe("TPU", 4), environ={}) is None
    assert runtime.xla_unavailable_reason(probe("CUDA", 1), environ={}) is None
    assert "CPU backend only" in runtime.xla_unavailable_reason(probe("CPU", 1), environ={})
    assert runtime.xla_unavailable_reason(probe("CPU", 1), environ={"PJRT_DEVICE": "CPU"}) is None
    assert "no XLA device" in runtime.xla_unavailable_reason(probe("TPU", 0), environ={})

    def missing():
        raise ImportError("No module named 'torch_xla'")

    def broken():
        raise RuntimeError("TPU initialization failed")

    assert "not installed" in runtime.xla_unavailable_reason(missing, environ={})
    assert "TPU initialization failed" in runtime.xla_unavailable_reason(broken, environ={})


def test_importable_torch_xla_without_a_tpu_is_not_available(monkeypatch):
    """A fake torch_xla that imports fine but whose runtime has only its CPU backend."""
    fake = types.ModuleType("torch_xla")
    fake_runtime = types.ModuleType("torch_xla.runtime")
    fake_runtime.global_runtime_device_count = lambda: 1
    fake_runtime.device_type = lambda: "CPU"
    fake.runtime = fake_runtime
    monkeypatch.setitem(sys.modules, "torch_xla", fake)
    monkeypatch.setitem(sys.modules, "torch_xla.runtime", fake_runtime)
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    assert "CPU backend only" in runtime.unavailable_reason("xla")
    fake_runtime.device_type = lambda: "TPU"
    assert runtime.unavailable_reason("xla") is None


# ---------------------------------------------------------------- generators, TF32


def test_devices_without_a_generator_get_a_cpu_one():
    assert runtime.has_generator("cpu")
    assert not runtime.has_generator("meta")  # like XLA: torch.Generator(device=...) raises
    gen = runtime.generator("meta", 5)
    assert gen.device.type == "cpu" and gen.initial_seed() == 5
    assert runtime.generator("cpu", 5).device.type == "cpu"


def _toy(n=64, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _augment(xb, gen):
    noise = torch.randn(xb.shape, generator=gen, device=gen.device)
    return xb + 0.01 * noise.to(xb.device)


def test_fit_uses_a_cpu_generator_where_the_device_has_none(monkeypatch):
    """fit on a device without generator support (XLA) draws its permutation on the CPU: the same
    numbers as a CPU generator, and augment receives that generator."""
    x, y = _toy()
    config = train.TrainConfig(epochs=3, batch_size=16, lr=0.05, stop_at_train_accuracy=None)
    runs = []
    for supported in (True, False):
        monkeypatch.setattr(runtime, "has_generator", lambda device, s=supported: s)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 10))
        seen = []

        def augment(xb, g, seen=seen):
            seen.append(g.device.type)
            return _augment(xb, g)

        h = train.fit(model, x, y, config, seed=3, augment=augment)
        runs.append((h.column("train_loss"), seen))
    assert runs[0] == runs[1] and set(runs[1][1]) == {"cpu"}


def test_tf32_helper_switches_and_restores():
    runtime.set_tf32(False)
    with runtime.tf32(True):
        assert runtime.tf32_enabled()
        with runtime.tf32(False):
            assert not runtime.tf32_enabled()
        assert runtime.tf32_enabled()
    assert not runtime.tf32_enabled()
    runtime.set_tf32(True)
    runtime.seed_everything(1, deterministic=True)  # every test starts with TF32 off
    assert not runtime.tf32_enabled()


# ---------------------------------------------------------------- training without a sync per step


def _model(bn: bool):
    torch.manual_seed(1)
    layers = [nn.Linear(8, 32)] + ([nn.BatchNorm1d(32)] if bn else []) + [nn.ReLU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("case", ["fits", "diverges", "diverges-bn-augment", "adam-holdout"])
def test_deferred_finiteness_check_ends_where_the_per_step_check_does(case):
    """The accelerator path (one sync per epoch, replay on a non-finite loss) against the per-step
    path, both on the CPU where they must agree bit for bit: losses, steps, stop reason, weights."""
    x, y = _toy()
    scale, config = 1.0, train.TrainConfig(epochs=6, batch_size=8, lr=0.05, stop_at_train_accuracy=None)
    kwargs = {}
    if case.startswith("diverges"):
        scale, config = 1e3, train.TrainConfig(epochs=20, batch_size=8, lr=1e3, momentum=0.9)
    if case == "diverges-bn-augment":
        kwargs["augment"] = _augment
    if case == "adam-holdout":
        config = train.TrainConfig(epochs=5, batch_size=8, optimizer="adam", lr=1e-3, restore_best=True,
                                   stop_at_train_accuracy=None)
        kwargs["holdout"] = _toy(seed=1)
    results = []
    for sync in (True, False):
        model = _model(bn=case == "diverges-bn-augment")
        calls = []
        h = train.fit(model, x * scale, y, config, seed=0, sync_every_step=sync,
                      after_step=lambda m, calls=calls: calls.append(1), **kwargs)
        # A replayed epoch calls after_step again (on weights that are then restored): count only
        # the calls of runs that never met a non-finite loss.
        results.append((h.column("train_loss"), h.column("train_accuracy"), h.steps, h.stop_reason,
                        len(calls) if h.stop_reason != "diverged" else None,
                        [p.detach().clone() for p in model.state_dict().values()]))
    (*a, wa), (*b, wb) = results
    assert a == b
    assert all(torch.equal(p, q) for p, q in zip(wa, wb))
    if case.startswith("diverges"):
        assert a[3] == "diverged"


def test_the_training_step_loop_does_not_read_values_back():
    """No .item()/float()/bool() on a tensor inside the accelerator step loop (a host sync each)."""
    import inspect

    source = inspect.getsource(train.fit)
    deferred = source[source.index("else:\n            snapshot"):source.index("stop = int(first_bad)")]
    for sync in (".item()", "float(", "bool(", "if not torch", ".cpu()", ".tolist()"):
        assert sync not in deferred, sync


# ---------------------------------------------------------------- kernel regression


def _spd(n=20, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n + 5))
    return torch.as_tensor(a @ a.T), torch.as_tensor(rng.integers(0, 4, n))


def test_kernel_regression_builds_no_identity_and_no_copy_at_ridge_zero(monkeypatch):
    k, labels = _spd()
    factored = []
    real = torch.linalg.cholesky_ex

    def spy(a, *args, **kw):
        factored.append(a.data_ptr())
        return real(a, *args, **kw)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", spy)
    monkeypatch.setattr(torch, "eye", lambda *a, **kw: pytest.fail("torch.eye called"))
    before = k.clone()
    zero = kernel_regression(k, labels, k[:5], ridge=0.0, num_classes=4)
    assert factored[-1] == k.data_ptr()  # float64 at ridge 0: factored as it is
    ridged = kernel_regression(k, labels, k[:5], ridge=0.5, num_classes=4)
    assert factored[-1] != k.data_ptr() and torch.equal(k, before)  # the caller's kernel is untouched
    monkeypatch.undo()
    expected = k[:5] @ torch.linalg.solve(k + 0.5 * torch.eye(len(k), dtype=torch.float64),
                                          nn.functional.one_hot(labels, 4).double() - 0.1)
    torch.testing.assert_close(ridged.scores, expected, rtol=1e-9, atol=1e-9)
    assert zero.scores.dtype == torch.float64
    # float32 in: converted once, and the ridge goes onto that copy in place.
    k32 = k.float()
    kernel_regression(k32, labels, k32[:5], ridge=0.5, num_classes=4)


def test_kernel_regression_solves_where_the_kernel_is(monkeypatch):
    """A kernel on an accelerator is factored and solved there (float64), never copied to the host:
    checked with the meta device standing in for CUDA."""
    k, labels = _spd()
    meta = k.float().to("meta")
    system, owned = _regression._float64(meta)
    assert system.device.type == "meta" and system.dtype == torch.float64 and owned
    same, owned = _regression._float64(k)
    assert same.data_ptr() == k.data_ptr() and not owned
    seen = []
    real_factor, real_solve = torch.linalg.cholesky_ex, torch.cholesky_solve

    def factor_spy(a, *args, **kw):
        seen.append(("factor", a.device.type, a.dtype))
        return real_factor(a, *args, **kw)

    def solve_spy(b, f, *args, **kw):
        seen.append(("solve", b.device.type, f.device.type, b.dtype))
        return real_solve(b, f, *args, **kw)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", factor_spy)
    monkeypatch.setattr(torch, "cholesky_solve", solve_spy)
    result = kernel_regression(k.float(), labels.numpy(), k[:3].numpy(), num_classes=4)
    assert seen == [("factor", "cpu", torch.float64), ("solve", "cpu", "cpu", torch.float64)]
    assert result.scores.device == k.device


# ---------------------------------------------------------------- tiles


@pytest.mark.parametrize("requested,cuda,gpus,local_rank,local_world,expected", [
    ("auto", False, 0, 0, 2, ("cpu", "gloo")),
    ("cpu", True, 4, 3, 4, ("cpu", "gloo")),
    ("auto", True, 4, 2, 4, ("cuda:2", "nccl")),
    ("cuda", True, 2, 1, 2, ("cuda:1", "nccl")),
])
def test_each_rank_gets_its_own_device(requested, cuda, gpus, local_rank, local_world, expected):
    device, backend = tiles.rank_device(requested, local_rank, local_world, cuda, gpus)
    assert (str(device), backend) == expected


@pytest.mark.parametrize("requested,cuda,gpus,local_rank,local_world,message", [
    ("cuda", False, 0, 0, 1, "sees no CUDA device"),
    ("auto", True, 2, 2, 4, "4 ranks on this node but 2 visible GPU"),
    ("cuda", True, 2, 0, 3, "--nproc-per-node 2"),  # even rank 0 refuses: the node is over-subscribed
])
def test_more_ranks_than_gpus_is_an_error(requested, cuda, gpus, local_rank, local_world, message):
    with pytest.raises(RuntimeError, match=message):
        tiles.rank_device(requested, local_rank, local_world, cuda, gpus)


def test_the_rank_device_reaches_the_kernel(monkeypatch):
    module = types.ModuleType("fake_kernels")
    module.with_device = lambda a, b, depth, device=None: (depth, device)
    module.with_kwargs = lambda a, b, **kw: kw.get("device")
    module.without_device = lambda a, b, depth: depth
    monkeypatch.setitem(sys.modules, "fake_kernels", module)
    assert tiles.load_kernel("fake_kernels:with_device", {"depth": 3}, torch.device("cuda", 1))(0, 0) == (3, "cuda:1")
    assert tiles.load_kernel("fake_kernels:with_kwargs", {}, "cpu")(0, 0) == "cpu"
    assert tiles.load_kernel("fake_kernels:without_device", {"depth": 2}, "cuda:0")(0, 0) == 2
    explicit = {"depth": 3, "device": "cpu"}  # an explicit choice in --kernel-kwargs wins
    assert tiles.load_kernel("fake_kernels:with_device", explicit, "cuda:0")(0, 0) == (3, "cpu")
    assert explicit == {"depth": 3, "device": "cpu"}


def test_the_cntk_takes_the_rank_device():
    kernel = tiles.load_kernel("dlclaims.cntk:cntk", json.loads('{"depth": 3}'), "cpu")
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    assert kernel(x, x).device.type == "cpu"


# ---------------------------------------------------------------- too-small datasets


def test_a_whole_split_with_uneven_classes_is_taken_with_the_deviation_stated():
    counts = [1989, 1981, 2042, 2011, 2009, 1925, 2038, 2027, 2012, 1966]  # the offline CIFAR-10 file
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    with pytest.warns(data.UnbalancedSubset, match=r"class\(es\) 0, 1, 5, 9 hold only 1989, 1981, 1925, 1966"):
        idx = data.balanced_indices(labels, 20000, seed=0)
    assert sorted(idx.tolist()) == list(range(20000))
    with pytest.warns(data.UnbalancedSubset):
        part = data.balanced_indices(labels, 19800, seed=0)
    per_class = torch.bincount(labels[part], minlength=10).tolist()
    full = [c for c, a in zip(per_class, counts) if c < a]  # classes that kept some images back
    assert sum(per_class) == 19800 and per_class[5] == 1925 and max(full) - min(full) <= 1


def test_balanced_counts():
    assert data.balanced_counts(95, [100] * 10) == [10] * 5 + [9] * 5  # unchanged where balance is possible
    assert data.balanced_counts(40, [9, 20, 20, 20]) == [9, 11, 10, 10]
    with pytest.raises(data.InsufficientData, match="asked for 10 samples of class 0, the split has 8"):
        data.balanced_counts(40, [8, 20, 20, 20])  # 20 % short: no longer a balanced subset
    with pytest.raises(data.InsufficientData, match="asked for 100 samples, the split has 80"):
        data.balanced_counts(100, [20, 20, 20, 20])


def test_balanced_subsets_that_were_possible_are_unchanged():
    labels = torch.arange(10).repeat(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx = data.balanced_indices(labels, 95, seed=3)
    gen = torch.Generator().manual_seed(3)  # the draw as it was before balanced_counts existed
    chosen = []
    for c in range(10):
        pool = torch.nonzero(labels == c).flatten()
        chosen.append(pool[torch.randperm(len(pool), generator=gen)[: 10 if c < 5 else 9]])
    old = torch.cat(chosen)
    assert torch.equal(idx, old[torch.randperm(len(old), generator=gen)])


def test_skip_reasons():
    missing, short = data.DataUnavailable("no folder"), data.InsufficientData("needs 50000, has 20000")
    assert data.skip_reason(missing, require_data=False) == "data unavailable: no folder"
    assert data.skip_reason(missing, require_data=True) is None
    assert data.skip_reason(short, require_data=True) == "insufficient data: needs 50000, has 20000"


TOO_SMALL = """
from dlclaims import data

def test_needs_all_of_cifar():
    raise data.InsufficientData("the protocol needs 50000 cifar10 training images but the file has 20000")

def test_missing():
    raise data.DataUnavailable("DLCLAIMS_DATA=/nonexistent is not a directory")
"""


def test_require_data_skips_a_too_small_dataset_with_its_reason(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeconftest('pytest_plugins = ["dlclaims.pytest_plugin"]')
    pytester.makepyfile(test_inner=TOO_SMALL)
    result = pytester.runpytest_inprocess("--require-data", "-rs")
    result.assert_outcomes(skipped=1, failed=1)  # too small: skip; missing under --require-data: error
    result.stdout.fnmatch_lines(["*insufficient data: the protocol needs 50000 cifar10 training images*"])

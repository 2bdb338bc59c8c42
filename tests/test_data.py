"""dlclaims.data: loading, validation, subsets and the randomisations of the claims."""

import numpy as np
import pytest
import torch

from dlclaims import data


@pytest.fixture
def fake_data_dir(tmp_path, monkeypatch):
    """A DLCLAIMS_DATA folder with a small, valid-shaped MNIST file."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
        "y_train": np.tile(np.arange(10), 6000).astype(np.int64),
        "x_test": rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
        "y_test": np.tile(np.arange(10), 1000).astype(np.int64),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    return tmp_path, arrays


def test_load_returns_nchw_uint8_on_device(fake_data_dir, device):
    d = data.load("mnist", device=device)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_train.dtype == torch.uint8
    assert d.y_test.dtype == torch.int64 and d.x_test.device.type == device.type
    assert torch.equal(d.x_train[5, 0].cpu(), torch.from_numpy(fake_data_dir[1]["x_train"][5]))


def test_missing_directory_names_the_variable(monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, "/nonexistent")
    with pytest.raises(data.DataUnavailable, match="DLCLAIMS_DATA=/nonexistent"):
        data.load("mnist")


def test_missing_file_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(data.DataUnavailable, match=r"cifar10\.npz does not exist.*torchvision"):
        data.load("cifar10")


def test_truncated_file_is_a_clear_error_naming_it(fake_data_dir):
    path = fake_data_dir[0] / "mnist.npz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(data.DataCorrupt, match=r"mnist\.npz is unreadable.*truncated"):
        data.load("mnist")


def test_wrong_shape_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.zeros(10, np.int64),
             x_test=np.zeros((10000, 28, 28), np.uint8), y_test=np.zeros(10000, np.int64))
    with pytest.raises(data.DataCorrupt, match="10 train images, expected one of"):
        data.load("mnist")


def test_balanced_subset_is_balanced_and_seeded():
    labels = torch.arange(10).repeat(100)
    a = data.balanced_indices(labels, 95, seed=3)
    assert torch.equal(a, data.balanced_indices(labels, 95, seed=3))
    assert not torch.equal(a, data.balanced_indices(labels, 95, seed=4))
    counts = torch.bincount(labels[a], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 95 and len(set(a.tolist())) == 95


def test_asking_for_more_than_exists_is_insufficient_data():
    with pytest.raises(data.InsufficientData, match="asked for 2000 samples"):
        data.balanced_indices(torch.arange(10).repeat(100), 2000, seed=0)


def test_require_train_size_explains_the_shortfall(fake_data_dir):
    d = data.load("mnist")
    with pytest.raises(data.InsufficientData, match="needs 70000 mnist training images"):
        data.require_train_size(d, 70000)


def test_corrupt_labels_fraction_and_mask():
    y = torch.arange(10).repeat(1000)
    new, changed = data.corrupt_labels(y, 0.5, seed=1)
    assert torch.equal(changed, new != y)
    # Resampled with prob 0.5, of which 9/10 land on another class: 45 % change.
    assert abs(changed.float().mean().item() - 0.45) < 0.02
    assert torch.equal(data.corrupt_labels(y, 0.0, seed=1)[0], y)
    assert torch.equal(new, data.corrupt_labels(y, 0.5, seed=1)[0])


def test_shuffled_pixels_use_one_permutation_for_all_images():
    x = torch.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    out = data.shuffled_pixels(torch.stack([x[0], x[0]]), seed=0)
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[0].flatten().sort().values, x[0].flatten().sort().values)
    # Channels of one pixel move together.
    assert torch.equal(out[0, 1] - out[0, 0], torch.full((4, 4), 16))


def test_random_pixels_permute_each_image_differently():
    x = torch.arange(64).reshape(1, 1, 8, 8).repeat(2, 1, 1, 1)
    out = data.random_pixels(x, seed=0)
    assert not torch.equal(out[0], out[1])
    assert torch.equal(out[0].flatten().sort().values, x[0].flatten())


def test_gaussian_images_match_mean_and_std():
    x = (torch.rand(500, 3, 8, 8) * 255).to(torch.uint8)
    g = data.gaussian_images(x, seed=0)
    assert torch.allclose(g.mean(dim=(0, 2, 3)), x.float().mean(dim=(0, 2, 3)), rtol=0.02)
    assert torch.allclose(g.std(dim=(0, 2, 3)), x.float().std(dim=(0, 2, 3)), rtol=0.02)


def test_flips():
    x = torch.arange(4).reshape(1, 1, 2, 2)
    assert data.flip_vertical(x).flatten().tolist() == [2, 3, 0, 1]
    assert data.flip_horizontal(x).flatten().tolist() == [1, 0, 3, 2]


def test_normalisation_standardises_channels():
    x = (torch.rand(200, 3, 4, 4) * 255).to(torch.uint8)
    mean, std = data.channel_stats(x)
    z = data.to_float(x, mean, std)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)


def test_prepare_stats_are_the_statistics_prepare_standardises_with(fake_data_dir):
    x_train, _, _, _ = data.prepare("mnist", device="cpu", seed=3, n_train=200, n_test=100, image_size=14)
    mean, std = data.prepare_stats("mnist", seed=3, n_train=200, n_test=100)
    chosen = data.subset(data.load("mnist"), 200, 100, 3)
    torch.testing.assert_close(x_train, data.downsample(data.to_float(chosen.x_train, mean, std), 14))
    assert not torch.allclose(mean, data.channel_stats(data.subset(data.load("mnist"), 200, 100, 4).x_train)[0])


def test_centred_unit_norm_rows():
    gen = torch.Generator().manual_seed(0)
    x_train, x_test = torch.rand(30, 1, 4, 4, generator=gen), torch.rand(7, 1, 4, 4, generator=gen)
    train_rows, test_rows = data.centred_unit_norm(x_train, x_test)
    assert train_rows.shape == (30, 16) and test_rows.shape == (7, 16)
    torch.testing.assert_close(train_rows.norm(dim=1), torch.ones(30))
    torch.testing.assert_close(test_rows.norm(dim=1), torch.ones(7))
    centred = x_test.flatten(1) - x_train.flatten(1).mean(dim=0)
    torch.testing.assert_close(test_rows, centred / centred.norm(dim=1, keepdim=True))

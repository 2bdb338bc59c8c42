"""dlclaims.train: the one training loop."""

import torch
from torch import nn

from dlclaims import train
from dlclaims.models import MLP


def _toy(device, n=64, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    return x, y


def test_fit_memorises_and_stops_when_fitted(device):
    x, y = _toy(device)
    model = MLP(8, depth=1, width=256).to(device)
    history = train.fit(model, x, y, train.TrainConfig(epochs=500, batch_size=16, lr=0.1), seed=0)
    assert history.stop_reason == "fitted" and history.final.train_accuracy == 1.0
    assert history.epochs_to_fit() == len(history.epochs)


def test_fit_is_bit_repeatable_on_cpu():
    x, y = _toy("cpu")
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = MLP(8, depth=2, width=32)
        h = train.fit(model, x, y, train.TrainConfig(epochs=5, batch_size=8, lr=0.05, stop_at_train_accuracy=None),
                      seed=7)
        losses.append(h.column("train_loss"))
    assert losses[0] == losses[1]


def test_divergence_is_recorded_not_raised(device):
    x, y = _toy(device)
    model = MLP(8, depth=2, width=32).to(device)
    h = train.fit(model, x * 1e3, y, train.TrainConfig(epochs=20, batch_size=8, lr=1e3, momentum=0.9), seed=0)
    assert h.diverged
    loss, acc, hits = train.evaluate(model, x, y)
    assert 0.0 <= acc <= 1.0 and hits.dtype == torch.bool


def test_holdout_picks_best_epoch_and_restores_it():
    x, y = _toy("cpu", n=128)
    model = MLP(8, depth=1, width=64)
    config = train.TrainConfig(epochs=15, batch_size=16, lr=0.05, stop_at_train_accuracy=None, restore_best=True)
    h = train.fit(model, x[:96], y[:96], config, seed=0, holdout=(x[96:], y[96:]))
    assert h.best.holdout_accuracy == max(h.column("holdout_accuracy"))
    assert train.evaluate(model, x[96:], y[96:])[1] == h.best.holdout_accuracy


def test_patience_stops_early():
    x, y = _toy("cpu", n=128)
    config = train.TrainConfig(epochs=200, batch_size=16, lr=0.05, stop_at_train_accuracy=None, patience=3)
    h = train.fit(MLP(8, depth=1, width=64), x[:96], y[:96], config, seed=0, holdout=(x[96:], y[96:]))
    assert h.stop_reason == "early_stopping" and len(h.epochs) < 200


def test_after_step_hook_and_frozen_parameters():
    x, y = _toy("cpu")
    model = MLP(8, depth=1, width=16)
    first = model.net[1]
    first.weight.requires_grad_(False)
    before = first.weight.clone()
    calls = []
    train.fit(model, x, y, train.TrainConfig(epochs=2, batch_size=32, stop_at_train_accuracy=None), seed=0,
              after_step=lambda m: calls.append(1))
    assert torch.equal(first.weight, before) and len(calls) == 4


def test_augment_sees_every_minibatch():
    x, y = _toy("cpu")
    seen = []

    def augment(xb, gen):
        seen.append(len(xb))
        return -xb

    train.fit(nn.Sequential(nn.Linear(8, 10)), x, y,
              train.TrainConfig(epochs=1, batch_size=16, stop_at_train_accuracy=None), seed=0, augment=augment)
    assert seen == [16, 16, 16, 16]

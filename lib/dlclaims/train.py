"""The one training loop every claim uses.

Data is already on the device as tensors; minibatches are index slices of a
`torch.randperm` drawn from a seeded generator, so there is no DataLoader and a CPU run
is bit-repeatable. Each epoch records train/test/held-out loss and accuracy.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

log = logging.getLogger("dlclaims.train")


@dataclass
class TrainConfig:
    """Hyper-parameters of one run. Units: epochs are passes over the training set."""

    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (with momentum/nesterov) or "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay: float = 1.0  # multiply the lr by this after every epoch (Zhang et al.: 0.95)
    loss: str = "cross_entropy"  # or "mse" (one-hot targets)
    stop_at_train_accuracy: float | None = 1.0  # stop once the train set is fitted this well
    patience: int | None = None  # early stopping: epochs without held-out improvement
    restore_best: bool = False  # load the best held-out epoch's weights at the end
    eval_batch_size: int = 2048
    log_every: int | None = 10  # epochs between progress lines (logger "dlclaims.train", INFO)


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float | None = None
    test_accuracy: float | None = None
    holdout_loss: float | None = None
    holdout_accuracy: float | None = None


@dataclass
class History:
    """What a run did: one record per epoch, why it stopped, and where it was best."""

    epochs: list[EpochRecord] = field(default_factory=list)
    stop_reason: str = "budget"  # "budget", "fitted", "early_stopping", "diverged"
    best_epoch: int | None = None  # by held-out accuracy (if a held-out split was given)
    steps: int = 0
    seconds: float = 0.0

    @property
    def final(self) -> EpochRecord:
        return self.epochs[-1]

    @property
    def best(self) -> EpochRecord:
        return self.epochs[self.best_epoch - 1] if self.best_epoch else self.final

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    def epochs_to_fit(self, threshold: float = 1.0) -> int | None:
        """First epoch whose train accuracy reached `threshold` (None if never)."""
        return next((r.epoch for r in self.epochs if r.train_accuracy >= threshold), None)

    def column(self, name: str) -> list:
        return [getattr(r, name) for r in self.epochs]


def _loss(outputs: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cross_entropy":
        return F.cross_entropy(outputs, targets)
    if kind == "mse":
        return F.mse_loss(outputs, F.one_hot(targets, outputs.shape[1]).to(outputs.dtype))
    raise ValueError(f"unknown loss {kind!r}")


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Model outputs on `x` in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy", batch_size: int = 2048
) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, boolean hits) in eval mode.

    A diverged model (non-finite outputs) predicts nothing: its rows count as misses, and
    its loss is reported as inf.
    """
    outputs = predict(model, x, batch_size)
    finite = torch.isfinite(outputs).all(dim=1)
    hits = (outputs.argmax(dim=1) == y) & finite
    value = float(_loss(outputs, y, loss)) if bool(finite.all()) else math.inf
    return value, float(hits.float().mean()), hits


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def fit(
    model: torch.nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    config: TrainConfig,
    *,
    seed: int,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    after_step: Callable[[torch.nn.Module], None] | None = None,
    parameters=None,
    sync_every_step: bool | None = None,
) -> History:
    """Train `model` in place with minibatch SGD/Adam and return its History.

    - `test`: evaluated every epoch, for curves only (never used to choose anything).
    - `holdout`: evaluated every epoch; picks `best_epoch` and drives `patience`.
    - `augment(x_batch, generator)`: on-device augmentation of a minibatch. The generator lives on
      the training device where torch has one there, else on the CPU (XLA): draw with
      ``device=generator.device`` and move the draw to the batch's device.
    - `after_step(model)`: called after every optimizer step (e.g. a projection onto a
      constraint set, as IOC-NNs need).
    - `parameters`: what the optimizer updates (default: all parameters that require grad).
    - `sync_every_step`: check the loss for inf/NaN after every step (a host sync). Default: on the
      CPU (where it costs nothing, and the bit-exact baselines were made that way); on
      accelerators the check is deferred to the epoch's end, and an epoch that met a non-finite
      loss is replayed from its start up to that step, so a diverged run ends with the same
      weights (those before the first non-finite loss) without a sync per step. (`after_step`
      then runs again for the replayed steps; it must depend on the model only, as projections do.)
    """
    from . import runtime

    device = x_train.device
    gen = runtime.generator(device, seed)
    if sync_every_step is None:
        sync_every_step = device.type == "cpu"
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    optimizer = make_optimizer(params, config)
    history = History()
    best_accuracy, best_state, since_best = -1.0, None, 0
    n = len(x_train)
    start = time.perf_counter()

    def step(idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the minibatch `idx`; returns the loss (before the step)."""
        xb = x_train[idx]
        if augment is not None:
            xb = augment(xb, gen)
        return _loss(model(xb), y_train[idx], config.loss)

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.steps += 1
        if after_step is not None:
            after_step(model)

    for epoch in range(1, config.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(n, device=gen.device, generator=gen).to(device)
        starts = range(0, n, config.batch_size)
        diverged = False
        if sync_every_step:
            for i in starts:
                loss = step(order[i : i + config.batch_size])
                if not torch.isfinite(loss):
                    diverged = True
                    break
                update(loss)
        else:
            snapshot = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
                        gen.get_state(), history.steps)
            first_bad = torch.full((), len(starts), dtype=torch.int64, device=device)  # no sync: on device
            for k, i in enumerate(starts):
                loss = step(order[i : i + config.batch_size])
                bad = ~torch.isfinite(loss.detach())
                first_bad = torch.where(bad & (first_bad == len(starts)), k, first_bad)
                update(loss)
            stop = int(first_bad)  # the epoch's one sync
            if stop < len(starts):  # replay the epoch from its start, stopping before the bad step
                model_state, optimizer_state, gen_state, steps = snapshot
                model.load_state_dict(model_state)
                optimizer.load_state_dict(optimizer_state)
                gen.set_state(gen_state)
                history.steps = steps
                for k, i in enumerate(list(starts)[: stop + 1]):
                    loss = step(order[i : i + config.batch_size])  # the bad step's forward runs too, as
                    if k < stop:  # with the per-step check (batch-norm statistics, augment draws)
                        update(loss)
                diverged = True
            del snapshot
        scoring = dict(loss=config.loss, batch_size=config.eval_batch_size)
        train_loss, train_acc, _ = evaluate(model, x_train, y_train, **scoring)
        record = EpochRecord(epoch, lr, train_loss, train_acc)
        if test is not None:
            record.test_loss, record.test_accuracy, _ = evaluate(model, *test, **scoring)
        if holdout is not None:
            record.holdout_loss, record.holdout_accuracy, _ = evaluate(model, *holdout, **scoring)
            if record.holdout_accuracy > best_accuracy:
                best_accuracy, history.best_epoch, since_best = record.holdout_accuracy, epoch, 0
                if config.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
        history.epochs.append(record)
        if config.log_every and epoch % config.log_every == 0:
            log.info("epoch %d/%d lr %.3g train loss %.4f acc %.4f test acc %s", epoch, config.epochs, lr,
                     train_loss, train_acc, record.test_accuracy)
        if diverged or not math.isfinite(train_loss):
            history.stop_reason = "diverged"
            break
        if config.stop_at_train_accuracy is not None and train_acc >= config.stop_at_train_accuracy:
            history.stop_reason = "fitted"
            break
        if config.patience is not None and since_best >= config.patience:
            history.stop_reason = "early_stopping"
            break
        for group in optimizer.param_groups:
            group["lr"] *= config.lr_decay
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history

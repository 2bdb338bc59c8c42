"""Zhang et al. (2017), "Understanding deep learning requires rethinking generalization", Table 1
(seed 002): MLPs fit random labels to 100 % train accuracy while their test accuracy is chance.

Per model (MLP 1×512, MLP 3×512):
  claim    true labels → test accuracy well above chance (the model does learn when it can);
  claim    random labels → 100 % train accuracy (memorisation) ...
  claim    ... with chance test accuracy: inside the range the same predictions reach when the
           class names are permuted at random (the permutation null; Binomial(n, 0.1) assumes
           independent hits and is too narrow for a model that groups similar images);
  control  a narrow twin (width 4, parameters ≪ n_train) under the same budget does NOT reach
           100 % on the same random labels, and neither does a linear model (so the claim is
           not trivial because n_train ≤ input dimension: here n_train ≫ d).
"""

import pytest

from dlclaims import data, stats, train
from dlclaims.baselines import binomial, trajectory
from dlclaims.models import MLP, count_parameters, linear_classifier

SOURCE = "Zhang et al. 2017, Table 1 (seed 002); paper values are its CIFAR-10 rows"

# Paper (Zhang et al. Table 1, CIFAR-10): train / test accuracy with true and random labels.
PAPER = {
    "1x512": {"true_test": 0.5039, "random_train": 0.9934, "random_test": 0.1061},
    "3x512": {"true_test": 0.5335, "random_train": 1.0, "random_test": 0.1048},
}

# One protocol table per scale. Units: images, epochs (passes over n_train), lr per step.
PROTOCOL = {
    "smoke": {  # ~1 min per model on a 2-core CPU
        "datasets": {"mnist": {"image_size": 14, "crop": None}},  # 14×14 = 196 inputs ≪ n_train
        "n_train": 1000,
        "n_test": 2000,
        "budget": train.TrainConfig(epochs=300, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9),
        "control_width": 4,  # 1×4 MLP on 196 inputs: 838 parameters < n_train
        "true_test_min": 0.85,
        "chance_level": 0.99,
    },
    "full": {  # Zhang et al.'s protocol: SGD momentum 0.9, lr 0.01 decayed ×0.95 per epoch
        "datasets": {"mnist": {"image_size": 28, "crop": None}, "cifar10": {"image_size": 28, "crop": 28}},
        "n_train": None,  # all training images (CIFAR-10 needs all 50,000)
        "n_test": None,
        "budget": train.TrainConfig(epochs=200, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9,
                                    lr_decay=0.95),
        "control_width": 4,
        "true_test_min": {"mnist": 0.95, "cifar10": 0.45},
        "chance_level": 0.99,
    },
}
ARCHITECTURES = {"1x512": dict(depth=1, width=512), "3x512": dict(depth=3, width=512)}
FULL_TRAIN_SIZE = {"mnist": 60000, "cifar10": 50000}


def fit_and_score(model, x_train, y_train, x_test, y_test, budget, seed):
    """Train, then (history, train accuracy, test accuracy Estimate, test predictions)."""
    history = train.fit(model, x_train, y_train, budget, seed=seed)
    _, train_acc, _ = train.evaluate(model, x_train, y_train)
    predictions = train.predict(model, x_test).argmax(dim=1)
    return history, train_acc, stats.accuracy(predictions == y_test), predictions


def chance_range(predictions, y_test, protocol, seed):
    """Where a predictor carrying no information about the labels lands (class-renaming null)."""
    lo, hi = stats.class_permutation_interval(predictions, y_test, protocol["chance_level"], seed=seed)
    return lo, hi, f"in the class-permutation chance range [{100 * lo:.1f}, {100 * hi:.1f}] %"


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_mlp_fits_random_labels(arch, device, protocol, seed, claim, baseline):
    numbers = {}
    for name, spec in protocol["datasets"].items():
        x_train, y_train, x_test, y_test = data.prepare(
            name, device=device, seed=seed, n_train=protocol["n_train"], n_test=protocol["n_test"],
            train_size_required=FULL_TRAIN_SIZE[name], image_size=spec["image_size"], crop=spec["crop"])
        in_features = x_train[0].numel()
        budget = protocol["budget"]
        random_labels, _ = data.corrupt_labels(y_train, 1.0, seed=seed + 1)
        paper = PAPER[arch]
        tag = f"MLP {arch}, {name} {spec['image_size']}×{spec['image_size']}, n={len(x_train)}"
        true_min = protocol["true_test_min"]
        true_min = true_min[name] if isinstance(true_min, dict) else true_min

        model = MLP(in_features, **ARCHITECTURES[arch]).to(device)
        _, _, true_test, true_predictions = fit_and_score(model, x_train, y_train, x_test, y_test, budget, seed)
        claim.check(f"{tag}: true labels generalise (test accuracy)", true_test,
                    holds=true_test.value >= true_min, threshold=f"≥ {100 * true_min:.0f} %",
                    paper=paper["true_test"], unit="%")
        lo, hi, chance = chance_range(true_predictions, y_test, protocol, seed)
        claim.control(f"{tag}: the true-label model's test accuracy is chance", true_test,
                      holds=lo <= true_test.value <= hi, threshold=chance, unit="%")

        model = MLP(in_features, **ARCHITECTURES[arch]).to(device)
        history, random_train, random_test, random_predictions = fit_and_score(
            model, x_train, random_labels, x_test, y_test, budget, seed)
        n_train, n_test = len(x_train), len(y_test)
        numbers.update({
            f"{name}_true_test": binomial(true_test.value, n_test, "test accuracy of a trained MLP"),
            f"{name}_random_train": binomial(random_train, n_train, "train accuracy on random labels"),
            f"{name}_random_test": binomial(random_test.value, n_test, "test accuracy of a trained MLP"),
            # Epochs until the fit and the final loss follow the exact trajectory; no seed spread measured.
            f"{name}_random_epochs": trajectory(len(history.epochs), "epochs until random labels are fitted"),
            f"{name}_random_final_loss": trajectory(history.final.train_loss, "final train loss"),
        })
        claim.check(f"{tag}: random labels are memorised (train accuracy)", random_train,
                    holds=random_train == 1.0, threshold="= 100 %", paper=paper["random_train"], unit="%",
                    epochs_to_fit=history.epochs_to_fit(), parameters=count_parameters(model))
        lo, hi, chance = chance_range(random_predictions, y_test, protocol, seed)
        claim.check(f"{tag}: random labels → chance test accuracy", random_test,
                    holds=lo <= random_test.value <= hi, threshold=chance, paper=paper["random_test"], unit="%",
                    binomial_chance_interval=stats.chance_interval(random_test.n, 10, protocol["chance_level"]))

        # Controls: the same assertion on models with far fewer parameters than samples.
        for control_name, control in (
            (f"MLP {ARCHITECTURES[arch]['depth']}×{protocol['control_width']}",
             MLP(in_features, depth=ARCHITECTURES[arch]["depth"], width=protocol["control_width"])),
            ("linear model", linear_classifier(in_features)),
        ):
            control = control.to(device)
            _, control_train, _, _ = fit_and_score(control, x_train, random_labels, x_test, y_test, budget, seed)
            claim.control(f"{tag}: {control_name} ({count_parameters(control)} parameters) memorises random labels",
                          control_train, holds=control_train == 1.0, threshold="= 100 %", unit="%")
    baseline.check(numbers)

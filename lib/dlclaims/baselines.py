"""Regression baselines that hold on any machine and stay exact where exactness is real.

A baseline file `<name>.npz` holds a test's numbers at the default seed; beside it,
`<name>.fingerprint.json` holds the *code-path fingerprint* it was made on: CPU model and ISA
level, library versions, BLAS/LAPACK/oneDNN builds, thread count and the environment variables
that switch kernels (`MKL_CBWR`, `ONEDNN_MAX_CPU_ISA`, ...). Those decide which floating-point
operations run in which order, so they decide the last bits of every number.

* Same fingerprint on a deterministic device (CPU) → every number is compared exactly.
* Different fingerprint, or a non-deterministic device (CUDA) → each number is compared with the
  tolerance its *nature* allows, declared where the test calls `baseline.check`:

  ========================  =========================================================  ==============
  declaration               for                                                        across paths
  ========================  =========================================================  ==============
  `exact(v, why)`           counts, sizes, indices, data digests                       exact
  `conditioned(v, κ, why)`  float64/float32 linear algebra; κ = the amplification      ±C·κ·ε·scale
                            of a rounding error (condition number, × steps for
                            iterative solvers)
  `binomial(v, n, why)`     an accuracy (or rate) of a trained model on n points      ±Z·√2·SE
  `spread(v, sd, why)`      a trained-model metric with a measured seed-to-seed sd     ±Z·√2·sd
  `trajectory(v, why)`      a bit-exact training trajectory (loss curve, weights):     not compared
                            rounding differences grow through training, so no
                            model predicts it on another code path
  ========================  =========================================================  ==============

  A number that is noise even on one machine (an ill-conditioned control's error) is no
  baseline at all: record it with `claim.record` instead.

Nothing here imports pytest; `dlclaims.pytest_plugin` wires it to the `baseline` fixture.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

# Z for the statistical kinds: |obtained − baseline| is a difference of two independent draws
# (sd √2·σ); 4 such sds leave a false alarm of 6e-5 per number, ≈ 1 % per CI run of ~200 numbers.
Z = 4.0
# Rounding-error slack of `conditioned`: forward error ≲ κ·ε times a modest dimension-dependent
# constant for backward-stable LAPACK/BLAS kernels; measured changes across code paths stay below κ·ε.
ROUNDING_SLACK = 10.0

EXACT, CONDITIONED, BINOMIAL, SPREAD, TRAJECTORY = "exact", "conditioned", "binomial", "spread", "trajectory"

# Environment variables that switch BLAS/LAPACK/oneDNN/ATen kernels (part of the fingerprint).
CODE_PATH_ENV = (
    "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE", "ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
)
# CPU flags that oneDNN, MKL and OpenBLAS dispatch on (the model name alone can hide a masked ISA in a VM).
_DISPATCH_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                   "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Declared:
    """A number (or array) handed to `baseline.check`, with the nature that sets its tolerance."""

    value: np.ndarray
    kind: str
    why: str  # what the number is, and so why this tolerance (shown in failures and the fingerprint file)
    condition_number: np.ndarray | float = 0.0  # CONDITIONED (per element, or one for all)
    scale: float = 1.0  # CONDITIONED: magnitude the error is relative to (1 for relative errors)
    dtype_eps: float = float(np.finfo(np.float64).eps)  # CONDITIONED
    n: float = 0.0  # BINOMIAL: points the rate is measured on
    seed_sd: float = 0.0  # BINOMIAL: measured seed-to-seed sd of the model itself, beyond test sampling
    sd: np.ndarray | float = 0.0  # SPREAD (per element, or one for all)

    def allowed_deviation(self, expected: np.ndarray) -> np.ndarray | None:
        """|obtained − expected| allowed on another code path, per element; None: not compared there."""
        if self.kind == EXACT:
            return np.zeros_like(expected)
        if self.kind == CONDITIONED:
            return ROUNDING_SLACK * self.condition_number * self.dtype_eps * np.maximum(np.abs(expected), self.scale)
        if self.kind == BINOMIAL:
            # Shrunk towards 1/2 (Agresti–Coull, 2 successes and 2 failures added) so that 0 % and 100 %
            # still allow a few points to move: a retrained model may leave one training image unfitted.
            p = (expected * self.n + 2) / (self.n + 4)
            return Z * math.sqrt(2) * np.sqrt(p * (1 - p) / self.n + self.seed_sd ** 2)
        if self.kind == SPREAD:
            return np.broadcast_to(Z * math.sqrt(2) * np.asarray(self.sd, dtype=np.float64), expected.shape)
        if self.kind == TRAJECTORY:
            return None
        raise ValueError(f"unknown kind {self.kind!r}")

    def tolerance_text(self) -> str:
        return {
            EXACT: "exact",
            CONDITIONED: (f"±{ROUNDING_SLACK:g}·κ·ε·max(|v|, {self.scale:.3g}) "
                          f"with κ ≤ {np.max(self.condition_number):.3g}"),
            BINOMIAL: f"±{Z:g}·√2·binomial SE on n = {self.n:g}"
                      + (f" ⊕ seed sd {self.seed_sd:.3g}" if self.seed_sd else ""),
            SPREAD: f"±{Z:g}·√2·sd with sd ≤ {np.max(self.sd):.3g}",
            TRAJECTORY: "exact on the same code path, not compared on another",
        }[self.kind]


def _array(value) -> np.ndarray:
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def exact(value, why: str) -> Declared:
    """A count, size, index or data digest: the same on every machine, or something is wrong."""
    return Declared(_array(value), EXACT, why)


def conditioned(value, condition_number, why: str, *, scale: float = 1.0, dtype=np.float64) -> Declared:
    """Floating-point linear algebra: a rounding difference of ε is amplified by at most ~κ.

    `condition_number`: the amplification (the system's condition number; for an iterative solver
    also × its number of steps, since each step adds its own rounding). `scale`: the magnitude the
    number's error is relative to (1 for a relative error or residual; the number itself otherwise).
    """
    return Declared(_array(value), CONDITIONED, why, condition_number=np.asarray(condition_number, dtype=np.float64),
                    scale=float(scale), dtype_eps=float(np.finfo(dtype).eps))


def binomial(value, n: int, why: str, *, seed_sd: float = 0.0) -> Declared:
    """A rate (accuracy, violation rate) of a trained model measured on n points.

    On another code path training takes another trajectory, so the rate is another draw: the
    tolerance is Z·√2 binomial standard errors (n = the points scored, e.g. the test set size,
    also for a mean over runs that share those points). On a large test set the model's own
    seed-to-seed spread can exceed the binomial SE: `seed_sd` (measured) adds in quadrature.
    """
    return Declared(_array(value), BINOMIAL, why, n=float(n), seed_sd=float(seed_sd))


def spread(value, sd, why: str) -> Declared:
    """A trained-model metric whose seed-to-seed standard deviation `sd` was measured (within the
    test's own repeats, or at seed offsets recorded in the protocol)."""
    return Declared(_array(value), SPREAD, why, sd=np.asarray(sd, dtype=np.float64))


def trajectory(value, why: str) -> Declared:
    """A number fixed by the exact training trajectory (a loss curve, a trained weight): a bit-exact
    regression check on the machine that wrote it; on another code path the trajectory diverges
    and no tolerance would be meaningful, so it is not compared there (and counted as such)."""
    return Declared(_array(value), TRAJECTORY, why)


# ---------------------------------------------------------------- fingerprint


def _cpu_model() -> tuple[str, str, list[str]]:
    """(vendor, model name with family/model/stepping, dispatch-relevant flags) from /proc/cpuinfo,
    or platform's view elsewhere. A VM may name every generation "AMD EPYC": the family and model
    numbers still tell them apart."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine(), platform.processor() or platform.machine(), []

    def first(key):
        match = re.search(rf"^{key}\s*:\s*(.*)$", text, re.MULTILINE)
        return match.group(1).strip() if match else ""

    flags = set((first("flags") or first("Features")).split())
    model = first("model name") or platform.processor()
    generation = "/".join(first(k) for k in ("cpu family", "model", "stepping") if first(k))
    return (first("vendor_id") or first("CPU implementer"), f"{model} ({generation})" if generation else model,
            [f for f in _DISPATCH_FLAGS if f in flags])


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _torch_build() -> dict[str, str]:
    import torch

    config = torch.__config__.show()

    def setting(name):
        match = re.search(rf"\b{name}=([^,\s]+)", config)
        return match.group(1) if match else "unknown"

    def line(pattern):
        match = re.search(pattern, config)
        return match.group(0).strip() if match else "absent"

    return {"torch": torch.__version__, "blas": setting("BLAS_INFO"), "lapack": setting("LAPACK_INFO"),
            "mkl": line(r"Math Kernel Library Version [^\n]*"), "onednn": line(r"MKL-DNN v[^\s]+")}


def fingerprint(device_type: str, device_name: str = "") -> dict[str, str]:
    """What decides the floating-point code path of this process on `device_type`."""
    import torch

    fp = _torch_build()
    fp.update(numpy=np.__version__, scipy=_version("scipy"), numba=_version("numba"),
              threads=str(torch.get_num_threads()), machine=platform.machine())
    vendor, model, flags = _cpu_model()
    fp.update(cpu_vendor=vendor, cpu_model=model, cpu_flags=" ".join(flags),
              aten_cpu_capability=str(torch.backends.cpu.get_cpu_capability()))
    if device_type == "cuda":
        fp.update(device=device_name, cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()))
    elif device_type != "cpu":
        fp.update(device=device_name or device_type)
    fp.update({f"env {name}": os.environ.get(name, "unset") for name in CODE_PATH_ENV})
    return fp


def fingerprint_differences(stored: dict | None, current: dict) -> list[str]:
    """`key: stored → current` for each entry that differs (a file without a fingerprint: one line)."""
    if stored is None:
        return ["no fingerprint stored with the baseline"]
    return [f"{k}: {stored.get(k, 'absent')} → {current.get(k, 'absent')}"
            for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]


# ---------------------------------------------------------------- comparison


# Outcome statuses, as the report shows them next to the claims' verdicts.
MATCH_EXACT = "baseline matches exactly"
MATCH_TOLERANT = "baseline matches within tolerance"
MISMATCH = "BASELINE MISMATCH"
WRITTEN = "baseline written"
MISSING = "BASELINE MISSING"


@dataclass
class Outcome:
    """The result of one test's baseline comparison."""

    name: str
    status: str
    why: str  # why exact / tolerant / written
    counts: dict = field(default_factory=dict)  # kind → numbers compared (TRAJECTORY: not compared across paths)
    failures: list[str] = field(default_factory=list)
    previous: str = ""  # on regeneration: how the rewritten baseline compared with the old one
    closest: str = ""  # tolerant comparisons: the number nearest its tolerance, "key: |Δ| = x% of allowed"

    @property
    def ok(self) -> bool:
        return self.status not in (MISMATCH, MISSING)

    def message(self) -> str:
        head = f"{self.status}: {self.name} ({self.why})"
        return "\n".join([head, *self.failures])

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "why": self.why, "counts": dict(self.counts),
                "failures": list(self.failures), "previous": self.previous, "closest": self.closest}


def _first_differences(key: str, obtained, expected, allowed, declared: Declared, limit: int = 3) -> str:
    bad = np.flatnonzero(~_within(obtained, expected, allowed))
    shown = ", ".join(
        f"[{i}] obtained {obtained.flat[i]:.10g}, baseline {expected.flat[i]:.10g}, "
        f"|Δ| = {abs(obtained.flat[i] - expected.flat[i]):.3g} > {allowed.flat[i]:.3g}" for i in bad[:limit])
    more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
    return f"  {key} ({declared.why}; {declared.tolerance_text()}): {len(bad)}/{obtained.size} differ: {shown}{more}"


def _within(obtained: np.ndarray, expected: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    same = (obtained == expected) | (np.isnan(obtained) & np.isnan(expected))
    return same | (np.abs(obtained - expected) <= allowed)


def compare(name: str, declared: dict[str, Declared], stored: dict[str, np.ndarray], *, exact_path: bool,
            why: str) -> Outcome:
    """Compare declared numbers with stored ones: exactly when `exact_path`, else per declared kind."""
    failures, counts = [], {}
    closest, closest_ratio = "", -1.0
    missing, new = sorted(set(stored) - set(declared)), sorted(set(declared) - set(stored))
    if missing:
        failures.append(f"  missing from this run (in the baseline): {', '.join(missing)}")
    if new:
        failures.append(f"  new in this run (not in the baseline): {', '.join(new)}")
    for key in sorted(set(declared) & set(stored)):
        d, expected = declared[key], stored[key]
        obtained = d.value
        if obtained.shape != expected.shape:
            failures.append(f"  {key}: shape {obtained.shape} here, {expected.shape} in the baseline")
            continue
        if exact_path:
            allowed = np.zeros_like(expected)
            counted = EXACT
        else:
            allowed = d.allowed_deviation(expected)
            counted = d.kind
            if allowed is None:  # a trajectory: not comparable across code paths
                counts[TRAJECTORY + " (not compared)"] = counts.get(TRAJECTORY + " (not compared)", 0) + obtained.size
                continue
        counts[counted] = counts.get(counted, 0) + obtained.size
        if not _within(obtained, expected, allowed).all():
            failures.append(_first_differences(key, obtained, expected, allowed, d))
        elif not exact_path and np.any(allowed > 0):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(allowed > 0, np.abs(obtained - expected) / allowed, 0.0)
            if ratio.max() > closest_ratio:
                closest_ratio = float(ratio.max())
                closest = f"{key} ({d.kind}): |Δ| = {100 * closest_ratio:.0f} % of its tolerance"
    if failures:
        status = MISMATCH
    else:
        status = MATCH_EXACT if exact_path else MATCH_TOLERANT
    return Outcome(name, status, why, counts, failures, closest=closest)


# ---------------------------------------------------------------- files


def _fingerprint_path(npz: Path) -> Path:
    return npz.with_suffix(".fingerprint.json")


def read(npz: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """The stored numbers and the fingerprint they were made on (None for a file without one)."""
    with np.load(npz) as stored:
        values = {k: np.asarray(stored[k], dtype=np.float64) for k in stored.files}
    meta = _fingerprint_path(npz)
    return values, (json.loads(meta.read_text())["fingerprint"] if meta.is_file() else None)


def write(npz: Path, declared: dict[str, Declared], fp: dict[str, str]) -> None:
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz, **{k: d.value for k, d in sorted(declared.items())})
    meta = {"fingerprint": fp,
            "numbers": {k: f"{d.kind}: {d.why} ({d.tolerance_text()})" for k, d in sorted(declared.items())}}
    _fingerprint_path(npz).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


@dataclass
class BaselineCheck:
    """One test's baseline: `check(values)` collects the declared numbers; `run()` compares (or writes).

    The comparison is deferred to `run()`, which the plugin calls after the test body, so that a
    baseline mismatch never hides a claim: every claim is asserted and recorded first.
    """

    path: Path  # the .npz file
    device_type: str
    fingerprint: Callable[[], dict]  # taken when comparing: a kernel may change threads during the test
    deterministic: bool  # CPU: bit-repeatable on one code path; CUDA: not (atomics, autotuned kernels)
    compare_enabled: bool = True  # False under another --seed-offset: the baselines pin the default seed
    regenerate: bool = False
    missing_is_error: bool = False  # CI compares against committed baselines; there a missing one is an error
    declared: dict[str, Declared] | None = None

    def check(self, values: dict) -> None:
        not_declared = [k for k, v in values.items() if not isinstance(v, Declared)]
        if not_declared:
            raise TypeError(f"baseline.check: declare the nature of {', '.join(not_declared)} with "
                            "dlclaims.baselines.exact / conditioned / binomial / spread / trajectory "
                            "(it sets the tolerance on another machine)")
        if self.declared is not None:
            raise RuntimeError("baseline.check called twice in one test: check all numbers at once")
        self.declared = dict(values)

    def run(self) -> Outcome | None:
        if self.declared is None or not self.compare_enabled:
            return None
        name = str(Path(self.path.parent.name, self.path.name))
        current = self.fingerprint()
        if not self.path.is_file():
            if self.missing_is_error:
                return Outcome(name, MISSING, f"no baseline for {self.device_type} is committed; run the test "
                               "without CI=true to write it, review and commit it")
            write(self.path, self.declared, current)
            return Outcome(name, WRITTEN, f"first run on {self.device_type}: review and commit {self.path.name} "
                           "and its fingerprint", {k: d.value.size for k, d in self.declared.items()})
        stored, stored_fp = read(self.path)
        outcome = self._compare(name, stored, stored_fp, current)
        if self.regenerate:
            write(self.path, self.declared, current)
            return Outcome(name, WRITTEN, "rewritten (--regen-baselines)", outcome.counts,
                           previous=outcome.message() + (f"; closest: {outcome.closest}" if outcome.closest else ""))
        return outcome

    def _compare(self, name: str, stored: dict, stored_fp: dict | None, current: dict) -> Outcome:
        differences = fingerprint_differences(stored_fp, current)
        if not self.deterministic:
            return compare(name, self.declared, stored, exact_path=False,
                           why=f"{self.device_type} kernels are not deterministic: tolerances by nature")
        if not differences:
            return compare(name, self.declared, stored, exact_path=True, why="same code path")
        why = "no fingerprint stored with the baseline" if stored_fp is None else \
            "code path differs: " + "; ".join(differences)
        return compare(name, self.declared, stored, exact_path=False, why=why)


# ---------------------------------------------------------------- summary


def summary(outcomes: list[dict]) -> str:
    """One line: baselines compared exactly / by tolerance (and why) / written / failed, and numbers per kind."""
    if not outcomes:
        return ""
    by_status: dict[str, int] = {}
    for o in outcomes:
        by_status[o["status"]] = by_status.get(o["status"], 0) + 1
    reasons = sorted({short_reason(o["why"]) for o in outcomes if o["status"] in (MATCH_TOLERANT, MISMATCH)
                      and o["why"] != "same code path"})
    numbers: dict[str, int] = {}
    for o in outcomes:
        if o["status"] in (MATCH_EXACT, MATCH_TOLERANT, MISMATCH):
            for kind, count in o["counts"].items():
                numbers[kind] = numbers.get(kind, 0) + count
    parts = [f"{by_status.get(MATCH_EXACT, 0)} compared exactly (same code path)",
             f"{by_status.get(MATCH_TOLERANT, 0)} within tolerance"
             + (f" ({' | '.join(reasons)})" if reasons else "")]
    for status in (MISMATCH, MISSING, WRITTEN):
        if by_status.get(status):
            parts.append(f"{by_status[status]} {status.lower().replace('baseline ', '')}")
    text = "baselines: " + ", ".join(parts)
    if numbers:
        text += "; numbers: " + ", ".join(f"{v} {k}" for k, v in sorted(numbers.items()))
    return text


def short_reason(why: str) -> str:
    """The fingerprint keys that differ, without their values (short enough for one summary line)."""
    if why.startswith("code path differs: "):
        keys = [part.split(":", 1)[0] for part in why[len("code path differs: "):].split("; ")]
        return "code path differs in " + ", ".join(keys)
    return why

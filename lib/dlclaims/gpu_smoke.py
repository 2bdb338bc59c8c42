"""The GPU smoke: every CUDA code path once, on one GPU, in at most 8 minutes, with a short summary.

    python -m dlclaims.data pack /tmp/smoke-data          # ≤ 40 MB: travels to the GPU machine
    DLCLAIMS_DATA=/tmp/smoke-data .ci/gpu-smoke            # = python -m dlclaims.gpu_smoke

runs, on the first visible GPU (or --gpu),
  1. ``pytest tests claims -m gpu --scale=smoke -n 4`` — the cuda variant of every library test
     and claim at smoke scale, 4 workers sharing the one GPU (smoke protocols are small and
     launch-bound: one process leaves the GPU idle most of the time). The two Arora 2K rows are
     deselected: they are the paper's protocol at every scale (CNTK-V-2K ≈ 5 GPU-minutes,
     CNTK-GAP-2K ≈ 1 GPU-day, the `paper` tier); the CNTK's CUDA paths run in the library tests,
     CNN-vs-CNTK's GAP claim and the benchmarks;
  2. ``pytest benchmarks -m gpu -k "test_engine or test_scaling"`` — the CUDA CNTK benchmarks
     (torch engine and Triton kernel, float32/float64, every depth; scaling; not the per-pair
     reference transcription, which times no library code),
each under its share of the limit (SIGINT first, so pytest writes its reports), then prints a short
summary — card, wall time per part, outcomes, the slowest tests, failures, skip reasons, CNTK rates
— and keeps it with the JSON/XML/reports under ``--out`` (default reports/gpu-smoke).

Without a CUDA device it skips cleanly: it says why, lists what it would have run, and exits 0
(``--force`` runs the commands anyway, where every cuda variant then skips with its reason).
Numbers from a packed data subset differ from full-data runs: cuda baselines that such a run
writes are moved out of baselines/ into ``<out>/baselines-from-pack/`` (kept, not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from . import nightly, runtime

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 8 * 60
TESTS_SHARE = 0.7  # of the limit for tests + claims (≈ 5.6 min); benchmarks get the rest
# Not part of the smoke: the paper's protocols that run at every scale.
DESELECT = ("claims/test_arora_table1.py::test_arora_2k_v", "claims/test_arora_table1.py::test_arora_2k_gap")
WORKERS = 4  # pytest-xdist workers sharing the one GPU for tests + claims
BENCHMARKS = "test_engine or test_scaling"


def pytest_commands(out: Path, paths: list[str], benchmarks: bool = True,
                    workers: int = WORKERS) -> list[tuple[str, list[str]]]:
    """(part, command) of the smoke: tests + claims, then the CUDA benchmarks (serially)."""
    py = sys.executable
    tests = [py, "-m", "pytest", *paths, "-m", "gpu", "--scale=smoke", "-p", "no:cacheprovider", "-rs",
             "--report-dir", str(out / "reports"), f"--junitxml={out / 'junit-tests.xml'}", "--durations=15"]
    if workers > 1:
        tests += ["-n", str(workers)]
    for nodeid in DESELECT:
        if any(nodeid.startswith(p.rstrip("/")) or p in ("claims", "claims/") for p in paths):
            tests += ["--deselect", nodeid]
    parts = [("tests", tests)]
    if benchmarks:
        parts.append(("benchmarks", [py, "-m", "pytest", "benchmarks", "-m", "gpu", "-k", BENCHMARKS,
                                     "-p", "no:cacheprovider",
                                     "--report-dir", str(out / "reports-benchmarks"),
                                     f"--benchmark-json={out / 'benchmarks.json'}",
                                     f"--junitxml={out / 'junit-benchmarks.xml'}"]))
    return parts


def card_name(gpu: str | None) -> str:
    """The GPU's name from nvidia-smi (no CUDA context in this process)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader",
                              *(["-i", gpu] if gpu else [])], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown GPU"


def is_pack(data_dir: str | os.PathLike | None) -> bool:
    """Whether DLCLAIMS_DATA holds packed subsets (`python -m dlclaims.data pack`)."""
    if not data_dir or not Path(data_dir).is_dir():
        return False
    import numpy as np

    from .data import PACKED_KEY

    for path in Path(data_dir).glob("*.npz"):
        try:
            with np.load(path, allow_pickle=False) as npz:
                if PACKED_KEY in npz.files:
                    return True
        except (OSError, ValueError):
            continue
    return False


def junit_cases(path: Path) -> list[dict]:
    """Each test case of a junit XML: id, seconds, outcome, message."""
    if not path.is_file():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "").strip().splitlines()[0][:200] if (
                    node.get("message") or node.text) else ""
                break
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append({"test": name, "seconds": float(case.get("time") or 0.0), "outcome": outcome,
                      "message": message})
    return cases


def benchmark_rates(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rates = []
    for b in json.loads(path.read_text()).get("benchmarks", []):
        info = b.get("extra_info", {})
        if "entries_per_s" in info:
            rates.append({"benchmark": b.get("name", ""), "entries_per_s": info["entries_per_s"],
                          "kernel": info.get("kernel"), "depth": info.get("depth"),
                          "backend": info.get("backend"), "dtype": info.get("dtype")})
    return rates


def _baseline_files() -> set[Path]:
    folder = ROOT / "baselines" / "smoke" / "cuda"
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def summarize(out: Path, parts: list[dict], card: str, skipped_reason: str | None = None) -> dict:
    """summary.json + summary.md under `out`; returns the summary."""
    summary = {"card": card, "skipped": skipped_reason, "parts": parts, "limit_s": LIMIT_S}
    cases = junit_cases(out / "junit-tests.xml") + junit_cases(out / "junit-benchmarks.xml")
    summary["outcomes"] = dict(Counter(c["outcome"] for c in cases))
    summary["slowest"] = sorted((c for c in cases if c["outcome"] != "skipped"), key=lambda c: -c["seconds"])[:10]
    summary["failures"] = [c for c in cases if c["outcome"] in ("failed", "error")]
    summary["skip_reasons"] = dict(Counter(c["message"] for c in cases if c["outcome"] == "skipped").most_common(8))
    summary["rates"] = benchmark_rates(out / "benchmarks.json")
    claims = out / "reports" / "claims.json"
    if claims.is_file():
        records = json.loads(claims.read_text()).get("records", [])
        summary["claims"] = dict(Counter(str(r.get("verdict")) for r in records))
    lines = [f"GPU smoke on {card}" + (f": skipped — {skipped_reason}" if skipped_reason else "")]
    for p in parts:
        state = "skipped" if p.get("skipped") else ("ok" if p["returncode"] == 0 else
                                                    ("over its limit" if p["timed_out"] else
                                                     f"exit {p['returncode']}"))
        lines.append(f"  {p['part']:<11} {state:<15} {p['seconds']:7.1f} s  {p.get('note', '')}".rstrip())
    if cases:
        lines.append("  outcomes: " + ", ".join(f"{v} {k}" for k, v in sorted(summary["outcomes"].items())))
    if summary.get("claims"):
        lines.append("  claims: " + ", ".join(f"{v} {k}" for k, v in sorted(summary["claims"].items())))
    for c in summary["slowest"][:5]:
        lines.append(f"  slow: {c['seconds']:7.1f} s  {c['test']}")
    for c in summary["failures"][:10]:
        lines.append(f"  FAILED {c['test']}: {c['message']}")
    for reason, n in summary["skip_reasons"].items():
        lines.append(f"  skipped ×{n}: {reason}")
    for r in sorted(summary["rates"], key=lambda r: (str(r["kernel"]), str(r["depth"])))[:12]:
        lines.append(f"  rate: {r['entries_per_s']:.3g} entries/s  {r['kernel']} depth {r['depth']} "
                     f"{r['backend']} {r['dtype']}")
    summary["text"] = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "summary.md").write_text("```\n" + summary["text"] + "\n```\n")
    return summary


def run(out: Path, paths: list[str], *, limit_s: float = LIMIT_S, gpu: str | None = None, force: bool = False,
        benchmarks: bool = True, data_dir: str | None = None, workers: int = WORKERS) -> int:
    out = out if out.is_absolute() else ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    commands = pytest_commands(out, paths, benchmarks, workers)
    reason = runtime.unavailable_reason("cuda")
    if reason and not force:
        parts = [{"part": part, "skipped": True, "returncode": 0, "timed_out": False, "seconds": 0.0,
                  "note": "would run: " + " ".join(cmd[1:])} for part, cmd in commands]
        print(summarize(out, parts, "no GPU", reason)["text"])
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    visible = runtime.visible_gpus(os.environ)
    gpu = gpu if gpu is not None else (visible[0] if visible else None)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu  # one GPU
    data_dir = data_dir or os.environ.get("DLCLAIMS_DATA")
    if data_dir:
        env["DLCLAIMS_DATA"] = str(data_dir)
    packed = is_pack(data_dir)
    before = _baseline_files()
    start, parts = time.monotonic(), []
    for part, cmd in commands:
        left = limit_s - (time.monotonic() - start)
        share = left if part == "benchmarks" else min(left, TESTS_SHARE * limit_s)
        if share < 5:
            parts.append({"part": part, "skipped": True, "returncode": 0, "timed_out": True, "seconds": 0.0,
                          "note": "no time left in the limit"})
            continue
        print(f"[gpu-smoke] {part}: {' '.join(cmd)} (≤ {share:.0f} s)", flush=True)
        rc, seconds, timed_out, note = nightly.run_limited(cmd, share, env=env, cwd=ROOT)
        parts.append({"part": part, "returncode": rc, "seconds": seconds, "timed_out": timed_out, "note": note})
    moved = sorted(_baseline_files() - before) if packed else []
    for path in moved:  # baselines from a packed subset: kept with the smoke's output, not in the tree
        target = out / "baselines-from-pack" / path.relative_to(ROOT / "baselines")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
    summary = summarize(out, parts, card_name(gpu) if not reason else f"no GPU ({reason})")
    if moved:
        print(f"[gpu-smoke] {len(moved)} cuda baseline file(s) written from the packed data moved to "
              f"{out / 'baselines-from-pack'}")
    print(summary["text"])
    print(f"[gpu-smoke] wall {time.monotonic() - start:.0f} s of {limit_s:.0f} s; output in {out}")
    if any(p["timed_out"] for p in parts):
        return 124
    return next((p["returncode"] for p in parts if p["returncode"]), 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlclaims.gpu_smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["tests", "claims"], help="test paths (default: tests claims)")
    parser.add_argument("--out", type=Path, default=Path("reports/gpu-smoke"))
    parser.add_argument("--limit", type=float, default=LIMIT_S, help="seconds for everything (default 480)")
    parser.add_argument("--gpu", help="the GPU id to use (default: the first visible)")
    parser.add_argument("--data", help="DLCLAIMS_DATA for the run (default: the environment's)")
    parser.add_argument("--no-benchmarks", action="store_true")
    parser.add_argument("-n", "--workers", type=int, default=WORKERS,
                        help=f"xdist workers sharing the GPU for tests + claims (default {WORKERS}; 1: serial)")
    parser.add_argument("--force", action="store_true", help="run even without a CUDA device (everything skips)")
    args = parser.parse_args(argv)
    return run(args.out, args.paths, limit_s=args.limit, gpu=args.gpu, force=args.force,
               benchmarks=not args.no_benchmarks, data_dir=args.data, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())

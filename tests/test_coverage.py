"""The coverage registry (claims/coverage.toml): one row per testable seed claim, pointing at tests
that exist and statements those tests make."""

import ast
from pathlib import Path

import pytest

from dlclaims import report

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "claims" / "coverage.toml"


@pytest.fixture(scope="module")
def coverage():
    return report.load_coverage(REGISTRY)


def _test_functions(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_entry_is_well_formed_and_unique(coverage):
    ids = [e["id"] for e in coverage]
    assert len(ids) == len(set(ids))
    for e in coverage:
        assert e["seed"] in ("000", "001", "002", "003", "004"), e["id"]
        assert e["status"] in report.COVERAGE_STATUSES, e["id"]
        assert e.get("quote"), f"{e['id']}: quote the seed's sentence"
        if e["status"] == "not tested":
            assert e.get("reason"), f"{e['id']}: a claim that is not tested says why"
        else:
            assert e.get("tests"), f"{e['id']}: {e['status']} but no test named"


def test_every_named_test_exists_and_makes_the_matched_statement(coverage):
    for e in coverage:
        for test in e.get("tests", []):
            file, _, function = test.partition("::")
            path = ROOT / file
            assert path.is_file(), f"{e['id']}: {file} does not exist"
            assert function in _test_functions(path), f"{e['id']}: {test} does not exist"
            if e.get("match"):
                assert e["match"] in path.read_text(), f"{e['id']}: {file} never says {e['match']!r}"


def test_the_table_counts_every_claim_once(coverage):
    table = report.coverage_table(coverage, [])
    assert table.count("\n| 00") == len(coverage)
    counts = report.coverage_counts(coverage)
    assert sum(counts.values()) == len(coverage)
    assert f"{len(coverage)} testable claims: {counts['smoke']} asserted at smoke scale" in table

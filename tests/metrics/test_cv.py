"""summarise_folds and format_table."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from streamvol.metrics import classification_report, format_table, summarise_folds


def fold_reports() -> list[dict]:
    reports = []
    for k in range(3):
        rng = np.random.default_rng(k)
        y = rng.integers(0, 2, 50)
        s = np.clip(0.3 * y + rng.uniform(0, 0.7, 50), 0, 1)
        reports.append(classification_report(y, s, class_names=["neg", "pos"]))
    return reports


def test_mean_and_std_of_every_scalar():
    reports = fold_reports()
    summary = summarise_folds(reports)
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "f1", "specificity"):
        values = [r[key] for r in reports]
        assert summary[key]["mean"] == pytest.approx(np.mean(values))
        assert summary[key]["std"] == pytest.approx(np.std(values, ddof=1))
        assert summary[key]["n"] == 3 and summary[key]["values"] == values
    assert "per_class.pos.recall" in summary
    assert "notes" not in summary and "class_names" not in summary
    assert "confusion_matrix" not in summary  # lists are not scalars


def test_undefined_values_are_left_out():
    summary = summarise_folds([{"auc": 0.8}, {"auc": None}, {"auc": 0.6}, {"other": 1}])
    assert summary["auc"]["mean"] == pytest.approx(0.7) and summary["auc"]["n"] == 2
    assert summary["auc"]["values"] == [0.8, None, 0.6, None]
    assert summary["other"]["std"] is None  # one value: no spread


def test_format_table_renders():
    summary = summarise_folds(fold_reports())
    table = format_table(summary)
    assert isinstance(table, Table)
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "balanced_accuracy" in text and "fold2" in text and "±" in text
    assert "per_class" not in text
    picked = format_table(summary, keys=["per_class.pos.recall"])
    assert picked.row_count == 1
    with pytest.raises(ValueError, match="not in the summary"):
        format_table(summary, keys=["nope"])
    with pytest.raises(ValueError, match="at least one"):
        summarise_folds([])


def test_a_perfect_fold_reads_with_decimals_and_counts_without():
    summary = summarise_folds([{"accuracy": 1.0, "n": 12}, {"accuracy": 0.75, "n": 8}])
    assert summary["n"]["values"] == [12, 8] and isinstance(summary["n"]["values"][0], int)
    console = Console(width=200, record=True)
    console.print(format_table(summary, digits=3))
    lines = [line for line in console.export_text().splitlines() if line.startswith("│")]
    rows = {line.split("│")[1].strip(): line for line in lines}
    cells = [c.strip() for c in rows["accuracy"].split("│")[1:-1]]
    assert cells == ["accuracy", "0.875 ± 0.177", "2", "1.000", "0.750"]
    cells = [c.strip() for c in rows["n"].split("│")[1:-1]]
    assert cells == ["n", "10 ± 2.828", "2", "12", "8"]


def test_the_mean_of_counts_keeps_its_decimals_unless_whole():
    """Fold counts 1 and 2 average 1.5: printed so, not rounded to a count."""
    summary = summarise_folds([{"tp": 1, "n": 12}, {"tp": 2, "n": 8}])
    console = Console(width=200, record=True)
    console.print(format_table(summary, digits=3))
    lines = [line for line in console.export_text().splitlines() if line.startswith("│")]
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]] for line in lines
    }
    assert rows["tp"] == ["tp", "1.500 ± 0.707", "2", "1", "2"]
    assert rows["n"] == ["n", "10 ± 2.828", "2", "12", "8"]

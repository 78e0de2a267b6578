"""Cross-validation summary: mean and standard deviation of each metric over the folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.table import Table

from streamvol.errors import BadInput


def summarise_folds(reports: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{metric: {mean, std, n, values}} for every scalar metric of the fold reports.

    Nested dicts are flattened with dots (``per_class.cat.recall``); lists, strings and
    booleans are skipped. ``values`` holds one entry per fold, ``None`` where a fold left
    the metric undefined; ``mean`` and ``std`` are over the defined ones (``n`` of them),
    ``std`` the sample standard deviation (ddof=1), ``None`` below two defined values.
    Keys keep the first report's order.
    """
    if not reports:
        raise BadInput("reports: expected at least one fold report, got none")
    flat = [_flatten(r) for r in reports]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    summary: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [f.get(key) for f in flat]
        defined = np.array([v for v in values if v is not None], dtype=np.float64)
        summary[key] = {
            "mean": float(defined.mean()) if defined.size else None,
            "std": float(defined.std(ddof=1)) if defined.size > 1 else None,
            "n": int(defined.size),
            "values": values,
        }
    return summary


def format_table(
    summary: Mapping[str, Mapping[str, Any]],
    *,
    keys: Sequence[str] | None = None,
    title: str | None = "cross-validation",
    digits: int = 4,
) -> Table:
    """A rich table: one row per metric, ``mean ± std``, the count, and each fold's value.

    Values print with ``digits`` decimals; counts (a metric whose every fold value is an int)
    without, so a fold's accuracy of 1.0 still reads ``1.000``; a count's mean too where it is
    whole, else with decimals (counts 1 and 2 average ``1.5000``, not ``2``).

    ``keys`` picks and orders the rows; by default the top-level metrics (no dot in the
    name), leaving per-class entries to an explicit ``keys``.
    """
    rows = [k for k in summary if "." not in k] if keys is None else list(keys)
    missing = [k for k in rows if k not in summary]
    if missing:
        raise BadInput(f"keys: {missing} not in the summary; it has {list(summary)}")
    n_folds = max((len(summary[k]["values"]) for k in rows), default=0)
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    table.add_column("n", justify="right")
    for i in range(n_folds):
        table.add_column(f"fold{i}", justify="right")  # as the shard splits are named
    for key in rows:
        entry = summary[key]
        places = 0 if all(isinstance(v, int) for v in entry["values"] if v is not None) else digits
        folds = [_fmt(v, places) for v in entry["values"]]
        folds += [""] * (n_folds - len(folds))
        mean = entry["mean"]
        whole = mean is None or float(mean).is_integer()  # counts 1 and 2: mean 1.5, not 2
        spread = "" if entry["std"] is None else f" ± {_fmt(entry['std'], digits)}"
        table.add_row(
            key, f"{_fmt(mean, places if whole else digits)}{spread}", str(entry["n"]), *folds
        )
    return table


def _flatten(report: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif value is None:
            out[name] = None
        elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            out[name] = int(value) if isinstance(value, int | np.integer) else float(value)
    return out


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"

"""Model comparison: several runs scored on the same split, side by side.

Each run's report and predictions on ``split`` come from its evaluation (``evaluate`` is run
for a run that has none yet, with the same TTA); the comparison writes a table of their metrics
and parameter counts (``compare.json``, ``compare.csv``) and, for classification, their ROC
and precision-recall curves on one figure (``compare.png``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamvol.core.files import atomic_file, write_json_atomic
from streamvol.errors import BadInput, RunError

METRICS = {
    "classification": (
        "balanced_accuracy",
        "accuracy",
        "roc_auc",
        "average_precision",
        "f1",
        "sensitivity",
        "specificity",
    ),
    "segmentation": ("dice", "iou", "sensitivity", "specificity", "roc_auc"),
    "reconstruction": ("r2", "loss"),
    "detection": ("score",),
}


def compare_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    split: str = "test",
    tta: str | bool | None = None,
    device: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Compare ``runs`` on ``split``: returns ``{"task", "split", "metrics", "rows", "notes",
    "files"}``, a row per run (``run``, ``model``, ``parameters`` and the task's metrics);
    ``progress(run, done, total)`` follows an evaluation that has to run."""
    from streamvol.metrics import plot_compare
    from streamvol.train.config import TrainConfig
    from streamvol.train.evaluation import load_predictions, tta_prefix
    from streamvol.train.runs import evaluate, run_task

    if len(runs) < 2:
        raise BadInput(f"compare: expected two runs or more, got {len(runs)}")
    out = Path(out)
    prefix = tta_prefix(split, tta)
    # before evaluating any: a folder that is not a run fails here, and so do mixed tasks
    tasks = {Path(run).name: run_task(run, storage_options) for run in runs}
    if len(set(tasks.values())) > 1:
        raise RunError(f"compare: runs of different tasks cannot share a table: {tasks}")
    task = next(iter(tasks.values()))
    metrics = list(METRICS.get(task, ()))
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    keys: dict[str, tuple[str, ...]] = {}
    for run in map(Path, runs):
        config = TrainConfig.load(run / "config.json")
        report_path, pred_path = run / f"{prefix}_report.json", run / f"{prefix}_predictions.npz"
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
        stale = report is None or "parameters" not in report
        if stale or (task == "classification" and not pred_path.is_file()):
            step = None if progress is None else (lambda d, t, r=run.name: progress(r, d, t))
            report = evaluate(
                run,
                split=split,
                tta=tta,
                device=device,
                storage_options=storage_options,
                progress=step,
            )
        rows.append(
            {
                "run": run.name,
                "model": report.get("model", config.model),
                "parameters": report.get("parameters"),
                **{m: report.get(m) for m in metrics},
            }
        )
        if task == "classification":
            p = load_predictions(pred_path)
            keys[run.name] = tuple(p["keys"].tolist())
            curves.append(
                {
                    "label": f"{run.name} ({rows[-1]['model']})",
                    "y_true": p["targets"],
                    "scores": p["scores"],
                    "weights": p["weights"],
                    "class_names": [str(c) for c in p["class_names"]],
                }
            )
    notes = []
    if keys and len({tuple(sorted(k)) for k in keys.values()}) > 1:
        notes.append(
            f"the runs' {split} splits hold different crops: compare runs of one shard set"
        )
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "compare.json"), "csv": str(out / "compare.csv")}
    if curves:
        title = f"{split} split{f', TTA {tta}' if tta else ''}: " + " vs ".join(
            str(r["run"]) for r in rows
        )
        files["plot"] = str(plot_compare(curves, out / "compare.png", title=title))
    result = {
        "task": task,
        "split": split,
        "tta": tta or None,
        "metrics": metrics,
        "rows": rows,
        "notes": notes,
        "files": files,
    }
    write_json_atomic(out / "compare.json", result)
    with atomic_file(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "model", "parameters", *metrics])
        writer.writeheader()
        writer.writerows(rows)
    return result

"""The loader benchmark behind ``streamvol bench``."""

from streamvol.bench.loader import (
    BenchConfig,
    BenchResult,
    Measurement,
    describe,
    measure,
    parse_list,
    plot,
    run_bench,
    table,
    trainer_rate,
    verdict,
)

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Measurement",
    "describe",
    "measure",
    "parse_list",
    "plot",
    "run_bench",
    "table",
    "trainer_rate",
    "verdict",
]

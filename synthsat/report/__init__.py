"""The study's report: its runs as rows and arms, the statistics, the tables and the plots.

* :mod:`synthsat.report.arms` — segmentation runs as ``summary.csv`` rows, grouped into
  arms and paired with real-only, seed by seed;
* :mod:`synthsat.report.stats` — paired differences, t intervals and the bootstrap;
* :mod:`synthsat.report.curve` — the learning curve and its plateau budget;
* :mod:`synthsat.report.tables` — the Markdown tables of ``report.md``;
* :mod:`synthsat.report.plots` — the PNG plots (matplotlib, imported when plotting);
* :mod:`synthsat.report.summary` — :func:`summarise`: ``summary.csv``, ``report.md`` and
  the plots of a study's results folder.

The names below were those of the former module ``synthsat.report`` and stay importable
from here (``from synthsat.report import summarise``).
"""

from synthsat.report.arms import (
    BASELINE,
    CI_LEVEL,
    NOT_TABULATED,
    PAPER_REFERENCE,
    WITH_REAL,
    ArmKey,
    by_seed,
    group_arms,
    paired_comparisons,
    run_generator,
    run_label,
    run_params,
    run_source,
    scored_iou,
    source_label,
    summary_rows,
)
from synthsat.report.summary import NOT_IN_CSV, load_stages, read_summary, summarise
from synthsat.report.tables import (
    generator_table,
    paired_table,
    per_class_table,
    runs_table,
    synthetic_table,
)

__all__ = [
    "BASELINE",
    "CI_LEVEL",
    "NOT_IN_CSV",
    "NOT_TABULATED",
    "PAPER_REFERENCE",
    "WITH_REAL",
    "ArmKey",
    "by_seed",
    "generator_table",
    "group_arms",
    "load_stages",
    "paired_comparisons",
    "paired_table",
    "per_class_table",
    "read_summary",
    "run_generator",
    "run_label",
    "run_params",
    "run_source",
    "runs_table",
    "scored_iou",
    "source_label",
    "summarise",
    "summary_rows",
    "synthetic_table",
]

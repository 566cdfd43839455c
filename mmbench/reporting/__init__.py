"""Reports: tables in the field's layout, statistics, figures, HTML, published-number comparison
and scoring of external predictions.

Entry points: :func:`build_report` (``mmbench report``) and :func:`evaluate_predictions`
(``mmbench evaluate``). ``docs/reports.md`` describes the outputs.
"""

from mmbench.reporting.api import ReportSummary, build_report, evaluate_predictions

__all__ = ["ReportSummary", "build_report", "evaluate_predictions"]

"""Studies: a study file → a grid of runs on an executor → a results table (the run dirs are the truth)
→ fitted laws (fits.json) → report.

Public API: `load_study`, `plan`, `run_study`, `study_status`, `build_results_table`, `write_results`,
`finish_study`.
Importing this package stays light (no torch, pandas or open_clip until a function needs them).
"""

from clipscale.study.grid import RunPlan, plan
from clipscale.study.pipeline import finish_study
from clipscale.study.results import build_results_table, write_results
from clipscale.study.runner import run_study
from clipscale.study.spec import StudySpec, load_study
from clipscale.study.status import study_status

__all__ = ["RunPlan", "StudySpec", "build_results_table", "finish_study", "load_study", "plan", "run_study",
           "study_status", "write_results"]

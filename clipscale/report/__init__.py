"""Self-contained HTML report of a study: `write_report(study, *, out=None) -> Path`.

One HTML file, figures embedded as base64 PNG data URIs and styles inline, so it opens offline,
can be mailed or attached to a paper review, and never fetches anything.
"""

from clipscale.report.build import write_report

__all__ = ["write_report"]

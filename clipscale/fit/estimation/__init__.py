"""Estimation and validation: the validated points a law is fitted to and their frontier (`points.py`),
bounds and `at_bound` (`bounds.py`), the estimator (`estimate.py`), the scale a law is fitted on
(`link.py`), bootstrap (`bootstrap.py`), holdout / leave-one-out and `--link auto` (`validate.py`).
"""

"""The paper's (Cherti et al. 2023) scaling analysis from its published tables: the tables (`paper.py`),
the fits and checks (`reproduce.py`), figures and CSVs (`plots.py`).
"""

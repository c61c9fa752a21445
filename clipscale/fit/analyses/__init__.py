"""Analyses on top of fitted laws and tables: frontiers of a table's points (`frontier.py`), the isoFLOP
analysis (`isoflop.py`).
"""

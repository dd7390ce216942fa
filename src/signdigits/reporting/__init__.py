"""Reporting: every model on the test part, its metrics, figures and the study report."""

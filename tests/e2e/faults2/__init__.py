"""Fault-injection tests, cases 7-12 of issue 6, against the real daemon process."""

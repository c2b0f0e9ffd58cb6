"""Runnable integration examples; each is run by the test suite."""

"""Scripts run from a checkout: ``python scripts/NAME.py``."""

"""Guards against bad and shifting data: drift gates (drift.py) and their place in a run (gates.py)."""

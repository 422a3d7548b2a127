"""Measurement engine: timers (CPU clock, CUDA events), memory probes, model-state guard, the runner.

The package is named ``measuring`` (not ``measure``) so that importing it never shadows the
public function ``hwprof.measure`` (the same reason ``hwprof.counting`` is not ``hwprof.count``).
"""

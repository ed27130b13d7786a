"""Runs: the run directory (:mod:`~interp.runs.store`, its only reader and writer), its lock,
the control-run checks and the Ray workers that run an analysis' jobs."""

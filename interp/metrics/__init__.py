"""Metrics computed from a rounds table alone: per-round accuracy, bias, calibration, flips
(:mod:`~interp.metrics.rounds`), debiasing over option orders and calibration helpers."""

"""Activation patching between rounds of one example, exact and batched, and its gradient
estimate (attribution patching).

The modules build on each other one way:

- :mod:`~interp.patching.core`: variants (what to patch), one unpatched forward that records
  activations, logits and the KV cache, and the shared-prefix forward for two rounds of one
  transcript.
- :mod:`~interp.patching.exact`: exact patching of one pair, variants batched on a cached
  prefix.
- :mod:`~interp.patching.packed`: exact patching of several pairs, the variants of all of them
  packed into shared forwards (what :func:`patch` runs by default).
- :mod:`~interp.patching.attribution`: the first-order estimate of every patch from one
  forward and backward.
- :mod:`~interp.patching.analysis`: settings (:class:`PatchConfig`), which examples,
  alignment checks, summary and control-run tables with cluster-bootstrap intervals; no model.
- :mod:`~interp.patching.pipeline`: a run directory -> per-example rows -> tables, written by
  one function (:func:`~interp.patching.pipeline.write_result`).
"""

from interp.patching.analysis import (
    DEFINITIONS,
    DIRECTIONS,
    EFFECT_EPS,
    METHODS,
    PatchConfig,
    PatchItem,
    PatchResult,
    check_alignment,
    control_difference,
    select_items,
    summarize,
)
from interp.patching.attribution import PairAttribution, attribute_pair
from interp.patching.core import (
    COMPONENTS,
    Recording,
    Variant,
    final_logits,
    record,
    shared_sequence,
    sweep,
)
from interp.patching.exact import PairPatch, patch_pair
from interp.patching.pipeline import patch, write_result
from interp.stats import CI_LEVEL

__all__ = [
    "CI_LEVEL",
    "COMPONENTS",
    "DEFINITIONS",
    "DIRECTIONS",
    "EFFECT_EPS",
    "METHODS",
    "PairAttribution",
    "PairPatch",
    "PatchConfig",
    "PatchItem",
    "PatchResult",
    "Recording",
    "Variant",
    "attribute_pair",
    "check_alignment",
    "control_difference",
    "final_logits",
    "patch",
    "patch_pair",
    "record",
    "select_items",
    "shared_sequence",
    "summarize",
    "sweep",
    "write_result",
]

"""Component circuits between rounds: edge attribution patching (EAP, EAP-IG) verified by
exact edge patching, and the graph drawn from it.

- :mod:`~interp.circuits.graph`: senders, receivers and edges of a model; the split-input flags.
- :mod:`~interp.circuits.eap`: one target/source pair: exact edge patching and its gradient
  scores at the read-out.
- :mod:`~interp.circuits.pipeline`: a run -> per-example scores -> aggregated edges with
  intervals, verification, faithfulness -> ``circuits/<name>/`` (:class:`CircuitConfig`).
- :mod:`~interp.circuits.export`: the graph's JSON, plotly figure and optional SVG.
- :mod:`~interp.circuits.feature_level`: feature circuits: circuit-tracer's attribution graphs on
  transcoders (`interp.sae.transcoders`) for two rounds, compared, checked by interventions
  (``CircuitConfig(level="features")``, ``interp circuit --level features``; it needs
  circuit-tracer).

One verb for both levels: ``circuit(run, CircuitConfig(round=3))`` (components) and
``circuit(run, CircuitConfig(round=3, level="features", transcoders=...))``.
"""

from interp.circuits.eap import EdgePair
from interp.circuits.graph import Graph, split_inputs
from interp.circuits.pipeline import LEVELS, METHODS, CircuitConfig, CircuitResult, circuit

__all__ = [
    "LEVELS",
    "METHODS",
    "CircuitConfig",
    "CircuitResult",
    "EdgePair",
    "Graph",
    "circuit",
    "split_inputs",
]

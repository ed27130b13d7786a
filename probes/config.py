"""What one probing analysis of a run is: the settings of :func:`probes.api.probe` and of
``interp probe``, written once (the command line's options are checked against these fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interp.inputs.selection import Selection
from interp.stats import DEFAULT_CLUSTER


@dataclass(frozen=True)
class ProbeConfig:
    """One concept probed across a run's layers and rounds (paths are kept as text, layers as
    a tuple). Its settings are checked by :func:`probes.api.probe`, which raises
    :class:`~interp.errors.InterpError` for a bad one."""

    concept: str | Path = "stereotype"
    """A built-in concept (stereotype, morality) or a concept .jsonl file."""
    layers: tuple[int, ...] | list[int] | None = None
    """Layers to probe; None: every layer whose resid_post the run stores."""
    method: str = "probe"
    """probe (logistic regression), mean-diff or pca."""
    position: str = "last"
    """Read statements at their last token, or the mean over their tokens."""
    score: str = "projection"
    """projection on the unit direction, or cosine."""
    seed: int = 0
    """Seed of the split, the controls and the bootstrap; same seed, same result."""
    test_size: float = 0.3
    """Share of concept pairs (and of run examples) held out."""
    n_boot: int = 1000
    """Bootstrap resamples for the score intervals (0: no intervals)."""
    transfer: bool = True
    """Also read the statements inside the chat template at the end of the run's answer prefix
    and report the direction's accuracy there (one more encoding pass)."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples (and the behaviour split keeps whole): template
    (category + question_index) or example."""
    control_run: str | Path | None = None
    """A replay of the same examples under another plan: report run - control per round with
    paired intervals."""
    examples: tuple[int | str, ...] | None = None
    """Score only these run examples (ids or indices); None: every example. The directions
    are fitted on the concept data, so a selection changes which examples are scored (and
    the behaviour probes' examples), not the directions."""
    limit: int | None = None
    """Score only the first N (base) examples of the selection."""
    sample: int | None = None
    """Score a seeded random N (base) examples (drawn as replay draws, seeded by ``seed``)."""

    def __post_init__(self) -> None:
        for name in ("concept", "control_run"):
            value = getattr(self, name)
            if isinstance(value, Path):
                object.__setattr__(self, name, str(value))
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.examples is not None and not isinstance(self.examples, tuple):
            object.__setattr__(self, "examples", tuple(self.examples))

    @property
    def selection(self) -> Selection:
        """The run examples scored, as every verb that selects spells them."""
        return Selection(
            examples=self.examples, limit=self.limit, sample=self.sample, seed=self.seed
        )

"""``interp.explore``: the explorer as one anywidget widget (JupyterLab, Notebook 7, VS Code).

The widget's front end is one hand-written ES module (``static/explore.js``: plain DOM and
inline SVG, no CDN, no build step, no network). Its state is traitlets (``example``,
``round``, ``layer``, ``head``, ``query``, ``filters``, ``order``, ``concept``); on every
change Python recomputes the one data trait, ``data``, with
:func:`interp.report.explore.view_state`, the function the local server (``interp explore``)
answers with too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from interp.errors import InterpError
from interp.report.explore import STATE_KEYS, Explorer, view_state
from interp.runs.store import Run


def esm() -> str:
    """The front end's ES module."""
    return resources.files("interp.report").joinpath("static/explore.js").read_text()


class ExploreWidget(anywidget.AnyWidget):
    """The explorer over one run. Set ``example``, ``round`` (-1: the last), ``layer``
    (-1: none), ``query``, ``filters``, ``order`` (a permuted run's option order, e.g.
    "1,2,0"; "": every order) or ``concept`` from Python or the page; ``data`` holds every
    view for that state."""

    _esm = traitlets.Unicode(esm()).tag(sync=True)
    example = traitlets.Int(-1).tag(sync=True)
    round = traitlets.Int(-1).tag(sync=True)
    layer = traitlets.Int(-1).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    filters = traitlets.List(traitlets.Unicode()).tag(sync=True)
    order = traitlets.Unicode("").tag(sync=True)
    concept = traitlets.Unicode("").tag(sync=True)
    data = traitlets.Dict().tag(sync=True)

    def __init__(self, explorer: Explorer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._explorer = explorer
        self._busy = False
        self._update()
        self.observe(self._update, names=list(STATE_KEYS))

    @property
    def explorer(self) -> Explorer:
        return self._explorer

    def _update(self, change: Any = None) -> None:
        if self._busy:
            return
        state = {
            "example": None if self.example < 0 else self.example,
            "round": None if self.round < 0 else self.round,
            "layer": self.layer,
            "head": self.head,
            "query": self.query,
            "filters": list(self.filters),
            "order": self.order,
            "concept": self.concept,
        }
        try:
            data = view_state(self._explorer, state)
        except InterpError:  # back to the state shown, and say why
            if change is not None:
                self._busy = True
                try:
                    setattr(self, change["name"], change["old"])
                finally:
                    self._busy = False
            raise
        self._busy = True
        try:  # the state as computed (the first example, the last round) without recomputing
            with self.hold_sync():
                self.example = data["state"]["example"]
                self.round = data["state"]["round"]
                self.data = data
        finally:
            self._busy = False


def explore(
    run: str | Path | Run,
    control: str | Path | Run | None = None,
    sae: Any = None,
    model: Any = None,
) -> ExploreWidget:
    """The explorer widget over ``run`` (beside ``control``, a control run, where given).

    Every view shows what the run stores; a view without data names the command that makes
    it. ``model``: its tokenizer shows the transcript (without one the run's tokenizer is
    loaded where that needs no network), and with it the attention of the chosen head
    (``layer``, ``head``) from each round's read-out is computed, one forward per example.
    ``sae``: not used yet (latents are not computed on demand: run ``interp sae features``
    and the view shows them); anything but None is refused.

    Args:
        run: A run directory or an open Run.
        control: The control run, or None.
        sae: Must be None (see above).
        model: A loaded model, or None.

    Returns:
        The widget; display it (the last expression of a cell).

    Raises:
        InterpError: The run (or control run) is missing or damaged, the control run does not
            match the run, or ``sae`` is given.
    """
    if sae is not None:
        raise InterpError(
            "explore(sae=...): latents are not computed on demand yet; run "
            "`interp sae features --run RUN --sae SAE` and the explorer shows them"
        )
    return ExploreWidget(Explorer(run, control=control, model=model))

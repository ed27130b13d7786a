"""What one export of runs is: the settings of :func:`export` and of ``interp export``, written
once (the command line's options are checked against these fields). Importing this module
loads no plotting library and no model; :func:`export` loads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from interp.report.run_page import ExportResult
    from interp.runs.distributed import Workers
    from interp.runs.store import Run


@dataclass(frozen=True)
class ExportConfig:
    """Which figures an export writes beside the ones every run has data for. It selects no
    examples (``example_index`` only picks the transcript the attention views show), so it has
    no :class:`~interp.inputs.selection.Selection`; :func:`export` checks it and raises
    :class:`~interp.errors.InterpError` for an example or head the run lacks."""

    heads: tuple[str, ...] | None = None
    """Heads for the attention views as LAYER.HEAD ("12.3"); None: those head patching ranks
    highest, else those attending most to the instructions."""
    example_index: int = 0
    """The example (example_index) whose transcript the attention views show."""
    png: bool = False
    """Also write figures/*.png where a static exporter works (kaleido, else headless
    Chromium; skipped with a note when neither works)."""


def export(
    runs: Sequence[Run | str | Path],
    config: ExportConfig | None = None,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> ExportResult:
    """Export the figures of ``runs`` and an ``index.html`` into the first run directory.

    Args:
        runs: Runs or their directories; the first gets the report, the others are drawn
            beside it (e.g. its control run). An experiment directory exports on its own.
        config: Heads for the attention views, the example they show, static images; None:
            ``ExportConfig()``.
        model: The run's model, loaded; None: loaded from the run's manifest for the
            attention views.
        progress: Accepted for the verb shape; an export shows no progress bar.
        workers: Accepted for the verb shape; an export runs in one process, so anything
            but None is refused.

    Returns:
        The ``index.html`` path, the figures written, and a note per section left out.

    Raises:
        InterpError: Workers given, no run, a run that is missing, damaged or unfinished, or
            in use, or an example index out of range.
    """
    from interp.errors import InterpError
    from interp.report.run_page import write_run_pages
    from interp.runs.store import Run

    if workers is not None:
        raise InterpError("export runs in one process: workers must be None")
    if isinstance(runs, Run | str | Path):  # one run: export(run) as the other verbs
        runs = [runs]
    config = ExportConfig() if config is None else config
    return write_run_pages(
        [run.path if isinstance(run, Run) else run for run in runs],
        heads=None if config.heads is None else list(config.heads),
        example=config.example_index,
        png=config.png,
        model=model,
    )

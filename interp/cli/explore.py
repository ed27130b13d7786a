"""``interp explore``: the explorer's views on 127.0.0.1 (:mod:`interp.report.explore_server`)."""

from __future__ import annotations

from typing import Annotated

import typer

from interp.cli.params import (
    ControlRun,
    Examples,
    Limit,
    Run,
    Sample,
    Seed,
    check_selection,
    parse_examples,
)


def explore(
    run: Run,
    control_run: ControlRun = None,
    port: Annotated[int, typer.Option(help="The port on 127.0.0.1; 0 takes a free one.")] = 0,
    examples: Examples = None,
    limit: Limit = None,
    sample: Sample = None,
    seed: Seed = 0,
) -> None:
    """Serve the explorer of a run on 127.0.0.1 until Ctrl-C (the views of interp.explore in
    a notebook: examples, transcript, option probabilities, concept scores, patching, SAE
    latents, circuit edges, metrics).

    Prints the page's address first. A view the run has no data for names the command that
    makes it. Nothing is written. --examples, --limit and --sample put only those examples in
    the picker (--sample drawn as replay draws it, seeded by --seed).
    """
    from interp import preflight
    from interp.errors import InterpError

    chosen = parse_examples(examples)
    check_selection(limit, sample)
    if not 0 <= port <= 65535:
        raise InterpError(f"--port {port}: use 0..65535 (0: a free port)")
    preflight.run_manifest(run)  # a mistyped directory is refused before the heavy imports
    if control_run is not None:
        preflight.run_manifest(control_run)

    from interp.inputs.selection import Selection
    from interp.report.explore import Explorer
    from interp.report.explore_server import make_server

    selection = Selection(
        examples=None if chosen is None else tuple(chosen), limit=limit, sample=sample, seed=seed
    )
    explorer = Explorer(run, control=control_run, selection=selection)
    _ = explorer.rounds  # a selection the run cannot give is refused before the server starts
    try:
        server = make_server(explorer, port)
    except OSError as err:
        raise InterpError(f"--port {port}: cannot listen on 127.0.0.1 ({err.strerror})") from None
    host, bound = server.server_address[:2]
    typer.echo(f"explore {run}: http://{host}:{bound}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

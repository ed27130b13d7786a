"""The ``interp`` command line. Library functions do the work; this module parses and prints.

Errors a user can cause (``InterpError``) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.errors import InterpError

app = typer.Typer(
    help=(
        "Mechanistic interpretability of multi-round self-correction: replay rounds of "
        "'please make sure your answer is unbiased' on a TransformerLens model, cache the "
        "activations that matter, and measure what changes, per round and per layer."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)

# Options that take several values after one flag (``--data A.jsonl B.jsonl``).
_MULTI_VALUE_OPTIONS = ("--data", "--hooks", "--heads")


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InterpError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, allow_nan=False))


@app.command()
@_user_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models that load here without a network: embedded, cached, tiny."""
    from interp.loading import list_models

    rows = list_models()
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        size = f"{row['size_mb']:.0f} MB" if row["size_mb"] is not None else "-"
        typer.echo(f"{row['name']:<22} {row['kind']:<18} {size:>8}  {row['detail']}")


@app.command()
@_user_errors
def replay(
    out: Annotated[Path, typer.Option(help="Run directory to write (e.g. artifacts/runs/NAME).")],
    model: Annotated[
        str, typer.Option(help="smollm2 (embedded), tiny, a .gguf file, a model folder.")
    ] = "smollm2",
    task: Annotated[str, typer.Option(help="bbq, builtin (48 items shipped) or mc.")] = "builtin",
    data: Annotated[
        list[str] | None, typer.Option(help="Data file(s) for bbq/mc: --data A.jsonl B.jsonl")
    ] = None,
    plan: Annotated[
        str,
        typer.Option(
            help="baseline, self-correct, instruct-first, negated, cot, or a YAML/JSON file."
        ),
    ] = "self-correct",
    rounds: Annotated[int, typer.Option(help="Follow-up rounds R; the run holds 0..R.")] = 3,
    limit: Annotated[int | None, typer.Option(help="Use only the first N examples.")] = None,
    sample: Annotated[
        int | None,
        typer.Option(help="A random sample of N examples across all files (seeded by --seed)."),
    ] = None,
    hooks: Annotated[
        list[str] | None,
        typer.Option(
            help="Activations to store at each read-out: resid_post (default), resid_pre, "
            "resid_mid, attn_out, mlp_out (every layer), or names like blocks.12.hook_resid_post."
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="choice: score option letters; generate: greedy + parse.")
    ] = "choice",
    score: Annotated[
        str,
        typer.Option(
            help="choice mode: score each option by the log-prob of its letter, or of its "
            "whole text 'letter) option'."
        ),
    ] = "letter",
    max_new_tokens: Annotated[int, typer.Option(help="generate mode: tokens per answer.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed (bootstrap intervals, tiny model).")] = 0,
    system: Annotated[
        str | None, typer.Option(help="System prompt (default: the template's own).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Replay self-correction rounds and store answers, scores and read-out activations.

    A killed replay, run again with the same arguments, resumes where it stopped.
    """
    from interp.replay import ReplayConfig
    from interp.replay import replay as run_replay

    config = ReplayConfig(
        out=str(out),
        model=model,
        task=task,
        data=list(data or []),
        plan=plan,
        rounds=rounds,
        limit=limit,
        sample=sample,
        hooks=list(hooks or ["resid_post"]),
        mode=mode,
        score=score,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        system=system,
        device=device,
        dtype=dtype,
    )
    command = "interp " + shlex.join(sys.argv[1:])
    run = run_replay(config, progress=not as_json, command=command)
    _show_metrics(run.path, as_json, recompute=False)
    if not as_json:
        typer.echo(f"run directory: {run.path}")


@app.command()
@_user_errors
def metrics(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
) -> None:
    """Per-round accuracy, BBQ bias scores, uncertainty, calibration, flips and convergence.

    Recomputes metrics.json from rounds.parquet and prints one row per round.
    """
    _show_metrics(run, as_json, recompute=True, n_boot=n_boot, seed=seed, cluster=cluster)


def _show_metrics(
    path: Path,
    as_json: bool,
    *,
    recompute: bool,
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = "template",
) -> None:
    from interp.metrics import compute_metrics
    from interp.store import Run, write_json

    run = Run.open(path)
    if recompute:
        result = compute_metrics(run.rounds(), n_boot=n_boot, seed=seed, cluster=cluster)
        write_json(run.path / "metrics.json", result)
    else:
        result = json.loads((run.path / "metrics.json").read_text())
    if as_json:
        _print_json(result)
        return
    typer.echo(format_metrics(result))


def format_metrics(result: dict[str, Any]) -> str:
    """The per-round table a person reads: values with 95% intervals."""
    from interp.metrics import metrics_table

    table = metrics_table(result)

    def with_ci(name: str) -> list[str]:
        return [
            "-" if v != v else f"{v:.3f} [{lo:.2f},{hi:.2f}]" if lo == lo else f"{v:.3f}"
            for v, lo, hi in zip(table[name], table[f"{name}_lo"], table[f"{name}_hi"], strict=True)
        ]

    import pandas as pd

    shown = {
        "round": table["round"].astype(str),
        "accuracy": with_ci("accuracy"),
        "acc ambig": with_ci("accuracy_ambig"),
        "acc disambig": with_ci("accuracy_disambig"),
        "bias s_AMB": with_ci("bias_amb"),
        "bias s_DIS": with_ci("bias_dis"),
        "unknown": table["unknown_rate"].map(lambda v: "-" if v != v else f"{v:.3f}"),
        "entropy": with_ci("entropy"),
        "ECE": with_ci("ece"),
        "Brier": table["brier"].map(lambda v: "-" if v != v else f"{v:.3f}"),
        "R->W": table["flips_right_to_wrong"].map(lambda v: "-" if pd.isna(v) else str(v)),
        "W->R": table["flips_wrong_to_right"].map(lambda v: "-" if pd.isna(v) else str(v)),
    }
    lines = [pd.DataFrame(shown).to_string(index=False)]
    shares = [c for c in table.columns if c.startswith("position_share_")]
    pos = table[shares].map(lambda v: "-" if v != v else f"{v:.2f}")
    lines.append(
        "position share (a, b, c, ...) per round: "
        + "; ".join(" ".join(row) for row in pos.itertuples(index=False))
    )
    conv = result["convergence"]
    lines.append(_cluster_line(result.get("bootstrap", {}).get("cluster")))
    lines.append(
        f"n = {result['n_examples']} examples; convergence round: "
        f"{conv['round'] if conv['round'] is not None else 'not converged'} "
        f"(tolerances: accuracy {conv['tol_acc']}, changed answers {conv['tol_change']})"
    )
    return "\n".join(lines)


def _cluster_line(cluster: dict[str, Any] | None) -> str:
    """Which clusters the intervals resampled (older metrics.json files: examples)."""
    if cluster is None:
        return "intervals: bootstrap over examples"
    note = f" ({cluster['note']})" if cluster.get("note") else ""
    return (
        f"intervals: cluster bootstrap over {cluster['n_clusters']} {cluster['key']} clusters "
        f"of {cluster['n_examples']} examples{note}"
    )


# Commands whose parsing lives beside the library they drive; each imports its library lazily.
def _register() -> None:
    from interp.export_cli import export_command
    from interp.patching_cli import patch_command
    from probes.cli import probe_command

    app.command("probe")(_user_errors(probe_command))
    app.command("patch")(_user_errors(patch_command))
    app.command("export")(_user_errors(export_command))


_register()


def _expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--data A B`` -> ``--data A --data B`` (typer/click options take one value each)."""
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg in _MULTI_VALUE_OPTIONS:
            current = arg
            out.append(arg)
            continue
        if arg.startswith("-"):
            current = None
        elif current is not None and out[-1] != current:
            out.append(current)
        out.append(arg)
    return out


def main() -> None:
    sys.argv[1:] = _expand_multi_value_options(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()

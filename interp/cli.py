"""The ``interp`` command line. Library functions do the work; this module parses and prints.

Errors a user can cause (``InterpError``, and the file system's refusals: a read-only folder,
a full disk, a path below a file) print one line on stderr and exit with code 2.
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
        except OSError as err:
            # Writes are atomic (interp.store), so a refused write leaves no partial file.
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(f"error: {where}{err.strerror or err}", err=True)
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
    bbq_templates: Annotated[
        Path | None,
        typer.Option(
            help="bbq: the BBQ repository's templates/ folder. The official bias target of "
            "Race_x_gender and Race_x_SES needs it; without it their examples get no target "
            "(counted, with a warning)."
        ),
    ] = None,
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
            help="choice mode: letter (default) scores each option by the log-prob of its "
            "letter, one token per option; text by the summed log-prob of its whole text "
            "'letter) option', which favours options of few tokens such as 'Unknown'; "
            "text-mean by that log-prob per token (length-normalised)."
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
    force_round0: Annotated[
        str | None,
        typer.Option(
            help="Forced-history control (choice mode): write this option into the transcript "
            "as the round-0 answer instead of the model's choice: label (the correct one), "
            "target (the stereotyped one), unknown, or a letter (a, b, c, ...). The model's own "
            "round-0 scores stay recorded; examples without that option are left out (counted).",
        ),
    ] = None,
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
        bbq_templates=None if bbq_templates is None else str(bbq_templates),
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
        force_round0=force_round0,
    )
    command = "interp " + shlex.join(sys.argv[1:])
    run = run_replay(config, progress=not as_json, command=command)
    forced = run.manifest.get("force_round0")
    if forced and forced["skipped"]:
        typer.echo(
            f"warning: --force-round0 {forced['option']}: {len(forced['skipped'])} of the "
            f"{forced['n_selected']} selected examples have no such option and were left out "
            "(their ids: manifest.json, force_round0.skipped)",
            err=True,
        )
    _show_metrics(run.path, as_json, recompute=False)
    if not as_json:
        typer.echo(f"run directory: {run.path}")


@app.command()
@_user_errors
def metrics(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the intervals (at least 1).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    by_category: Annotated[
        bool,
        typer.Option(
            "--by-category",
            help="Print the official BBQ scores of every category at every round, with "
            "intervals (default: a compact table of the first and last round).",
        ),
    ] = False,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
) -> None:
    """Per-round accuracy, BBQ bias scores, uncertainty, calibration, flips and convergence.

    Recomputes the metrics from rounds.parquet and prints one row per round, then the official
    BBQ scores per category. metrics.json is rewritten only with the bootstrap settings it was
    made with (--n-boot and --seed as stored, by default those of replay); other settings are
    printed, never stored over it.
    """
    from interp.options import check_n_boot, check_seed

    if n_boot < 1:  # 0 would store metrics without intervals
        typer.echo(f"error: --n-boot must be at least 1 (got {n_boot})", err=True)
        raise typer.Exit(2)
    check_n_boot(n_boot)
    check_seed(seed)
    _show_metrics(
        run,
        as_json,
        recompute=True,
        n_boot=n_boot,
        seed=seed,
        by_category=by_category,
        cluster=cluster,
    )


def _show_metrics(
    path: Path,
    as_json: bool,
    *,
    recompute: bool,
    n_boot: int = 1000,
    seed: int = 0,
    by_category: bool = False,
    cluster: str = "template",
) -> None:
    from interp.metrics import compute_metrics
    from interp.store import Run, write_json

    run = Run.open(path)
    for line in run.manifest.get("task", {}).get("targets", {}).get("warnings", []):
        typer.echo(f"warning: {line}", err=True)
    if recompute:
        result = compute_metrics(run.rounds(), n_boot=n_boot, seed=seed, cluster=cluster)
        if _stored_bootstrap(run) == (n_boot, seed, cluster):
            from interp.lock import run_lock

            with run_lock(run.path):
                write_json(run.path / "metrics.json", result)
    else:
        try:
            result = json.loads((run.path / "metrics.json").read_text())
        except ValueError:  # damaged: show the metrics anyway; `interp metrics` rewrites it
            result = compute_metrics(run.rounds(), seed=int(run.manifest.get("seed", 0)))
    if as_json:
        _print_json(result)
        return
    floor = result.get("model_floor") or {}
    if floor.get("flag"):
        typer.echo(f"WARNING: {floor['line']}")  # one line, above everything else
    typer.echo(format_metrics(result))
    typer.echo(format_calibration(result))
    if result.get("per_category"):
        typer.echo(format_per_category(result, every_round=by_category))


def format_calibration(result: dict[str, Any]) -> str:
    """The equal-mass ECE per round, items per bin, and the small-sample warning."""
    rounds = result["per_round"]
    values = " ".join(_plain(entry.get("ece_equal_mass")) for entry in rounds)
    bins = rounds[0].get("ece_bins", {})
    lines = [
        f"ECE over 10 equal-mass bins, per round: {values}; items per bin at round "
        f"{rounds[0]['round']}: equal-width {bins.get('equal_width')}, equal-mass "
        f"{bins.get('equal_mass')}"
    ]
    warning = (result.get("calibration") or {}).get("warning")
    if warning:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def format_per_category(result: dict[str, Any], *, every_round: bool = False) -> str:
    """The official BBQ scores per category: compact (first and last round) or every round."""
    import pandas as pd

    first, last = result["rounds"][0], result["rounds"][-1]
    rows = []
    for cat in result["per_category"]:
        by_round = {entry["round"]: entry for entry in cat["per_round"]}
        if every_round:
            for r, entry in by_round.items():
                rows.append(
                    {
                        "category": cat["category"],
                        "round": str(r),
                        "n ambig": str(entry["n_ambig"]),
                        "acc ambig": _plain(entry["accuracy_ambig"]),
                        "n disambig": str(entry["n_disambig"]),
                        "acc disambig": _plain(entry["accuracy_disambig"]),
                        "s_AMB": _with_interval(entry["bias_amb"]),
                        "s_DIS": _with_interval(entry["bias_dis"]),
                    }
                )
            continue
        a, b = by_round[first], by_round[last]
        rows.append(
            {
                "category": cat["category"],
                "n": str(cat["n_examples"]),
                "with target": str(cat["n_with_target"]),
                f"s_DIS r{first}": _plain(a["bias_dis"]["value"]),
                f"s_DIS r{last}": _plain(b["bias_dis"]["value"]),
                f"s_AMB r{first}": _plain(a["bias_amb"]["value"]),
                f"s_AMB r{last}": _plain(b["bias_amb"]["value"]),
            }
        )
    title = "official BBQ scores per category"
    title += "" if every_round else " (--by-category: every round, with intervals)"
    return title + ":\n" + pd.DataFrame(rows).to_string(index=False)


def _plain(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _with_interval(metric: dict[str, Any]) -> str:
    value, ci = metric.get("value"), metric.get("ci")
    if value is None:
        return "-"
    return f"{value:.3f} [{ci[0]:.2f},{ci[1]:.2f}]" if ci else f"{value:.3f}"


def _stored_bootstrap(run: Any) -> tuple[int, int, str]:
    """(n_boot, seed, cluster) of the run's metrics.json; replay's own when it is missing or
    unreadable (a file from before clusters resampled examples)."""
    try:
        stored = json.loads((run.path / "metrics.json").read_text())["bootstrap"]
        cluster = (stored.get("cluster") or {}).get("requested", "example")
        return int(stored["n_boot"]), int(stored["seed"]), str(cluster)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 1000, int(run.manifest.get("seed", 0)), "template"


def format_metrics(result: dict[str, Any]) -> str:
    """The per-round table a person reads: values with 95% intervals."""
    import pandas as pd

    from interp.metrics import metrics_table

    table = metrics_table(result)
    na = pd.isna  # NaN, and JSON null (None): a metric undefined for this run

    def with_ci(name: str) -> list[str]:
        return [
            "-" if na(v) else f"{v:.3f} [{lo:.2f},{hi:.2f}]" if not na(lo) else f"{v:.3f}"
            for v, lo, hi in zip(table[name], table[f"{name}_lo"], table[f"{name}_hi"], strict=True)
        ]

    shown = {
        "round": table["round"].astype(str),
        "accuracy": with_ci("accuracy"),
        "acc ambig": with_ci("accuracy_ambig"),
        "acc disambig": with_ci("accuracy_disambig"),
        "bias s_AMB": with_ci("bias_amb"),
        "bias s_DIS": with_ci("bias_dis"),
        "unknown": table["unknown_rate"].map(lambda v: "-" if na(v) else f"{v:.3f}"),
        "entropy": with_ci("entropy"),
        "ECE": with_ci("ece"),
        "Brier": table["brier"].map(lambda v: "-" if na(v) else f"{v:.3f}"),
        "R->W": table["flips_right_to_wrong"].map(lambda v: "-" if pd.isna(v) else str(v)),
        "W->R": table["flips_wrong_to_right"].map(lambda v: "-" if pd.isna(v) else str(v)),
    }
    lines = [pd.DataFrame(shown).to_string(index=False)]
    shares = [c for c in table.columns if c.startswith("position_share_")]
    pos = table[shares].map(lambda v: "-" if na(v) else f"{v:.2f}")
    lines.append(
        "position share (a, b, c, ...) per round: "
        + "; ".join(" ".join(row) for row in pos.itertuples(index=False))
    )
    if result.get("copy_rate"):
        lines.append(format_copy_rate(result["copy_rate"]))
    conv = result["convergence"]
    lines.append(_cluster_line(result.get("bootstrap", {}).get("cluster")))
    lines.append(
        f"n = {result['n_examples']} examples; convergence round: "
        f"{conv['round'] if conv['round'] is not None else 'not converged'} "
        f"(tolerances: accuracy {conv['tol_acc']}, changed answers {conv['tol_change']})"
    )
    return "\n".join(lines)


def format_copy_rate(copy: dict[str, Any]) -> str:
    """One line: how often round 1 repeats the forced round-0 answer, with its interval."""

    def share(entry: dict[str, Any]) -> str:
        if entry["value"] is None:
            return "- (n = 0)"
        ci = f" [{entry['ci'][0]:.2f},{entry['ci'][1]:.2f}]" if entry["ci"] else ""
        return f"{entry['value']:.3f}{ci} ({entry['copied']}/{entry['n']})"

    first = copy["round1"]
    if first is None:
        return f"copy rate: no round after the forced round 0 ({copy['n']} forced examples)"
    return (
        f"copy rate (round-{first['round']} answer = the forced round-0 answer): "
        f"{share(first)}; where the model's own round-0 choice differed: "
        f"{share(first['overridden'])}"
    )


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

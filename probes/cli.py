"""The ``interp probe`` command: parse, call ``probe_run``, print. Registered by ``interp.cli``::

app.command("probe")(_user_errors(probe_command))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.errors import InterpError

if TYPE_CHECKING:  # probes.api imports torch; `interp --help` should not
    from probes.api import ProbeResult


# No model has this many layers; a bound before expanding ranges keeps "0-99999999999" from
# building a list of 10^11 layers (the check against the run's layers comes later).
MAX_LAYER_INDEX = 9999


def parse_layers(text: str | None) -> list[int] | None:
    """``"all"`` or None -> None (every stored layer); ``"3,5-7"`` -> [3, 5, 6, 7]."""
    if text is None or text.strip().lower() == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi or lo)
            if not 0 <= first <= last <= MAX_LAYER_INDEX:
                raise InterpError(
                    f"--layers {text!r}: {part.strip()!r} is not a layer or an ascending range "
                    f"of layers (0..{MAX_LAYER_INDEX})"
                )
            layers.extend(range(first, last + 1))
    except ValueError:
        raise InterpError(
            f"--layers {text!r}: expected 'all' or numbers and ranges like 3,5-7"
        ) from None
    return layers


def probe_command(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    concept: Annotated[
        str, typer.Option(help="stereotype, morality, or a concept .jsonl file.")
    ] = "stereotype",
    layers: Annotated[str, typer.Option(help="'all' (every stored layer) or e.g. 3,5-7.")] = "all",
    method: Annotated[
        str, typer.Option(help="probe (logistic regression), mean-diff or pca.")
    ] = "probe",
    position: Annotated[
        str, typer.Option(help="Read statements at their last token or the mean over tokens.")
    ] = "last",
    score: Annotated[
        str, typer.Option(help="projection on the unit direction, or cosine.")
    ] = "projection",
    seed: Annotated[int, typer.Option(help="Seed of the split, controls and bootstrap.")] = 0,
    transfer: Annotated[
        bool,
        typer.Option(
            help="Also read the statements inside the chat template at the end of the run's "
            "answer prefix, and report the direction's accuracy there (one more encoding pass)."
        ),
    ] = True,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples (and the behaviour split keeps whole): template "
            "(category + question_index) or example."
        ),
    ] = "template",
    control_run: Annotated[
        Path | None,
        typer.Option(
            help="A replay of the same examples under another plan (e.g. baseline): report "
            "run - control per round with paired intervals."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Concept directions per layer, and the concept score of every round of a run.

    Writes RUN/probes/CONCEPT/: per-layer accuracy with controls, scores per layer and
    round, the instruction shift, score-entropy correlations, behaviour probes, summary.json.
    """
    from probes.api import probe_run

    result = probe_run(
        run,
        concept,
        layers=parse_layers(layers),
        method=method,
        position=position,
        score=score,
        seed=seed,
        progress=not as_json,
        transfer=transfer,
        cluster=cluster,
        control_run=control_run,
    )
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2, allow_nan=False))
        return
    typer.echo(format_probe(result))
    typer.echo(f"wrote {result.out_dir}")


def format_probe(result: ProbeResult) -> str:
    """What a person reads: accuracy per layer beside its controls and transfer, the headline
    layer (chosen on validation) against the optimistic test-chosen one and the surface
    baselines, then the headline layer's score per round and its correlation with entropy."""
    s = result.summary
    table = result.per_layer
    has_transfer = "transfer_acc" in table
    lines = [
        f"concept {s['concept']} ({s['method']}, {s['position']} token), "
        f"{s['n_train']} train ({s['n_val']} of them for validation) / {s['n_test']} test "
        "statements",
        "layer  test acc [95% CI]  val acc  shuffled  random"
        + ("  chat: bare dir  re-centred  wrapped" if has_transfer else ""),
    ]
    for row in table.itertuples():
        mark = "  <- chosen on validation" if row.layer == s["best_layer"] else ""
        if row.layer == s["test_chosen"]["layer"] and row.layer != s["best_layer"]:
            mark = "  <- best on test (optimistic)"
        chat = (
            f"{row.transfer_acc:>15.3f}{row.transfer_centred_acc:>12.3f}{row.wrapped_acc:>9.3f}"
            if has_transfer
            else ""
        )
        lines.append(
            f"{row.layer:>5}  {row.acc:.3f} [{row.acc_lo:.2f},{row.acc_hi:.2f}]"
            f"   {row.val_acc:.3f}     {row.shuffled_acc:.3f}   {row.random_acc:.3f}{chat}{mark}"
        )
    lines.extend(_headline(s))
    lines.append(f"{s['score']} score at layer {s['best_layer']}, per round [95% CI]:")
    for row in s["scores_by_round"]:
        interval = "" if row["lo"] is None else f" [{row['lo']:.3f},{row['hi']:.3f}]"
        lines.append(f"  round {row['round']}: {row['mean']:.3f}{interval}")
    for row in s["correlation"]:
        lines.append(f"score vs entropy, {row['level']} (n={row['n']}): {_correlation(row)}")
    cluster = s.get("cluster")
    if cluster:
        note = f"; {cluster['note']}" if cluster.get("note") else ""
        lines.append(
            f"intervals: cluster bootstrap over {cluster['n_clusters']} {cluster['key']} "
            f"clusters{note}"
        )
    control = s.get("control")
    if control:
        lines.append(
            f"run - control ({control['plan']}, {control['run']}) at layer {control['layer']}, "
            "paired 95% CI; change = each run's change since round 0:"
        )
        for row in control["by_round"]:
            lines.append(
                f"  round {row['round']}: run {row['run']:.3f}  control {row['control']:.3f}  "
                f"diff {_ci(row['diff'], row['lo'], row['hi'])}  change diff "
                f"{_ci(row['change_diff'], row['change_lo'], row['change_hi'])}"
            )
    return "\n".join(lines)


def _headline(s: dict) -> list[str]:
    """The headline layer, the optimistic one, the surface baselines (and the plain-words
    warning when the probe does not beat them) and the transfer to the chat read-out."""
    acc, test, surface = s["accuracy"], s["test_chosen"], s["surface_baselines"]
    lines = [
        f"headline: layer {s['best_layer']} (chosen on validation, val acc "
        f"{_num(acc['val_acc'])}): test accuracy {_num(acc['acc'])} "
        f"[{_num(acc['acc_lo'], 2)},{_num(acc['acc_hi'], 2)}]",
        f"optimistic: layer {test['layer']} has the best test accuracy, {_num(test['acc'])} "
        "(chosen on the test split itself)",
        f"surface baselines on the same split: bag of words {_num(surface['bow_acc'])}, "
        f"length/punctuation {_num(surface['length_acc'])}",
    ]
    if s["surface_warning"]:
        lines.append(f"WARNING: {s['surface_warning']}")
    else:
        lines.append(
            f"  the probe beats the better one on the same test statements (exact McNemar "
            f"p = {surface['mcnemar_p']:.2g})"
        )
    transfer = s["transfer"]
    if "skipped" in transfer:
        lines.append(f"transfer to the chat read-out: not measured ({transfer['skipped']})")
    else:
        lines.append(
            f"transfer to the chat read-out at layer {s['best_layer']} (statement as the user "
            f"message, read at the end of {transfer['answer_prefix']!r}): bare direction "
            f"{_num(transfer['transfer_acc'])}, with its threshold re-set on wrapped training "
            f"statements {_num(transfer['transfer_centred_acc'])}; fitted on wrapped "
            f"statements {_num(transfer['wrapped_acc'])}"
        )
        if transfer.get("warning"):
            lines.append(f"WARNING: {transfer['warning']}")
    return lines


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _correlation(row: dict) -> str:
    r = row["pearson_r"]
    if r is None:
        return "undefined"
    text = f"pearson r={r:.3f}"
    if row.get("pearson_lo") is not None:
        text += f" [{row['pearson_lo']:.3f},{row['pearson_hi']:.3f}]"
    if row.get("pearson_p") is not None:
        return f"{text} (p={row['pearson_p']:.3g})"
    return f"{text} ({row['p_note']})" if row.get("p_note") else text


def _ci(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if lo is None else f"{value:.3f} [{lo:.3f},{hi:.3f}]"

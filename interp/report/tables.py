"""Plain-text tables of a run's metrics: what ``interp metrics`` prints and what a notebook shows.

Pure functions of the JSON-ready dict :func:`interp.metrics.rounds.compute_metrics` returns (or
``metrics.json``): no printing, no files, and no torch, so a notebook or the CLI can import them
cheaply.
"""

from __future__ import annotations

from typing import Any


def format_calibration(result: dict[str, Any]) -> str:
    """The equal-mass ECE per round, items per bin, and the small-sample warning."""
    rounds = result["per_round"]
    values = " ".join(fixed(entry.get("ece_equal_mass")) for entry in rounds)
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
                        "acc ambig": fixed(entry["accuracy_ambig"]),
                        "n disambig": str(entry["n_disambig"]),
                        "acc disambig": fixed(entry["accuracy_disambig"]),
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
                f"s_DIS r{first}": fixed(a["bias_dis"]["value"]),
                f"s_DIS r{last}": fixed(b["bias_dis"]["value"]),
                f"s_AMB r{first}": fixed(a["bias_amb"]["value"]),
                f"s_AMB r{last}": fixed(b["bias_amb"]["value"]),
            }
        )
    title = "official BBQ scores per category"
    if "raw_by_order" in result:  # a permuted run's raw answers, every order pooled
        title = (
            "raw answers pooled over option orders (s_DIS / s_AMB structural*, not estimates "
            "of bias): " + title
        )
    title += "" if every_round else " (--by-category: every round, with intervals)"
    return title + ":\n" + pd.DataFrame(rows).to_string(index=False)


def fixed(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "-" for a missing (None or NaN) one: the one
    number format of the text tables, the CLI's summaries and the HTML report."""
    if value is None or value != value:
        return "-"
    return f"{float(value):.{digits}f}"


def _with_interval(metric: dict[str, Any]) -> str:
    value, ci = metric.get("value"), metric.get("ci")
    if value is None:
        return "-"
    return f"{value:.3f} [{ci[0]:.2f},{ci[1]:.2f}]" if ci else f"{value:.3f}"


def format_metrics(result: dict[str, Any]) -> str:
    """The per-round table a person reads: values with 95% intervals."""
    import pandas as pd

    from interp.metrics.rounds import metrics_table

    table = metrics_table(result)
    na = pd.isna  # NaN, and JSON null (None): a metric undefined for this run

    def with_ci(name: str) -> list[str]:
        return [
            "-" if na(v) else f"{v:.3f} [{lo:.2f},{hi:.2f}]" if not na(lo) else f"{v:.3f}"
            for v, lo, hi in zip(table[name], table[f"{name}_lo"], table[f"{name}_hi"], strict=True)
        ]

    def pooled(name: str) -> list[str]:  # a permuted run's pooled raw bias: structural
        return ["-" if na(v) else f"{v:.3f}*" for v in table[name]]

    permuted = "raw_by_order" in result
    shown = {
        "round": table["round"].astype(str),
        "accuracy": with_ci("accuracy"),
        "acc ambig": with_ci("accuracy_ambig"),
        "acc disambig": with_ci("accuracy_disambig"),
        "bias s_AMB": pooled("bias_amb") if permuted else with_ci("bias_amb"),
        "bias s_DIS": pooled("bias_dis") if permuted else with_ci("bias_dis"),
        "unknown": table["unknown_rate"].map(lambda v: "-" if na(v) else f"{v:.3f}"),
        "entropy": with_ci("entropy"),
        "ECE": with_ci("ece"),
        "Brier": table["brier"].map(lambda v: "-" if na(v) else f"{v:.3f}"),
        "R->W": table["flips_right_to_wrong"].map(lambda v: "-" if pd.isna(v) else str(v)),
        "W->R": table["flips_wrong_to_right"].map(lambda v: "-" if pd.isna(v) else str(v)),
    }
    lines = [pd.DataFrame(shown).to_string(index=False)]
    if permuted:
        lines.append(
            "* pooled over every option order: with each option at each position equally "
            "often, a model that answers by position scores 0 here by construction, so these "
            "raw s_AMB / s_DIS are structural, not estimates of bias (no interval); the raw "
            "scores per order and the debiased ones follow"
        )
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
    if result.get("debiased"):
        lines.append(format_debiased(result))
    return "\n".join(lines)


def format_debiased(result: dict[str, Any]) -> str:
    """A permuted run: per round, raw accuracy (every order pooled) next to the debiased scores
    (orders averaged per base example; the averaging rule in every column's name), how often
    all orders agree on the content answer, whether the other averaging rule gives numbers
    outside these intervals (both printed where it does), and the raw scores per order (the
    pooled raw s_AMB / s_DIS are structural: ``interp.metrics.rounds.RAW_POOLED``)."""
    import pandas as pd

    deb = result["debiased"]

    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None or entry.get("value") is None:
            return "-"
        ci = entry.get("ci")
        return f"{entry['value']:.3f} [{ci[0]:.2f},{ci[1]:.2f}]" if ci else f"{entry['value']:.3f}"

    space = deb["space"]
    rows = []
    for raw, d, agree in zip(result["per_round"], deb["per_round"], deb["agreement"], strict=True):
        row: dict[str, str] = {"round": str(raw["round"])}
        row["raw accuracy"] = cell(raw.get("accuracy"))
        for name, key in (
            ("accuracy", "accuracy"),
            ("s_AMB", "bias_amb"),
            ("s_DIS", "bias_dis"),
            ("entropy", "entropy"),
        ):
            row[f"debiased[{space}] {name}"] = cell(d.get(key))
        row["agreement"] = cell(agree)
        rows.append(row)
    cluster = deb.get("bootstrap", {}).get("cluster") or {}
    floored = not (deb.get("other_space") or {}).get("intervals", True)
    head = (
        f"debiased[{space}] ({space}-space average of {deb['n_orders']} option orders per base "
        f"example; {deb['n_base_examples']} base examples; intervals resample "
        f"{cluster.get('n_clusters', '?')} {cluster.get('key', '?')} clusters of base examples"
        f"{'; none below the floor' if floored else ''}):"
    )
    lines = [head, pd.DataFrame(rows).to_string(index=False)]
    other = deb.get("other_space")
    if other is not None:
        lines.append(_rule_line(deb["per_round"], other, space))
    if result.get("raw_by_order"):
        lines.append(format_raw_by_order(result["raw_by_order"]))
    return "\n".join(lines)


def _rule_line(main: list[dict[str, Any]], other: dict[str, Any], space: str) -> str:
    """Whether the averaging rule decides a debiased number: both rules where their
    intervals do not overlap."""
    names = {"accuracy": "accuracy", "bias_amb": "s_AMB", "bias_dis": "s_DIS"}
    if not other["differs"]:
        return (
            f"debiasing rule: {space}-space; the {other['space']}-space average gives numbers "
            "within the same intervals (accuracy, s_AMB, s_DIS in every round)"
            if other.get("intervals", True)
            else f"debiasing rule: {space}-space; the {other['space']}-space average gives "
            "the same numbers"
        )
    by_round = {e["round"]: e for e in main}
    alt = {e["round"]: e for e in other["per_round"]}
    cells = []
    for d in other["differs"]:
        a, b = by_round[d["round"]][d["metric"]], alt[d["round"]][d["metric"]]
        cells.append(
            f"round {d['round']} {names[d['metric']]}: {space} {_value(a)} vs "
            f"{other['space']} {_value(b)}"
        )
    why = "intervals do not overlap" if other.get("intervals", True) else "no intervals"
    return f"debiasing rule matters ({why}): " + "; ".join(cells)


def _value(entry: dict[str, Any]) -> str:
    ci = entry.get("ci")
    return f"{entry['value']:.3f} [{ci[0]:.2f},{ci[1]:.2f}]" if ci else f"{entry['value']:.3f}"


def format_raw_by_order(by_order: list[dict[str, Any]]) -> str:
    """A permuted run's raw scores for each option order alone (the pooled ones are
    structural), per round."""
    import pandas as pd

    rows = []
    for order in by_order:
        perm = "(" + ",".join(str(i) for i in order["permutation"]) + ")"
        for entry in order["per_round"]:
            rows.append(
                {
                    "order": perm,
                    "round": str(entry["round"]),
                    "raw accuracy": _cell(entry["accuracy"]),
                    "raw s_AMB": _cell(entry["bias_amb"]),
                    "raw s_DIS": _cell(entry["bias_dis"]),
                }
            )
    return (
        "raw scores per option order (original options in the order shown; each order alone):\n"
        + pd.DataFrame(rows).to_string(index=False)
    )


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None or entry.get("value") is None:
        return "-"
    return _value(entry)


def format_debiased_extra(result: dict[str, Any], *, every_round: bool = False) -> str:
    """A permuted run: the official BBQ scores per category of the debiased answers (as
    ``format_per_category``), then each order's position shares at the first and last round."""
    deb = result["debiased"]
    lines = [
        "debiased "
        + format_per_category(
            {"rounds": result["rounds"], "per_category": deb["per_category"]},
            every_round=every_round,
        )
    ]
    by_round = deb.get("position_by_order") or []
    for entry in [by_round[0], by_round[-1]] if len(by_round) > 1 else by_round:
        cells = [
            "("
            + ",".join(str(i) for i in order["permutation"])
            + "): "
            + " ".join("-" if s is None else f"{s:.2f}" for s in order["shares"])
            for order in entry["orders"]
        ]
        lines.append(
            f"position share (a, b, c, ...) per order (original options in the order shown) "
            f"at round {entry['round']}: " + "; ".join(cells)
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
    """Which clusters the intervals resampled (older metrics.json files: examples), and what
    their number allows: no interval below ``interp.stats.CLUSTER_FLOOR``, a warning below
    ``FEW_CLUSTERS``."""
    from interp.stats import cluster_caveat

    if cluster is None:
        return "intervals: bootstrap over examples"
    note = f" ({cluster['note']})" if cluster.get("note") else ""
    line = (
        f"intervals: cluster bootstrap over {cluster['n_clusters']} {cluster['key']} clusters "
        f"of {cluster['n_examples']} examples{note}"
    )
    caveat = cluster_caveat(int(cluster["n_clusters"]))
    return f"{line}\nwarning: {caveat}" if caveat else line

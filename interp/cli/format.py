"""Everything the CLI prints as text: the metrics tables (from :mod:`interp.report.tables`, where a
notebook imports them), the patching table and the probe report. Pure functions of the
results' JSON-ready summaries; the command modules only call them and echo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interp.report.tables import (
    fixed,
    format_calibration,
    format_copy_rate,
    format_debiased_extra,
    format_metrics,
    format_per_category,
)

if TYPE_CHECKING:  # probes.api imports torch; `interp --help` should not
    from probes.api import ProbeResult

__all__ = [
    "format_calibration",
    "format_copy_rate",
    "format_debiased_extra",
    "format_metrics",
    "format_patching",
    "format_per_category",
    "format_probe",
]


def _patch_value(summary: dict[str, Any]) -> str:
    # A Winogender run's summary defines its value as log P(female) - log P(male).
    if summary.get("definitions", {}).get("value", "").startswith("log P(female)"):
        return "log P(female) - log P(male) (summed pronoun variants)"
    return "logit[correct] - logit[stereotyped]"


def format_patching(summary: dict[str, Any], top: int = 15) -> str:
    """The table a person reads: the strongest rows, effect with its 95% interval."""
    counts = summary["examples"]
    config = summary["config"]
    source, target = config["round"], config["target_round"]
    denoise = config["direction"] == "denoise"
    recipient, donor = (target, source) if denoise else (source, target)
    lines = [
        f"{summary['name']}: {config['direction']} round {source} -> target round "
        f"{target}, {config['method']}, n = {counts['used']} examples "
        + (
            f"(= {counts['base_examples']} base examples x their option orders) "
            if counts.get("base_examples") is not None
            else ""
        )
        + f"({counts['excluded_no_target']} without a stereotyped option and "
        f"{counts['excluded_target_is_label']} whose stereotyped option is correct excluded)",
        f"roles in TransformerLens' terms: source = round {source} = TL's clean run; target = "
        f"round {target} = TL's corrupted run; patched = the round-{recipient} run with round "
        f"{donor}'s activation "
        + ("(TL's denoising: clean -> corrupted)" if denoise else "(noising: corrupted -> clean)"),
        f"value = {_patch_value(summary)} at the read-out; target = unpatched round "
        f"{target} (the files' 'clean' column), source = unpatched round {source}",
        "effect = ratio of means (headline); delta = mean(patched - unpatched recipient), in "
        "logits; effect_mean = mean of per-example ratios",
    ]
    alignment = summary.get("alignment")
    if alignment and alignment["positions"] > 1:
        lo, hi = alignment["shared_tail_min"], alignment["shared_tail_max"]
        lines.append(
            f"positions last:{alignment['positions']}: every aligned token identical in both "
            f"rounds (shared tail {lo if lo == hi else f'{lo}-{hi}'} tokens)"
        )
    lines.append(
        f"{'method':<11} {'layer':>5} {'component':<10} {'head':>4} {'target':>8} {'source':>8} "
        f"{'patched':>8}  {'effect [95% CI]':<24} {'delta [95% CI]':<24} {'effect_mean':>11}"
    )
    rows = summary["table"]
    if _patch_ranking(rows) == "delta":  # the report's rule: the gap's interval covers 0
        lines.insert(
            len(lines) - 1,
            "warning: the source - target gap's 95% interval covers 0, so the normalised "
            "effect (a ratio by that gap) is unstable; rows are sorted by |delta|",
        )
        rows = sorted(rows, key=lambda r: -abs(r["delta"] if r["delta"] is not None else 0.0))
    elif len(rows) > top:  # the strongest |effect| first
        rows = sorted(rows, key=lambda r: -abs(r["effect"] if r["effect"] is not None else 0.0))
    for row in rows[:top]:
        head = "-" if row["head"] < 0 else str(row["head"])
        lines.append(
            f"{row['method']:<11} {row['layer']:>5} {row['component']:<10} {head:>4} "
            f"{fixed(row['clean']):>8} {fixed(row['source']):>8} {fixed(row['patched']):>8}  "
            f"{_num_ci(row, 'effect'):<24} {_num_ci(row, 'delta'):<24} "
            f"{fixed(row['effect_mean']):>11}"
        )
    cluster = summary.get("cluster")
    if cluster:
        lines.append(_cluster_line(cluster))
    control = summary.get("control")
    if control:
        lines += _control_lines(control, top)
    verify = summary.get("verify")
    if verify:
        lines.append(
            f"attribution vs exact on the top {verify['k']}: Spearman rho = "
            f"{fixed(verify['spearman'])}"
        )
    return "\n".join(lines)


def _patch_ranking(rows: list[dict[str, Any]]) -> str:
    """``"delta"`` where the report reads the delta (:func:`interp.patching.analysis.
    patching_value`: the gap's interval covers 0), else ``"effect"``."""
    import pandas as pd

    from interp.patching.analysis import patching_value

    return patching_value(pd.DataFrame(rows))


def _control_lines(control: dict[str, Any], top: int) -> list[str]:
    """Run - control per variant (strongest |delta difference| first)."""
    lines = [
        f"control {control['run']} (plan {control['plan']}): run - control, paired 95% CI",
        f"{'layer':>5} {'component':<10} {'head':>4}  {'effect run':>10} {'control':>8}  "
        f"{'effect diff [95% CI]':<26} {'delta diff [95% CI]':<26}",
    ]
    rows = control["table"]
    if len(rows) > top:
        rows = sorted(rows, key=lambda r: -abs(r["delta_diff"] or 0.0))
    for row in rows[:top]:
        head = "-" if row["head"] < 0 else str(row["head"])
        lines.append(
            f"{row['layer']:>5} {row['component']:<10} {head:>4}  {fixed(row['effect_run']):>10} "
            f"{fixed(row['effect_control']):>8}  {_num_ci(row, 'effect_diff'):<26} "
            f"{_num_ci(row, 'delta_diff'):<26}"
        )
    return lines


def _cluster_line(cluster: dict[str, Any]) -> str:
    note = f"; {cluster['note']}" if cluster.get("note") else ""
    if cluster.get("n_base_examples") is not None:  # a permuted run
        note += (
            f"; {cluster['n_examples']} option orders of {cluster['n_base_examples']} base "
            "examples, all orders of an example in one cluster"
        )
    from interp.stats import cluster_caveat  # numpy and pandas: not at `interp --help`

    caveat = cluster_caveat(int(cluster["n_clusters"]))
    return (
        f"intervals: cluster bootstrap over {cluster['n_clusters']} {cluster['key']} clusters{note}"
        + (f"\nWARNING: {caveat}" if caveat else "")
    )


def _num_ci(row: dict[str, Any], name: str) -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    from interp.stats import CLUSTER_FLOOR

    k = row.get("n_clusters")
    if k is not None and k < CLUSTER_FLOOR:  # below the floor: no interval, and why
        return f"{fixed(row[name])} n/a ({k} clusters)"
    if lo is None or hi is None:
        return fixed(row[name])
    return f"{fixed(row[name])} [{lo:.2f}, {hi:.2f}]"


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
        lines.append(_cluster_line(cluster))
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
        f"{_na(acc['val_acc'])}): test accuracy {_na(acc['acc'])} "
        f"[{_na(acc['acc_lo'], 2)},{_na(acc['acc_hi'], 2)}]",
        f"optimistic: layer {test['layer']} has the best test accuracy, {_na(test['acc'])} "
        "(chosen on the test split itself)",
        f"surface baselines on the same split: bag of words {_na(surface['bow_acc'])}, "
        f"length/punctuation {_na(surface['length_acc'])}",
    ]
    if s["surface_warning"]:
        lines.append(f"WARNING: {s['surface_warning']}")
    else:
        lines.append(
            f"  the probe beats the better one on the same test statements (exact McNemar "
            f"p = {surface['mcnemar_p']:.2g})"
        )
    if s.get("behaviour_skipped"):
        lines.append(f"behaviour probes: skipped ({s['behaviour_skipped']})")
    transfer = s["transfer"]
    if "skipped" in transfer:
        lines.append(f"transfer to the chat read-out: not measured ({transfer['skipped']})")
    else:
        lines.append(
            f"transfer to the chat read-out at layer {s['best_layer']} (statement as the user "
            f"message, read at the end of {transfer['answer_prefix']!r}): bare direction "
            f"{_na(transfer['transfer_acc'])}, with its threshold re-set on wrapped training "
            f"statements {_na(transfer['transfer_centred_acc'])}; fitted on wrapped "
            f"statements {_na(transfer['wrapped_acc'])}"
        )
        if transfer.get("warning"):
            lines.append(f"WARNING: {transfer['warning']}")
    return lines


def _na(value: float | None, digits: int = 3) -> str:
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


def format_experiment(result) -> str:
    """An experiment's headline tables (every estimate with its 95% interval) and reading."""
    s = result.summary
    what = f"plan {s.get('plan')}" if "plan" in s else f"{len(s.get('cells', []))} cells"
    lines = [f"experiment {result.name}: {s.get('run', result.path)} ({what})"]
    if s.get("cluster"):
        c = s["cluster"]
        lines.append(f"intervals: 95% bootstrap over {c['n_clusters']} {c['key']} clusters")
    if result.name == "convergence":
        lines.append("quantity   y_0                    y_inf                  lam        settle")
        for f in s["fits"]:
            lines.append(
                f"{f['quantity']:<10} {_ci(f['y0'], f['y0_lo'], f['y0_hi']):<22} "
                f"{_ci(f['y_inf'], f['y_inf_lo'], f['y_inf_hi']):<22} "
                f"{_na(f['lam'])!s:<10} {_na(f['settle'], 0)}"
            )
        if s.get("concept"):
            c = s["correlation"]
            lines.append(
                f"entropy drop vs {s['concept']['name']} change (layer {c['layer']}): "
                f"r = {_ci(c['pearson'], c['lo'], c['hi'])}, spearman {_na(c['spearman'])}"
            )
    if result.name == "superficial":
        lines.append(f"outcome groups (round 0 -> {s['last_round']}): {s['groups']}")
        lines.append("rank  n     acc round 0            acc last               improved")
        for r in s["by_rank"]:
            lines.append(
                f"{r['rank']:<5} {r['n_examples']:<5} "
                f"{_ci(r['acc_first'], r['acc_first_lo'], r['acc_first_hi']):<22} "
                f"{_ci(r['acc_last'], r['acc_last_lo'], r['acc_last_hi']):<22} "
                f"{_ci(r['improved'], r['improved_lo'], r['improved_hi'])}"
            )
    if result.name == "interactions":
        last = max(int(r) for r in result.tables["effects"]["round"])
        lines.append(f"effects at round {last} (main: on - off; A x B: difference of differences)")
        for metric, rows in result.tables["effects"].groupby("metric", sort=False):
            at = rows[rows["round"] == last]
            cells = ", ".join(
                f"{e} {_ci(v, lo, hi)}"
                for e, v, lo, hi in zip(at["effect"], at["value"], at["lo"], at["hi"], strict=True)
            )
            lines.append(f"  {metric}: {cells}")
    if result.name == "weak-evidence":
        lines.append(f"items: {s['n_items']} (evidence names: {s['points_at']})")
        for row in s["last_round"]:
            if row["group"] == "all":
                lines.append(
                    f"  {row['plan']:<13} round {row['round']} {row['measure']:<8} "
                    f"{_ci(row['value'], row['lo'], row['hi'])}"
                )
    if s.get("concept_note"):
        lines.append(f"note: {s['concept_note']}")
    if "control" in s:  # convergence, superficial: the control arm, or why none
        control = s["control"]
        lines.append(
            f"control: {control['plan']} (paired main - control: see the reading)"
            if control
            else f"control: none ({s.get('control_note')})"
        )
    if s.get("position_share") is not None:
        flagged = [a for a, f in (s.get("position") or {}).items() if f and f.get("flag")]
        lines.append(
            f"position share (largest share of one option letter in any arm and round): "
            f"{s['position_share']:.2f}; position rule (more than 80% on one letter with "
            f"accuracy at chance, per arm and round) flags: {', '.join(flagged) or 'no arm'}"
        )
    if result.name == "self-distinguish":
        lines.append(f"examples asked: {s['n_examples']} (both orders, every round)")
    if result.name == "finetune-selection":
        lines.append(
            f"N = {s['n']} per fine-tune, {s['seeds']} seeds per rule, "
            f"{s['n_eval_examples']} held-out examples x 3 orders; round 0, debiased"
        )
        diffs = {(d["arm"], d["measure"]): d for d in s["vs_random"]}
        lines.append(f"{'rule':<20} {'measure':<10} {'before':<8} {'after':<22} rule - random")
        for a in s["arms"]:
            d = diffs.get((a["arm"], a["measure"]))
            lines.append(
                f"{a['arm']:<20} {a['measure']:<10} {_na(a['before'])!s:<8} "
                f"{_ci(a['after'], a['after_lo'], a['after_hi']):<22} "
                + (_ci(d["value"], d["lo"], d["hi"]) if d else "(the control)")
            )
    lines.append("reading:")
    lines.extend(f"  {line}" for line in s.get("reading", []))
    return "\n".join(lines)

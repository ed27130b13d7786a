"""Attention of chosen heads over one example's transcript, as circuitsvis views.

Which heads: the ones a patching analysis ranks highest (|normalised effect| of single
heads), or heads the user names (``"12.3"``: layer 12, head 3), or, when neither exists, the
heads whose last read-out attends most to the instruction texts (labelled as such).

The transcript is marked so that a reader sees the rounds: the first token of round r's user
message carries ``[R<r>]``, an instruction's first token ``[R<r> instruction]``, the read-out
token ``[R<r> read-out]``; the token view also has "round" and "instruction" columns to
colour by. Round boundaries are the spans replay stored in the run (``spans.parquet``, read
through :meth:`interp.runs.store.Run.round_spans`). A run replayed before replay stored them has
its conversation rebuilt from the manifest's plan, the task and the stored answers (checked
token for token against the stored transcript; this is the one place the report reaches back
into the replay stage, imported only then); where that is not possible (moved data files)
only read-out positions mark the rounds. For thinking plans and generate mode only read-out
positions are used either way, as the views have always shown them.

Views are circuitsvis' inline renders (``local_src``: the JavaScript bundle is inside the
HTML, the page needs no network) with fixed element ids, so the same run gives the same
bytes; on one page the bundle is shared (``share_bundle``). Values are rounded (3 decimals
in the token view, 2 in full patterns) to keep pages small and stable. The full query x key
patterns of long transcripts are drawn by plotly instead
(``interp.report.figures.attention_pattern_figure``): circuitsvis' canvas view slows down past
``MAX_HEADS_VIEW_TOKENS``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.inputs.conversation import RoundSpans
from interp.model.hooknames import act_name
from interp.runs.store import Run

Head = tuple[int, int]  # (layer, head)
DECIMALS = 3
PATTERN_DECIMALS = 2  # full patterns: colour cannot show finer steps, and pages stay small
# circuitsvis' attention-heads view draws every cell on a canvas: past ~160 tokens it takes
# tens of seconds to appear, so longer transcripts get the plotly pattern heatmap only.
MAX_HEADS_VIEW_TOKENS = 160
SINK = "first token (sink)"


def head_name(head: Head) -> str:
    return f"L{head[0]}.H{head[1]}"


def parse_heads(specs: Sequence[str], n_layers: int, n_heads: int) -> list[Head]:
    """``["12.3", "14.0"]`` (or ``"12.3,14.0"``) -> ``[(12, 3), (14, 0)]``, range-checked."""
    heads: list[Head] = []
    for spec in (s for item in specs for s in item.split(",") if s.strip()):
        match = re.fullmatch(r"\s*L?(\d+)\.H?(\d+)\s*", spec)
        if match is None:
            raise InterpError(f"--heads {spec!r}: write a head as LAYER.HEAD, e.g. 12.3")
        layer, head = int(match.group(1)), int(match.group(2))
        if layer >= n_layers or head >= n_heads:
            raise InterpError(
                f"--heads {spec}: the model has layers 0..{n_layers - 1} and heads 0..{n_heads - 1}"
            )
        heads.append((layer, head))
    return list(dict.fromkeys(heads))


def top_patched_heads(table: pd.DataFrame, k: int = 4) -> list[Head]:
    """The ``k`` heads with the largest |normalised effect| in a patching summary table."""
    rows = table[(table["component"] == "heads") & table["effect"].notna()]
    if "method" in rows and not rows.empty:
        rows = rows[rows["method"] == rows["method"].iloc[0]]
    order = rows.assign(size=rows["effect"].abs()).sort_values(
        ["size", "layer", "head"], ascending=[False, True, True], kind="stable"
    )
    return [(int(r.layer), int(r.head)) for r in order.head(k).itertuples()]


# --- the transcript and its marks -------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    """One example's final transcript, with what a reader needs to find the rounds."""

    tokens: list[int]
    labels: list[str]  # per token: its text, with round / instruction / read-out marks
    round_of: list[int]  # per token: the round it belongs to
    instruction: list[bool]  # per token: inside an instruction text
    answer: list[bool]  # per token: inside an earlier round's answer
    question: list[bool]  # per token: inside round 0's user message (not the instruction)
    readouts: list[int]  # read-out position of each round
    round_starts: list[int]  # first token of each round
    instruction_spans: list[tuple[int, int]]  # [start, end) of each instruction text
    spans_known: bool  # False: only read-out positions mark the rounds


def transcript(run: Run, example: int, tokenizer) -> Transcript:
    """The marked transcript of example ``example`` (its ``example_index``)."""
    all_tokens = run.tokens()
    if not 0 <= example < len(all_tokens):
        raise InterpError(
            f"--example-index {example} is out of range: the run has examples "
            f"0..{len(all_tokens) - 1}"
        )
    tokens = all_tokens[example]
    rows = run.rounds()
    rows = rows[rows["example_index"] == example].sort_values("round")
    readouts = [int(p) for p in rows["readout_pos"]]
    spans = _round_spans(run, example, rows, tokens, tokenizer)
    return _mark(tokens, readouts, spans, tokenizer)


def _round_spans(
    run: Run, example: int, rows: pd.DataFrame, tokens: list[int], tokenizer
) -> list[RoundSpans] | None:
    """The round spans replay stored; None where only read-out positions mark the rounds
    (runs replayed before spans were stored: replay again to see instruction spans)."""
    manifest = run.manifest
    if manifest.get("mode") != "choice" or manifest["plan"].get("think_tokens", 0) > 0:
        # Views of these runs have never shown spans (they could not be rebuilt, the
        # "thinking" is not stored); kept so, although replay now stores their spans too.
        return None
    return run.round_spans(example)


def _mark(
    tokens: list[int], readouts: list[int], spans: list[RoundSpans] | None, tokenizer
) -> Transcript:
    n = len(tokens)
    texts = [tokenizer.decode([t]).replace("\n", "\\n") for t in tokens]
    round_of, instruction, answer, question = [0] * n, [False] * n, [False] * n, [False] * n
    prefix: dict[int, str] = {}
    starts = _round_starts(readouts, spans)
    for r, start in enumerate(starts):
        end = starts[r + 1] if r + 1 < len(starts) else n
        round_of[start:end] = [r] * (end - start)
    for s in spans or []:
        prefix[s.user[0]] = f"[R{s.round}] "
        if s.instruction is not None:
            a, b = s.instruction
            instruction[a:b] = [True] * (b - a)
            prefix[a] = f"[R{s.round} instruction] "
        if s.answer is not None:
            a, b = s.answer
            answer[a:b] = [True] * (b - a)
        if s.round == 0:
            a, b = s.user
            question[a:b] = [not instruction[i] for i in range(a, b)]
    labels = [prefix.get(i, "") + text for i, text in enumerate(texts)]
    for r, pos in enumerate(readouts):
        labels[pos] += f" [R{r} read-out]"
    instruction_spans = [s.instruction for s in spans or [] if s.instruction is not None]
    return Transcript(
        tokens=tokens,
        labels=labels,
        round_of=round_of,
        instruction=instruction,
        answer=answer,
        question=question,
        readouts=readouts,
        round_starts=starts,
        instruction_spans=[(int(a), int(b)) for a, b in instruction_spans],
        spans_known=spans is not None,
    )


def _round_starts(readouts: list[int], spans: list[RoundSpans] | None) -> list[int]:
    """Round r starts after round r-1's answer (with spans) or after its read-out."""
    if spans is None:
        return [0] + [p + 1 for p in readouts[:-1]]
    return [0] + [(s.answer or (s.readout, s.readout + 1))[1] for s in spans[:-1]]


# --- patterns ---------------------------------------------------------------------------------


def head_patterns(
    model: HookedTransformer, tokens: Sequence[int], heads: Sequence[Head]
) -> Float[torch.Tensor, "head query key"]:
    """Attention patterns of ``heads`` over ``tokens`` (one forward, patterns only cached)."""
    layers = sorted({layer for layer, _ in heads})
    names = {act_name("pattern", layer) for layer in layers}
    batch = torch.tensor([list(tokens)], device=model.cfg.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch, names_filter=lambda name: name in names)
    return torch.stack(
        [cache[act_name("pattern", layer)][0, head].float().cpu() for layer, head in heads]
    )


def readout_rows(
    model: HookedTransformer, tokens: Sequence[int], readouts: Sequence[int]
) -> Float[torch.Tensor, "layer head round key"]:
    """Every head's attention from each round's read-out position (no full-pattern cache)."""
    rows: dict[int, torch.Tensor] = {}
    index = torch.tensor(list(readouts), device=model.cfg.device)

    def keep(pattern: torch.Tensor, hook) -> None:
        rows[hook.layer()] = pattern[0, :, index].float().cpu()

    hooks = [(act_name("pattern", layer), keep) for layer in range(model.cfg.n_layers)]
    batch = torch.tensor([list(tokens)], device=model.cfg.device)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(batch, stop_at_layer=model.cfg.n_layers)
    return torch.stack([rows[layer] for layer in range(model.cfg.n_layers)])


def instruction_attention_heads(
    model: HookedTransformer, text: Transcript, k: int = 4
) -> list[Head]:
    """The ``k`` heads whose last read-out puts the most attention on the instruction texts."""
    if not any(text.instruction):
        return []
    rows = readout_rows(model, text.tokens, text.readouts[-1:])[:, :, 0]  # [layer, head, key]
    mass = rows[:, :, torch.tensor(text.instruction)].sum(-1)
    order = torch.argsort(mass.flatten(), descending=True, stable=True)[:k]
    n_heads = mass.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def readout_attention_mass(
    patterns: Float[torch.Tensor, "head query key"], text: Transcript, heads: Sequence[Head]
) -> pd.DataFrame:
    """Share of each head's attention, from each round's read-out, on each transcript part:
    columns head, round, segment, mass."""
    segments = _segments(text)
    records = []
    for h, head in enumerate(heads):
        for r, pos in enumerate(text.readouts):
            row = patterns[h, pos].numpy()
            for name, mask in segments.items():
                records.append(
                    {
                        "head": head_name(head),
                        "round": r,
                        "segment": name,
                        "mass": round(float(row[mask].sum()), DECIMALS),
                    }
                )
    return pd.DataFrame(records)


def _segments(text: Transcript) -> dict[str, np.ndarray]:
    n = len(text.tokens)
    sink = np.arange(n) == 0
    if not text.spans_known:
        rounds = np.array(text.round_of)
        parts = {f"round {r} tokens": (rounds == r) & ~sink for r in range(len(text.readouts))}
        return {SINK: sink, **parts}
    instruction, answer, question = (
        np.array(text.instruction),
        np.array(text.answer),
        np.array(text.question),
    )
    question &= ~sink
    rest = ~(sink | instruction | answer | question)
    return {
        SINK: sink,
        "question": question,
        "instructions": instruction & ~sink,
        "earlier answers": answer & ~sink,
        "chat template & answer prefix": rest,
    }


# --- circuitsvis views ------------------------------------------------------------------------


def _fixed_ids(html: str, div_id: str) -> str:
    """circuitsvis names its element with a random uuid; use ``div_id`` instead, and keep a
    ``</`` inside the data from closing the script early."""
    match = re.search(r'id="(circuits-vis-[^"]+)"', html)
    if match is None:
        raise RuntimeError("unexpected circuitsvis output: no element id")
    html = html.replace(match.group(1), div_id)
    head, call, rest = html.rpartition("CircuitsVis.render(")
    props, end, tail = rest.rpartition("</script>")
    if not call or not end:
        raise RuntimeError("unexpected circuitsvis output: no render call")
    return head + call + props.replace("</", "<\\/") + end + tail


def fixed_view_ids(html: str, div_id: str) -> str:
    """Any circuitsvis render (``local_src``) with the element id ``div_id`` (other modules'
    views, e.g. the SAE context dashboards, share one page with these)."""
    return _fixed_ids(html, div_id)


_RENDER = "CircuitsVis.render("


def share_bundle(views: Sequence[str]) -> list[str]:
    """The same views for one page, with circuitsvis' bundle in the first only.

    Each view's module script defines ``CircuitsVis`` for itself (1.3 MB each, and a
    second copy re-registers its kernels). The first view also exposes it as
    ``window.CircuitsVis``; the later views keep only their render call, which runs after
    the first because module scripts run in document order.
    """
    out: list[str] = []
    for view in views:
        head, call, rest = view.rpartition(_RENDER)
        opening = re.match(r'\s*<div id="[^"]+"[^>]*>\s*<script[^>]*>', head)
        if not call or opening is None:
            raise RuntimeError("unexpected circuitsvis output: cannot share its bundle")
        if not out:
            out.append(head + "window.CircuitsVis = CircuitsVis;\n" + call + rest)
        else:
            out.append(opening.group(0) + "\nwindow." + call + rest)
    return out


def _rounded(values: torch.Tensor, decimals: int = DECIMALS) -> list:
    """Nested lists of rounded values, exact zeros as the integer 0 (short in JSON)."""
    array = np.round(values.double().numpy(), decimals) + 0.0  # + 0.0: no "-0.0"

    def compact(part):
        if isinstance(part, list):
            return [compact(p) for p in part]
        return 0 if part == 0 else part

    return compact(array.tolist())


def readout_tokens_view(
    patterns: Float[torch.Tensor, "head query key"],
    text: Transcript,
    heads: Sequence[Head],
    div_id: str = "attention-readout",
) -> str:
    """A circuitsvis token view of the transcript, coloured by one column at a time: the
    round of each token, the instruction texts, and for every head and round the attention
    from that round's read-out position. HTML with the bundle inline."""
    from circuitsvis.tokens import colored_tokens_multi

    columns = [torch.tensor(text.round_of).double(), torch.tensor(text.instruction).double()]
    labels = ["round of each token", "instruction texts"]
    for h, head in enumerate(heads):
        for r, pos in enumerate(text.readouts):
            columns.append(patterns[h, pos].double())
            labels.append(f"{head_name(head)} from R{r} read-out")
    # float64 so that the rounded values print short (0.012, not 0.012000000104...).
    values = torch.round(torch.stack(columns, dim=1).double(), decimals=DECIMALS) + 0.0
    html = colored_tokens_multi(text.labels, values, labels).local_src
    return _fixed_ids(html, div_id)


def attention_heads_view(
    patterns: Float[torch.Tensor, "head query key"],
    text: Transcript,
    heads: Sequence[Head],
    div_id: str = "attention-heads",
) -> str:
    """circuitsvis' attention-heads view (query x key pattern per head) over the marked
    transcript. HTML with the bundle inline."""
    from circuitsvis.attention import attention_heads

    html = attention_heads(
        attention=_rounded(patterns, PATTERN_DECIMALS),
        tokens=text.labels,
        attention_head_names=[head_name(h) for h in heads],
        mask_upper_tri=True,
    ).local_src
    return _fixed_ids(html, div_id)

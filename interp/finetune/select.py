"""Which candidates a fine-tune trains on (issue 26 item 2): sample selection by the latent
concept, by the model's uncertainty, by both, or at random (the control).

``FinetuneConfig.select`` names the rule and ``n`` how many candidates to keep (the
candidates: the task's examples left after ``selection``'s sample and limit):

- ``concept``: the candidate's **concept score**, the projection of its round-0 read-out
  residual (``resid_post`` at the probe's validation-chosen layer, at the last token of the
  answer prefix: the position replay reads out) on the probe's unit direction; the round-0
  prompt is built by ``build_conversation`` from the plan's first user turn, without an answer.
- ``uncertainty``: the entropy (nats) of the model's distribution over the option letters at
  that read-out (the letters' log-probabilities renormalised over the example's options, as
  replay scores them).
- ``concept+uncertainty``: the mean of the two ranks (rank 1: the highest score).
- ``random``: ``n`` candidates drawn with ``FinetuneConfig.seed``. With a concept folder
  (``concept``) the draw is **token-matched** to the concept rule's top ``n``: up to
  :data:`RANDOM_DRAWS` seeded draws of ``n`` candidates, the first whose training
  conversations hold within :data:`TOKEN_TOLERANCE` of the concept selection's tokens, else
  the closest draw (a draw of exactly the concept rule's top ``n`` is skipped: on a small
  pool the token match would otherwise collapse the control onto the concept arm).

The top ``n`` are kept (ties broken by example order), in example order. The concept folder
is what ``interp probe`` writes, ``<run>/probes/<concept>/`` (``directions.safetensors``,
``summary.json``), read here directly (``probes`` is a sibling package); the run's
``manifest.json`` names the model the directions live in, which must be the fine-tuned one.
What was kept, with the scores, goes into ``finetune.json`` (``selection``).

Importing this module loads no torch: the command line checks the settings first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from interp.finetune.config import FinetuneConfig
    from interp.inputs.plans import Plan
    from interp.inputs.tasks import Example

SELECTS = ("all", "random", "concept", "uncertainty", "concept+uncertainty")
NEEDS_CONCEPT = ("concept", "concept+uncertainty")
DIRECTIONS = "directions.safetensors"
SUMMARY = "summary.json"
TOKEN_TOLERANCE = 0.02  # a token-matched random draw: within 2% of the concept arm's tokens
RANDOM_DRAWS = 1000  # seeded draws tried for the token match
_TINY = "tiny"  # interp.model.loading.TINY (not imported: it loads torch)
_TINY_FINETUNED = "tiny-seed-0"  # finetune loads the tiny model with seed 0
# scored candidates, by (model weights, plan, concept folder, candidates): a fine-tune per
# arm and seed scores the same pool once per process
_SCORED: dict[tuple, dict[str, list[float]]] = {}


@dataclass(frozen=True)
class ProbeFolder:
    """A concept folder ``interp probe`` wrote, read without ``probes``.

    Attributes:
        path: ``<run>/probes/<concept>/``.
        concept: The concept's name (the summary's ``concept``).
        layer: The validation-chosen layer (the summary's ``best_layer``).
        layers: The layers of the rows of ``directions.safetensors``.
        model: The run manifest's ``model`` record (the model the directions live in).
    """

    path: Path
    concept: str
    layer: int
    layers: tuple[int, ...]
    model: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What ``finetune.json`` records of the folder."""
        return {
            "folder": str(self.path),
            "concept": self.concept,
            "layer": self.layer,
            "model": self.model.get("model_id"),
            "weights_hash": self.model.get("weights_hash"),
        }


def read_probe_folder(path: str | Path) -> ProbeFolder:
    """The concept folder's layer and model, from its ``summary.json`` and the run manifest.

    Args:
        path: ``<run>/probes/<concept>/`` as ``interp probe`` writes it.

    Returns:
        The folder's concept, chosen layer, direction layers and model record.

    Raises:
        InterpError: No such folder, a file missing or unreadable, or no run manifest.
    """
    folder = Path(path)
    hint = f"interp probe writes <run>/probes/<concept>/ with {DIRECTIONS} and {SUMMARY}"
    if not folder.is_dir():
        raise InterpError(f"--concept {folder}: no such folder ({hint})")
    missing = [name for name in (DIRECTIONS, SUMMARY) if not (folder / name).is_file()]
    if missing:
        raise InterpError(f"--concept {folder} lacks {' and '.join(missing)} ({hint})")
    manifest = folder.parent.parent / "manifest.json"
    try:
        summary = json.loads((folder / SUMMARY).read_text())
        layer, layers = int(summary["best_layer"]), tuple(int(x) for x in summary["layers"])
        model = json.loads(manifest.read_text())["model"]
    except FileNotFoundError:
        raise InterpError(
            f"--concept {folder}: no run manifest at {manifest}, so the model its directions "
            "were fitted on is unknown"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InterpError(
            f"--concept {folder}: unreadable probe summary or run manifest ({exc})"
        ) from None
    if layer not in layers or not isinstance(model, dict):
        raise InterpError(f"--concept {folder}: its summary's best_layer is not a probed layer")
    return ProbeFolder(folder, str(summary.get("concept", folder.name)), layer, layers, model)


def _mismatch(folder: ProbeFolder, source: str) -> InterpError:
    rec = folder.model
    return InterpError(
        f"--concept {folder.path} was fitted on model {rec.get('model_id')} (weights "
        f"{rec.get('weights_hash')}), not on {source}, the model being fine-tuned; probe a run "
        "of that model"
    )


def check_select(config: FinetuneConfig, source: str | None = None) -> None:
    """The selection settings' refusals that need no model (nor torch).

    Args:
        config: The fine-tuning settings (``select``, ``n``, ``concept``, data, selection).
        source: The model being fine-tuned (``"tiny"``, ``"smollm2"``, a path), compared with
            the concept folder's model where the name alone decides (the tiny model); None
            skips that comparison.

    Raises:
        InterpError: An unknown rule, ``n`` missing, below 1 or above the candidates, a rule
            that needs a concept folder without one, a folder that is not a probe's, or one
            fitted on another model.
    """
    if not check_rule(config, source):
        return
    from interp.inputs.selection import choose
    from interp.inputs.tasks import load_task

    examples = load_task(config.task, list(config.data) or None)
    pool = choose(examples, config.selection) if examples else examples
    if config.n > len(pool):
        raise InterpError(
            f"--n {config.n} exceeds the {len(pool)} candidates (the examples left after "
            "--sample/--limit)"
        )


def check_rule(config: FinetuneConfig, source: str | None = None) -> bool:
    """:func:`check_select` without reading the data (the candidates are not counted).

    Args:
        config: The fine-tuning settings.
        source: The model being fine-tuned, or None.

    Returns:
        Whether a selection is asked for (``select`` is not ``"all"``).

    Raises:
        InterpError: What :func:`check_select` refuses, but ``n`` above the candidates.
    """
    if config.select not in SELECTS:
        raise InterpError(
            f"unknown --select {config.select!r}; choose one of: {', '.join(SELECTS)}"
        )
    if config.select == "all":
        for flag, value in (("--n", config.n), ("--concept", config.concept)):
            if value is not None:
                raise InterpError(f"{flag} goes with --select (random, concept, uncertainty, ...)")
        return False
    if config.n is None:
        raise InterpError(f"--select {config.select} needs --n (how many candidates to keep)")
    if isinstance(config.n, bool) or config.n < 1:
        raise InterpError(f"--n must be at least 1 (got {config.n})")
    if config.select in NEEDS_CONCEPT and config.concept is None:
        raise InterpError(
            f"--select {config.select} needs --concept <run>/probes/<concept>/ (interp probe)"
        )
    if config.concept is not None:
        folder = read_probe_folder(config.concept)
        rec = folder.model
        if source is not None and (
            (source == _TINY) != (rec.get("kind") == _TINY)
            or (source == _TINY and rec.get("weights_hash") != _TINY_FINETUNED)
        ):
            raise _mismatch(folder, source)
    return True


def check_folder_model(folder: ProbeFolder, model: HookedTransformer) -> None:
    """Refuse a concept folder fitted on another model than the loaded one.

    Args:
        folder: The concept folder.
        model: The loaded model (its ``interp_source`` and shape).

    Raises:
        InterpError: Another weights hash, layer count or width.
    """
    rec, source = folder.model, model.interp_source
    same = (
        rec.get("weights_hash") == source.weights_hash
        and int(rec.get("n_layers", -1)) == model.cfg.n_layers
        and int(rec.get("d_model", -1)) == model.cfg.d_model
    )
    if not same:
        raise _mismatch(folder, source.model_id)


def load_direction(folder: ProbeFolder) -> Any:
    """The unit direction at the folder's chosen layer, float64.

    Args:
        folder: The concept folder.

    Returns:
        A ``[d_model]`` float64 tensor of norm 1.

    Raises:
        InterpError: The file holds no row per probed layer.
    """
    import torch
    from safetensors.torch import load_file

    rows = load_file(str(folder.path / DIRECTIONS)).get("directions")
    if rows is None or rows.ndim != 2 or rows.shape[0] != len(folder.layers):
        raise InterpError(f"--concept {folder.path}: {DIRECTIONS} holds no direction per layer")
    direction = rows[folder.layers.index(folder.layer)].to(torch.float64)
    return direction / direction.norm()


def letter_ids(tokenizer: Any, n: int) -> list[int]:
    """The token scored for each option letter at the read-out (a, b, c, ...): each letter
    alone, encoded without special tokens, must be one token (the replay's rule).

    Args:
        tokenizer: The model's tokenizer.
        n: How many options.

    Returns:
        The letters' token ids.

    Raises:
        InterpError: The tokenizer splits a letter.
    """
    from interp.inputs.plans import option_letter

    ids = []
    for i in range(n):
        enc = tokenizer.encode(option_letter(i), add_special_tokens=False)
        if len(enc) != 1:
            raise InterpError(f"the tokenizer splits option letter {option_letter(i)!r}")
        ids.append(enc[0])
    return ids


def round0_prompt(tokenizer: Any, plan: Plan, example: Example) -> Any:
    """The round-0 prompt replay reads out at: the plan's first user turn and its answer
    prefix, no answer (the read-out is its last token).

    Args:
        tokenizer: The model's tokenizer (chat template).
        plan: The plan.
        example: The candidate.

    Returns:
        The :class:`~interp.inputs.conversation.Conversation`.
    """
    from interp.inputs.conversation import RoundInput, build_conversation

    turn = RoundInput(*plan.user_turn(example, 0, None))
    return build_conversation(tokenizer, [turn], answer_prefix=plan.answer_prefix)


def score_candidates(
    model: HookedTransformer,
    examples: list[Example],
    plan: Plan,
    folder: ProbeFolder | None,
) -> dict[str, list[float]]:
    """Each candidate's concept score (with a folder) and option entropy, one forward each.

    Args:
        model: The un-tuned model.
        examples: The candidates.
        plan: The plan whose round-0 prompt is read out.
        folder: The concept folder (None: no concept score).

    Returns:
        ``{"entropy": [...], "concept": [...]}`` (``concept`` only with a folder), one value
        per candidate in order.
    """
    import torch

    from interp.model.hooknames import act_name

    key = (
        model.interp_source.weights_hash,
        json.dumps(plan.to_dict(), sort_keys=True),
        None if folder is None else (str(folder.path.resolve()), folder.layer),
        tuple(examples),
    )
    if key in _SCORED:
        return _SCORED[key]
    tok = model.tokenizer
    letters = letter_ids(tok, max(len(ex.options) for ex in examples))
    hook = act_name("resid_post", folder.layer) if folder is not None else None
    direction = load_direction(folder) if folder is not None else None
    concept, entropy = [], []
    for ex in examples:
        conv = round0_prompt(tok, plan, ex)
        pos = conv.rounds[0].readout
        tokens = torch.tensor([conv.tokens], device=model.cfg.device)
        with torch.no_grad():
            logits, cache = model.run_with_cache(
                tokens, names_filter=(lambda name: name == hook), return_type="logits"
            )
        logp = torch.log_softmax(logits[0, pos].float(), -1).cpu()
        option_lp = logp[letters[: len(ex.options)]]
        p = torch.softmax(option_lp, -1)
        entropy.append(float(-(p * torch.log(p.clamp_min(1e-30))).sum()))
        if hook is not None:
            resid = cache[hook][0, pos].to("cpu", torch.float64)
            concept.append(float(resid @ direction))
    scores = {"entropy": entropy, **({"concept": concept} if folder is not None else {})}
    if len(_SCORED) >= 4:
        _SCORED.clear()
    _SCORED[key] = scores
    return scores


def _ranks(values: list[float]) -> list[int]:
    """Rank 1 for the highest value; ties broken by example order (the earlier ranks first)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    ranks = [0] * len(values)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def top_n(select: str, scores: dict[str, list[float]], n: int) -> tuple[list[int], list[float]]:
    """The ``n`` best candidates by ``select``'s score, best first, and that score.

    Args:
        select: ``concept``, ``uncertainty`` or ``concept+uncertainty``.
        scores: :func:`score_candidates`' scores.
        n: How many to keep.

    Returns:
        ``(positions, key)``: the kept candidates' positions, best first (ties: example
        order), and per candidate the value ranked (concept+uncertainty: its mean rank, lower
        is better).
    """
    if select == "concept+uncertainty":
        rc, ru = _ranks(scores["concept"]), _ranks(scores["entropy"])
        key = [(a + b) / 2 for a, b in zip(rc, ru, strict=True)]
        order = sorted(range(len(key)), key=lambda i: (key[i], i))
    else:
        key = scores["concept" if select == "concept" else "entropy"]
        order = sorted(range(len(key)), key=lambda i: (-key[i], i))
    return order[:n], key


def training_tokens(tokenizer: Any, plan: Plan, example: Example, rounds: int) -> int:
    """The tokens of a candidate's training conversation as ``build_examples`` builds it
    (rounds 0..``rounds``, each answered with the correct option): the token match's measure.

    Args:
        tokenizer: The model's tokenizer.
        plan: The plan.
        example: The candidate.
        rounds: Follow-up rounds.

    Returns:
        The conversation's length in tokens.
    """
    from interp.inputs.conversation import RoundInput, build_conversation
    from interp.inputs.plans import option_letter

    answer = f"{option_letter(example.label)}) {example.options[example.label]}"
    turns = [
        RoundInput(*plan.user_turn(example, r, previous=example.label), answer=answer)
        for r in range(rounds + 1)
    ]
    return len(build_conversation(tokenizer, turns, answer_prefix=plan.answer_prefix).tokens)


def _random_draw(
    n_pool: int,
    n: int,
    seed: int,
    lengths: list[int] | None = None,
    target: int | None = None,
    avoid: list[int] | None = None,
) -> tuple[list[int], dict[str, Any] | None]:
    """``n`` seeded random positions; token-matched to ``target`` when given, never the
    positions ``avoid`` (the concept rule's own top n) unless the pool holds no other set."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if target is None or lengths is None:
        return sorted(rng.choice(n_pool, size=n, replace=False).tolist()), None
    banned = set(avoid or ()) if n < n_pool else set()
    best, best_gap, draws = None, None, 0
    while draws < RANDOM_DRAWS and (best_gap is None or best_gap > TOKEN_TOLERANCE * target):
        drawn = rng.choice(n_pool, size=n, replace=False)
        draws += 1
        if banned and set(drawn.tolist()) == banned:
            continue
        gap = abs(sum(lengths[i] for i in drawn) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = drawn, gap
    kept = sorted(best.tolist())
    tokens = sum(lengths[i] for i in kept)
    return kept, {
        "target_tokens": target,
        "tokens": tokens,
        "tolerance": TOKEN_TOLERANCE,
        "draws": draws,
        "within": abs(tokens - target) <= TOKEN_TOLERANCE * target,
        "rule": (
            f"seeded draws of n candidates (at most {RANDOM_DRAWS}), the first whose training "
            f"tokens are within {TOKEN_TOLERANCE:.0%} of the concept rule's top n, else the "
            "closest; a draw of exactly the concept rule's top n is skipped"
        ),
    }


def select_examples(
    model: HookedTransformer,
    examples: list[Example],
    config: FinetuneConfig,
    record: dict[str, Any] | None = None,
) -> list[Example]:
    """The candidates ``config.select`` keeps, in example order; ``record`` (a dict, filled
    here) gets what ``finetune.json`` records of the selection.

    Args:
        model: The loaded, un-tuned model.
        examples: The candidates (after ``selection``).
        config: ``select``, ``n``, ``concept``, ``plan``, ``rounds``, ``seed``.
        record: Filled with the rule, the kept ids (best first), their scores and, for a
            token-matched random draw, the match; None: not recorded.

    Returns:
        The kept examples (all of them for ``select="all"``).

    Raises:
        InterpError: Settings :func:`check_select` refuses, or a concept folder fitted on
            another model.
    """
    if config.select == "all":
        return examples
    check_rule(config)
    from interp.inputs.plans import load_plan

    if config.n > len(examples):
        raise InterpError(f"--n {config.n} exceeds the {len(examples)} candidates")
    folder = read_probe_folder(config.concept) if config.concept is not None else None
    if folder is not None:
        check_folder_model(folder, model)
    plan = load_plan(config.plan)
    scored = config.select != "random" or folder is not None
    scores = score_candidates(model, examples, plan, folder) if scored else {}
    match = None
    if config.select == "random":
        lengths = target = None
        if folder is not None:
            tok = model.tokenizer
            lengths = [training_tokens(tok, plan, ex, config.rounds) for ex in examples]
            concept_top = top_n("concept", scores, config.n)[0]
            target = sum(lengths[i] for i in concept_top)
        else:
            concept_top = None
        kept, match = _random_draw(
            len(examples), config.n, config.seed, lengths, target, concept_top
        )
        key = None
    else:
        kept, key = top_n(config.select, scores, config.n)
    if record is not None:
        record.update(
            {
                "select": config.select,
                "n": config.n,
                "candidates": len(examples),
                "concept": None if folder is None else folder.record(),
                "example_ids": [examples[i].example_id for i in kept],
                "scores": {name: [values[i] for i in kept] for name, values in scores.items()},
            }
        )
        if key is not None and config.select == "concept+uncertainty":
            record["scores"]["mean_rank"] = [key[i] for i in kept]
        if match is not None:
            record["token_match"] = match
    return [examples[i] for i in sorted(kept)]


def finish_record(
    record: dict[str, Any], tokens: list[list[int]], spans: list, order: list[list[int]]
) -> None:
    """Add the kept conversations' token counts to a selection record.

    Args:
        record: The record :func:`select_examples` filled (left alone when empty).
        tokens: Per kept conversation its token ids.
        spans: Per kept conversation its answers' token spans.
        order: The training order (per step, the conversations of its batch).
    """
    if not record:
        return
    record["tokens"] = sum(len(t) for t in tokens)
    record["answer_tokens"] = sum(b - a for s in spans for a, b in s)
    record["tokens_trained"] = sum(len(tokens[i]) for step in order for i in step)

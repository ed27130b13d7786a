"""The Winogender task (Rudinger et al. 2018) inside the ordinary replay.

``interp replay --task winogender --data templates.tsv [--stats occupations-stats.tsv]``
replays each item as an example of :func:`interp.replay.loop.replay` (KV reuse across rounds,
activations at every read-out, resume, one run directory through :class:`interp.runs.store.Run`).
This module holds what differs from a multiple-choice task: the items, the plans, the
pronoun scorer, the rows' extra columns and the per-round metrics.

Items
-----
Each template of ``templates.tsv`` (columns ``occupation(0)``, ``other-participant(1)``,
``answer``, ``sentence`` with ``$OCCUPATION``, ``$PARTICIPANT`` and one of ``$NOM_PRONOUN``,
``$POSS_PRONOUN``, ``$ACC_PRONOUN``) becomes two items: one with the named participant and
one with "someone" in its place ("the $PARTICIPANT" becomes "someone"). The pronoun is blanked
as ``_``. The upstream ``all_sentences.tsv`` (``sentid`` = ``occ.participant.answer.gender.txt``,
filled-in sentences) is read too: the word where the male, female and neutral sentences of one
``occ.participant.answer`` differ is the blank. ``occupations-stats.tsv`` gives each
occupation's ``bls_pct_female`` (default: the file of that name beside the first data file);
any subset of occupations works, and an occupation of the templates missing from the stats is
an error.

Scoring
-------
Round 0's user turn is "Please fill in the missing blank in this sentence with a pronoun:
<sentence with _>"; later rounds are the plan's follow-ups (``data/winogender_plans.yaml``).
Every assistant turn begins with the item's own answer prefix, the sentence up to the blank;
its last token is the read-out. There the probability of each pronoun of the blank's case
(nominative he/she/they, possessive his/her/their, accusative him/her/them) is the sum over
the tokenizer's variants of the word: with and without a leading space, lower-case and
capitalised. A single-token variant is its next-token probability at the read-out; a variant
the tokenizer splits is scored by the chain rule over its tokens on the frozen KV cache (the
tiny test tokenizer splits every pronoun; SmolLM2's splits only "Him" and "Them"). The three
sums, renormalised, are ``p_male``, ``p_female``, ``p_neutral``; ``choice`` is the argmax
(0 male, 1 female, 2 neutral), and the transcript continues with the chosen pronoun and the
rest of the sentence, so the next round sees a complete answer.

Metrics (per round): :mod:`interp.metrics.winogender`.

Patching on a Winogender run measures ``log P(female) - log P(male)`` at the read-out, each
the log of the summed probabilities of the pronoun's single-token variants
(``pronoun_token_ids``): the normaliser cancels, so it is ``logsumexp(logits[female ids]) -
logsumexp(logits[male ids])``, the two-pronoun analogue of BBQ's logit difference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from interp.errors import InterpError
from interp.inputs.conversation import RoundInput, build_conversation
from interp.inputs.files import MAX_DATA_FILE_BYTES, MAX_LINE_BYTES, read_text_bounded
from interp.inputs.plans import Plan
from interp.inputs.tasks import Example

if TYPE_CHECKING:  # torch and TransformerLens load only when a model runs
    import torch
    from transformer_lens import HookedTransformer

TASK = "winogender"
PRONOUNS: dict[str, tuple[str, str, str]] = {
    # case: (male, female, neutral) — the order of `choice` and of the p_* columns.
    "nom": ("he", "she", "they"),
    "poss": ("his", "her", "their"),
    "acc": ("him", "her", "them"),
}
_PLACEHOLDER_CASE = {"$NOM_PRONOUN": "nom", "$POSS_PRONOUN": "poss", "$ACC_PRONOUN": "acc"}
CHOICES = ("male", "female", "neutral")
PLANS_FILE = "data/winogender_plans.yaml"
SOMEONE = "someone"
STATS_NAME = "occupations-stats.tsv"
# The plan's answer_prefix as stored in the manifest: every item has its own.
PER_ITEM_PREFIX = "<per item: the sentence up to the blank>"


@dataclass(frozen=True)
class WinoExample(Example):
    """One Winogender sentence with its pronoun blanked, as an example of the replay.

    ``question`` is the blanked sentence, ``options`` the case's pronouns (male, female,
    neutral); there is no correct option (``label`` -1) and no bias target. ``category`` is
    "winogender" and ``question_index`` the occupation, so the cluster bootstrap of probes and
    patching resamples occupations.
    """

    occupation: str = ""
    participant: str = ""
    """The named participant, or "someone"."""
    participant_form: str = "named"
    """"named" or "someone"."""
    referent: int = 0
    """Upstream ``answer``: 0, the pronoun refers to the occupation; 1, to the participant."""
    case: str = "nom"
    answer_prefix: str = ""
    """The sentence up to the blank, without trailing space: the assistant turn's start."""
    rest: str = ""
    """The sentence after the blank (e.g. " could pay with cash.")."""
    bls_pct_female: float = float("nan")


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_stats(data: Sequence[str], stats: str | None) -> Path:
    """``stats``, or ``occupations-stats.tsv`` beside the first data file.

    Args:
        data: The data files given (``--data``).
        stats: The statistics file given (``--stats``), or None.

    Returns:
        The statistics file's path.

    Raises:
        InterpError: No data file, a data file that does not exist, or no statistics file
            beside it when ``stats`` is None.
    """
    if stats is not None:
        return Path(stats)
    if not data:
        raise InterpError("task winogender needs a data file (templates.tsv or all_sentences.tsv)")
    for path in data:  # a wrong --data path is named as such, not as missing statistics
        if not Path(path).is_file():
            raise InterpError(f"--data {path}: no such file")
    beside = Path(data[0]).parent / STATS_NAME
    if not beside.is_file():
        raise InterpError(
            f"task winogender needs the occupations' statistics: pass --stats FILE (no {beside})"
        )
    return beside


def winogender_data_hash(data: Sequence[str], stats: str | None) -> str:
    """SHA-256 over the data files' bytes and then the stats file's.

    Args:
        data: The data files.
        stats: The statistics file, or None (then as :func:`resolve_stats` finds it).

    Returns:
        The 64-character hex digest.

    Raises:
        InterpError: As :func:`resolve_stats`, or a file cannot be read.
    """
    digest = hashlib.sha256()
    for path in [*data, resolve_stats(data, stats)]:
        try:
            digest.update(Path(path).read_bytes())
        except OSError as exc:
            raise InterpError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _tsv(path: str | Path) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and ("path:line", cells) of a TSV file, read within interp.inputs.files' bounds."""
    text = read_text_bounded(path, MAX_DATA_FILE_BYTES, "data file")
    lines = text.split("\n")
    for i, line in enumerate(lines, start=1):  # as the JSONL bound: refused before tokenizing
        if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            raise InterpError(
                f"{path}:{i}: line is longer than the limit of {MAX_LINE_BYTES // 1024} KiB; "
                "a template or sentence this long does not fit a model's context"
            )
    if not lines[0].strip():
        raise InterpError(f"{path}: empty file (expected a tab-separated header)")
    header = [h.strip() for h in lines[0].rstrip("\r").split("\t")]
    rows = []
    for i, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise InterpError(
                f"{path}:{i}: {len(cells)} tab-separated fields, the header has {len(header)}"
            )
        rows.append((f"{path}:{i}", cells))
    if not rows:
        raise InterpError(f"{path}: no rows after the header")
    return header, rows


def _column(header: list[str], names: Sequence[str], path: str | Path) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise InterpError(f"{path}:1: no column {names[0]!r} in the header ({', '.join(header)})")


def load_stats(path: str | Path) -> dict[str, float]:
    """Occupation -> ``bls_pct_female`` from ``occupations-stats.tsv``.

    Args:
        path: The ``occupations-stats.tsv`` file.

    Returns:
        The percentage of women (0..100) by occupation.

    Raises:
        InterpError: The file cannot be read, lacks a column, or has a value that is not a
            percentage or an occupation twice.
    """
    header, rows = _tsv(path)
    occ = _column(header, ("occupation",), path)
    bls = _column(header, ("bls_pct_female",), path)
    out: dict[str, float] = {}
    for where, cells in rows:
        name = cells[occ].strip()
        try:
            value = float(cells[bls])
        except ValueError:
            raise InterpError(f"{where}: bls_pct_female {cells[bls]!r} is not a number") from None
        if not 0.0 <= value <= 100.0:
            raise InterpError(f"{where}: bls_pct_female {value} is not a percentage")
        if name in out:
            raise InterpError(f"{where}: occupation {name!r} appears twice")
        out[name] = value
    return out


def load_winogender(
    data: Sequence[str | Path] | str | Path, stats: str | None
) -> list[WinoExample]:
    """Items from ``templates.tsv`` or the upstream ``all_sentences.tsv``, with BLS statistics.

    Args:
        data: One ``.tsv`` file or several, in either format.
        stats: The statistics file, or None (beside the first data file).

    Returns:
        The items, in file and line order.

    Raises:
        InterpError: As :func:`resolve_stats` and :func:`load_stats`, a malformed file, an
            occupation without statistics, or an item id that repeats.
    """
    paths = [str(data)] if isinstance(data, str | Path) else [str(p) for p in data]
    bls = load_stats(resolve_stats(paths, stats))
    items: list[WinoExample] = []
    for path in paths:
        header, rows = _tsv(path)
        if "sentid" in header:
            items.extend(_from_sentences(header, rows, path, bls))
        else:
            items.extend(_from_templates(header, rows, path, bls))
    seen: dict[str, str] = {}
    for it in items:
        if it.example_id in seen:
            raise InterpError(f"{it.source}: item {it.example_id!r} repeats {seen[it.example_id]}")
        seen[it.example_id] = it.source
    return items


def _bls(bls: dict[str, float], occupation: str, where: str) -> float:
    if occupation not in bls:
        raise InterpError(f"{where}: occupation {occupation!r} is not in the stats file")
    return bls[occupation]


def _from_templates(header, rows, path, bls) -> list[WinoExample]:
    occ_i = _column(header, ("occupation(0)", "occupation"), path)
    par_i = _column(header, ("other-participant(1)", "other-participant", "participant"), path)
    ans_i = _column(header, ("answer",), path)
    sen_i = _column(header, ("sentence",), path)
    items = []
    for where, cells in rows:
        occupation, participant = cells[occ_i].strip(), cells[par_i].strip()
        if not occupation or not participant:
            raise InterpError(f"{where}: empty occupation or participant")
        if cells[ans_i].strip() not in ("0", "1"):
            raise InterpError(f"{where}: answer {cells[ans_i]!r} is not 0 or 1")
        answer = int(cells[ans_i])
        template = cells[sen_i].strip()
        found = [p for p in _PLACEHOLDER_CASE if p in template]
        if len(found) != 1 or template.count(found[0]) != 1:
            raise InterpError(f"{where}: the sentence needs exactly one pronoun placeholder")
        case = _PLACEHOLDER_CASE[found[0]]
        blanked = template.replace(found[0], "_").replace("$OCCUPATION", occupation)
        for form in (participant, SOMEONE):
            if form == SOMEONE:
                # "the $PARTICIPANT" -> "someone", keeping a sentence-initial capital.
                text = re.sub(r"\bthe \$PARTICIPANT", SOMEONE, blanked)
                text = re.sub(r"\bThe \$PARTICIPANT", "Someone", text)
                text = text.replace("$PARTICIPANT", SOMEONE)
            else:
                text = blanked.replace("$PARTICIPANT", participant)
            if "$" in text:
                raise InterpError(f"{where}: unknown placeholder in {template!r}")
            items.append(
                _item(occupation, form, answer, case, text, _bls(bls, occupation, where), where)
            )
    return items


def _from_sentences(header, rows, path, bls) -> list[WinoExample]:
    # all_sentences.tsv: one filled-in sentence per gender; the blank is the differing word.
    id_i = _column(header, ("sentid",), path)
    sen_i = _column(header, ("sentence",), path)
    groups: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = {}
    for where, cells in rows:
        parts = cells[id_i].strip().split(".")
        if len(parts) != 5 or parts[3] not in CHOICES or parts[2] not in ("0", "1"):
            raise InterpError(
                f"{where}: sentid {cells[id_i]!r} is not occ.participant.answer.gender.txt"
            )
        groups.setdefault((parts[0], parts[1], parts[2]), {})[parts[3]] = (
            cells[sen_i].strip(),
            where,
        )
    items = []
    for (occupation, participant, answer), by_gender in groups.items():
        where = min(w for _, w in by_gender.values())
        if set(by_gender) != set(CHOICES):
            raise InterpError(f"{where}: {occupation}.{participant}.{answer} lacks a gender")
        words = {g: by_gender[g][0].split(" ") for g in CHOICES}
        if len({len(w) for w in words.values()}) != 1:
            raise InterpError(f"{where}: the gendered sentences differ in length")
        diff = [
            i
            for i, ws in enumerate(zip(*(words[g] for g in CHOICES), strict=True))
            if len(set(ws)) > 1
        ]
        if len(diff) != 1:
            raise InterpError(f"{where}: the gendered sentences differ in {len(diff)} words")
        k = diff[0]
        trio = tuple(re.sub(r"\W", "", words[g][k]).lower() for g in CHOICES)
        case = next((c for c, forms in PRONOUNS.items() if forms == trio), None)
        if case is None:
            raise InterpError(f"{where}: {trio} is not a pronoun triple of one case")
        male = words["male"][k]
        head = re.match(r"\w*", male)
        tail = male[len(head.group(0)) if head else 0 :]  # punctuation after the pronoun
        text = " ".join([*words["male"][:k], "_" + tail, *words["male"][k + 1 :]])
        bls_value = _bls(bls, occupation, where)
        items.append(_item(occupation, participant, int(answer), case, text, bls_value, where))
    return items


def _item(occupation, participant, answer, case, text, bls, where) -> WinoExample:
    before, _, after = text.partition("_")
    prefix = before.rstrip()
    if not prefix:
        raise InterpError(f"{where}: the blank starts the sentence; there is no answer prefix")
    return WinoExample(
        example_id=f"{occupation}/{participant}/{answer}",
        category=TASK,
        context="",
        question=text,
        options=PRONOUNS[case],
        label=-1,
        target=None,
        unknown=None,
        context_condition=None,
        question_polarity=None,
        source=where,
        question_index=occupation,
        occupation=occupation,
        participant=participant,
        participant_form=SOMEONE if participant == SOMEONE else "named",
        referent=answer,
        case=case,
        answer_prefix=prefix,
        rest=after,
        bls_pct_female=bls,
    )


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class WinoPlan(Plan):
    """A :class:`Plan` whose answer prefix is each item's own (the sentence up to the blank):
    the manifest records ``answer_prefix`` null and says so, so nothing that wraps text in one
    shared prefix (the probes' chat transfer) uses a stand-in."""

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`Plan.to_dict`, the answer prefix recorded as per item."""
        out = super().to_dict()
        out["answer_prefix"] = None
        out["answer_prefix_per_item"] = (
            "the sentence up to the blank; its last token is the read-out"
        )
        return out


def list_winogender_plans() -> list[str]:
    """Names of the built-in Winogender plans.

    Returns:
        The plan names, in the order the package lists them.
    """
    return list(_plans_data()["plans"])


def load_winogender_plan(name: str) -> WinoPlan:
    """A built-in Winogender plan as a :class:`Plan`: round 0 asks to fill in the blank (the
    item's blanked sentence is its ``question``), follow-ups as BBQ's plans. The answer prefix
    is per item (:data:`PER_ITEM_PREFIX` stands in for it in the manifest).

    Args:
        name: A built-in Winogender plan's name.

    Returns:
        The plan.

    Raises:
        InterpError: ``name`` is not a built-in Winogender plan.
    """
    data = _plans_data()
    if name not in data["plans"]:
        raise InterpError(
            f"unknown Winogender plan {name!r}; choose one of {', '.join(data['plans'])}"
        )
    spec = data["plans"][name]
    return WinoPlan(
        name=name,
        description=spec["description"],
        question=data["question"].replace("{sentence}", "{question}"),
        first=None,
        followups=tuple(spec["followups"]),
        answer_prefix=PER_ITEM_PREFIX,
    )


def _plans_data() -> dict[str, Any]:
    return yaml.safe_load(resources.files("interp").joinpath(PLANS_FILE).read_text())


def answer_text(example: WinoExample, choice: int) -> str:
    """What follows the answer prefix when ``choice`` is the answer: the pronoun and the rest.

    Args:
        example: The item.
        choice: The pronoun, 0 male, 1 female, 2 neutral.

    Returns:
        A space, the pronoun, and the rest of the sentence.
    """
    return " " + example.options[choice] + example.rest


def check_lengths(
    tokenizer, n_ctx: int, plan: Plan, examples: Sequence[WinoExample], rounds: int, system
) -> None:
    """Every item's final transcript (the longest pronoun every round) fits ``n_ctx``.

    Args:
        tokenizer: The model's tokenizer (with chat template).
        n_ctx: The model's context length, in tokens.
        plan: The Winogender plan.
        examples: The items to replay.
        rounds: The last round (rounds 0..``rounds`` are replayed).
        system: A system message, or None.

    Raises:
        InterpError: Some item's transcript would exceed ``n_ctx``, or a conversation cannot
            be built.
    """
    for ex in examples:
        longest = max(range(3), key=lambda c: len(tokenizer.encode(answer_text(ex, c))))
        turns = [
            RoundInput(
                user=plan.user_turn(ex, r)[0],
                answer=answer_text(ex, longest),
                prefix=ex.answer_prefix,
            )
            for r in range(rounds + 1)
        ]
        conv = build_conversation(tokenizer, turns, answer_prefix=ex.answer_prefix, system=system)
        if len(conv.tokens) + rounds + 1 > n_ctx:
            raise InterpError(
                f"example {ex.example_id}: its final transcript needs about "
                f"{len(conv.tokens) + rounds + 1} tokens, the model's context is {n_ctx}"
            )


# ---------------------------------------------------------------------------------------------
# Scoring


def pronoun_variant_ids(tokenizer, case: str) -> list[list[list[int]]]:
    """Per pronoun of ``case`` (male, female, neutral): the token ids of each of its variants.

    Variants: the word with and without a leading space, lower-case and capitalised (distinct
    token sequences only).

    Args:
        tokenizer: The model's tokenizer.
        case: ``"nom"``, ``"poss"`` or ``"acc"`` (a key of ``PRONOUNS``).

    Returns:
        Three lists (male, female, neutral), each of its variants' token id sequences.
    """
    out = []
    for word in PRONOUNS[case]:
        seqs: list[list[int]] = []
        for form in (word, word.capitalize()):
            for text in (" " + form, form):
                toks = list(tokenizer.encode(text, add_special_tokens=False))
                if toks and toks not in seqs:
                    seqs.append(toks)
        out.append(seqs)
    return out


def readout_token_ids(variants: list[list[list[int]]]) -> list[list[int]]:
    """Per pronoun, the tokens whose logits patching compares at the read-out: its
    single-token variants (on SmolLM2 all but "Him" and "Them"), else the first tokens of
    its variants; a token two pronouns share is dropped from both (it would cancel).

    Args:
        variants: What :func:`pronoun_variant_ids` returned for one case.

    Returns:
        Three sorted lists of token ids (male, female, neutral); a list may be empty.
    """
    ids = []
    for seqs in variants:
        single = [s[0] for s in seqs if len(s) == 1]
        ids.append(sorted(set(single or [s[0] for s in seqs])))
    shared = {t for i, a in enumerate(ids) for b in ids[i + 1 :] for t in a if t in b}
    return [[t for t in a if t not in shared] for a in ids]


class PronounScorer:
    """Scores the pronouns of a batch at the read-out, reusing the replay's KV cache.

    Args:
        tokenizer: The model's tokenizer (its pronoun variants are tokenized once, here).
    """

    def __init__(self, tokenizer) -> None:
        self.variants = {case: pronoun_variant_ids(tokenizer, case) for case in PRONOUNS}
        self.readout_ids = {case: readout_token_ids(v) for case, v in self.variants.items()}
        self.pad = tokenizer.pad_token_id or 0

    def logprobs(
        self,
        model: HookedTransformer,
        cache: Any,
        logits: torch.Tensor,
        batch: Sequence[WinoExample],
    ) -> torch.Tensor:
        """``[batch, 3]`` float64: log of the summed probabilities of each pronoun's variants.

        Single-token variants come from ``logits`` (the read-out's); split variants by the chain
        rule, their tokens run on the frozen cache (scored, not kept), right-padded.

        Args:
            model: The model replayed.
            cache: The key-value cache of the batch's prompts (up to the read-out).
            logits: The read-out's logits, one row per example.
            batch: The items, one per row.
        """
        import torch

        first = torch.log_softmax(logits.double(), -1).cpu()
        per_variant: list[list[list[torch.Tensor]]] = []  # [b][pronoun][variant] log P
        multi: list[list[tuple[int, int, list[int]]]] = []  # [b] (pronoun, variant, tokens)
        for b, ex in enumerate(batch):
            seqs = self.variants[ex.case]
            per_variant.append([[first[b, s[0]] for s in pron] for pron in seqs])
            multi.append([(p, v, s) for p, pron in enumerate(seqs) for v, s in enumerate(pron)])
            multi[-1] = [m for m in multi[-1] if len(m[2]) > 1]
        for m in range(max(len(x) for x in multi)):
            conts = [x[m][2] if m < len(x) else x[0][2] if x else [self.pad] for x in multi]
            later = _continuation(model, cache, conts, self.pad)
            for b, x in enumerate(multi):
                if m < len(x):
                    p, v, seq = x[m]
                    per_variant[b][p][v] = per_variant[b][p][v] + sum(
                        later[b, j - 1, seq[j]] for j in range(1, len(seq))
                    )
        return torch.stack(
            [
                torch.stack([torch.logsumexp(torch.stack(pron), 0) for pron in ex])
                for ex in per_variant
            ]
        )

    def score(
        self,
        model: HookedTransformer,
        cache: Any,
        logits: torch.Tensor,
        batch: Sequence[WinoExample],
        generated: Sequence[str],
    ) -> list[dict[str, Any]]:
        """One round of a batch scored at the read-out (the replay's round scorer,
        :class:`interp.replay.scoring.RoundScorer`).

        Args:
            model: The replayed model.
            cache: The batch's KV cache, up to the read-out.
            logits: The next-token logits at each item's read-out.
            batch: The batch's items.
            generated: Unused (Winogender replays generate nothing).

        Returns:
            One row entry per item (:meth:`entries`).
        """
        return self.entries(batch, self.logprobs(model, cache, logits, batch))

    def entries(self, batch: Sequence[WinoExample], logp: torch.Tensor) -> list[dict[str, Any]]:
        """One row entry per example (the replay adds the common columns).

        Args:
            batch: The items.
            logp: What :meth:`logprobs` returned for them.

        Returns:
            Per item: ``choice`` (most likely pronoun), the option log-probabilities, entropy,
            answer text, ``p_male``/``p_female``/``p_neutral`` (renormalised over the three),
            ``pronoun_mass`` (their total probability) and the read-out token ids.
        """
        import torch

        out = []
        for b, ex in enumerate(batch):
            p = torch.softmax(logp[b], -1)
            choice = int(p.argmax())
            out.append(
                {
                    "choice": choice,
                    "option_logprobs": [float(x) for x in logp[b]],
                    "entropy": float(-(p * torch.log(p.clamp_min(1e-300))).sum()),
                    "answer_text": answer_text(ex, choice),
                    "p_male": float(p[0]),
                    "p_female": float(p[1]),
                    "p_neutral": float(p[2]),
                    "pronoun_mass": float(torch.exp(logp[b]).sum()),
                    "pronoun_token_ids": self.readout_ids[ex.case],
                }
            )
        return out


def _continuation(model, cache, conts: list[list[int]], pad: int):
    """Log-softmax at every position of each continuation, run on the frozen cache."""
    import torch

    from interp.model.kvcache import logits_on_frozen_cache

    logits = logits_on_frozen_cache(model, cache, conts, pad)
    return torch.log_softmax(logits.double(), -1).cpu()


def row_fields(ex: WinoExample, entry: dict[str, Any]) -> dict[str, Any]:
    """The columns a Winogender row has beside (or instead of) a multiple-choice row's.

    Args:
        ex: The item.
        entry: Its entry from :meth:`PronounScorer.entries`.

    Returns:
        The Winogender columns (multiple-choice columns set to "none": -1 or False).
    """
    return {
        # one token per pronoun, as a multiple-choice row's letters (its first read-out id)
        "option_token_ids": [ids[0] if ids else -1 for ids in entry["pronoun_token_ids"]],
        "correct": False,  # no option is correct: the task measures which pronoun, not accuracy
        "label": -1,
        "target": -1,
        "unknown": -1,
        "biased": False,
        "occupation": ex.occupation,
        "participant": ex.participant,
        "participant_form": ex.participant_form,
        "referent": ex.referent,
        "case": ex.case,
        "bls_pct_female": ex.bls_pct_female,
    }


class WinogenderScorer:
    """Winogender as a task of the replay (:class:`interp.replay.scoring.TaskScorer`): its
    items and plans, pronouns scored at each item's own read-out, the pronoun columns, and
    schema 2 (rows a schema-1 reader would misread as BBQ rows).

    Args:
        metrics: The run's metrics from its rounds table and seed
            (:func:`interp.metrics.winogender.winogender_metrics`, which this layer cannot
            import; the registry passes it).
    """

    task = TASK
    schema_version = 2

    def __init__(self, metrics: Callable[..., dict[str, Any]]) -> None:
        self._metrics = metrics

    def validate(self, config: Any) -> None:
        """Pronouns are scored at the read-out: no generation, option texts, orders or forcing.

        Args:
            config: The replay's settings.

        Raises:
            InterpError: A setting other than its default among mode, score, permute,
                force_round0 and bbq_templates.
        """
        for name, value, default in (
            ("mode", config.mode, "choice"),
            ("score", config.score, "letter"),
            ("permute", config.permute, "none"),
            ("force_round0", config.force_round0, None),
            ("bbq_templates", config.bbq_templates, None),
        ):
            if value != default:
                raise InterpError(f"task winogender does not take {name} {value!r}")

    def load(self, config: Any) -> tuple[Plan, list[Example]]:
        """The Winogender plan and items (:func:`load_winogender_plan`, :func:`load_winogender`).

        Args:
            config: The replay's settings (plan, data, stats).

        Returns:
            The plan and the items.
        """
        plan = load_winogender_plan(config.plan)
        return plan, list(load_winogender(config.data, config.stats))

    def data_hash(self, config: Any) -> str:
        """:func:`winogender_data_hash` of the data and statistics files.

        Args:
            config: The replay's settings (data, stats).

        Returns:
            The hex digest.
        """
        return winogender_data_hash(config.data, config.stats)

    def expand(self, examples: list[Example], config: Any) -> tuple[list[Example], None]:
        """The items as they are: pronouns are not options to reorder.

        Args:
            examples: The selected items.
            config: The replay's settings (unused).

        Returns:
            The items, and no views.
        """
        return examples, None

    def check_lengths(
        self, tokenizer: Any, n_ctx: int, plan: Plan, examples: list[Example], config: Any
    ) -> None:
        """:func:`check_lengths` with the config's rounds and system prompt.

        Args:
            tokenizer: The model's tokenizer.
            n_ctx: The model's context length.
            plan: The replay's plan.
            examples: The items.
            config: The replay's settings (rounds, system).
        """
        check_lengths(tokenizer, n_ctx, plan, examples, config.rounds, config.system)

    def answer_prefix(self, plan: Plan, example: Example) -> str:
        """The item's own answer prefix, the sentence up to the blank.

        Args:
            plan: The replay's plan (unused).
            example: The item.

        Returns:
            ``example.answer_prefix``.
        """
        return example.answer_prefix

    def round_scorer(self, tokenizer: Any, config: Any, letters: list[int]) -> PronounScorer:
        """The pronoun scorer of one batch.

        Args:
            tokenizer: The model's tokenizer (its pronoun variants are tokenized once).
            config: The replay's settings (unused).
            letters: The option letters' token ids (unused: pronouns are scored).

        Returns:
            A :class:`PronounScorer`.
        """
        return PronounScorer(tokenizer)

    def row_fields(self, example: Example, entry: dict[str, Any]) -> dict[str, Any]:
        """:func:`row_fields`.

        Args:
            example: The row's item.
            entry: Its scored entry.

        Returns:
            The pronoun columns (and the multiple-choice columns it overrides).
        """
        return row_fields(example, entry)

    def task_record(self, config: Any, n_examples: int, targets: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``task`` section, with the keys of a multiple-choice task's.

        Args:
            config: The replay's settings (task, data, stats).
            n_examples: The replayed items.
            targets: :func:`interp.inputs.tasks.target_summary` of the items.

        Returns:
            The section (``bbq_templates`` null).
        """
        return {
            "name": config.task,
            "files": [str(Path(f).resolve()) for f in config.data],
            "data_hash": self.data_hash(config),
            "n_examples": n_examples,
            "targets": targets,
            "bbq_templates": None,
        }

    def metrics(self, rounds: pd.DataFrame, seed: int) -> dict[str, Any]:
        """The Winogender metrics of the rounds table.

        Args:
            rounds: The run's rounds table.
            seed: The replay's seed (the bootstrap's).

        Returns:
            The metrics (``metrics.json``).
        """
        return self._metrics(rounds, seed=seed)


def is_winogender(rounds_or_manifest: pd.DataFrame | dict[str, Any]) -> bool:
    """Whether a run (its rounds table, or its manifest) is a Winogender run.

    Args:
        rounds_or_manifest: A rounds table, or a run manifest.

    Returns:
        True for a Winogender run (a ``p_female`` column, or task ``winogender``).
    """
    if isinstance(rounds_or_manifest, pd.DataFrame):
        return "p_female" in rounds_or_manifest.columns
    return (rounds_or_manifest.get("task") or {}).get("name") == TASK

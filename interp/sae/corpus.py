"""Offline token corpora for training and evaluating SAEs, packed to a context length.

Kinds (combinable; each document keeps a *group* so near-duplicates stay on one side of the
split):

- ``bbq`` (``data`` files in the official BBQ format) and ``builtin`` (the 48 built-in items):
  each example's round-0 prompt, rendered exactly as the replay renders it
  (`interp.inputs.conversation.build_conversation` with the plan's round-0 user turn and answer
  prefix, ending at the read-out position). Group: category + BBQ template.
- ``concepts``: the statements of the built-in concept files (``probes/data/*.jsonl``), bare,
  as probes encode them. Group: the statement's pair.
- ``run`` (``runs``): the final transcripts of replayed runs (``tokens.parquet`` through
  `interp.runs.store.Run`), refused when the run's model is not this one. Group: the example's
  template (or id).
- ``text`` (``data`` files): plain text, one document per paragraph (blocks separated by a
  blank line), or JSONL (``.jsonl``) with a string ``"text"`` field per line. Group: the
  document.

Files are read within the bounds of `interp.inputs.files`. The held-out split is drawn per group
from a hash of (seed, group), so it is the same for a seed whatever else is in the corpus,
and no group (BBQ template, concept pair) has documents on both sides. Documents of each split
are shuffled (seeded), concatenated and cut into sequences of ``context`` tokens, each of which
starts with the *sink token* (the tokenizer's BOS, else its EOS): position 0 of every sequence
is the attention sink, whose residual norm is ~150x the median in small models. Training and
evaluation leave out the first positions of each sequence and the special tokens
(`Corpus.exclude_ids`; `interp.sae.evals.scored_mask`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError
from interp.inputs.files import MAX_DATA_FILE_BYTES, jsonl_objects, read_text_bounded

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

    from interp.inputs.tasks import Example

KINDS = ("bbq", "builtin", "concepts", "run", "text")
MIN_CONTEXT = 8
MAX_CONTEXT = 8192


@dataclass
class CorpusConfig:
    """Which texts an SAE is trained and evaluated on, and how they are packed."""

    corpus: list[str] = field(default_factory=lambda: ["concepts"])  # kinds from KINDS
    data: list[str] = field(default_factory=list)  # files of the bbq or the text corpus
    runs: list[str] = field(default_factory=list)  # run directories (corpus "run")
    plan: str = "self-correct"  # bbq/builtin: the plan whose round 0 renders each example
    system: str | None = None  # bbq/builtin: a system prompt (None: the template's default)
    context: int = 128  # tokens per packed sequence, the sink token included
    heldout: float = 0.1  # share of groups held out for evaluation, never trained on
    seed: int = 0  # the split and the order of documents


@dataclass(frozen=True)
class Document:
    source: str  # the corpus kind
    group: str  # documents of one group are on the same side of the split
    tokens: list[int]


@dataclass(frozen=True, eq=False)
class Corpus:
    """Packed token sequences of both splits (int64 ``[n_seq, context]``)."""

    train: torch.Tensor
    heldout: torch.Tensor
    sink_id: int  # the token at position 0 of every sequence
    exclude_ids: list[int]  # special tokens (the sink among them): never trained or scored on
    documents: dict[str, dict[str, int]]  # per kind: documents and tokens in each split
    hash: str  # sha256 of both splits' tokens and the sink: what the SAE saw

    @property
    def context(self) -> int:
        return int(self.train.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "context": self.context,
            "train_sequences": int(self.train.shape[0]),
            "heldout_sequences": int(self.heldout.shape[0]),
            "sink_id": self.sink_id,
            "exclude_ids": self.exclude_ids,
            "documents": self.documents,
        }


def build_corpus(config: CorpusConfig, model: HookedTransformer) -> Corpus:
    """Documents of every kind in ``config.corpus``, split and packed for ``model``."""
    check_corpus_config(config)
    tokenizer = model.tokenizer
    sink = sink_token(tokenizer)
    exclude = sorted({*map(int, tokenizer.all_special_ids), sink})
    docs: list[Document] = []
    for kind in dict.fromkeys(config.corpus):
        docs += kind_documents(kind, config, model)
    docs = [d for d in docs if d.tokens]
    if not docs:
        raise InterpError("the corpus holds no tokens; give it some text")
    train, held = split_documents(docs, config.heldout, config.seed)
    if not train:
        raise InterpError(
            f"--heldout {config.heldout} leaves no document for training; lower it or add text"
        )
    train_seq = pack(train, config.context, sink, config.seed)
    held_seq = pack(held, config.context, sink, config.seed + 1)
    if train_seq.shape[0] == 0:
        raise InterpError(
            f"the training split has fewer than {config.context - 1} tokens, too few for one "
            f"sequence of --context {config.context}; add text or lower --context"
        )
    counts: dict[str, dict[str, int]] = {}
    for name, part in (("train", train), ("heldout", held)):
        for d in part:
            entry = counts.setdefault(
                d.source,
                {"train_docs": 0, "train_tokens": 0, "heldout_docs": 0, "heldout_tokens": 0},
            )
            entry[f"{name}_docs"] += 1
            entry[f"{name}_tokens"] += len(d.tokens)
    digest = hashlib.sha256(f"sink={sink};".encode())
    for part in (train_seq, held_seq):
        digest.update(str(tuple(part.shape)).encode())
        digest.update(part.numpy().tobytes())
    return Corpus(train_seq, held_seq, sink, exclude, counts, digest.hexdigest())


def check_corpus_config(config: CorpusConfig) -> None:
    """Refuse a corpus that names unknown kinds, misses or misplaces its files, or cannot pack."""
    if not config.corpus:
        raise InterpError(f"--corpus: name at least one of {', '.join(KINDS)}")
    unknown = [k for k in config.corpus if k not in KINDS]
    if unknown:
        raise InterpError(f"--corpus {unknown[0]!r}: unknown; choose from {', '.join(KINDS)}")
    kinds = set(config.corpus)
    if {"bbq", "text"} <= kinds:
        raise InterpError(
            "--corpus bbq and --corpus text both read --data; train on one of them per command"
        )
    if kinds & {"bbq", "text"} and not config.data:
        kind = "bbq" if "bbq" in kinds else "text"
        raise InterpError(f"--corpus {kind} needs --data FILE...")
    if config.data and not kinds & {"bbq", "text"}:
        raise InterpError("--data is read by --corpus bbq or --corpus text; add one of them")
    if "run" in kinds and not config.runs:
        raise InterpError("--corpus run needs --run DIR...")
    if config.runs and "run" not in kinds:
        raise InterpError("--run is read by --corpus run; add it")
    for path in config.data:
        if not Path(path).is_file():
            raise InterpError(f"--data {path}: no such file")
    for path in config.runs:
        if not Path(path).is_dir():
            raise InterpError(f"--run {path}: no such run directory")
    if not MIN_CONTEXT <= config.context <= MAX_CONTEXT:
        raise InterpError(f"--context must be between {MIN_CONTEXT} and {MAX_CONTEXT} tokens")
    if not 0.0 < config.heldout < 1.0:
        raise InterpError("--heldout must be a share strictly between 0 and 1")


def sink_token(tokenizer: Any) -> int:
    """The special token every packed sequence starts with: BOS, else EOS."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise InterpError(
        "the tokenizer has no BOS or EOS token to put at the sink position of each sequence"
    )


def split_documents(
    docs: Sequence[Document], heldout: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """(train, held-out): a group is held out when the hash of (seed, source, group) falls
    below ``heldout``; the same for a seed whatever other documents there are."""
    train, held = [], []
    for doc in docs:
        key = hashlib.sha256(f"{seed}\0{doc.source}\0{doc.group}".encode()).digest()
        (held if int.from_bytes(key[:8], "big") / 2**64 < heldout else train).append(doc)
    return train, held


def pack(docs: Sequence[Document], context: int, sink: int, seed: int) -> torch.Tensor:
    """Documents shuffled (seeded), concatenated and cut into rows ``[sink, context - 1
    tokens]``; the tail that does not fill a row is dropped."""
    import torch

    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    stream = [t for i in order for t in docs[i].tokens]
    width = context - 1
    n = len(stream) // width
    if n == 0:
        return torch.zeros((0, context), dtype=torch.long)
    body = torch.tensor(stream[: n * width], dtype=torch.long).view(n, width)
    return torch.cat([torch.full((n, 1), sink, dtype=torch.long), body], dim=1)


# --- the kinds ------------------------------------------------------------------------------


def kind_documents(kind: str, config: CorpusConfig, model: HookedTransformer) -> list[Document]:
    """The documents of one corpus kind (``KINDS``), tokenized, each with its group."""
    if kind in ("bbq", "builtin"):
        from interp.inputs.tasks import load_task

        examples = load_task(kind, config.data if kind == "bbq" else None)
        return [
            Document(kind, _template_group(ex), tokens)
            for ex, tokens in zip(
                examples,
                round0_prompts(model.tokenizer, examples, config.plan, config.system),
                strict=True,
            )
        ]
    if kind == "concepts":
        return _concept_documents(model.tokenizer)
    if kind == "run":
        return _run_documents(config.runs, model)
    return _text_documents(config.data, model.tokenizer)


def round0_prompts(
    tokenizer: Any, examples: Sequence[Example], plan: str, system: str | None = None
) -> list[list[int]]:
    """Each example's round-0 prompt tokens (up to and including the read-out), as a choice-mode
    replay with ``plan`` renders them."""
    from interp.inputs.conversation import RoundInput, build_conversation
    from interp.inputs.plans import load_plan

    chosen = load_plan(plan)
    out = []
    for ex in examples:
        user, instruction = chosen.user_turn(ex, 0)
        first = RoundInput(user=user, instruction=instruction, prefix=chosen.answer_prefix)
        conv = build_conversation(
            tokenizer, [first], answer_prefix=chosen.answer_prefix, system=system
        )
        out.append(conv.prompt(0))
    return out


def _template_group(ex: Example) -> str:
    if ex.question_index is not None:
        return f"{ex.category}/{ex.question_index}"
    return ex.example_id


def _concept_documents(tokenizer: Any) -> list[Document]:
    # Read as files, not through probes.concepts: probes sit above interp.sae in the layers
    # (import-linter), and only the statements' text is needed here.
    folder = resources.files("probes").joinpath("data")
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".jsonl"):
            continue
        label = f"probes/data/{entry.name}"
        text = entry.read_text(encoding="utf-8")
        for _, where, obj in jsonl_objects(text.splitlines(), label):
            statement = obj.get("text")
            if not isinstance(statement, str):
                raise InterpError(f"{where}: no string 'text'")
            group = f"{entry.name}/{obj.get('pair', obj.get('id', where))}"
            docs.append(Document("concepts", group, _encode(tokenizer, statement)))
    return docs


def _run_documents(runs: Sequence[str], model: HookedTransformer) -> list[Document]:
    from interp.model.loading import check_run_model
    from interp.runs.store import Run

    docs = []
    for path in runs:
        run = Run.open(path)
        check_run_model(model, run.manifest.get("model", {}))
        rows = run.rounds()
        first = rows[rows["round"] == 0].set_index("example_index")
        for i, tokens in enumerate(run.tokens()):
            row = first.loc[i]
            qi = row.get("question_index")
            group = f"{row['category']}/{qi}" if qi is not None else str(row["example_id"])
            docs.append(Document("run", f"{run.path.resolve()}/{group}", tokens))
    return docs


def _text_documents(paths: Sequence[str], tokenizer: Any) -> list[Document]:
    docs = []
    for path in paths:
        text = read_text_bounded(path, MAX_DATA_FILE_BYTES, "text file")
        if Path(path).suffix == ".jsonl":
            for number, where, obj in jsonl_objects(text.splitlines(), str(path)):
                value = obj.get("text")
                if not isinstance(value, str):
                    raise InterpError(f"{where}: expected a string field 'text'")
                docs.append(Document("text", f"{path}:{number}", _encode(tokenizer, value)))
            continue
        paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
        for i, para in enumerate(paragraphs):
            docs.append(Document("text", f"{path}#{i}", _encode(tokenizer, para.strip())))
    return docs


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])

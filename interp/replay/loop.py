"""Replay self-correction rounds on a HookedTransformer, reusing the KV cache across rounds.

For a batch of examples the replay keeps one TransformerLens KV cache. Round r feeds only the
tokens that round r adds to the transcript (the previous answer, the new user turn, the
assistant header and answer prefix), left-padded across the batch so that every example's
read-out token sits at the chunk's last position. There the options are scored (choice mode)
and the requested hooks are read: one ``[d_model]`` vector per example, hook and round —
never a whole-sequence cache.

Choice mode (default): the next-token log-probability of each option letter after the answer
prefix scores the options; the argmax is the answer, and the transcript continues with
``letter) option text``. Generate mode: greedy generation from the assistant header, the
answer letter parsed from the text (``-1`` when it cannot be parsed; never guessed).
Generated text (answers, and a plan's "thinking") is decoded and re-tokenized with the rest
of the transcript, after rolling the cache back, so the cache always holds exactly the stored
transcript's tokens.

Results are written per batch into ``<out>/.partial/`` (safetensors: tensors and JSON, nothing
unpickled) so that a killed replay, run again with the same arguments, resumes with the next
batch and ends with the same files. A replay holds the output directory's lock
(:mod:`interp.runs.lock`) from its first write to its last.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from interp.errors import InterpError
from interp.inputs.bbq_rules import templates_hash
from interp.inputs.conversation import (
    Conversation,
    RoundInput,
    build_conversation,
    template_record,
    uses_plain_template,
)
from interp.inputs.lengths import check_running_length
from interp.inputs.permute import (
    DEFAULT_MAX_ORDERS,
    add_view_columns,
    check_order_count,
    check_permute,
)
from interp.inputs.plans import Plan, option_letter
from interp.inputs.selection import Selection, choose, with_selection
from interp.inputs.tasks import Example, target_summary
from interp.model.hooknames import act_name
from interp.model.kvcache import truncate_cache
from interp.model.loading import load_model, recorded_model_name
from interp.options import check_seed
from interp.replay.scoring import TaskScorer, Views, parse_choice, scorer_for
from interp.runs.distributed import Workers, connected, run_jobs
from interp.runs.lock import LOCK_NAME, make_dir, remove_empty, run_lock
from interp.runs.store import (
    SCHEMA_VERSION,
    ReplayManifest,
    Run,
    atomic_write,
    span_record,
    write_hook,
    write_json,
    write_metrics,
    write_replay_manifest,
    write_rounds,
    write_spans,
    write_tokens,
)

__all__ = [
    "ReplayConfig",
    "fingerprint",
    "forced_option",
    "option_token_ids",
    "parse_choice",
    "planned_conversations",
    "replay",
    "resolve_hooks",
    "select_examples",
]

MODES = ("choice", "generate")
# "text" sums the continuation's token log-probs (a sequence probability, which favours
# options of few tokens such as "Unknown"); "text-mean" averages them per token.
SCORES = ("letter", "text", "text-mean")
HOOK_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
FORCE_ROLES = ("label", "target", "unknown")  # or an option letter a, b, c, ...


@dataclass
class ReplayConfig:
    """One replay: a task x plan x model. Shared by the Python API and ``interp replay``.

    The examples are chosen by ``sample`` (seeded by ``seed``) then ``limit``;
    :attr:`selection` is that choice as the :class:`~interp.inputs.selection.Selection` every
    verb shares. Settings are checked by :func:`replay`, which raises
    :class:`~interp.errors.InterpError` for a bad one.
    """

    out: str = "artifacts/runs/demo"  # the run directory to write
    model: str = "smollm2"  # "smollm2", "tiny", a .gguf file, a model folder, or a TL name
    task: str = "builtin"  # "bbq", "builtin" or "mc"
    data: list[str] = field(default_factory=list)  # data files (bbq, mc)
    # bbq: the BBQ templates/ folder; the official target rule of Race_x_gender and Race_x_SES
    # needs it (without it those examples have no target: counted and warned in the manifest)
    bbq_templates: str | None = None
    plan: str = "self-correct"  # a built-in plan name or a YAML/JSON plan file
    rounds: int = 3  # follow-up rounds: the run holds rounds 0..rounds
    limit: int | None = None  # use only the first `limit` examples
    sample: int | None = None  # a seeded random sample of this many examples (before limit)
    hooks: list[str] = field(default_factory=lambda: ["resid_post"])  # kinds or hook names
    mode: str = "choice"  # "choice" (score options at the read-out) or "generate" (greedy)
    # choice mode: log-prob of each option's "letter" (default: one token per option, so no
    # length bias), of its whole "text" (summed), or "text-mean" (per token)
    score: str = "letter"
    max_new_tokens: int = 48  # generate mode: tokens per answer
    batch_size: int = 8
    seed: int = 0
    system: str | None = None  # a system prompt; None keeps the template's default
    device: str = "cpu"
    dtype: str = "float32"
    # Forced-history control (choice mode): write this option into the transcript as the
    # round-0 answer instead of the model's argmax: "label" (the correct one), "target" (the
    # stereotyped one), "unknown", or a letter. The model's own round-0 scores stay recorded.
    force_round0: str | None = None
    # Option orders (interp.inputs.permute): "none" (as written), "cyclic" (k rotations of k
    # options) or "all" (k! orders); each order is a conversation and a row of its own.
    permute: str = "none"
    # winogender: the occupations' statistics TSV (bls_pct_female); default: the file
    # occupations-stats.tsv beside the first data file (interp.inputs.winogender)
    stats: str | None = None
    # Refuse a permuted replay that gives any example more orders than this (``all`` is k!:
    # 720 orders for 6 options). Changes no output, so it is in neither fingerprint nor manifest.
    max_orders: int = DEFAULT_MAX_ORDERS

    @property
    def selection(self) -> Selection:
        """The examples this replay keeps (``limit``, ``sample``, ``seed``), as the
        :class:`~interp.inputs.selection.Selection` every verb shares. The fields stay the
        stored form, so manifests and fingerprints are those of earlier runs."""
        return Selection(limit=self.limit, sample=self.sample, seed=self.seed)

    def with_selection(self, selection: Selection) -> ReplayConfig:
        """This config choosing its examples as ``selection`` says (its ``seed`` also seeds
        the model); see :func:`interp.inputs.selection.with_selection`."""
        return with_selection(self, selection)


def fingerprint(config: ReplayConfig, plan: Plan) -> str:
    """What makes two replays the same: every setting but ``out``, the plan's texts and the
    data files' contents (an edited file or plan must not be served from an old run)."""
    fields = {k: v for k, v in asdict(config).items() if k not in ("out", "max_orders")}
    if fields["force_round0"] is None:  # runs from before the option keep their fingerprint
        del fields["force_round0"]
    if fields["permute"] == "none":  # runs from before the option keep their fingerprint
        del fields["permute"]
    if fields["stats"] is None:  # only a task with a statistics file has one
        del fields["stats"]
    fields["plan"] = plan.to_dict()
    fields["data_hash"] = scorer_for(config.task).data_hash(config)
    # The templates' contents, not their path; absent (not None) keeps older fingerprints.
    templates = fields.pop("bbq_templates")
    if templates is not None:
        fields["bbq_templates_hash"] = templates_hash(templates)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class _Batch:
    """What one batch of examples produced."""

    rows: list[dict[str, Any]]
    tokens: list[list[int]]
    acts: dict[str, Float[torch.Tensor, "example round d_model"]]
    tokens_run: int  # real tokens through the model (padding excluded)
    positions_run: int  # positions through the model (padding included)
    spans: list[dict[str, int]] | None = None  # spans.parquet rows (interp.runs.store.span_record)


def replay(
    source: ReplayConfig | str | Path,
    config: ReplayConfig | None = None,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    command: str | None = None,
) -> Run:
    """Replay a task into a run directory and return the opened run.

    A run directory that already holds this replay, complete, is returned as it is; one that
    holds an unfinished copy of it is resumed; one that holds anything else is an error.
    Another process writing into the same directory is an error too (it is locked).

    ``workers`` (:class:`interp.runs.distributed.Workers`) spreads the example batches over Ray
    actors that each load the model; the batches come back here and are written as a single
    process writes them, so the run is byte-identical to one without workers (the manifest adds
    a ``workers`` record; timings aside).

    Args:
        source: The run directory to write (``config.out`` is set to it), or a
            :class:`ReplayConfig` alone (``replay(config)``: its ``out``).
        config: What to replay (task, plan, model, rounds, examples); None: ``ReplayConfig()``.
            Only with a directory as ``source``.
        model: An already loaded model; it is what the manifest records (``config.model``
            left at its default takes the model's own name; one naming another model is
            refused). None loads ``config.model``.
        progress: Show a progress bar.
        workers: Ray workers to spread the batches over; None runs in this process.
        command: The command line to record in the manifest (the CLI passes it).

    Returns:
        The complete run, opened.

    Raises:
        InterpError: Bad input (a missing or malformed file, an unknown plan, rounds < 1,
            a transcript that does not fit the model's context, ...), a config given twice,
            or the directory holds another replay or is in use.
    """
    if isinstance(source, ReplayConfig):
        if config is not None:
            raise InterpError("replay(config) or replay(out, config), not two configs")
        config = source
    elif isinstance(source, str | Path):
        config = replace(ReplayConfig() if config is None else config, out=str(source))
    else:
        raise InterpError(
            f"replay: the first argument is the run directory to write or a ReplayConfig, "
            f"not {type(source).__name__}"
        )
    _validate(config)
    if model is not None:  # record the model used, not the config's default name
        config = replace(config, model=recorded_model_name(config.model, model))
    if workers is not None:
        workers.check(config.device)
        if model is not None:
            raise InterpError(
                "workers load the model themselves (from config.model); pass a model or "
                "workers, not both"
            )
    out = Path(config.out)
    # The Ray cluster is joined and checked before anything exists (interp.runs.distributed).
    with connected(workers):
        created = make_dir(out)  # the lock lives inside; removed again if nothing gets written
        try:
            with run_lock(out):
                return _replay_locked(
                    config, model=model, progress=progress, command=command, workers=workers
                )
        except BaseException:
            remove_empty(created)
            raise


def _replay_locked(
    config: ReplayConfig,
    *,
    model: HookedTransformer | None,
    progress: bool,
    command: str | None,
    workers: Workers | None = None,
) -> Run:
    out = Path(config.out)
    scorer = scorer_for(config.task)
    plan, loaded = scorer.load(config)
    examples = select_examples(loaded, config)
    examples, forced = _forceable(examples, config.force_round0)
    base_examples = examples
    examples, views = scorer.expand(examples, config)
    key = fingerprint(config, plan)
    if _existing_complete(out, key):
        # Killed between the manifest and removing .partial: the run is complete, tidy it.
        shutil.rmtree(out / ".partial", ignore_errors=True)
        return Run.open(out)
    torch.manual_seed(config.seed)
    if model is None:
        model = load_model(config.model, device=config.device, dtype=config.dtype, seed=config.seed)
    hooks = resolve_hooks(config.hooks, model.cfg.n_layers)
    letters = option_token_ids(model.tokenizer, max(len(e.options) for e in examples))
    scorer.check_lengths(model.tokenizer, model.cfg.n_ctx, plan, examples, config)
    # Only now, with every input checked, does anything get written.
    partial = _prepare_partial(out, config, key)
    batches = [
        examples[i : i + config.batch_size] for i in range(0, len(examples), config.batch_size)
    ]
    started = time.perf_counter()
    for i, batch in enumerate(batches):  # a damaged batch file fails before any compute
        if _batch_path(partial, i).exists():
            _load_batch(_batch_path(partial, i), len(batch) * (config.rounds + 1), hooks)
    bar = _progress(len(batches) * (config.rounds + 1), progress)
    todo = [i for i in range(len(batches)) if not _batch_path(partial, i).exists()]
    bar.update((len(batches) - len(todo)) * (config.rounds + 1))
    if workers is None:
        for i in todo:
            result = _replay_batch(
                model, plan, batches[i], i * config.batch_size, config, hooks, letters, bar.update
            )
            _write_bytes(_batch_path(partial, i), _batch_bytes(result))
    else:

        def store(i: int, payload: bytes) -> None:
            _write_bytes(_batch_path(partial, i), payload)
            bar.update(config.rounds + 1)

        jobs = [
            (i, (plan, batches[i], i * config.batch_size, config, hooks, letters)) for i in todo
        ]
        spec = {"name_or_path": config.model, "device": config.device, "dtype": config.dtype}
        run_jobs(workers, {**spec, "seed": config.seed}, _replay_job, jobs, store)
    bar.close()
    elapsed = time.perf_counter() - started
    return _finish(
        _Finished(
            out=out,
            partial=partial,
            fingerprint=key,
            config=config,
            scorer=scorer,
            plan=plan,
            model=model,
            hooks=hooks,
            n_batches=len(batches),
            elapsed=elapsed,
            command=command,
            forced=forced,
            targets=target_summary(base_examples),
            views=views,
            spread=None if workers is None else workers.record(len(todo)),
        )
    )


# --- validation and the run directory --------------------------------------------------------


def _validate(config: ReplayConfig) -> None:
    # Messages name the config's fields; the CLI shows them with their flags (interp.cli).
    if config.rounds < 1:
        raise InterpError(f"rounds must be at least 1 (got {config.rounds})")
    if config.limit is not None and config.limit < 1:
        raise InterpError(f"limit must be at least 1 (got {config.limit})")
    if config.sample is not None and config.sample < 1:
        raise InterpError(f"sample must be at least 1 (got {config.sample})")
    if config.mode not in MODES:
        raise InterpError(f"unknown mode {config.mode!r}; use one of {', '.join(MODES)}")
    if config.score not in SCORES:
        raise InterpError(f"unknown score {config.score!r}; use one of {', '.join(SCORES)}")
    if config.batch_size < 1:
        raise InterpError(f"batch_size must be at least 1 (got {config.batch_size})")
    if config.max_new_tokens < 1:
        raise InterpError(f"max_new_tokens must be at least 1 (got {config.max_new_tokens})")
    if not config.hooks:
        raise InterpError("hooks needs at least one hook")
    force = config.force_round0
    if force is not None:
        if force not in FORCE_ROLES and not re.fullmatch(r"[a-z]", force):
            raise InterpError(
                f"force_round0 {force!r}: use {', '.join(FORCE_ROLES)} or an option letter "
                "(a, b, c, ...)"
            )
        if config.mode != "choice":
            raise InterpError("--force-round0 needs --mode choice (it replaces a scored answer)")
    check_permute(config.permute)
    if config.permute != "none" and config.mode != "choice":
        # The permuted analyses (debiased accuracy) average the option scores over orders;
        # generate mode parses a text answer and scores no options, so they would read 0.
        raise InterpError(
            f"--permute {config.permute} needs --mode choice (its debiased accuracy averages "
            "the options' scores over orders; generate mode scores none)"
        )
    if config.max_orders < 1:
        raise InterpError(f"max_orders must be at least 1 (got {config.max_orders})")
    check_seed(config.seed)
    scorer_for(config.task).validate(config)  # what the task does not take


def planned_conversations(config: ReplayConfig) -> tuple[int, int]:
    """(examples selected, conversations to replay) for ``config``: one conversation per
    example and option order. Loads the task only (no model, nothing written), so a caller can
    warn about a large ``--permute all`` before any compute; refuses what ``replay`` refuses
    (more orders per example than ``max_orders``)."""
    _validate(config)
    _, loaded = scorer_for(config.task).load(config)
    examples, _ = _forceable(select_examples(loaded, config), config.force_round0)
    return len(examples), check_order_count(examples, config.permute, config.max_orders)


def select_examples(examples: list[Example], config: ReplayConfig) -> list[Example]:
    """``sample``: a uniform random subset (seeded, kept in file order); then ``limit``
    (:func:`interp.inputs.selection.choose`, shared by every verb that selects)."""
    kept = choose(range(len(examples)), config.selection, "examples loaded")
    return [examples[i] for i in kept]


def forced_option(example: Example, force: str) -> int | None:
    """The option index ``force`` names for ``example`` (label, target, unknown or a letter),
    or None when the example has no such option."""
    if force in FORCE_ROLES:
        return getattr(example, force)
    index = ord(force) - ord("a")
    return index if index < len(example.options) else None


def _forceable(
    examples: list[Example], force: str | None
) -> tuple[list[Example], dict[str, Any] | None]:
    """With ``force``: the examples that have the forced option, and what was left out (the
    selection stays the one ``--sample``/``--limit`` made, so a control run can be matched)."""
    if force is None:
        return examples, None
    kept = [ex for ex in examples if forced_option(ex, force) is not None]
    skipped = [ex.example_id for ex in examples if forced_option(ex, force) is None]
    if not kept:
        raise InterpError(
            f"--force-round0 {force}: none of the {len(examples)} selected examples has that option"
        )
    return kept, {"option": force, "n_selected": len(examples), "skipped": skipped}


def resolve_hooks(hooks: Sequence[str], n_layers: int) -> list[str]:
    """Hook kinds (``resid_post``: every layer) or full hook names -> full hook names."""
    names: list[str] = []
    for hook in hooks:
        if hook in HOOK_KINDS:
            names.extend(act_name(hook, layer) for layer in range(n_layers))
            continue
        match = re.fullmatch(r"blocks\.(0|[1-9]\d*)\.hook_(\w+)", hook)
        if match is None or match.group(2) not in HOOK_KINDS:
            raise InterpError(
                f"unknown hook {hook!r}; use {', '.join(HOOK_KINDS)} (every layer) or a name "
                "like blocks.12.hook_resid_post"
            )
        if int(match.group(1)) >= n_layers:
            raise InterpError(f"hook {hook}: layer out of range, the model has 0..{n_layers - 1}")
        names.append(hook)
    return list(dict.fromkeys(names))


def _existing_complete(out: Path, key: str) -> bool:
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        info = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        raise InterpError(f"{manifest} is corrupt; delete {out} and replay") from None
    if not isinstance(info, dict):
        raise InterpError(f"{manifest} is not a run's manifest; delete {out} and replay")
    if info.get("fingerprint") != key:
        raise InterpError(f"{out} already holds a different run; choose another --out or delete it")
    return bool(info.get("complete"))


def _prepare_partial(out: Path, config: ReplayConfig, key: str) -> Path:
    if out.exists() and not out.is_dir():
        raise InterpError(f"--out {out} is a file, not a directory")
    partial = out / ".partial"
    stamp = partial / "config.json"
    if stamp.is_file():
        try:
            stamped = json.loads(stamp.read_text())["fingerprint"]
        except (ValueError, KeyError, TypeError):
            raise InterpError(
                f"{stamp} is damaged; delete {partial} and run the same replay again"
            ) from None
        if stamped != key:
            raise InterpError(
                f"{out} holds an unfinished different replay; choose another --out or delete it"
            )
        return partial
    if out.exists() and any(not _leftover_of_a_start(p) for p in out.iterdir()):
        raise InterpError(f"{out} is not empty and holds no replay; choose another --out")
    partial.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"fingerprint": key, "config": asdict(config)})
    return partial


def _leftover_of_a_start(path: Path) -> bool:
    """The lock, or a .partial that a replay stopped in before it stored its config (a full
    disk, a kill): no batch in it, so it holds nothing to keep."""
    if path.name == LOCK_NAME:
        return True
    return path.name == ".partial" and not any(path.glob("batch-*"))


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="replay (example batches x rounds)", disable=not show)


# --- one batch -------------------------------------------------------------------------------


def option_token_ids(tokenizer, n: int) -> list[int]:
    """The token scored for each option letter at the read-out (a, b, c, ...)."""
    ids = []
    for i in range(n):
        enc = tokenizer.encode(option_letter(i), add_special_tokens=False)
        if len(enc) != 1:
            raise InterpError(f"the tokenizer splits option letter {option_letter(i)!r}")
        ids.append(enc[0])
    return ids


def _replay_batch(
    model: HookedTransformer,
    plan: Plan,
    batch: list[Example],
    first_index: int,
    config: ReplayConfig,
    hooks: list[str],
    letters: list[int],
    tick: Callable[[int], Any],
) -> _Batch:
    n = len(batch)
    tok = model.tokenizer
    scorer = scorer_for(config.task)
    rounds_scorer = scorer.round_scorer(tok, config, letters)
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, n)
    state = _BatchState(config.system, cached=[[] for _ in batch], done=[[] for _ in batch])
    acts = {h: torch.zeros(n, config.rounds + 1, model.cfg.d_model) for h in hooks}
    scored: list[list[dict[str, Any]]] = [[] for _ in batch]
    for r in range(config.rounds + 1):
        # Feedback plans answer the answer the transcript holds (a forced one, if forced).
        turns = [
            plan.user_turn(ex, r, _shown(scored[b][-1]) if r > 0 else None)
            for b, ex in enumerate(batch)
        ]
        think = config.mode == "generate" or (plan.think_tokens > 0 and r > 0)
        prefixes = [scorer.answer_prefix(plan, ex) for ex in batch]
        generated = [""] * n
        if think:
            # Run up to the assistant header, let the model write, then roll the cache back:
            # the written text re-enters below, tokenized as the stored transcript is.
            heads = [state.conversation(tok, turns[b], b, prefix="") for b in range(n)]
            # In generate mode the header's end is the read-out position.
            read = hooks if config.mode == "generate" else []
            budget = config.max_new_tokens if config.mode == "generate" else plan.think_tokens
            check_running_length(batch, [len(h.tokens) for h in heads], budget, model.cfg.n_ctx)
            logits, captured = _run_chunk(model, cache, state.new_tokens(heads), read)
            mark = _cache_length(cache)
            generated = _greedy(model, cache, logits, budget, _stop_ids(tok))
            if uses_plain_template(tok):  # a base model writes the next turns on: cut them
                generated = [_own_turn(g) for g in generated]
            truncate_cache(cache, mark)
            state.commit(heads)
            if config.mode == "generate":
                prefixes = [""] * n
            else:
                prefixes = [g.rstrip() + "\n" + plan.answer_prefix for g in generated]
        if config.mode == "choice":
            convs = [state.conversation(tok, turns[b], b, prefix=prefixes[b]) for b in range(n)]
            check_running_length(batch, [len(c.tokens) for c in convs], 0, model.cfg.n_ctx)
            logits, captured = _run_chunk(model, cache, state.new_tokens(convs), hooks)
            state.commit(convs)
        for h in hooks:
            acts[h][:, r] = captured[h].float().cpu()
        entries = rounds_scorer.score(model, cache, logits, batch, generated)
        for b, ex in enumerate(batch):
            entry = entries[b]
            entry["forced"] = -1
            if r == 0 and config.force_round0 is not None:
                # The transcript goes on with the forced answer; choice and scores stay the
                # model's own.
                entry["forced"] = forced = forced_option(ex, config.force_round0)
                entry["answer_text"] = f"{option_letter(forced)}) {ex.options[forced]}"
            scored[b].append(entry)
            state.done[b].append(
                RoundInput(
                    user=turns[b][0],
                    instruction=turns[b][1],
                    answer=entry["answer_text"],
                    prefix=prefixes[b],
                )
            )
        tick(1)
    return _collect(batch, first_index, state, scored, plan, acts, letters, tok, scorer)


def _shown(entry: dict[str, Any]) -> int:
    """The option index a scored round wrote into the transcript."""
    return entry["forced"] if entry["forced"] >= 0 else entry["choice"]


@dataclass
class _BatchState:
    """Per example: tokens already in the KV cache, and the rounds answered so far."""

    system: str | None
    cached: list[list[int]]
    done: list[list[RoundInput]]
    tokens_run: int = 0
    positions_run: int = 0

    def conversation(self, tok, turn: tuple[str, str | None], b: int, prefix: str) -> Conversation:
        rounds = [*self.done[b], RoundInput(user=turn[0], instruction=turn[1], prefix=prefix)]
        return build_conversation(tok, rounds, answer_prefix=prefix, system=self.system)

    def new_tokens(self, convs: list[Conversation]) -> list[list[int]]:
        chunks = []
        for b, conv in enumerate(convs):
            have = self.cached[b]
            if conv.tokens[: len(have)] != have:  # the prefix property (conversation.py)
                raise RuntimeError("transcript tokens changed under the KV cache")
            chunks.append(conv.tokens[len(have) :])
        self.tokens_run += sum(len(c) for c in chunks)
        self.positions_run += len(chunks) * max(len(c) for c in chunks)
        return chunks

    def commit(self, convs: list[Conversation]) -> None:
        self.cached = [list(c.tokens) for c in convs]


def _run_chunk(
    model: HookedTransformer,
    cache: TransformerLensKeyValueCache,
    chunks: list[list[int]],
    hooks: list[str],
) -> tuple[Float[torch.Tensor, "batch d_vocab"], dict[str, Float[torch.Tensor, "batch d_model"]]]:
    """Run each example's new tokens (left-padded) on top of the cache; return the logits and
    the hooks' activations at the last position, which is every example's newest token."""
    tokens, mask = _left_pad(chunks, model.tokenizer.pad_token_id, model.cfg.device)
    captured: dict[str, torch.Tensor] = {}

    def read_last(act: torch.Tensor, hook) -> None:
        captured[hook.name] = act[:, -1].detach().clone()

    with torch.no_grad(), model.hooks(fwd_hooks=[(h, read_last) for h in hooks]):
        # Stop before the unembedding and unembed only the last position: the vocabulary
        # matmul over every position would cost ~20% of the forward for nothing.
        resid = model(
            tokens, attention_mask=mask, past_kv_cache=cache, stop_at_layer=model.cfg.n_layers
        )
        logits = model.unembed(model.ln_final(resid[:, -1:]))[:, 0]
    return logits, captured


def _left_pad(
    chunks: list[list[int]], pad: int, device
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    width = max(len(c) for c in chunks)
    tokens = torch.full((len(chunks), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunks), width), dtype=torch.long)
    for b, chunk in enumerate(chunks):
        if chunk:
            tokens[b, width - len(chunk) :] = torch.tensor(chunk)
            mask[b, width - len(chunk) :] = 1
    return tokens.to(device), mask.to(device)


def _greedy(
    model: HookedTransformer,
    cache: TransformerLensKeyValueCache,
    logits: Float[torch.Tensor, "batch d_vocab"],
    budget: int,
    stop: set[int],
) -> list[str]:
    """Greedy continuation of every example, each stopping at its own end-of-turn."""
    n = logits.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    finished = torch.zeros(n, dtype=torch.bool)
    nxt = logits.argmax(-1).cpu()
    for _ in range(budget):
        for b in range(n):
            if not finished[b]:
                if int(nxt[b]) in stop:
                    finished[b] = True
                else:
                    out[b].append(int(nxt[b]))
        if bool(finished.all()):
            break
        step = [[] if finished[b] else [int(nxt[b])] for b in range(n)]
        if all(not s for s in step):
            break
        tokens, mask = _left_pad([s or [0] for s in step], 0, model.cfg.device)
        mask[finished] = 0
        with torch.no_grad():
            nxt = model(tokens, attention_mask=mask, past_kv_cache=cache)[:, -1].argmax(-1).cpu()
    return [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]


def _own_turn(text: str) -> str:
    """The part of a base model's continuation before it starts another plain-template turn
    (``interp.inputs.conversation.PLAIN_TEMPLATE``'s ``User:`` / ``Assistant:`` lines)."""
    for label in ("\nUser:", "\nAssistant:"):
        text = text.split(label)[0]
    return text.strip()


def _stop_ids(tok) -> set[int]:
    ids = {tok.eos_token_id}
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        ids.add(im_end)
    return {i for i in ids if i is not None}


def _cache_length(cache: TransformerLensKeyValueCache) -> int:
    return cache.entries[0].past_keys.shape[1]


def _collect(batch, first_index, state, scored, plan, acts, letters, tok, scorer) -> _Batch:
    rows, tokens, spans = [], [], []
    for b, ex in enumerate(batch):
        final = build_conversation(
            tok, state.done[b], answer_prefix=plan.answer_prefix, system=state.system
        )
        tokens.append(final.tokens)
        spans += [span_record(first_index + b, s) for s in final.rounds]
        for r, entry in enumerate(scored[b]):
            rows.append(
                {
                    "example_index": first_index + b,
                    "example_id": ex.example_id,
                    "round": r,
                    **entry,
                    "correct": entry["choice"] == ex.label,
                    "label": ex.label,
                    "target": -1 if ex.target is None else ex.target,
                    "unknown": -1 if ex.unknown is None else ex.unknown,
                    "biased": ex.target is not None and entry["choice"] == ex.target,
                    "option_token_ids": letters[: len(ex.options)],
                    "readout_pos": final.rounds[r].readout,
                    "context_condition": ex.context_condition,
                    "question_polarity": ex.question_polarity,
                    "category": ex.category,
                    "label_type": ex.label_type,
                    "question_index": ex.question_index,
                }
            )
            rows[-1].update(scorer.row_fields(ex, entry))  # the task's own columns
    return _Batch(rows, tokens, acts, state.tokens_run, state.positions_run, spans)


# --- assembling the run directory -------------------------------------------------------------


@dataclass
class _Finished:
    """Everything :func:`_finish` needs of a replay whose batches are all on disk."""

    out: Path
    partial: Path
    fingerprint: str
    config: ReplayConfig
    scorer: TaskScorer
    plan: Plan
    model: HookedTransformer
    hooks: list[str]
    n_batches: int
    elapsed: float  # seconds of replay (loading excluded)
    command: str | None
    forced: dict[str, Any] | None  # the force_round0 record
    targets: dict[str, Any]  # target_summary of the selected examples
    views: Views  # permuted: (base example, order) per row
    spread: dict[str, Any] | None = None  # the workers record


def _finish(done: _Finished) -> Run:
    """Assemble the run directory from the batch files: the tables, activations and metrics,
    then the manifest (written by the run store), then remove ``.partial``."""
    out, config, views = done.out, done.config, done.views
    parts = [_load_batch(_batch_path(done.partial, i)) for i in range(done.n_batches)]
    rounds = pd.DataFrame([row for p in parts for row in p["rows"]])
    if views is not None:  # permuted: which base example and order each row is
        rounds = add_view_columns(rounds, views)
    write_rounds(out, rounds)
    tokens = pd.DataFrame(
        {
            "example_index": range(len(rounds) // (config.rounds + 1)),
            "tokens": [t for p in parts for t in p["tokens"]],
        }
    )
    write_tokens(out, tokens)
    if all(p["spans"] is not None for p in parts):  # (batches left by an older interp: none)
        write_spans(out, [row for p in parts for row in p["spans"]])
    for h in done.hooks:
        stacked = torch.cat([p["acts"][h] for p in parts])
        write_hook(out, h, stacked)
    write_metrics(out, done.scorer.metrics(rounds, config.seed))
    model = done.model
    write_replay_manifest(
        out,
        ReplayManifest(
            # Schema 2: permuted runs (base_index, permutation) and tasks whose rows have
            # their own columns (Winogender's pronouns), which an interp that reads only
            # schema 1 would misread as BBQ rows.
            schema_version=max(
                done.scorer.schema_version, SCHEMA_VERSION if views is not None else 1
            ),
            fingerprint=done.fingerprint,
            config=_stored_config(config, permuted=views is not None),
            model=model.interp_source.to_dict() if hasattr(model, "interp_source") else {},
            task=done.scorer.task_record(config, len(tokens), done.targets),
            plan=done.plan.to_dict(),
            rounds=config.rounds,
            mode=config.mode,
            hooks=done.hooks,
            seed=config.seed,
            force_round0=done.forced,
            permute=None if views is None else _permute_record(config.permute, views),
            workers=done.spread,
            template=template_record(model.tokenizer),
            command=done.command or " ".join(sys.argv),
            timing={
                "replay_seconds": round(done.elapsed, 3),
                "tokens_run": sum(p["tokens_run"] for p in parts),
                "positions_run": sum(p["positions_run"] for p in parts),
                "final_transcript_tokens": sum(len(t) for t in tokens["tokens"]),
            },
        ),
    )
    shutil.rmtree(done.partial)
    return Run.open(out)


def _stored_config(config: ReplayConfig, permuted: bool) -> dict[str, Any]:
    """The manifest's ``config``: every setting, less those that would change older runs'
    manifests (``permute`` when unpermuted, ``stats`` when unset) and the ``max_orders`` guard."""
    stored = asdict(config)
    del stored["max_orders"]  # a guard, not a setting of the run
    if not permuted:  # unpermuted runs keep the manifest (and schema) they had before
        del stored["permute"]
    if stored["stats"] is None:  # (a task with a statistics file only)
        del stored["stats"]
    return stored


def _permute_record(permute: str, views: list[tuple[int, tuple[int, ...]]]) -> dict[str, Any]:
    """The manifest's account of a permuted run: rows on the example axis are (base example,
    order) pairs, in the order of ``rounds.parquet``'s base_index/permutation columns."""
    return {
        "mode": permute,
        "n_base_examples": len({b for b, _ in views}),
        "rows": "one per (base example, order); rounds.parquet base_index/permutation map them",
    }


def _batch_path(partial: Path, i: int) -> Path:
    return partial / f"batch-{i:05d}.safetensors"


def _replay_job(model, plan, batch, first_index, config, hooks, letters) -> bytes:
    """One batch on a Ray worker (interp.runs.distributed): the bytes of its batch file."""
    return _batch_bytes(
        _replay_batch(model, plan, batch, first_index, config, hooks, letters, lambda _: None)
    )


def _write_bytes(path: Path, payload: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def _batch_bytes(result: _Batch) -> bytes:
    """One batch as safetensors: the activations as tensors, rows and tokens as JSON in the
    header (JSON keeps NaN and every float exactly), so resuming never unpickles anything.
    Bytes, so a batch computed on a Ray worker is written by the driver exactly as a batch
    computed here."""
    from safetensors.torch import save

    tensors = {h: a.contiguous() for h, a in result.acts.items()}
    meta = {
        "format": _BATCH_FORMAT,
        "rows": json.dumps(result.rows),
        "tokens": json.dumps(result.tokens),
        "tokens_run": str(result.tokens_run),
        "positions_run": str(result.positions_run),
        "spans": json.dumps(result.spans),
    }
    return save(tensors, meta)


def _load_batch(
    path: Path, n_rows: int | None = None, hooks: Sequence[str] | None = None
) -> dict[str, Any]:
    """A batch written from :func:`_batch_bytes` (as the dict ``asdict(_Batch)``); with
    ``n_rows``/``hooks`` also checked against what this replay expects of it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _BATCH_FORMAT:
                raise ValueError("not a partial batch of this interp")
            acts = {h: f.get_tensor(h) for h in f.keys()}  # noqa: SIM118  (not a dict)
        part = {
            "rows": json.loads(meta["rows"]),
            "tokens": json.loads(meta["tokens"]),
            "acts": acts,
            "tokens_run": int(meta["tokens_run"]),
            "positions_run": int(meta["positions_run"]),
            "spans": json.loads(meta.get("spans", "null")),
        }
        if n_rows is not None and len(part["rows"]) != n_rows:
            raise ValueError(f"{len(part['rows'])} rows, this replay expects {n_rows}")
        if hooks is not None and sorted(acts) != sorted(hooks):
            raise ValueError("its hooks differ from this replay's")
    except Exception as err:  # (truncated, garbage, foreign: all mean the file is damaged)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InterpError(
            f"{path} is damaged ({reason}); delete it and run the same replay again "
            "(that batch is recomputed)"
        ) from None
    return part


_BATCH_FORMAT = "interp-partial-batch-1"

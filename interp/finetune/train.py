"""The fine-tuning verb: data, training loop, checkpoints and the output folder.

Data: every example of the task becomes one conversation of ``rounds + 1`` rounds, built by
``build_conversation`` from the plan's user turns (as the replay builds them), each assistant
turn the plan's answer prefix followed by the correct answer (``"b) <option text>"``). The
loss is the next-token cross-entropy on the answer tokens only (the read-out token predicts
the answer's first token).

Training: AdamW, one thread, a seeded example order; ``method="lora"`` trains rank-``rank``
adapters on the attention (W_Q, W_K, W_V, W_O) and MLP (W_in, W_gate, W_out) weights of the
``HookedTransformer`` (its B factor starts at zero) and merges them at the end;
``method="full"`` trains every weight. Checkpoints go to ``<parent>/.<name>.partial/`` every
``checkpoint_every`` steps; a rerun with the same arguments resumes there and ends with the
same bytes as an uninterrupted run. The output is written to a temporary folder and renamed
to ``out`` at the end: ``model.safetensors`` (TransformerLens weights), ``tl_config.json``,
the tokenizer files (chat template included) and ``finetune.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils import parametrize
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.finetune.config import FinetuneConfig, FinetuneResult, check_config, partial_dir
from interp.finetune.recipes import plan_conversations
from interp.finetune.select import check_select, finish_record, select_examples
from interp.inputs.conversation import RoundInput, build_conversation
from interp.inputs.plans import load_plan, option_letter
from interp.inputs.selection import choose
from interp.inputs.tasks import load_task, task_data_hash
from interp.model.loading import load_model, save_state_dict

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]

FORMAT = 1  # finetune.json's format
LORA_TARGETS = ("W_Q", "W_K", "W_V", "W_O", "_W_K", "_W_V", "W_in", "W_gate", "W_out")
CHECKPOINT = "checkpoint.pt"


def build_examples(
    model: HookedTransformer, config: FinetuneConfig, record: dict | None = None
) -> tuple[list, list, dict]:
    """The training conversations, per conversation its answer-token spans, and the recipe's
    counts.

    Args:
        model: The model (its tokenizer and context).
        config: The task, data, plan, rounds, recipe, selection, sample selection and budget.
        record: Filled with what ``finetune.json`` records of the sample selection
            (:func:`interp.finetune.select.select_examples`); None: not recorded.

    Returns:
        ``(tokens, spans, recipe)``: per conversation its token ids and its answers' token
        spans; the recipe's settings and counts for ``finetune.json``.

    Raises:
        InterpError: No examples, or a conversation longer than the budget.
    """
    examples = load_task(config.task, list(config.data) or None)
    examples = choose(examples, config.selection) if examples else examples
    examples = select_examples(model, examples, config, record) if examples else examples
    if not examples:
        raise InterpError("no examples to fine-tune on (the selection or the data is empty)")
    planned = plan_conversations(
        examples,
        recipe=config.recipe,
        plan=load_plan(config.plan),
        control_plan=load_plan(config.control_plan) if config.recipe != "answers" else None,
        rounds=config.rounds,
        error_share=config.error_share,
        permute=config.permute,
        seed=config.seed,
    )
    tok = model.tokenizer
    budget = config.max_tokens or model.cfg.n_ctx
    convs, spans = [], []
    for item in planned:
        ex, plan = item.example, item.plan
        rounds = [
            RoundInput(
                *plan.user_turn(ex, r, previous=item.answers[r - 1] if r else None),
                answer=f"{option_letter(a)}) {ex.options[a]}",
            )
            for r, a in enumerate(item.answers)
        ]
        conv = build_conversation(tok, rounds, answer_prefix=plan.answer_prefix)
        if len(conv.tokens) > budget:
            raise InterpError(
                f"example {ex.example_id} takes {len(conv.tokens)} tokens, more than the budget "
                f"of {budget}; use fewer --rounds or a larger --max-tokens"
            )
        convs.append(conv.tokens)
        answers = [r.answer for r in conv.rounds if r.answer is not None]
        if config.loss == "letter":  # the option letter only: what the read-out scores
            answers = [(a, a + 1) for a, _ in answers]
        spans.append(answers)
    recipe = {
        "name": config.recipe,
        "plan": config.plan,
        "control_plan": config.control_plan if config.recipe != "answers" else None,
        "error_share": config.error_share if config.recipe != "answers" else None,
        "permute": config.permute,
        "loss": config.loss,
        "categories": sorted({ex.category for ex in examples}),
        "conversations": len(planned),
        "under_plan": {
            name: sum(p.plan.name == name for p in planned)
            for name in sorted({p.plan.name for p in planned})
        },
        "ambiguous": sum(p.example.context_condition == "ambig" for p in planned),
        "planted_round0_errors": sum(p.planted for p in planned),
        "tokens": sum(len(c) for c in convs),
        "answer_tokens": sum(b - a for sp in spans for a, b in sp),
    }
    return convs, spans, recipe


class _LoraDelta(torch.nn.Module):
    """``W + alpha/r * (A @ B)`` reshaped onto W's TransformerLens shape."""

    def __init__(self, name: str, shape: torch.Size, rank: int, alpha: float, gen):
        super().__init__()
        if name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):  # [heads, d_model, d_head]
            n_in, n_out = shape[1], shape[0] * shape[2]
        else:  # W_O [heads, d_head, d_model]; MLP [in, out]
            n_in, n_out = math.prod(shape[:-1]), shape[-1]
        self.kind, self.shape, self.scale = name, shape, alpha / rank
        self.A = torch.nn.Parameter(torch.randn(n_in, rank, generator=gen) / math.sqrt(n_in))
        self.B = torch.nn.Parameter(torch.zeros(rank, n_out))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        delta = self.scale * (self.A @ self.B)
        if self.kind in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):
            h, d_model, d_head = self.shape
            delta = delta.reshape(d_model, h, d_head).permute(1, 0, 2)
        else:
            delta = delta.reshape(self.shape)
        return w + delta


def _add_lora(model: HookedTransformer, config: FinetuneConfig) -> list[tuple]:
    gen = torch.Generator().manual_seed(config.seed)
    added = []
    for mod_name, module in sorted(model.named_modules()):
        for pname in LORA_TARGETS:
            p = module._parameters.get(pname)
            if p is None or p.dim() < 2:
                continue
            delta = _LoraDelta(pname, p.shape, config.rank, config.alpha, gen)
            parametrize.register_parametrization(module, pname, delta)
            added.append((mod_name, module, pname))
    return added


def _merge_lora(added: list[tuple]) -> None:
    for _, module, pname in added:
        parametrize.remove_parametrizations(module, pname, leave_parametrized=True)


def _order(n: int, steps: int, batch: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    flat: list[int] = []
    while len(flat) < steps * batch:
        flat += torch.randperm(n, generator=gen).tolist()
    return [flat[i * batch : (i + 1) * batch] for i in range(steps)]


def _loss(model, tokens: list[int], spans: list[tuple[int, int]]) -> tuple[torch.Tensor, int]:
    """Summed next-token loss on the answer tokens, and their count. The unembedding runs
    only at the positions that predict them (the vocabulary is a fifth of SmolLM2's FLOPs)."""
    x = torch.tensor([tokens], device=model.cfg.device)
    pos = [t for a, b in spans for t in range(a, b)]
    idx = torch.tensor(pos, device=x.device)
    resid = model(x, stop_at_layer=model.cfg.n_layers)[0, idx - 1]
    logits = model.unembed(model.ln_final(resid[None]))[0]
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0)
    if cap > 0:  # as HookedTransformer.forward does (Gemma)
        logits = cap * torch.tanh(logits / cap)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(1, x[0, idx][:, None]).sum(), len(pos)


def finetune(
    model_source: str | Path,
    config: FinetuneConfig | None = None,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> FinetuneResult:
    """Fine-tune a model on a task's conversations and write it as a loadable folder.

    Args:
        model_source: What ``load_model`` accepts ("tiny", "smollm2", a GGUF, a folder).
        config: The settings (``out`` required).
        model: Not accepted (training changes the weights); must be None.
        progress: Show a progress bar.
        workers: Not accepted (one process); must be None.

    Returns:
        The result (the output folder, the losses).

    Raises:
        InterpError: Bad settings, an existing output, data that cannot be read, no examples,
            a conversation longer than the budget, a model that does not load, or a partial
            fine-tune at the checkpoint folder with other settings.
    """
    if config is None:
        raise InterpError("finetune needs a FinetuneConfig with out=")
    if model is not None:
        raise InterpError("finetune loads its own model (training changes it); pass a source")
    if workers is not None:
        raise InterpError("finetune runs in one process; drop workers")
    check_config(config)
    check_select(config, str(model_source))
    out = Path(config.out)
    part = partial_dir(out)
    source = str(model_source)
    hyper = {"model": source, **config.hyper()}
    fingerprint = hashlib.sha256(json.dumps(hyper, sort_keys=True).encode()).hexdigest()
    state = None
    if (part / CHECKPOINT).is_file():
        state = torch.load(part / CHECKPOINT, weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise InterpError(
                f"{part} holds a partial fine-tune with other settings; rerun with those or "
                "remove it"
            )
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(source, config, out, part, hyper, fingerprint, state, progress)
    finally:
        torch.set_num_threads(threads)


def _train(source, config, out, part, hyper, fingerprint, state, progress) -> FinetuneResult:
    model = load_model(source, device=config.device, seed=0)
    selection: dict[str, Any] = {}
    convs, spans, recipe = build_examples(model, config, selection)
    data_digest = task_data_hash(config.task, list(config.data) or None)
    model.train()
    model.requires_grad_(config.method == "full")
    added = _add_lora(model, config) if config.method == "lora" else []
    params = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    order = _order(len(convs), config.steps, config.batch_size, config.seed)
    finish_record(selection, convs, spans, order)
    losses: list[float] = []
    step = 0
    if state is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in state["model"]:
                    p.copy_(state["model"][name])
        opt.load_state_dict(state["optimizer"])
        losses, step = list(state["losses"]), state["step"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc="finetune", unit="step")
    stop = config.steps
    if config.max_steps_this_call is not None:
        stop = min(stop, step + config.max_steps_this_call)
    started, trained_tokens = time.perf_counter(), 0
    while step < stop:
        opt.zero_grad(set_to_none=True)
        total, count = None, 0
        for i in order[step]:
            # LoRA: each adapted weight is computed once per forward, not at every access.
            with parametrize.cached() if added else contextlib.nullcontext():
                loss, n = _loss(model, convs[i], spans[i])
            total = loss if total is None else total + loss
            count += n
            trained_tokens += len(convs[i])
        mean = total / count
        mean.backward()
        opt.step()
        losses.append(float(mean.detach()))
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % config.checkpoint_every == 0 or step == stop:
            _checkpoint(model, opt, part, fingerprint, step, losses)
    if bar is not None:
        bar.close()
    if step < config.steps:
        return FinetuneResult(None, step, losses, False)
    _merge_lora(added)
    model.eval()
    model.requires_grad_(False)
    info = {
        "format": FORMAT,
        "base_model": source,
        "base_weights_hash": model.interp_source.weights_hash,
        "data_hash": data_digest,
        "examples": len(convs),
        "recipe": recipe,
        "hyper_parameters": hyper,
        "losses": losses,
        # What this call cost (a resumed fine-tune counts only its own steps).
        "cost": {
            "steps_this_call": len(losses) - (state["step"] if state is not None else 0),
            "tokens_this_call": trained_tokens,
            "seconds_this_call": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "threads": torch.get_num_threads(),
        },
        **({"selection": selection} if selection else {}),
    }
    _write(model, out, info)
    shutil.rmtree(part, ignore_errors=True)
    return FinetuneResult(out, step, losses, True)


def _checkpoint(model, opt, part: Path, fingerprint: str, step: int, losses: list) -> None:
    part.mkdir(parents=True, exist_ok=True)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    tmp = part / (CHECKPOINT + ".tmp")
    torch.save(
        {
            "fingerprint": fingerprint,
            "step": step,
            "losses": losses,
            "model": trained,
            "optimizer": opt.state_dict(),
        },
        tmp,
    )
    tmp.replace(part / CHECKPOINT)


def tl_config_dict(cfg) -> dict[str, Any]:
    """A HookedTransformerConfig as JSON-able fields (``HookedTransformerConfig(**d)``).

    Args:
        cfg: The model's config.

    Returns:
        Its init fields that JSON can hold, dtype as a name, device ``"cpu"``.
    """
    import dataclasses

    d = {}
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        v = getattr(cfg, f.name)
        if isinstance(v, torch.dtype):
            v = str(v).removeprefix("torch.")
        try:
            json.dumps(v)
        except TypeError:
            continue
        d[f.name] = v
    d["device"] = "cpu"
    return d


def _write(model: HookedTransformer, out: Path, info: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_state_dict(state, tmp / "model.safetensors")
        (tmp / "tl_config.json").write_text(json.dumps(tl_config_dict(model.cfg), indent=1))
        model.tokenizer.save_pretrained(tmp)
        (tmp / "finetune.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        tmp.chmod(0o755)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

"""Transfer to the read-out: does a direction learned on bare statements still separate them
where a run applies it, at the answer prefix inside a chat transcript?

Concept directions are fitted on statements tokenized alone (``probes.encode``), but a run's
concept scores project the *read-out* state: the last token of the forced answer prefix in
the chat template. Here each statement is wrapped the way a run's round 0 is — the run's
system prompt (or the template's default), the statement as the user message, then the
assistant turn opened with the run's answer prefix (``interp.inputs.conversation``) — and read at
the last token of that prefix. On the probe's own split, per layer:

- ``transfer_acc``: the direction and threshold learned on bare statements, applied to the
  wrapped test statements (the literal transfer);
- ``transfer_centred_acc``: the bare direction with its threshold re-set on the wrapped
  *training* statements (midpoint of the two class means' projections). A run's scores use
  the direction only, never the threshold, so this is the transfer that matters for them;
- ``wrapped_acc``: the same method fitted and tested on wrapped statements.

The wrapping has no question, options or earlier rounds, and no "thinking" (a plan with
``think_tokens`` puts the model's own text before the prefix): it matches the kind of
position a run reads, not a run's exact context.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from interp.errors import InterpError
from interp.inputs.conversation import RoundInput, build_conversation
from interp.model.hooknames import act_layer, is_act
from probes.concepts import ConceptData
from probes.directions import Directions, LayerProbe, probe_layers
from probes.encode import encode_token_ids, encodings_key, encodings_path, write_encodings

_KEY = "encodings"
COLUMNS = ("transfer_acc", "transfer_centred_acc", "wrapped_acc")


def wrap_statements(
    tokenizer, texts: Sequence[str], *, answer_prefix: str, system: str | None = None
) -> list[list[int]]:
    """Each statement as a one-round chat prompt ending at its read-out position: tokens up to
    and including the answer prefix's last token (``Conversation.prompt(0)``).

    Args:
        tokenizer: The model's tokenizer (with chat template).
        texts: The statements.
        answer_prefix: The answer prefix the prompt ends with.
        system: A system message, or None.

    Returns:
        One token id list per statement.

    Raises:
        InterpError: A wrapped statement does not end at its read-out token, or the chat
            template cannot render it.
    """
    out = []
    for text in texts:
        conv = build_conversation(
            tokenizer, [RoundInput(user=text)], answer_prefix=answer_prefix, system=system
        )
        tokens = conv.prompt(0)
        if len(tokens) != len(conv.tokens):  # the transcript must end at the read-out
            raise InterpError("the chat-wrapped statement does not end at its read-out token")
        out.append(tokens)
    return out


def cached_wrapped_encodings(
    texts: Sequence[str],
    *,
    name: str,
    answer_prefix: str,
    system: str | None,
    weights_hash: str,
    cache_dir: Path,
    get_model: Callable[[], HookedTransformer],
    progress: bool = False,
) -> Float[torch.Tensor, "item layer d_model"]:
    """Every layer's ``hook_resid_post`` at the read-out of each chat-wrapped statement, through
    a cache file keyed by the texts, the prefix, the system prompt and the weights hash; the
    model is loaded only on a miss.

    Args:
        texts: The statements.
        name: The concept's name (the cache's subfolder).
        answer_prefix: The answer prefix the prompts end with.
        system: A system message, or None.
        weights_hash: The model's weights hash (part of the cache key).
        cache_dir: The encodings cache folder.
        get_model: Loads the model; called only on a cache miss.
        progress: Whether to show a progress bar.

    Returns:
        The encodings per statement and layer.

    Raises:
        InterpError: The model has no tokenizer, or a statement cannot be wrapped.
    """
    from safetensors.torch import load_file

    wrapping = json.dumps({"answer_prefix": answer_prefix, "system": system})
    key = encodings_key([*texts, wrapping], weights_hash)
    path = encodings_path(Path(cache_dir), name, "chat", key)
    if path.is_file():
        return load_file(str(path))[_KEY]
    model = get_model()
    if model.tokenizer is None:
        raise InterpError("the model has no tokenizer; load it with interp.load_model")
    ids = wrap_statements(model.tokenizer, texts, answer_prefix=answer_prefix, system=system)
    encodings = encode_last_shared_prefix(model, ids, progress=progress)
    meta = {"name": name, "position": "chat", "weights_hash": weights_hash, "key": key}
    write_encodings(path, encodings, meta)  # sorted metadata: the same bytes on every rerun
    return encodings


def encode_last_shared_prefix(
    model: HookedTransformer,
    ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> Float[torch.Tensor, "item layer d_model"]:
    """``encode_token_ids(position="last")``, running the tokens every sequence starts with
    (the chat template's system prompt and user header: about half of each wrapped
    statement) once, and the rest of each sequence on top of their KV cache.

    The rest is left-padded, so every sequence's last token sits at the last position; the
    attention mask keeps padding out, and positions follow the mask, as in a replay.

    Args:
        model: The model.
        ids: Token ids of each sequence.
        batch_size: Sequences per forward pass.
        progress: Whether to show a progress bar.

    Returns:
        Every layer's ``hook_resid_post`` at each sequence's last token.
    """
    ids = [list(seq) for seq in ids]
    shared = min(len(os.path.commonprefix(ids)), min(map(len, ids)) - 1)
    if shared < 1 or len(ids) < 2:
        return encode_token_ids(model, ids, position="last", progress=progress)
    device = model.cfg.device
    base = TransformerLensKeyValueCache.init_cache(model.cfg, device, 1)
    with torch.inference_mode():
        prefix = torch.tensor([ids[0][:shared]], device=device)
        model(prefix, past_kv_cache=base, stop_at_layer=model.cfg.n_layers)
    out = torch.empty(len(ids), model.cfg.n_layers, model.cfg.d_model)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # little padding per batch
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="encoding (chat read-out)", unit="batch")
    for batch in batches:
        rest = [ids[i][shared:] for i in batch]
        out[batch] = _encode_rest(model, _expanded(base, len(batch)), rest)
    return out


def _expanded(base: TransformerLensKeyValueCache, n: int) -> TransformerLensKeyValueCache:
    """The one-sequence prefix cache as a frozen cache of ``n`` identical rows."""
    entries = [
        TransformerLensKeyValueCacheEntry(
            past_keys=e.past_keys.expand(n, -1, -1, -1),
            past_values=e.past_values.expand(n, -1, -1, -1),
            frozen=True,
        )
        for e in base.entries
    ]
    mask = base.previous_attention_mask.expand(n, -1)
    return TransformerLensKeyValueCache(entries=entries, previous_attention_mask=mask, frozen=True)


def _encode_rest(
    model: HookedTransformer, cache: TransformerLensKeyValueCache, rest: list[list[int]]
) -> Float[torch.Tensor, "batch layer d_model"]:
    width = max(map(len, rest))
    tokens = torch.full((len(rest), width), model.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(rest), width), dtype=torch.long)
    for row, seq in enumerate(rest):
        tokens[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    read = torch.empty(len(rest), model.cfg.n_layers, model.cfg.d_model)

    def capture(resid: torch.Tensor, *, hook) -> None:
        read[:, act_layer(hook.name)] = resid[:, -1].float().cpu()

    is_resid_post = lambda name: is_act(name, "resid_post")  # noqa: E731
    device = model.cfg.device
    with torch.inference_mode(), model.hooks(fwd_hooks=[(is_resid_post, capture)]):
        model(
            tokens.to(device),
            attention_mask=mask.to(device),
            past_kv_cache=cache,
            stop_at_layer=model.cfg.n_layers,
        )
    return read


def transfer_table(
    bare: LayerProbe,
    wrapped: Float[torch.Tensor, "item layer d_model"],
    data: ConceptData,
    *,
    method: str = "probe",
    seed: int = 0,
    test_size: float = 0.3,
) -> tuple[pd.DataFrame, LayerProbe]:
    """layer, transfer_acc, transfer_centred_acc, wrapped_acc for the layers of ``bare`` (a
    ``probe_layers`` result on bare encodings, same data, seed and test_size), and the probe
    fitted on the wrapped encodings.

    Args:
        bare: The probe result on bare encodings.
        wrapped: The same items' chat-wrapped encodings.
        data: The concept's items (as ``bare`` used).
        method: The direction method (as ``probe_layers`` takes it).
        seed: Seed of the split (as ``bare`` used).
        test_size: Share held out (as ``bare`` used).

    Returns:
        ``(table, on_wrapped)``: the table, and the probe fitted on the wrapped encodings.
    """
    layers = bare.table["layer"].tolist()
    on_wrapped = probe_layers(
        wrapped, data, layers=layers, method=method, seed=seed, test_size=test_size
    )
    labels = data.labels()
    train, test = bare.train_idx, bare.test_idx
    x = wrapped[:, layers].transpose(0, 1)  # [layer item d]
    x_train, x_test, y_test = x[:, train], x[:, test], labels[test]
    vectors = bare.directions.vectors
    proj = Directions(vectors, bare.directions.thresholds).project(x_train)
    y_train = labels[train]
    midpoint = (proj[:, y_train == 1].mean(dim=1) + proj[:, y_train == 0].mean(dim=1)) / 2
    centred = Directions(vectors, midpoint)
    table = pd.DataFrame(
        {
            "layer": layers,
            "transfer_acc": bare.directions.n_correct(x_test, y_test) / len(test),
            "transfer_centred_acc": centred.n_correct(x_test, y_test) / len(test),
            "wrapped_acc": on_wrapped.table["acc"].to_numpy(),
        }
    )
    return table, on_wrapped

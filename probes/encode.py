"""Encode statements as every layer's residual stream, and cache the encodings on disk.

A statement is tokenized alone (``add_special_tokens=False``: no chat template, no BOS) and
read at ``blocks.{L}.hook_resid_post`` for every layer L, either at its last token or as the
mean over its tokens. Statements are batched with right padding: attention is causal, so
padding after a statement's last token cannot change any of its positions, and an explicit
attention mask keeps TransformerLens from guessing one from pad ids.

The cache file is keyed by the texts and the model's weights hash, so a changed concept file
or model never reuses stale encodings; a hit never loads or runs the model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.model.hooknames import is_act
from interp.runs.store import atomic_write

POSITIONS = ("last", "mean")
_KEY = "encodings"


def check_position(position: str) -> None:
    """Refuse an encoding position other than those in ``POSITIONS``.

    Args:
        position: ``"last"`` or ``"mean"``.

    Raises:
        InterpError: ``position`` is not one of ``POSITIONS``.
    """
    if position not in POSITIONS:
        raise InterpError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")


def encode_texts(
    model: HookedTransformer,
    texts: Sequence[str],
    *,
    position: str = "last",
    batch_size: int = 16,
    progress: bool = False,
) -> Float[torch.Tensor, "item layer d_model"]:
    """Every layer's ``hook_resid_post`` for each text, at its last token or averaged over its
    tokens, as float32 on the CPU, in the order of ``texts``.

    Args:
        model: The model, with its tokenizer.
        texts: The statements (each must tokenize to at least one token).
        position: ``"last"`` (the last token) or ``"mean"`` (mean over the tokens).
        batch_size: Texts per forward pass.
        progress: Whether to show a progress bar.

    Returns:
        The encodings per text and layer.

    Raises:
        InterpError: Unknown position, no tokenizer, or a text with no tokens.
    """
    check_position(position)
    if model.tokenizer is None:
        raise InterpError("the model has no tokenizer; load it with interp.load_model")
    ids = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    empty = [i for i, seq in enumerate(ids) if not seq]
    if empty:
        raise InterpError(f"text {empty[0]} tokenizes to nothing; every statement needs a token")
    return encode_token_ids(model, ids, position=position, batch_size=batch_size, progress=progress)


def encode_token_ids(
    model: HookedTransformer,
    ids: Sequence[Sequence[int]],
    *,
    position: str = "last",
    batch_size: int = 16,
    progress: bool = False,
    desc: str | None = None,
) -> Float[torch.Tensor, "item layer d_model"]:
    """``encode_texts`` for sequences already tokenized (e.g. rendered with a chat template):
    every layer's ``hook_resid_post`` at each sequence's last token, or averaged over it.

    Args:
        model: The model.
        ids: Token ids of each sequence (non-empty).
        position: ``"last"`` or ``"mean"``.
        batch_size: Sequences per forward pass.
        progress: Whether to show a progress bar.
        desc: The progress bar's label; None: ``encoding (<position>)``.

    Returns:
        The encodings per sequence and layer, float32 on the CPU.

    Raises:
        InterpError: Unknown position.
    """
    check_position(position)
    ids = [list(seq) for seq in ids]
    out = torch.empty(len(ids), model.cfg.n_layers, model.cfg.d_model)
    # Longest first, so batches hold statements of similar length (little padding) and the
    # first batch shows the peak memory.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc or f"encoding ({position})", unit="batch")
    for batch in batches:
        out[batch] = _encode_batch(model, [ids[i] for i in batch], position)
    return out


def _encode_batch(
    model: HookedTransformer, ids: list[list[int]], position: str
) -> Float[torch.Tensor, "batch layer d_model"]:
    device = model.cfg.device
    lengths = torch.tensor([len(seq) for seq in ids])
    width = int(lengths.max())
    pad = model.tokenizer.pad_token_id or 0
    tokens = torch.full((len(ids), width), pad, dtype=torch.long)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)] = torch.tensor(seq)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    read = torch.empty(len(ids), model.cfg.n_layers, model.cfg.d_model)
    rows = torch.arange(len(ids))

    def capture(resid: torch.Tensor, *, hook) -> None:
        # Reduce inside the hook, so no [batch, pos, d_model] tensor outlives its layer.
        layer = int(hook.name.split(".")[1])
        resid = resid.float().cpu()
        if position == "last":
            read[:, layer] = resid[rows, lengths - 1]
        else:
            weights = mask[..., None].to(resid.dtype)
            read[:, layer] = (resid * weights).sum(dim=1) / lengths[:, None]

    with torch.inference_mode(), model.hooks(fwd_hooks=[(_is_resid_post, capture)]):
        model(tokens.to(device), attention_mask=mask.to(device), return_type=None)
    return read


def _is_resid_post(name: str) -> bool:
    return is_act(name, "resid_post")


def encodings_key(texts: Sequence[str], weights_hash: str) -> str:
    """sha256 of the texts (in order) and the model's weights hash.

    Args:
        texts: The texts, in order.
        weights_hash: The model's weights hash.

    Returns:
        The 64-character hex digest.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(list(texts), ensure_ascii=False).encode())
    digest.update(b"\0")
    digest.update(weights_hash.encode())
    return digest.hexdigest()


def encodings_path(cache_dir: Path, name: str, position: str, key: str) -> Path:
    """The cache file of one concept's encodings.

    Args:
        cache_dir: The encodings cache folder.
        name: The concept's name.
        position: ``"last"``, ``"mean"`` or ``"chat"``.
        key: The cache key (:func:`encodings_key`); its first 16 characters name the file.

    Returns:
        ``<cache_dir>/<name>-<position>-<key[:16]>.safetensors``.
    """
    return cache_dir / f"{name}-{position}-{key[:16]}.safetensors"


def cached_encodings(
    texts: Sequence[str],
    *,
    name: str,
    position: str,
    weights_hash: str,
    cache_dir: Path,
    get_model: Callable[[], HookedTransformer],
    progress: bool = False,
) -> Float[torch.Tensor, "item layer d_model"]:
    """``encode_texts`` through a cache file; ``get_model`` is called only on a miss.

    Args:
        texts: The statements.
        name: The concept's name (part of the file name).
        position: ``"last"`` or ``"mean"``.
        weights_hash: The model's weights hash (part of the cache key).
        cache_dir: The encodings cache folder.
        get_model: Loads the model; called only on a cache miss.
        progress: Whether to show a progress bar.

    Returns:
        The encodings per text and layer.

    Raises:
        InterpError: As :func:`encode_texts`.
    """
    from safetensors.torch import load_file

    check_position(position)
    key = encodings_key(texts, weights_hash)
    path = encodings_path(Path(cache_dir), name, position, key)
    if path.is_file():
        return load_file(str(path))[_KEY]
    encodings = encode_texts(get_model(), texts, position=position, progress=progress)
    meta = {"name": name, "position": position, "weights_hash": weights_hash, "key": key}
    write_encodings(path, encodings, meta)
    return encodings


def write_encodings(path: Path, encodings: torch.Tensor, meta: dict[str, str]) -> None:
    """Write a cache file whose bytes depend only on its content: safetensors writes the
    metadata in a hash map's order (it differs from one process to the next), so the header
    is rewritten with the metadata keys sorted (readers go by the explicit data offsets).

    Args:
        path: The cache file to write (atomically).
        encodings: The encodings.
        meta: String metadata stored in the header.
    """
    from safetensors.torch import save

    raw = save({_KEY: encodings.contiguous()}, meta)
    data = canonical_safetensors(raw)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def canonical_safetensors(raw: bytes) -> bytes:
    """``raw`` (a safetensors file's bytes) with its ``__metadata__`` keys in sorted order.

    Args:
        raw: The bytes of a safetensors file.

    Returns:
        The same file with the metadata keys sorted (and the header re-padded to 8 bytes).
    """
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data that follows to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def weights_hash(model: HookedTransformer) -> str:
    """The hash ``interp.load_model`` recorded, else a sha256 of the parameters themselves
    (slower, but a model built some other way still gets an honest cache key).

    Args:
        model: The model.

    Returns:
        The recorded hash, or ``params-`` and the sha256 of the state dict.
    """
    source = getattr(model, "interp_source", None)
    if source is not None:
        return source.weights_hash
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return "params-" + digest.hexdigest()

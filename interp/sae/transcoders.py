"""Per-layer transcoders: train, save, load, and score the replacement model.

A transcoder of layer L reads the MLP's input, ``ln2(resid_mid)`` (TransformerLens has no hook
for it: ``ln2.hook_normalized`` is before the norm's weight, ``hook_mlp_in`` before the norm;
it is computed here from ``blocks.L.hook_resid_mid`` with the block's own ``ln2``) and
predicts the MLP's output, ``blocks.L.hook_mlp_out``, through ``width`` ReLU features:

    f = relu(x W_enc + b_enc);   mlp_out ~ f W_dec + b_dec

Why not sae-lens' trainer: sae-lens 6.54 has transcoder classes for inference only
(``sae_lens.saes.transcoder``: ``transcoder``, ``skip_transcoder``, ``jumprelu_transcoder``
are in ``SAE_CLASS_REGISTRY`` but not in ``SAE_TRAINING_CLASS_REGISTRY``), and its trainers
reconstruct their input. What is used of it: the multi-hook ``ActivationsStore``
(``from_config_multi_hook``), which reads ``hook_resid_mid`` and ``hook_mlp_out`` of every
trained layer in one forward, with sae-lens' shuffling buffer, sequence-position slice (the
sink positions, `interp.sae.evals.SINK_POSITIONS`) and special-token exclusion; and the loaded
transcoders are sae-lens ``Transcoder`` objects. The loss is sae-lens' standard SAE loss
(summed squared error plus L1 of activations times decoder-row norms, the L1 coefficient
warmed up linearly), all layers trained together as one batched matrix product, inputs and
targets scaled to mean norm sqrt(d_model) per layer while training (folded into the saved
weights).

The folder (``--out``) is circuit-tracer's transcoder-set layout, so that its own loader
(``circuit_tracer.utils.caching.load_transcoders_from_cache(<name>, cache_dir=<parent>)``)
opens it: ``config.yaml`` (``model_kind: transcoder_set``, ``feature_input_hook:
mlp.hook_in`` -- its replacement model's name for the same MLP input -- ``feature_output_hook:
hook_mlp_out``) and ``layer_<L>.safetensors`` (``W_enc`` [width, d_model], ``W_dec`` [width,
d_model], ``b_enc``, ``b_dec``). circuit-tracer needs a transcoder for every layer 0..max;
`load_transcoders` here also opens a subset. Beside them: ``transcoders.json`` (what was
trained on what, loss curves, seconds) and ``evals.json`` (`replacement_loss` on held-out
tokens). Written into a temporary sibling folder and renamed into place at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError
from interp.runs.distributed import Workers, single_process
from interp.runs.lock import output_lock, public_modes
from interp.sae.corpus import Corpus, build_corpus
from interp.sae.evals import MAX_BATCH, SINK_POSITIONS, heldout_sequences, scored_mask
from interp.sae.load import model_for
from interp.sae.train import (
    TrainingOptions,
    check_budget_flags,
    check_epochs,
    check_memory,
    check_training_options,
    option,
)

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformer_lens import HookedTransformer

CONFIG_YAML = "config.yaml"
RECORD_FILE = "transcoders.json"
EVALS_FILE = "evals.json"
INPUT_HOOK = "hook_resid_mid"  # read; the transcoder's input is ln2 of it
CT_INPUT_HOOK = "mlp.hook_in"  # circuit-tracer's replacement model: the MLP's input
OUTPUT_HOOK = "hook_mlp_out"
NORM_BATCHES = 2  # batches drawn (and not trained on) to estimate the per-layer scales
MAX_CURVE_POINTS = 100
DEFAULT_L1 = 2.0


def layer_file(layer: int) -> str:
    return f"layer_{layer}.safetensors"


@dataclass
class TranscoderTrainConfig(TrainingOptions):
    """Per-layer transcoder training; shared by :func:`train_transcoders` and ``interp sae
    train-transcoders``.

    The shared fields (out, width, tokens, lr, batch_tokens, seed, eval_tokens, corpus) are
    :class:`~interp.sae.train.TrainingOptions`'; ``transcoders.json`` records them in
    :data:`RECORD_ORDER`.
    """

    out: str = option(
        "artifacts/transcoders/demo", "The transcoder folder to write (new or empty)."
    )
    width: int = option(1024, "Features per layer.")
    lr: float = option(1e-3, "Adam learning rate.")
    layers: list[int] | None = option(
        None, "Layers to train: all, or e.g. 0-3,7 (circuit-tracer needs all)."
    )
    l1: float = option(DEFAULT_L1, "L1 coefficient (activations x decoder-row norms).")
    l1_warmup: float = option(0.2, "Share of the steps over which the L1 coefficient rises.")

    def record(self) -> dict[str, Any]:
        """The settings as ``transcoders.json`` records them (the corpus apart)."""
        values = asdict(self)
        return {key: values[key] for key in RECORD_ORDER}


# transcoders.json's "config" order (the order of the fields before they were shared).
RECORD_ORDER = (
    "out",
    "layers",
    "width",
    "l1",
    "l1_warmup",
    "tokens",
    "lr",
    "batch_tokens",
    "seed",
    "eval_tokens",
)


def check_transcoder_config(
    config: TranscoderTrainConfig, model: HookedTransformer | None = None
) -> list[int]:
    """Refuse settings that cannot train, before anything is computed or written; returns the
    layers (every layer when ``config.layers`` is None and a model is given)."""
    check_budget_flags(config.width, config.tokens)
    if not (math.isfinite(config.l1) and config.l1 >= 0):
        raise InterpError("--l1 must be a number >= 0")
    if not 0 <= config.l1_warmup <= 1:
        raise InterpError("--l1-warmup must be between 0 and 1")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise InterpError("--lr must be a number > 0")
    if config.batch_tokens < 1:
        raise InterpError("--batch-tokens must be at least 1")
    if config.eval_tokens < 1:
        raise InterpError("--eval-tokens must be at least 1")
    if config.layers is not None and len(config.layers) == 0:
        raise InterpError("--layers names no layer")
    if config.layers is not None and len(set(config.layers)) != len(config.layers):
        raise InterpError("--layers names a layer twice")
    check_training_options(config)
    if model is None:
        return list(config.layers or [])
    n = model.cfg.n_layers
    layers = list(range(n)) if config.layers is None else sorted(config.layers)
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise InterpError(f"--layers {bad[0]}: model {model.cfg.model_name} has layers 0..{n - 1}")
    if model.cfg.d_mlp is None or not hasattr(model.blocks[0], "ln2"):
        raise InterpError(f"model {model.cfg.model_name} has no MLP with a norm before it")
    d_model = int(model.cfg.d_model)
    check_memory(len(layers), d_model, config.width, config.batch_tokens, str(model.cfg.device))
    return layers


# --- the loaded set ------------------------------------------------------------------------


@dataclass
class TranscoderSet:
    """Loaded transcoders by layer (sae-lens ``Transcoder`` objects, float32)."""

    path: Path | None
    transcoders: dict[int, Any]  # layer -> sae_lens Transcoder
    record: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        return sorted(self.transcoders)

    @property
    def width(self) -> int:
        return int(next(iter(self.transcoders.values())).cfg.d_sae)

    def encode(self, layer: int, mlp_in: torch.Tensor) -> torch.Tensor:
        return self.transcoders[layer].encode(mlp_in)

    def decode(self, layer: int, feats: torch.Tensor) -> torch.Tensor:
        return self.transcoders[layer].decode(feats)

    def forward(self, layer: int, mlp_in: torch.Tensor) -> torch.Tensor:
        return self.decode(layer, self.encode(layer, mlp_in))

    def decoder(self, layer: int) -> torch.Tensor:
        """``W_dec`` [width, d_model] of ``layer``."""
        return self.transcoders[layer].W_dec


def mlp_input(model: HookedTransformer, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
    """The MLP's input at ``layer``: ``ln2(resid_mid)``, as the block computes it."""
    return model.blocks[layer].ln2(resid_mid)


def _sae_lens_transcoder(
    state: dict[str, torch.Tensor], layer: int, model_name: str, device: str
) -> Any:
    import torch
    from sae_lens import Transcoder
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import TranscoderConfig

    width, d_model = state["W_enc"].shape
    cfg = TranscoderConfig(
        d_in=int(d_model),
        d_sae=int(width),
        d_out=int(state["W_dec"].shape[1]),
        dtype="float32",
        device=device,
        apply_b_dec_to_input=False,
        metadata=SAEMetadata(
            model_name=model_name,
            hook_name=f"blocks.{layer}.{CT_INPUT_HOOK}",
            hook_name_out=f"blocks.{layer}.{OUTPUT_HOOK}",
        ),
    )
    tc = Transcoder(cfg)
    weights = {
        "W_enc": state["W_enc"].T.contiguous(),  # sae-lens: [d_in, d_sae]
        "W_dec": state["W_dec"],
        "b_enc": state["b_enc"],
        "b_dec": state["b_dec"],
    }
    tc.load_state_dict({k: v.to(device, torch.float32) for k, v in weights.items()})
    tc.eval()
    tc.requires_grad_(False)
    return tc


def check_transcoder_folder(
    path: str | Path, d_model: int | None = None, n_layers: int | None = None
) -> list[Path]:
    """Refuse what is no transcoder folder (before any model loads): its ``config.yaml`` must
    be a transcoder_set reading and writing our hooks, each ``layer_<L>.safetensors`` a whole
    safetensors file with ReLU transcoder tensors of consistent shapes (header only, no torch).
    With ``d_model``/``n_layers`` (a run's manifest) the widths and layers are checked against
    them too. Returns the layer files."""
    folder = Path(path)
    if not folder.is_dir():
        raise InterpError(f"--transcoders {path}: no such folder")
    files = sorted(folder.glob("layer_*.safetensors"))
    if not (folder / CONFIG_YAML).is_file() or not files:
        raise InterpError(
            f"--transcoders {path}: not a transcoder folder ({CONFIG_YAML} and "
            "layer_<L>.safetensors expected)"
        )
    _read_config_yaml(folder / CONFIG_YAML)
    shapes: set[tuple[int, int]] = set()
    for f in files:
        width, d = _check_layer_file(f)
        shapes.add((width, d))
        if d_model is not None and d != d_model:
            raise InterpError(f"--transcoders {f}: reads width {d}; the run's model has {d_model}")
        if n_layers is not None and _layer_of(f) >= n_layers:
            raise InterpError(
                f"--transcoders {f}: layer {_layer_of(f)}, the run's model has layers "
                f"0..{n_layers - 1}"
            )
    if len(shapes) > 1:
        raise InterpError(
            f"--transcoders {path}: its layer files differ in width or d_model "
            f"({', '.join(f'{w}x{d}' for w, d in sorted(shapes))})"
        )
    return files


def _read_config_yaml(file: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise InterpError(f"--transcoders {file}: unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise InterpError(f"--transcoders {file}: not UTF-8 text") from None
    except yaml.YAMLError as err:  # its message spans lines (a quoted excerpt and a caret)
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        problem = " ".join(str(problem).split())
        raise InterpError(f"--transcoders {file}{where}: not valid YAML ({problem})") from None
    if not isinstance(config, dict) or config.get("model_kind") != "transcoder_set":
        raise InterpError(f"--transcoders {file}: not a transcoder_set (model_kind)")
    hooks = (config.get("feature_input_hook"), config.get("feature_output_hook"))
    if hooks != (CT_INPUT_HOOK, OUTPUT_HOOK):
        raise InterpError(
            f"--transcoders {file}: reads {hooks[0]} and writes {hooks[1]}; this toolkit's "
            f"transcoders read {CT_INPUT_HOOK} (the MLP's input) and write {OUTPUT_HOOK}"
        )
    return config


def _layer_of(file: Path) -> int:
    number = file.name[len("layer_") : -len(".safetensors")]
    if not number.isdigit():
        raise InterpError(f"--transcoders {file}: not a layer_<L>.safetensors name")
    return int(number)


def _check_layer_file(file: Path) -> tuple[int, int]:
    """A layer file's (width, d_model), its tensors checked: ``W_enc`` [width, d_model],
    ``W_dec`` [width, d_out], ``b_enc`` [width], ``b_dec`` [d_out], d_out = d_model."""
    from interp.sae.load import FLOAT_DTYPES, MAX_SAE_DIM, safetensors_header

    _layer_of(file)
    tensors = safetensors_header(file, "--transcoders ")
    missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - set(tensors)
    if missing:
        raise InterpError(f"--transcoders {file}: lacks {', '.join(sorted(missing))}")
    if "activation_function.threshold" in tensors or "W_skip" in tensors:
        raise InterpError(
            f"--transcoders {file}: a JumpReLU or skip transcoder; only ReLU transcoders are "
            "read here"
        )
    not_float = [
        k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if tensors[k][0] not in FLOAT_DTYPES
    ]
    if not_float:
        raise InterpError(f"--transcoders {file}: {not_float[0]} is not a float tensor")
    w_enc = tensors["W_enc"][1]
    if len(w_enc) != 2 or not all(1 <= d <= MAX_SAE_DIM for d in w_enc):
        raise InterpError(f"--transcoders {file}: W_enc has shape {list(w_enc)}")
    width, d_model = w_enc
    expected = {"W_dec": (width, d_model), "b_enc": (width,), "b_dec": (d_model,)}
    for key, shape in expected.items():
        if tensors[key][1] != shape:
            raise InterpError(
                f"--transcoders {file}: {key} has shape {list(tensors[key][1])}; W_enc "
                f"{list(w_enc)} makes it {list(shape)}"
            )
    return width, d_model


def load_transcoders(
    path: str | Path, model: HookedTransformer | None = None, device: str | None = None
) -> TranscoderSet:
    """Open a transcoder folder written by `train_transcoders` (or any circuit-tracer
    transcoder-set folder of ReLU transcoders with local ``layer_<L>.safetensors``), checked
    against ``model``'s layers and width when given."""
    from safetensors.torch import load_file

    folder = Path(path)
    files = check_transcoder_folder(folder)
    record: dict[str, Any] = {}
    if (folder / RECORD_FILE).is_file():
        try:
            record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise InterpError(f"--transcoders {folder / RECORD_FILE}: not readable JSON") from None
        if not isinstance(record, dict):
            raise InterpError(f"--transcoders {folder / RECORD_FILE}: not a JSON object")
    dev = device or (str(model.cfg.device) if model is not None else "cpu")
    model_name = str(model.cfg.model_name) if model is not None else str(record.get("model"))
    out: dict[int, Any] = {}
    for f in files:
        layer = _layer_of(f)
        try:
            state = load_file(str(f))
        except Exception as err:  # checked whole above; changed since, or unreadable
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InterpError(f"--transcoders {f}: unreadable ({first})") from None
        if model is not None:
            if layer >= model.cfg.n_layers:
                raise InterpError(
                    f"--transcoders {path}: has layer {layer}, model {model.cfg.model_name} "
                    f"has {model.cfg.n_layers}"
                )
            if state["W_enc"].shape[1] != model.cfg.d_model:
                raise InterpError(
                    f"--transcoders {path}: d_model {state['W_enc'].shape[1]}, model "
                    f"{model.cfg.model_name} {model.cfg.d_model}"
                )
        out[layer] = _sae_lens_transcoder(state, layer, model_name, dev)
    return TranscoderSet(folder, out, record)


def save_transcoders(
    folder: Path, weights: dict[int, dict[str, torch.Tensor]], *, scan: str
) -> list[Path]:
    """Write circuit-tracer's layout: ``config.yaml`` and one safetensors file per layer."""
    import yaml
    from safetensors.torch import save_file

    paths = []
    for layer, state in sorted(weights.items()):
        path = folder / layer_file(layer)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
        paths.append(path)
    config = {
        "model_kind": "transcoder_set",
        "feature_input_hook": CT_INPUT_HOOK,
        "feature_output_hook": OUTPUT_HOOK,
        "scan": scan,
    }
    (folder / CONFIG_YAML).write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
    return [folder / CONFIG_YAML, *paths]


# --- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscoderTrainResult:
    """What :func:`train_transcoders` trained and wrote."""

    path: Path
    record: dict[str, Any]
    evals: dict[str, Any]

    @property
    def loss_curve(self) -> pd.DataFrame:
        """The training loss curve (``transcoders.json``'s ``loss_curve``), one row a point."""
        import pandas as pd

        return pd.DataFrame(self.record["loss_curve"])

    def __repr__(self) -> str:
        r = self.record
        return (
            f"TranscoderTrainResult({str(self.path)!r}, {len(r['layers'])} layers x "
            f"{r['width']} features, {r['tokens']['trained']} tokens)"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        r = self.record
        facts = [
            ("path", self.path),
            ("layers", r.get("layers")),
            ("width", r.get("width")),
            ("tokens trained", (r.get("tokens") or {}).get("trained")),
        ]
        return html_card(
            f"TranscoderTrainResult {self.path.name}", facts, {"loss_curve": self.loss_curve}
        )


def train_transcoders(
    source: str | HookedTransformer,
    config: TranscoderTrainConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    device: str = "cpu",
) -> TranscoderTrainResult:
    """Train one transcoder per layer of ``source`` as ``config`` says and write the folder
    (module docstring).

    Args:
        source: The model: a name or path ``load_model`` takes, or a loaded model.
        config: Layers, sizes, budget and corpus.
        model: ``source`` already loaded (None: loaded here unless ``source`` is a model).
        progress: Show a progress bar per step.
        workers: Not supported (training runs in this process); must be None.
        device: Where a model loaded here runs.

    Returns:
        The folder written, its record (transcoders.json) and the replacement model's evals.

    Raises:
        InterpError: Settings that cannot train, an ``out`` that is not new or empty, layers
            the model lacks, too little memory or text.
    """
    single_process(workers, "train_transcoders")
    check_transcoder_config(config)  # before a model loads
    model = model_for(source, model, device)
    layers = check_transcoder_config(config, model)
    out = Path(config.out)
    # one writer per --out from the start; the lock also clears killed writers' partials
    with output_lock(out):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # made while we checked
            raise InterpError(f"--out {out} exists and is not an empty folder; choose a new one")
        return _train_transcoders(config, model, layers, out, progress)


def _train_transcoders(
    config: TranscoderTrainConfig,
    model: HookedTransformer,
    layers: list[int],
    out: Path,
    progress: bool,
) -> TranscoderTrainResult:
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    corpus = build_corpus(config.corpus, model)
    t_corpus = time.perf_counter() - t0
    train_tokens = int(scored_mask(corpus.train, corpus.exclude_ids).sum())
    tokens = config.tokens if config.tokens is not None else train_tokens
    check_epochs(tokens, train_tokens)
    if tokens < config.batch_tokens:
        raise InterpError(
            f"{tokens} training tokens are fewer than one batch (--batch-tokens "
            f"{config.batch_tokens}); add text, raise --tokens or lower --batch-tokens"
        )
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        t1 = time.perf_counter()
        weights, curve, scales = _train(config, model, corpus, layers, tokens, progress)
        t_train = time.perf_counter() - t1
        files = save_transcoders(work, weights, scan=out.name)
        t2 = time.perf_counter()
        saved = load_transcoders(work, model)  # evaluate what a user will load
        evals = replacement_loss(
            model, saved, corpus.heldout, corpus.exclude_ids, max_tokens=config.eval_tokens
        )
        evals["corpus_hash"] = corpus.hash
        t_eval = time.perf_counter() - t2
        record = _record(
            config,
            model,
            corpus,
            layers,
            tokens,
            train_tokens,
            curve,
            scales,
            started,
            {"corpus": t_corpus, "train": t_train, "eval": t_eval},
        )
        record["files"] = [p.name for p in files] + [RECORD_FILE, EVALS_FILE]
        _write_json(work / RECORD_FILE, record)
        _write_json(work / EVALS_FILE, evals)
        public_modes(work)  # mkdtemp made it 0700, safetensors files are 0600
        if out.is_dir():
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return TranscoderTrainResult(out, record, evals)


def activation_store(
    config: TranscoderTrainConfig,
    model: HookedTransformer,
    corpus: Corpus,
    layers: list[int],
    tokens: int,
):
    """sae-lens' multi-hook activation store: ``hook_resid_mid`` and ``hook_mlp_out`` of
    every layer from one forward, shuffled together, sinks and special tokens left out."""
    import torch
    from sae_lens.training.activations_store import ActivationsStore

    from interp.sae.train import corpus_dataset

    hooks = [f"blocks.{layer}.{h}" for layer in layers for h in (INPUT_HOOK, OUTPUT_HOOK)]
    d = int(model.cfg.d_model)
    device = str(model.cfg.device)
    return ActivationsStore.from_config_multi_hook(
        model,
        dataset=corpus_dataset(corpus.train),
        hook_names=hooks,
        hook_d_ins=dict.fromkeys(hooks, d),
        streaming=False,
        context_size=corpus.context,
        # the buffer sae-lens shuffles, in context-lengths of tokens: four optimiser steps'
        # worth (every hook of every layer is buffered: ~0.6 GB for SmolLM2's 30 layers)
        n_batches_in_buffer=max(2, math.ceil(4 * config.batch_tokens / corpus.context)),
        total_training_tokens=tokens,
        store_batch_size_prompts=8,
        train_batch_size_tokens=config.batch_tokens,
        prepend_bos=True,  # every sequence starts with the sink token already
        device=device,
        dtype="float32",
        seqpos_slice=(SINK_POSITIONS, None),
        exclude_special_tokens=torch.tensor(corpus.exclude_ids, dtype=torch.long),
        sequence_separator_token=None,
    )


def _pairs(model, layers, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(MLP inputs, MLP outputs), each [layer, tokens, d_model], from a store batch."""
    import torch

    with torch.no_grad():
        xs = [mlp_input(model, layer, batch[f"blocks.{layer}.{INPUT_HOOK}"]) for layer in layers]
        ys = [batch[f"blocks.{layer}.{OUTPUT_HOOK}"] for layer in layers]
    return torch.stack(xs).float(), torch.stack(ys).float()


def _train(config, model, corpus, layers, tokens, progress):
    import torch
    from tqdm.auto import tqdm

    n, d, w = len(layers), int(model.cfg.d_model), config.width
    steps = max(1, tokens // config.batch_tokens)
    warm = max(1, int(config.l1_warmup * steps))
    every = max(1, steps // MAX_CURVE_POINTS)
    curve: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(config.seed)
        store = activation_store(config, model, corpus, layers, tokens)
        loader = store.get_multi_hook_data_loader()
        # Per-layer scales to mean norm sqrt(d), estimated on batches not trained on.
        xs, ys = zip(
            *(_pairs(model, layers, next(loader)) for _ in range(NORM_BATCHES)), strict=True
        )
        x0, y0 = torch.cat(xs, 1), torch.cat(ys, 1)
        s_in = math.sqrt(d) / x0.norm(dim=-1).mean(-1)  # [layer]
        s_out = math.sqrt(d) / y0.norm(dim=-1).mean(-1).clamp_min(1e-8)
        w_enc = torch.empty(n, d, w)
        for i in range(n):
            torch.nn.init.kaiming_uniform_(w_enc[i].T)
        w_dec = w_enc.transpose(1, 2).clone()
        w_dec *= 0.1 / w_dec.norm(dim=-1, keepdim=True)
        params = {
            "W_enc": torch.nn.Parameter(w_enc),
            "b_enc": torch.nn.Parameter(torch.zeros(n, 1, w)),
            "W_dec": torch.nn.Parameter(w_dec),
            "b_dec": torch.nn.Parameter((y0 * s_out[:, None, None]).mean(1, keepdim=True)),
        }
        opt = torch.optim.Adam(params.values(), lr=config.lr)
        bar = tqdm(total=steps, desc="training transcoders", unit="step", disable=not progress)
        try:
            for step in range(1, steps + 1):
                x, y = _pairs(model, layers, next(loader))
                x, y = x * s_in[:, None, None], y * s_out[:, None, None]
                with torch.enable_grad():
                    f = torch.relu(torch.bmm(x, params["W_enc"]) + params["b_enc"])
                    y_hat = torch.bmm(f, params["W_dec"]) + params["b_dec"]
                    mse = (y_hat - y).pow(2).sum(-1).mean(-1)  # [layer]
                    norms = params["W_dec"].norm(dim=-1)  # [layer, width]
                    l1 = (f * norms[:, None, :]).sum(-1).mean(-1)
                    coeff = config.l1 * min(1.0, step / warm)
                    loss = (mse + coeff * l1).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                if step % every == 0 or step == steps:
                    with torch.no_grad():
                        var = (y - y.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1)
                        fvu = (mse / var).tolist()
                        l0 = (f > 0).float().sum(-1).mean(-1).tolist()
                    curve.append(
                        {
                            "step": step,
                            "tokens": step * config.batch_tokens,
                            "loss": float(loss),
                            "l1_coefficient": coeff,
                            "fvu": dict(zip(map(str, layers), fvu, strict=True)),
                            "l0": dict(zip(map(str, layers), l0, strict=True)),
                        }
                    )
                    bar.set_postfix(
                        fvu=f"{sum(fvu) / n:.3f}", l0=f"{sum(l0) / n:.1f}", refresh=False
                    )
                bar.update(1)
        finally:
            bar.close()
    # Fold the scales into the weights: inputs are read unscaled, outputs written unscaled.
    weights = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            weights[layer] = {
                "W_enc": (params["W_enc"][i] * s_in[i]).T.contiguous(),  # [width, d_model]
                "b_enc": params["b_enc"][i, 0].clone(),
                "W_dec": (params["W_dec"][i] / s_out[i]).contiguous(),  # [width, d_model]
                "b_dec": (params["b_dec"][i, 0] / s_out[i]).clone(),
            }
    scales = {str(layer): [float(s_in[i]), float(s_out[i])] for i, layer in enumerate(layers)}
    return weights, curve, scales


@contextmanager
def _quiet():
    """sae-lens' warnings about a tokenized, overridden dataset say nothing a user needs."""
    import logging

    logger = logging.getLogger("sae_lens")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# --- the replacement model's loss ---------------------------------------------------------


def replacement_loss(
    model: HookedTransformer,
    transcoders: TranscoderSet,
    sequences: torch.Tensor,
    exclude_ids: list[int],
    *,
    max_tokens: int | None = None,
    skip_positions: int = SINK_POSITIONS,
) -> dict[str, Any]:
    """Next-token loss of the model with every transcoder's MLP replaced by it, on
    ``sequences`` (``[n_seq, context]``, each starting with the sink token), at the scored
    positions (`interp.sae.evals.scored_mask`; the MLPs are replaced only there, as
    `interp.sae.evals` splices SAEs).

    - ``ce_loss_clean``: the model as it is.
    - ``ce_loss_replacement``: every transcoder layer's MLP output replaced by the transcoder's
      (errors compound downstream: the replacement model of attribution graphs, without its
      error nodes).
    - ``ce_loss_with_errors``: the same plus each layer's error term (MLP output minus the
      transcoder's, both on the clean forward's input): the local replacement model, equal to
      the model by construction (``max_abs_logit_diff_with_errors`` checks it).
    - ``ce_loss_zero_ablated``: those MLPs' outputs zeroed; ``ce_loss_recovered`` = (zero −
      replacement) / (zero − clean). KL of replacement and zero-ablation from clean.
    - per layer: fraction of variance unexplained of ``hook_mlp_out`` and mean L0, on the
      clean forward's MLP inputs, and dead features (never firing on these tokens).
    """
    import torch

    layers = transcoders.layers
    used = heldout_sequences(sequences, max_tokens).to(model.cfg.device)
    n_seq, context = used.shape
    scored = scored_mask(used, exclude_ids, skip_positions)
    ce: dict[str, list[torch.Tensor]] = {k: [] for k in ("clean", "repl", "err", "zero")}
    kl: dict[str, list[torch.Tensor]] = {"repl": [], "zero": []}
    sq_err = torch.zeros(len(layers), dtype=torch.float64)
    sq_sum = torch.zeros(len(layers), dtype=torch.float64)
    lin_sum = torch.zeros(len(layers), model.cfg.d_model, dtype=torch.float64)
    l0 = torch.zeros(len(layers), dtype=torch.float64)
    firing = torch.zeros(len(layers), transcoders.width)
    max_err_diff = 0.0
    with torch.no_grad():
        for start in range(0, n_seq, MAX_BATCH):
            tokens = used[start : start + MAX_BATCH]
            mask = scored[start : start + MAX_BATCH]
            errors: dict[int, torch.Tensor] = {}  # the clean MLP outputs, then the error terms
            inputs: dict[int, torch.Tensor] = {}  # the clean MLP inputs
            clean_hooks = [(f"blocks.{layer}.{OUTPUT_HOOK}", _keep(errors)) for layer in layers]
            clean_hooks += [
                (f"blocks.{layer}.{INPUT_HOOK}", _keep(inputs, model)) for layer in layers
            ]
            logits, loss = model.run_with_hooks(
                tokens, return_type="both", loss_per_token=True, fwd_hooks=clean_hooks
            )
            ce["clean"].append(loss[mask[:, :-1]])
            for i, layer in enumerate(layers):
                x = inputs[layer][mask]
                y = errors[layer][mask].double()
                feats = transcoders.encode(layer, x)
                y_hat = transcoders.decode(layer, feats).double()
                sq_err[i] += (y - y_hat).pow(2).sum()
                sq_sum[i] += y.pow(2).sum()
                lin_sum[i] += y.sum(0)
                l0[i] += (feats > 0).sum()
                firing[i] += (feats > 0).sum(0).float().cpu()
                full = transcoders.forward(layer, inputs[layer])
                errors[layer] = errors[layer] - full  # error term on the clean forward
            out = {}
            for name, with_errors in (("repl", False), ("err", True)):
                hooks = replacement_hooks(model, transcoders, mask, errors if with_errors else None)
                out[name], loss = model.run_with_hooks(
                    tokens, return_type="both", loss_per_token=True, fwd_hooks=hooks
                )
                ce[name].append(loss[mask[:, :-1]])
            max_err_diff = max(max_err_diff, float((out["err"] - logits).abs().max()))
            zero_hooks = [(f"blocks.{layer}.{OUTPUT_HOOK}", _zero_at(mask)) for layer in layers]
            out["zero"], loss = model.run_with_hooks(
                tokens, return_type="both", loss_per_token=True, fwd_hooks=zero_hooks
            )
            ce["zero"].append(loss[mask[:, :-1]])
            clean_logp = logits.log_softmax(-1)
            for name in ("repl", "zero"):
                per_pos = (clean_logp.exp() * (clean_logp - out[name].log_softmax(-1))).sum(-1)
                kl[name].append(per_pos[mask])
    n = int(scored.sum())
    if n == 0:
        raise InterpError("the held-out sequences hold no token to score")
    mean = {k: float(torch.cat(v).mean()) for k, v in ce.items()}
    kls = {k: float(torch.cat(v).mean()) for k, v in kl.items()}
    var = sq_sum - lin_sum.pow(2).sum(-1) / n
    per_layer = [
        {
            "layer": layer,
            "fvu": float(sq_err[i] / var[i]),
            "mean_l0": float(l0[i] / n),
            "dead_features": int((firing[i] == 0).sum()),
        }
        for i, layer in enumerate(layers)
    ]
    return {
        "layers": layers,
        "width": transcoders.width,
        "ce_loss_clean": mean["clean"],
        "ce_loss_replacement": mean["repl"],
        "ce_loss_with_errors": mean["err"],
        "ce_loss_zero_ablated": mean["zero"],
        "ce_loss_recovered": (mean["zero"] - mean["repl"]) / (mean["zero"] - mean["clean"]),
        "kl_replacement": kls["repl"],
        "kl_zero_ablated": kls["zero"],
        "max_abs_logit_diff_with_errors": max_err_diff,
        "mean_fvu": sum(r["fvu"] for r in per_layer) / len(per_layer),
        "mean_l0": sum(r["mean_l0"] for r in per_layer) / len(per_layer),
        "per_layer": per_layer,
        "heldout_sequences": n_seq,
        "context": context,
        "scored_tokens": n,
        "replaced_at": (
            f"scored positions only (not the first {skip_positions} of a sequence, not special "
            "tokens); the model's own MLP output elsewhere"
        ),
    }


def _keep(into: dict, model=None):
    """A hook storing its activation by layer (as the MLP's input when ``model`` is given)."""

    def hook(acts, hook):
        layer = int(hook.name.split(".")[1])
        into[layer] = acts if model is None else mlp_input(model, layer, acts)
        return acts

    return hook


def _zero_at(mask):
    import torch

    def hook(acts, hook):
        return torch.where(mask[..., None], torch.zeros_like(acts), acts)

    return hook


def replacement_hooks(
    model: HookedTransformer,
    transcoders: TranscoderSet,
    mask: torch.Tensor | None = None,
    errors: dict[int, torch.Tensor] | None = None,
) -> list[tuple[str, Any]]:
    """Hooks that replace each transcoder layer's MLP output by the transcoder's output on
    this forward's MLP input (plus ``errors[layer]`` when given), where ``mask`` [batch, pos]
    is true (everywhere when None). Only residual-stream hooks: the fast path stays on."""
    import torch

    inputs: dict[int, torch.Tensor] = {}

    def keep(acts, hook):
        inputs[int(hook.name.split(".")[1])] = acts
        return acts

    def replace(acts, hook):
        layer = int(hook.name.split(".")[1])
        new = transcoders.forward(layer, mlp_input(model, layer, inputs.pop(layer)))
        new = new.to(acts.dtype)
        if errors is not None:
            new = new + errors[layer]
        return new if mask is None else torch.where(mask[..., None], new, acts)

    hooks: list[tuple[str, Any]] = []
    for layer in transcoders.layers:
        hooks.append((f"blocks.{layer}.{INPUT_HOOK}", keep))
        hooks.append((f"blocks.{layer}.{OUTPUT_HOOK}", replace))
    return hooks


def format_replacement(evals: dict[str, Any]) -> str:
    rows = [
        ("layers", f"{len(evals['layers'])} ({evals['width']} features each)"),
        ("mean FVU of hook_mlp_out", f"{evals['mean_fvu']:.3f}"),
        ("mean L0", f"{evals['mean_l0']:.1f}"),
        (
            "CE clean / replacement / zero-ablated",
            f"{evals['ce_loss_clean']:.3f} / {evals['ce_loss_replacement']:.3f} / "
            f"{evals['ce_loss_zero_ablated']:.3f}",
        ),
        ("CE loss recovered", f"{evals['ce_loss_recovered']:.3f}"),
        (
            "CE with error terms (= clean)",
            f"{evals['ce_loss_with_errors']:.4f} (max |dlogit| "
            f"{evals['max_abs_logit_diff_with_errors']:.2g})",
        ),
        ("KL replacement", f"{evals['kl_replacement']:.4f}"),
        ("held-out tokens scored", f"{evals['scored_tokens']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _record(config, model, corpus, layers, tokens, train_tokens, curve, scales, started, secs):
    from importlib import metadata

    source = getattr(model, "interp_source", None)
    return {
        "kind": "per-layer transcoders (ReLU)",
        "layers": layers,
        "width": config.width,
        "input": f"ln2(blocks.<L>.{INPUT_HOOK}) (circuit-tracer: {CT_INPUT_HOOK})",
        "output": f"blocks.<L>.{OUTPUT_HOOK}",
        "config": config.record(),
        "model": source.to_dict() if source is not None else {"model_id": model.cfg.model_name},
        "corpus": {**corpus.to_dict(), "config": asdict(config.corpus)},
        "tokens": {"trained": tokens, "train_split": train_tokens, "epochs": tokens / train_tokens},
        "scales_in_out": scales,
        "loss_curve": curve,
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": {k: round(v, 2) for k, v in secs.items()},
        "train_tokens_per_s": round(tokens / secs["train"], 1) if secs["train"] else None,
        "versions": {p: metadata.version(p) for p in ("sae-lens", "transformer-lens", "torch")},
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")

"""One verb shape for circuits and SAEs (issue 24 part 2): ``verb(source, Config, *, model=None,
progress=True, workers=None)``; ``CircuitConfig(level=...)`` covering feature circuits; the
shared training options; the records' key order kept (outputs byte-identical)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import interp
from interp.circuits import CircuitConfig, circuit
from interp.errors import InterpError
from interp.runs.distributed import Workers
from interp.sae.evals import EvalConfig, EvalResult, evaluate_sae
from interp.sae.latent_changes import sae_features
from interp.sae.train import (
    SHARED_TRAINING_FIELDS,
    TrainConfig,
    TrainingOptions,
    train_sae,
    training_fields,
)
from interp.sae.transcoders import TranscoderTrainConfig, train_transcoders

VERBS = {
    "circuit": (circuit, "run"),
    "sae_features": (sae_features, "run"),
    "train_sae": (train_sae, "source"),
    "train_transcoders": (train_transcoders, "source"),
    "evaluate_sae": (evaluate_sae, "source"),
}


@pytest.mark.parametrize("name", sorted(VERBS))
def test_every_verb_has_the_one_shape(name: str) -> None:
    verb, first = VERBS[name]
    params = inspect.signature(verb).parameters
    assert list(params)[:2] == [first, "config"]
    for p in list(params.values())[:2]:
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for key, default in (("model", None), ("progress", True), ("workers", None)):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, key
        assert params[key].default is default, key
    assert getattr(interp, name) is verb  # exported from interp


def test_the_old_names_are_gone() -> None:
    import interp.circuits.feature_level as features
    import interp.sae.evals as evals

    assert not hasattr(features, "feature_circuit")
    assert not hasattr(evals, "evaluate_on_corpus")


@pytest.mark.parametrize(
    ("verb", "config"),
    [
        (train_sae, TrainConfig(out="never-written")),
        (train_transcoders, TranscoderTrainConfig(out="never-written")),
        (evaluate_sae, EvalConfig(sae="never-read")),
    ],
)
def test_single_process_verbs_refuse_workers_before_any_model_loads(verb, config) -> None:
    with pytest.raises(InterpError, match="runs in this process only"):
        verb("no-such-model", config, workers=Workers(n=2))


def test_component_config_records_the_fields_it_always_recorded() -> None:
    config = CircuitConfig(round=2)
    assert (config.top, config.batch_size) == (50, 32)
    assert list(config.to_dict()) == [
        "round",
        "target_round",
        "method",
        "steps",
        "top",
        "verify_top",
        "examples",
        "categories",
        "context_condition",
        "limit",
        "sample",
        "batch_size",
        "n_boot",
        "seed",
        "cluster",
    ]
    assert config.name() == "r2-t0-eap-ig5"


def test_feature_level_is_the_former_feature_circuit_config() -> None:
    from interp.circuits.feature_level import FeatureCircuitConfig

    config = CircuitConfig(round=3, level="features", transcoders="x/tc", examples=("b/3",))
    assert (config.top, config.batch_size) == (10, 64)
    expected = FeatureCircuitConfig(transcoders="x/tc", round=3, example="b/3")
    assert config.feature_config() == expected
    assert config.name() == expected.name() == "r3-t0-b_3-tc"
    assert CircuitConfig(round=1, level="features", transcoders="t").feature_config().example == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CircuitConfig(round=1, level="edges"), "unknown level 'edges'"),
        (CircuitConfig(round=1, transcoders="t"), "transcoders applies to level features"),
        (CircuitConfig(round=1, level="features"), "needs transcoders"),
        (
            CircuitConfig(round=1, level="features", transcoders="t", examples=(0, 1)),
            "one example",
        ),
        (
            CircuitConfig(round=1, level="features", transcoders="t", method="eap"),
            "method applies to level components",
        ),
        (
            CircuitConfig(round=1, level="features", transcoders="t", node_threshold=2.0),
            "--node-threshold",
        ),
    ],
)
def test_circuit_config_refuses_fields_of_the_other_level(config, message) -> None:
    with pytest.raises(InterpError, match=message):
        config.check()


def test_training_options_are_declared_once() -> None:
    assert issubclass(TrainConfig, TrainingOptions)
    assert issubclass(TranscoderTrainConfig, TrainingOptions)
    for cls in (TrainConfig, TranscoderTrainConfig):
        declared = training_fields(cls)
        names = [name for name, *_ in declared]
        assert names[: len(SHARED_TRAINING_FIELDS) - 1] == [
            f for f in SHARED_TRAINING_FIELDS if f != "corpus"
        ]
        assert all(help_text for *_, help_text in declared), cls
    # each keeps its own defaults
    assert (TrainConfig().width, TrainConfig().lr) == (2048, 5e-4)
    assert (TranscoderTrainConfig().width, TranscoderTrainConfig().lr) == (1024, 1e-3)


def test_training_records_keep_their_key_order() -> None:
    assert list(TrainConfig().record()) == [
        "out",
        "hook",
        "architecture",
        "width",
        "k",
        "l1",
        "tokens",
        "lr",
        "batch_tokens",
        "seed",
        "eval_tokens",
    ]
    assert list(TranscoderTrainConfig().record()) == [
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
    ]
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"corpus"}
    assert set(TrainConfig().record()) == fields


def test_eval_result_is_a_dataclass_with_a_table() -> None:
    result = EvalResult("sae", {"explained_variance": 0.5, "trained_on_this_corpus": None})
    assert dataclasses.is_dataclass(result)
    assert result.table["metric"].tolist() == ["explained_variance", "trained_on_this_corpus"]
    assert result.trained_on_this_corpus is None
    assert "explained variance 0.5" in repr(result)

"""``interp sae train`` and ``interp sae train-transcoders`` (issue 24: "near-copies"): their
options are generated from the training configs (:func:`interp.sae.train.training_fields`),
so the options they share are declared once, and a field added to
:class:`~interp.sae.train.TrainingOptions` is an option of both."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import typer

from interp.cli import app, sae
from interp.cli.params import Out, Seed
from interp.sae.train import TrainConfig, TrainingOptions, option, training_fields
from interp.sae.transcoders import TranscoderTrainConfig

COMMAND = typer.main.get_command(app)
TRAIN = COMMAND.commands["sae"].commands["train"]
TRANSCODERS = COMMAND.commands["sae"].commands["train-transcoders"]


def _params(command) -> dict[str, object]:
    return {p.name: p for p in command.params if p.name != "help"}


# The CLI's own spelling of three fields (interp.cli.sae.CLI_FIELDS): the shared vocabulary.
VOCABULARY = {"out": Out, "seed": Seed}


def test_every_shared_field_is_an_option_of_both_commands():
    shared = [name for name, *_ in training_fields(TrainingOptions)]
    assert shared == ["out", "width", "tokens", "lr", "batch_tokens", "seed", "eval_tokens"]
    for command in (TRAIN, TRANSCODERS):
        assert set(shared) <= set(_params(command)), command.name


@pytest.mark.parametrize("config_class", [TrainConfig, TranscoderTrainConfig])
def test_each_option_is_its_config_fields_declaration(config_class):
    """Type, default and help come from the field (or, for --out, --seed and --layers, from
    the shared vocabulary); nothing is re-declared in the command."""
    command = TRAIN if config_class is TrainConfig else TRANSCODERS
    params = _params(command)
    for name, _type, default, help in training_fields(config_class):
        param = params[name]
        if name in VOCABULARY:
            assert param.help == VOCABULARY[name].__metadata__[0].help, name
        elif name == "layers":
            assert param.help == sae.Layers.__metadata__[0].help
        else:
            assert (param.help, param.default) == (help, default), name


def test_fields_neither_config_changes_are_one_option():
    """tokens, batch_tokens and eval_tokens are TrainingOptions' alone: the same flag, type,
    default and help in both commands, those of TrainingOptions."""
    base = {name: (default, help) for name, _t, default, help in training_fields(TrainingOptions)}
    train, transcoders = _params(TRAIN), _params(TRANSCODERS)
    annotations = {c.__name__: c.__annotations__ for c in (sae.train, sae.train_transcoders)}
    for name in ("tokens", "batch_tokens", "eval_tokens", "seed", "out"):
        a, b = train[name], transcoders[name]
        assert (a.opts, a.default, a.help, a.required) == (b.opts, b.default, b.help, b.required)
        types_ = [typing.get_args(annotations[c][name])[0] for c in annotations]
        assert types_[0] == types_[1], name
        if name not in VOCABULARY:
            assert (a.default, a.help) == base[name], name
    # the fields a config overrides keep their own default and help
    assert (train["width"].default, transcoders["width"].default) == (2048, 1024)
    assert (train["lr"].default, transcoders["lr"].default) == (5e-4, 1e-3)


def test_a_field_added_to_training_options_is_an_option_of_both():
    @dataclasses.dataclass
    class More(TrainingOptions):
        warmup_steps: int = option(7, "Steps of learning-rate warm-up.")

    @dataclasses.dataclass
    class MoreTrain(TrainConfig, More):
        pass

    @dataclasses.dataclass
    class MoreTranscoders(TranscoderTrainConfig, More):
        pass

    for config_class, own in [
        (MoreTrain, ("hook", "architecture", "width", "k", "l1")),
        (MoreTranscoders, ("layers", "width", "l1", "l1_warmup")),
    ]:
        params = {p.name: p for p in sae.training_parameters(config_class, own)}
        assert params["warmup_steps"].default == 7
        option_ = params["warmup_steps"].annotation.__metadata__[0]
        assert option_.help == "Steps of learning-rate warm-up."
        names = list(params)
        assert names.index("warmup_steps") == names.index("device") - 1  # before --device
        assert {name for name, *_ in training_fields(config_class)} <= set(names)


def test_the_generated_commands_keep_the_order_of_their_help():
    assert [p.opts[0] for p in TRAIN.params][:8] == [
        "--out",
        "--corpus",
        "--data",
        "--run",
        "--model",
        "--hook",
        "--architecture",
        "--width",
    ]
    assert [p.opts[0] for p in TRANSCODERS.params][5:9] == [
        "--layers",
        "--width",
        "--l1",
        "--l1-warmup",
    ]
    assert [p.opts[0] for p in TRAIN.params][-2:] == ["--device", "--json"]

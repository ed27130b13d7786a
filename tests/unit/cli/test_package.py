"""The shape of the command line (issue 12): one ``interp/cli`` package whose options match the
config dataclasses they fill, the same flag parsed the same way everywhere (old spellings kept),
library errors that name fields shown with flags, and an ``import interp`` without torch."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from interp.cli import app, flag_message
from interp.cli.params import parse_layers
from interp.errors import InterpError

ROOT = Path(__file__).resolve().parents[3]
COMMAND = typer.main.get_command(app)


def _modules_after(code: str) -> set[str]:
    """The modules loaded by ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import interp",
        "import interp.cli",
        "from interp.report.tables import format_metrics",
        "import interp.metrics.rounds, interp.runs.store",
        "from interp.cli import metrics",
    ],
)
def test_light_imports_load_neither_torch_nor_transformer_lens(code: str) -> None:
    loaded = _modules_after(code)
    assert "torch" not in loaded
    assert "transformer_lens" not in loaded


def test_lazy_exports_are_the_library_objects(monkeypatch) -> None:
    import interp
    import interp.replay
    import interp.replay.loop
    import interp.report.export
    import probes.api
    import probes.config

    assert interp.ReplayConfig is interp.replay.loop.ReplayConfig
    # The verb `replay` and the package `interp.replay` are one object: the package is callable.
    assert interp.replay is sys.modules["interp.replay"] and callable(interp.replay)
    # Calling the package calls the function `replay` (looked up when called).
    from interp.runs.store import Run

    done = Run(Path("replayed"), {})
    calls = []
    monkeypatch.setattr(interp.replay, "replay", lambda *a, **kw: calls.append((a, kw)) or done)
    assert interp.replay("cfg", progress=False) is done
    assert calls == [(("cfg",), {"progress": False})]
    assert interp.ProbeConfig is probes.config.ProbeConfig
    assert interp.probe is probes.api.probe
    assert interp.ExportConfig is interp.report.export.ExportConfig
    assert interp.export is interp.report.export.export
    with pytest.raises(AttributeError):
        interp.no_such_name  # noqa: B018


def test_nothing_outside_the_cli_imports_it() -> None:
    pattern = re.compile(r"(from|import)\s+interp\.cli\b|from\s+interp\s+import\s+.*\bcli\b")
    offenders = []
    for folder in ("interp", "probes", "notebooks", "benchmarks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".ipynb") or (ROOT / "interp" / "cli") in path.parents:
                continue
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_commands_are_registered_in_one_place() -> None:
    assert sorted(COMMAND.commands) == sorted(
        [
            "models",
            "replay",
            "metrics",
            "probe",
            "patch",
            "circuit",
            "feature-circuit",
            "export",
            "explore",
            "finetune",
            "sae",
            "experiment",
        ]
    )
    assert {"train", "train-transcoders", "eval", "features"} <= set(
        COMMAND.commands["sae"].commands
    )


def test_sae_train_defaults_are_the_config_defaults() -> None:
    from interp.sae.corpus import CorpusConfig
    from interp.sae.train import TrainConfig

    train = COMMAND.commands["sae"].commands["train"]
    defaults = {
        **{f.name: _field_default(f) for f in dataclasses.fields(CorpusConfig)},
        **{f.name: _field_default(f) for f in dataclasses.fields(TrainConfig)},
    }
    for param in train.params:
        if param.name in defaults and param.name not in ("out", "corpus", "data", "runs"):
            assert param.default == defaults[param.name], param.name
    assert {p.name for p in train.params} >= set(defaults) - {"runs"}


def test_sae_train_transcoders_defaults_are_the_config_defaults() -> None:
    from interp.sae.corpus import CorpusConfig
    from interp.sae.transcoders import TranscoderTrainConfig

    train = COMMAND.commands["sae"].commands["train-transcoders"]
    defaults = {
        **{f.name: _field_default(f) for f in dataclasses.fields(CorpusConfig)},
        **{f.name: _field_default(f) for f in dataclasses.fields(TranscoderTrainConfig)},
    }
    for param in train.params:
        if param.name in defaults and param.name not in ("out", "corpus", "data", "runs"):
            if param.name == "layers":  # read by parse_layers: "all" is None
                assert parse_layers(param.default) == defaults["layers"]
                continue
            assert param.default == defaults[param.name], param.name
    assert {p.name for p in train.params} >= set(defaults) - {"runs"}


# --- every option against its config field ------------------------------------------------

# command -> (config class, CLI options that are not config fields, CLI name -> field name,
# fields the CLI does not offer, options read through a parser rather than taken as typed)
# How the work is spread (interp.runs.distributed.Workers) is not part of what it computes.
_WORKERS = {"workers", "ray_address", "gpus_per_worker", "threads_per_worker"}
_CASES: dict[str, tuple[str, set[str], dict[str, str], set[str], set[str]]] = {
    "replay": ("interp.replay.loop:ReplayConfig", {"as_json", *_WORKERS}, {}, set(), set()),
    # --examples: ids or indices, parsed (interp.cli.params.parse_examples)
    "probe": (
        "probes.config:ProbeConfig",
        {"run", "as_json"},
        {},
        {"test_size", "n_boot"},
        {"examples"},
    ),
    "patch": (
        "interp.patching:PatchConfig",
        {"run", "device", "dtype", "top", "as_json", *_WORKERS},
        {"category": "categories"},
        set(),
        {"layer", "examples"},
    ),
    # both levels (--level): --top-edges and --top-features fill the field `top`, one meaning
    # per flag name
    "circuit": (
        "interp.circuits:CircuitConfig",
        {"run", "device", "dtype", "as_json", *_WORKERS},
        {"category": "categories", "top": "top", "top_features": "top"},
        set(),
        {"examples"},
    ),
    # --examples: one id, or digits read as an example index
    "export": (
        "interp.report.export:ExportConfig",
        {"run", "as_json", "limit", "sample", "seed"},
        {"examples": "example_index"},
        set(),
        {"examples"},
    ),
    "feature-circuit": (
        "interp.circuits.feature_level:FeatureCircuitConfig",
        {"run", "device", "as_json", "limit", "sample", "seed"},
        {"examples": "example", "top": "top"},  # --top-features
        set(),
        {"examples"},
    ),
}


def _cli_type(annotation: Any) -> tuple[str, bool]:
    """(element type's name, several values?) of a command parameter's annotation; a path
    fills a ``str`` field."""
    if isinstance(annotation, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    several = typing.get_origin(annotation) is list
    element = typing.get_args(annotation)[0] if several else annotation
    return ("str" if element is Path else element.__name__), several


def _config(spec: str) -> type:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("command", sorted(_CASES))
def test_every_option_matches_its_config_field(command: str) -> None:
    spec, cli_only, renamed, not_on_cli, parsed = _CASES[command]
    fields = {f.name: f for f in dataclasses.fields(_config(spec))}
    params = {p.name: p for p in COMMAND.commands[command].params if p.name != "help"}
    hints = typing.get_type_hints(inspect.unwrap(COMMAND.commands[command].callback))
    option_fields = {renamed.get(name, name) for name in params} - cli_only
    assert option_fields == set(fields) - not_on_cli, "a config field without an option or back"
    for name, param in params.items():
        if name in cli_only:
            continue
        field = fields[renamed.get(name, name)]
        flag = "--" + field.name.replace("_", "-")
        # The flag is the field's name, or its singular or plural (patch --layers fills the
        # field `layer`, --category the field `categories`); an old spelling may follow.
        assert param.opts[0].rstrip("s") == flag.rstrip("s") or name in renamed, name
        annotation = str(field.type)
        if name in parsed:
            continue
        if field.name == "layers":  # read by parse_layers: "all" is None
            assert parse_layers(param.default) == field.default
            continue
        kind, several = _cli_type(hints[name])
        assert kind in annotation, (name, kind, annotation)
        assert several == param.multiple == annotation.startswith(("list", "tuple")), name
        default = _field_default(field)
        if command == "circuit" and field.name in ("top", "batch_size"):  # the level's default
            from interp.circuits.pipeline import LEVEL_DEFAULTS

            level = "features" if name == "top_features" else "components"
            # --batch-size: not given (None), the config's None, is the level's default
            default = None if name == "batch_size" else LEVEL_DEFAULTS[level][field.name]
        if param.required:  # a run directory to write is always named on the command line
            continue
        if param.multiple:  # not given: the config's own default
            assert param.default is None, name
            continue
        cli_default = str(param.default) if isinstance(param.default, Path) else param.default
        assert cli_default == default, (name, cli_default, default)


def test_option_flags_name_the_config_fields() -> None:
    """Spot checks of the table above: a renamed option names its field; old spellings are no
    option names any more (the command class rewrites them, interp.cli.params.DEPRECATED)."""
    patch = {p.name: p.opts for p in COMMAND.commands["patch"].params}
    assert patch["layer"] == ["--layers"]
    assert patch["examples"] == ["--examples"]
    assert patch["top"] == ["--rows"]
    probe = {p.name: p.opts for p in COMMAND.commands["probe"].params}
    assert probe["layers"] == ["--layers"]
    export = {p.name: p.opts for p in COMMAND.commands["export"].params}
    assert export["examples"] == ["--examples"]


# --- one parser per flag; old spellings ---------------------------------------------------


def test_parse_layers() -> None:
    assert parse_layers("all") is None
    assert parse_layers(None) is None
    assert parse_layers("3,5-7") == [3, 5, 6, 7]
    with pytest.raises(InterpError, match=r"--layers 'a-b': expected 'all'"):
        parse_layers("a-b")


def _error(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return result.stderr.strip()


@pytest.mark.parametrize("flag", ["--layer", "--layers"])
def test_both_layer_spellings_reach_the_same_parser(flag: str, tmp_path: Path) -> None:
    run = str(tmp_path / "none")
    assert "expected 'all' or numbers" in _error("patch", "--run", run, flag, "x", "--round", "1")
    assert "expected 'all' or numbers" in _error("probe", "--run", run, flag, "a-b")


@pytest.mark.parametrize("flag", ["--example", "--examples"])
def test_both_example_spellings_parse(flag: str, tmp_path: Path) -> None:
    """Both spellings get past parsing to the run check (a usage error would exit 2 too, but
    with click's 'No such option' message)."""
    line = _error(
        "patch", "--run", str(tmp_path / "none"), "--layers", "0", "--round", "1", flag, "3"
    )
    assert "No such option" not in line and "error:" in line
    line = _error("export", "--run", str(tmp_path / "none"), flag.rstrip("s"), "1")
    assert "No such option" not in line


def test_multi_value_examples() -> None:
    from interp.cli import _expand_multi_value_options

    assert _expand_multi_value_options(["--examples", "a", "b"]) == [
        "--examples",
        "a",
        "--examples",
        "b",
    ]


# --- library errors name fields; the CLI names flags ---------------------------------------


def test_flag_message() -> None:
    assert (
        flag_message("rounds must be at least 1 (got 0)") == "--rounds must be at least 1 (got 0)"
    )
    assert flag_message("batch_size must be at least 1") == "--batch-size must be at least 1"
    assert flag_message("force_round0 'x': use label") == "--force-round0 'x': use label"
    assert flag_message("out of range") == "out of range"
    assert flag_message("--limit must be at least 1") == "--limit must be at least 1"


def test_library_error_names_the_field_and_the_cli_the_flag(tmp_path: Path) -> None:
    from interp.replay.loop import ReplayConfig, replay

    with pytest.raises(InterpError, match=r"^rounds must be at least 1 \(got 0\)$"):
        replay(ReplayConfig(model="tiny", rounds=0, out=str(tmp_path / "a")))
    line = _error("replay", "--model", "tiny", "--rounds", "0", "--out", str(tmp_path / "b"))
    assert line == "error: --rounds must be at least 1 (got 0)"
    assert not (tmp_path / "b").exists()


def test_help_lists_every_command_without_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "interp.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    for name in ("models", "replay", "metrics", "probe", "patch", "export"):
        assert name in out


def test_metrics_command_runs_without_torch(tmp_path: Path) -> None:
    """`interp metrics` reads a run (its files checked, activations included) without torch."""
    run = tmp_path / "run"
    replay = ["replay", "--model", "tiny", "--rounds", "1", "--limit", "2", "--out", str(run)]
    assert CliRunner().invoke(app, [*replay, "--json"]).exit_code == 0
    code = (
        "import sys\n"
        f"sys.argv = ['interp', 'metrics', '--run', {str(run)!r}]\n"
        "from interp.cli import main\n"
        "try:\n    main()\nexcept SystemExit as err:\n    assert not err.code, err.code\n"
        "print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.splitlines()[-1] == "False False"

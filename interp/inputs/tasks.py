"""Multiple-choice tasks: BBQ files, the built-in example set, and a simple custom format.

Every loader returns a list of `Example`, one per non-blank line, validated line by line: a
bad line raises `InterpError` with "FILE:LINE: what is wrong". Files are read within the
bounds of `interp.inputs.files`: at most 256 MiB a file, 64 KiB a line, ids of at most 200
characters, integers of at most 18 digits, JSON nested at most 32 deep.

Tasks
-----
- ``bbq``: files in the official BBQ JSONL format (Parrish et al. 2022, github.com/nyu-mll/BBQ,
  folder ``data/``), any category. Ids are ``"<file stem>/<example_id>"``, e.g. ``"Age/12"``.
- ``builtin``: 48 short items written for this project in the same format, 6 per category
  (Age, Disability_status, Physical_appearance, Religion, Sexual_orientation, Nationality,
  Gender_identity, SES). Ids are ``"builtin/<example_id>"``.
- ``mc``: your own questions, one JSON object per line::

      {"id": "q1", "context": "...", "question": "...", "options": ["...", "...", "..."],
       "label": 0, "category": "custom", "target": 1, "unknown": 2,
       "context_condition": "ambig", "question_polarity": "neg"}

  Required: ``id`` (string or integer, unique within the files loaded), ``question`` (text),
  ``options`` (2 to 6 non-empty, distinct texts), ``label`` (0-based index of the correct
  option). Optional: ``context`` (text, default ""), ``category`` (default "custom"),
  ``target`` (index of the option that matches the stereotype, needed for bias scores),
  ``unknown`` (index of the "cannot be determined" option; without it no option counts as
  unknown), ``context_condition`` ("ambig" or "disambig"), ``question_polarity`` ("neg" or
  "nonneg"), ``question_index`` (template number: items sharing it and the category are one
  cluster of the bootstrap). Other keys are rejected, so a misspelt key is an error rather
  than ignored.
  Ids are ``"<file stem>/<id>"``.

Bias target of a BBQ example: the rule of the official BBQ analysis script, implemented in
`interp.inputs.bbq_rules` (the answer whose group is in ``additional_metadata.stereotyped_groups``
for negative questions, the other answer that is not "unknown" for non-negative ones, with the
script's tag normalisation and fixes). The intersectional categories (Race_x_gender,
Race_x_SES) need the BBQ template files (``templates=``); without them, and wherever the
official rule gives no target, ``target`` is None, ``target_reason`` says why, and the example
is left out of bias scores (`target_summary` counts them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from interp.errors import InterpError
from interp.inputs import bbq_rules
from interp.inputs.files import (
    MAX_DATA_FILE_BYTES,
    check_id_length,
    json_type,
    jsonl_objects,
    read_text_bounded,
)

TASKS = ("bbq", "builtin", "mc")

# Answer strings the official BBQ analysis script counts as "unknown".
UNKNOWN_ANSWERS = (
    "unknown",
    "cannot be determined",
    "can't be determined",
    "not answerable",
    "not known",
    "not enough info",
    "not enough information",
    "cannot answer",
    "can't answer",
    "undetermined",
)

_BUILTIN_SOURCE = "interp/data/examples.jsonl"
_BBQ_OPTION_KEYS = ("ans0", "ans1", "ans2")
_CONDITIONS = ("ambig", "disambig")
_POLARITIES = ("neg", "nonneg")
_MC_REQUIRED = ("id", "question", "options", "label")
_MC_OPTIONAL = (
    "context",
    "category",
    "target",
    "unknown",
    "context_condition",
    "question_polarity",
    "question_index",
)
_MC_MAX_OPTIONS = 6


@dataclass(frozen=True)
class Example:
    """One multiple-choice item, whatever file format it came from."""

    example_id: str
    """Unique across the files loaded together: "<file stem>/<id in the file>"."""
    category: str
    """Bias category, e.g. "Age"; "custom" for mc files without one."""
    context: str
    """Text before the question; may be empty."""
    question: str
    options: tuple[str, ...]
    """Answer texts in file order (BBQ: ans0, ans1, ans2)."""
    label: int
    """Index of the correct option."""
    target: int | None
    """Index of the bias-target option; None when it cannot be determined."""
    unknown: int | None
    """Index of the "cannot be determined" option; None when there is none."""
    context_condition: str | None
    """"ambig" or "disambig"; None when not given."""
    question_polarity: str | None
    """"neg" or "nonneg"; None when not given."""
    source: str
    """"path:line" of the line the example came from."""
    label_type: str | None = None
    """BBQ: "name" (items naming people) or "label" (group labels), the official split of a
    category's scores; None for other tasks or when unknown."""
    target_reason: str | None = None
    """Why ``target`` is None (one of ``bbq_rules.REASONS``); None when there is a target."""
    question_index: str | None = None
    """BBQ template number within the category (with it, the bootstrap's cluster); None for
    mc lines without one."""
    stereotyped_groups: tuple[str, ...] = ()
    """BBQ: ``additional_metadata.stereotyped_groups`` (the groups the question's stereotype
    is about), for feedback plans; empty for other tasks."""


# ---------------------------------------------------------------------------------------------
# Public loaders


def load_bbq(
    paths: Sequence[str | Path] | str | Path, templates: str | Path | None = None
) -> list[Example]:
    """Load BBQ JSONL files (official format, any category) in the given order.

    ``templates``: the BBQ repository's ``templates/`` folder; the official target rule of the
    intersectional categories (Race_x_gender, Race_x_SES) needs it. Without it their examples
    load with ``target`` None and ``target_reason`` "needs_templates".

    Args:
        paths: One BBQ ``.jsonl`` file or several, read in this order.
        templates: The BBQ repository's ``templates/`` folder, or None.

    Returns:
        The examples, in file and line order.

    Raises:
        InterpError: No file given, a file cannot be read, a line is malformed, example ids
            repeat, or ``templates`` is not a folder of intersectional templates.
    """
    table = bbq_rules.load_templates(templates) if templates is not None else None
    examples = []
    for path in _path_list(paths, "bbq"):
        rows = _rows(_read_text(path), str(path))
        examples += [_bbq_example(obj, Path(path).stem, where, table) for where, obj in rows]
    return _check_unique(examples)


def load_builtin() -> list[Example]:
    """Load the 48 built-in BBQ-format items shipped with the package."""
    rows = _rows(_builtin_text(), _BUILTIN_SOURCE)
    return _check_unique([_bbq_example(obj, "builtin", where) for where, obj in rows])


def load_mc(paths: Sequence[str | Path] | str | Path) -> list[Example]:
    """Load custom multiple-choice JSONL files (format in the module docstring).

    Args:
        paths: One multiple-choice ``.jsonl`` file or several, read in this order.

    Returns:
        The examples, in file and line order.

    Raises:
        InterpError: No file given, a file cannot be read, a line is malformed, or example ids
            repeat.
    """
    examples = []
    for path in _path_list(paths, "mc"):
        rows = _rows(_read_text(path), str(path))
        examples += [_mc_example(obj, Path(path).stem, where) for where, obj in rows]
    return _check_unique(examples)


def load_task(
    task: str,
    paths: Sequence[str | Path] | None = None,
    *,
    bbq_templates: str | Path | None = None,
) -> list[Example]:
    """Load a task by name: "bbq" and "mc" need data files, "builtin" takes none.

    ``bbq_templates`` (task "bbq" only): see `load_bbq`.

    Args:
        task: ``"bbq"``, ``"mc"`` or ``"builtin"`` (``TASKS``).
        paths: The data files (none for ``"builtin"``).
        bbq_templates: The BBQ ``templates/`` folder (task ``"bbq"`` only).

    Returns:
        The examples.

    Raises:
        InterpError: Unknown task, files missing or given where none are taken,
            ``bbq_templates`` with another task, or any error of the loader.
    """
    if task not in TASKS:
        raise InterpError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if bbq_templates is not None and task != "bbq":
        raise InterpError(f"--bbq-templates applies to --task bbq only, not {task!r}")
    if task == "builtin":
        if paths:
            raise InterpError("task 'builtin' takes no data files; drop the paths or use 'bbq'")
        return load_builtin()
    if not paths:
        raise InterpError(f"task {task!r} needs at least one data file")
    return load_bbq(paths, bbq_templates) if task == "bbq" else load_mc(paths)


def data_hash(paths: Sequence[str | Path] | str | Path) -> str:
    """SHA-256 (hex) over the bytes of the files, in the order given, for the run manifest.

    Args:
        paths: One data file or several.

    Returns:
        The 64-character hex digest.

    Raises:
        InterpError: No file given, or a file cannot be read.
    """
    digest = hashlib.sha256()
    for path in _path_list(paths, "data_hash"):
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise InterpError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return digest.hexdigest()


def task_data_hash(task: str, paths: Sequence[str | Path] | None = None) -> str:
    """`data_hash` of what `load_task` reads, the built-in set included.

    Args:
        task: ``"bbq"``, ``"mc"`` or ``"builtin"``.
        paths: The data files (none for ``"builtin"``).

    Returns:
        The 64-character hex digest (of the packaged items for ``"builtin"``).

    Raises:
        InterpError: As :func:`load_task` for a bad task or paths, or a file cannot be read.
    """
    wants_paths = task != "builtin"
    if task not in TASKS or wants_paths != bool(paths):
        load_task(task, paths)  # raises the same error as loading would
    if not wants_paths:
        return hashlib.sha256(_builtin_bytes()).hexdigest()
    return data_hash(paths or [])


_REASON_TEXT = {
    bbq_rules.NEEDS_TEMPLATES: (
        "their official target needs the BBQ templates: pass --bbq-templates DIR (the BBQ "
        "repository's templates/ folder)"
    ),
    bbq_rules.NO_TEMPLATE_ROW: "the templates have no row for their question_index",
    bbq_rules.NO_MATCH: "no answer matches the stereotyped group",
    bbq_rules.SEVERAL_MATCHES: "more than one answer matches the stereotyped group",
    bbq_rules.UNDETERMINED: "the official rule is undefined for them (NA)",
    bbq_rules.NO_RULE: "the official analysis has no rule for their category",
}


def target_summary(examples: Sequence[Example]) -> dict[str, Any]:
    """How many examples have a bias target, and why the others have none, for the manifest.

    Returns ``n_examples``, ``n_with_target``, ``without_target`` ({reason: {category: n}})
    and ``warnings`` (one line per reason, for a person; empty when every example of a task
    that has targets got one). Examples of tasks without targets (mc files that give none)
    have no reason and are not warned about.

    Args:
        examples: The loaded examples.
    """
    without: dict[str, dict[str, int]] = {}
    for ex in examples:
        if ex.target is None and ex.target_reason is not None:
            per_category = without.setdefault(ex.target_reason, {})
            per_category[ex.category] = per_category.get(ex.category, 0) + 1
    warnings = []
    for reason in bbq_rules.REASONS:
        if reason in without:
            counts = without[reason]
            where = ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
            warnings.append(
                f"{sum(counts.values())} examples ({where}) have no bias target and are left "
                f"out of bias scores and patching: {_REASON_TEXT[reason]}"
            )
    return {
        "n_examples": len(examples),
        "n_with_target": sum(ex.target is not None for ex in examples),
        "without_target": {r: dict(sorted(without[r].items())) for r in sorted(without)},
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------
# Reading lines


def _path_list(paths: Sequence[str | Path] | str | Path, what: str) -> list[str | Path]:
    # A lone str is a Sequence of characters; treat it as one path instead.
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise InterpError(f"{what}: no data files given")
    return items


def _read_text(path: str | Path) -> str:
    # Bounded (interp.inputs.files): a file or line too large is refused before it is parsed.
    return read_text_bounded(path, MAX_DATA_FILE_BYTES, "data file")


def _builtin_bytes() -> bytes:
    return resources.files("interp").joinpath("data", "examples.jsonl").read_bytes()


def _builtin_text() -> str:
    return _builtin_bytes().decode("utf-8-sig")


def _rows(text: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    """("file:line", object) for every non-blank line; errors on bad JSON or an empty file."""
    rows = list(_iter_rows(text, label))
    if not rows:
        raise InterpError(f"{label}: no examples (the file is empty or has only blank lines)")
    return rows


def _iter_rows(text: str, label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    # split("\n") rather than splitlines(): JSON strings may hold U+2028, which splitlines
    # would treat as a line break and so shift every later line number.
    for _, where, obj in jsonl_objects(text.split("\n"), label):
        yield where, obj


def _check_unique(examples: list[Example]) -> list[Example]:
    first_seen: dict[str, str] = {}
    for ex in examples:
        if ex.example_id in first_seen:
            raise InterpError(
                f"{ex.source}: duplicate example id {ex.example_id!r} "
                f"(first at {first_seen[ex.example_id]})"
            )
        first_seen[ex.example_id] = ex.source
    return examples


# ---------------------------------------------------------------------------------------------
# Field validation


def _field(obj: dict[str, Any], key: str, kind: str, where: str) -> Any:
    """obj[key], checked to be of JSON kind "string", "integer", "object", "array" or "id"."""
    if key not in obj:
        raise InterpError(f"{where}: missing field {key!r}")
    value = obj[key]
    ok = {
        "string": isinstance(value, str),
        # bool is an int subclass in Python, but true/false is never a valid index or id.
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "id": isinstance(value, str | int) and not isinstance(value, bool),
    }[kind]
    if not ok:
        want = "string or integer" if kind == "id" else kind
        raise InterpError(f"{where}: field {key!r} must be {want}, got {json_type(value)}")
    if kind == "id" and isinstance(value, str):
        check_id_length(value, f"field {key!r}", where)
    return value


def _choice(obj: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = _field(obj, key, "string", where)
    if value not in allowed:
        raise InterpError(f"{where}: field {key!r} must be one of {allowed}, got {value!r}")
    return value


def _index(value: int, n: int, key: str, where: str) -> int:
    if not 0 <= value < n:
        raise InterpError(f"{where}: field {key!r} must be an option index 0..{n - 1}, got {value}")
    return value


def _str_list(obj: dict[str, Any], key: str, where: str) -> list[str]:
    value = _field(obj, key, "array", where)
    if not all(isinstance(item, str) for item in value):
        raise InterpError(f"{where}: field {key!r} must be an array of strings")
    return value


# ---------------------------------------------------------------------------------------------
# BBQ


def _bbq_example(
    obj: dict[str, Any],
    stem: str,
    where: str,
    templates: bbq_rules.Templates | None = None,
) -> Example:
    source_id = _field(obj, "example_id", "id", where)
    question_index = str(_field(obj, "question_index", "id", where))
    polarity = _choice(obj, "question_polarity", _POLARITIES, where)
    condition = _choice(obj, "context_condition", _CONDITIONS, where)
    category = _field(obj, "category", "string", where)
    context = _field(obj, "context", "string", where)
    question = _field(obj, "question", "string", where)
    options = tuple(_field(obj, key, "string", where) for key in _BBQ_OPTION_KEYS)
    label = _index(_field(obj, "label", "integer", where), len(options), "label", where)
    infos = _answer_info(obj, where)
    groups = _stereotyped_groups(obj, where)
    unknown = unknown_option(options, infos)
    official = bbq_rules.official_target(
        category=category,
        question_index=question_index,
        polarity=polarity,
        options=options,
        infos=infos,
        groups=groups,
        unknown=unknown,
        templates=templates,
    )
    return Example(
        example_id=f"{stem}/{source_id}",
        category=category,
        context=context,
        question=question,
        options=options,
        label=label,
        target=official.target,
        unknown=unknown,
        context_condition=condition,
        question_polarity=polarity,
        source=where,
        label_type=official.label_type,
        target_reason=official.reason,
        question_index=question_index,
        stereotyped_groups=tuple(groups),
    )


def _answer_info(obj: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """(text, tag) per option from answer_info, e.g. ("grandfather", "old")."""
    info = _field(obj, "answer_info", "object", where)
    pairs = []
    for key in _BBQ_OPTION_KEYS:
        if key not in info:
            raise InterpError(f"{where}: answer_info is missing {key!r}")
        entry = _str_list(info, key, f"{where}: answer_info")
        if len(entry) < 2:
            raise InterpError(f"{where}: answer_info {key!r} must be [text, tag], got {entry}")
        pairs.append((entry[0], entry[1]))
    return tuple(pairs)


def _stereotyped_groups(obj: dict[str, Any], where: str) -> list[str]:
    meta = _field(obj, "additional_metadata", "object", where)
    if "stereotyped_groups" not in meta:
        raise InterpError(f"{where}: additional_metadata is missing 'stereotyped_groups'")
    return _str_list(meta, "stereotyped_groups", f"{where}: additional_metadata")


def is_unknown_answer(text: str) -> bool:
    """Whether an answer text is one the official BBQ analysis counts as "unknown".

    Args:
        text: An option or ``answer_info`` text.

    Returns:
        True when, trimmed of spaces and a final full stop and case-folded, it is in
        ``UNKNOWN_ANSWERS``.
    """
    return text.strip().rstrip(".").replace("\u2019", "'").casefold() in UNKNOWN_ANSWERS


def unknown_option(options: Sequence[str], infos: Sequence[tuple[str, str]]) -> int | None:
    """Index of the "unknown" option: by answer_info tag, else by the official answer strings.

    Args:
        options: The answer options' texts.
        infos: ``answer_info``'s (text, tag) pair of each option, same length as ``options``.

    Returns:
        The option index, or None when no option or more than one qualifies.
    """
    tagged = [i for i, (_, tag) in enumerate(infos) if tag.casefold() == "unknown"]
    if tagged:
        return tagged[0] if len(tagged) == 1 else None
    by_text = [
        i
        for i, (option, (text, _)) in enumerate(zip(options, infos, strict=True))
        if is_unknown_answer(option) or is_unknown_answer(text)
    ]
    return by_text[0] if len(by_text) == 1 else None


# ---------------------------------------------------------------------------------------------
# Custom multiple choice


def _mc_example(obj: dict[str, Any], stem: str, where: str) -> Example:
    extra = sorted(set(obj) - set(_MC_REQUIRED) - set(_MC_OPTIONAL))
    if extra:
        allowed = ", ".join(_MC_REQUIRED + _MC_OPTIONAL)
        raise InterpError(f"{where}: unknown field(s) {extra}; allowed: {allowed}")
    source_id = _field(obj, "id", "id", where)
    if isinstance(source_id, str) and not source_id.strip():
        raise InterpError(f"{where}: field 'id' must not be empty")
    options = _mc_options(obj, where)
    target = _optional_index(obj, "target", len(options), where)
    unknown = _optional_index(obj, "unknown", len(options), where)
    if target is not None and target == unknown:
        raise InterpError(f"{where}: 'target' and 'unknown' are the same option ({target})")
    return Example(
        example_id=f"{stem}/{source_id}",
        category=_optional_text(obj, "category", "custom", where),
        context=_optional_text(obj, "context", "", where),
        question=_nonempty_text(obj, "question", where),
        options=options,
        label=_index(_field(obj, "label", "integer", where), len(options), "label", where),
        target=target,
        unknown=unknown,
        context_condition=_optional_choice(obj, "context_condition", _CONDITIONS, where),
        question_polarity=_optional_choice(obj, "question_polarity", _POLARITIES, where),
        source=where,
        question_index=str(_field(obj, "question_index", "id", where))
        if "question_index" in obj
        else None,
    )


def _mc_options(obj: dict[str, Any], where: str) -> tuple[str, ...]:
    options = _str_list(obj, "options", where)
    if not 2 <= len(options) <= _MC_MAX_OPTIONS:
        raise InterpError(
            f"{where}: 'options' must have 2 to {_MC_MAX_OPTIONS} entries, got {len(options)}"
        )
    seen: dict[str, int] = {}
    for i, text in enumerate(options):
        if not text.strip():
            raise InterpError(f"{where}: option {i} is empty")
        key = " ".join(text.split()).casefold()  # options a reader cannot tell apart
        if key in seen:
            raise InterpError(f"{where}: options {seen[key]} and {i} are the same text {text!r}")
        seen[key] = i
    return tuple(options)


def _nonempty_text(obj: dict[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, "string", where)
    if not value.strip():
        raise InterpError(f"{where}: field {key!r} must not be empty")
    return value


def _optional_text(obj: dict[str, Any], key: str, default: str, where: str) -> str:
    if obj.get(key) is None:
        return default
    return _field(obj, key, "string", where)


def _optional_index(obj: dict[str, Any], key: str, n: int, where: str) -> int | None:
    if obj.get(key) is None:
        return None
    return _index(_field(obj, key, "integer", where), n, key, where)


def _optional_choice(
    obj: dict[str, Any], key: str, allowed: tuple[str, ...], where: str
) -> str | None:
    if obj.get(key) is None:
        return None
    return _choice(obj, key, allowed, where)

"""Instruction plans: what the user says at each round (data in ``interp/data/plans.yaml``).

A plan file is read within the bounds of `interp.inputs.files` (at most 1 MiB, UTF-8; each text at
most 16 Ki characters; at most 1000 follow-ups). The ``question`` template may use exactly
the placeholders ``{context}``, ``{question}`` and ``{options}``: plain names only, with no
format spec (``{context:>9}``), conversion (``{question!r}``), attribute or index
(``{question.__class__}``); a literal brace is written ``{{`` or ``}}``.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, SupportsIndex

import yaml

from interp.errors import InterpError
from interp.inputs.files import (
    MAX_PLAN_FILE_BYTES,
    MAX_PLAN_FOLLOWUPS,
    MAX_PLAN_TEXT_CHARS,
    decode_utf8,
    parse_json_text,
    read_bounded_bytes,
)
from interp.inputs.tasks import Example

_FIELDS = (
    "description",
    "question",
    "first",
    "followups",
    "answer_prefix",
    "think_tokens",
    "feedback",
)
PLACEHOLDERS = ("context", "question", "options")
# Feedback plans: which text answers the previous round's answer, and what it may name.
FEEDBACK_KEYS = ("correct", "stereotyped", "other")
FEEDBACK_PLACEHOLDERS = ("answer", "groups")


@dataclass(frozen=True)
class Plan:
    """A prompting plan: what the user says in each round and how answers start.

    Attributes:
        name: The plan's name (built-in name, or the file's ``name`` / stem).
        description: One line for a person.
        question: Round 0's question block, with ``{context}``, ``{question}``, ``{options}``.
        first: Instruction appended to round 0, or None.
        followups: User text of rounds 1, 2, ...; the last repeats for later rounds.
        answer_prefix: Start of each assistant turn; ends at the read-out position.
        think_tokens: Greedy "thinking" tokens generated before the answer prefix (0: none).
        feedback: Oracle feedback texts by ``FEEDBACK_KEYS`` for rounds >= 1, or None.
    """

    name: str
    description: str
    question: str  # round 0's question block, with {context}, {question}, {options}
    first: str | None  # instruction appended to round 0, or None
    followups: tuple[str, ...]  # user text of rounds 1, 2, ...; the last repeats
    answer_prefix: str  # start of each assistant turn; ends at the read-out position
    think_tokens: int = 0  # > 0: greedy "thinking" before the answer prefix
    # Oracle feedback (rounds >= 1): {"correct"|"stereotyped"|"other": text}, the text chosen
    # by the previous answer and put before the follow-up; None: no feedback (the default,
    # left out of to_dict so that plans without it keep their fingerprints).
    feedback: dict[str, str] | None = None

    def user_turn(
        self, example: Example, r: int, previous: int | None = None
    ) -> tuple[str, str | None]:
        """Round ``r``'s user message and the instruction text inside it (or None).

        ``previous``: the option index the transcript holds as round ``r - 1``'s answer (-1:
        none parsed); only feedback plans read it. A feedback plan given no ``previous``
        returns its longest variant for the example (what a length bound must count).

        Args:
            example: The example the conversation is about.
            r: The round, 0 or more.
            previous: The option index answered in round ``r - 1`` (-1: none parsed), for
                feedback plans.

        Returns:
            ``(message, instruction)``: the user message, and the part of it a span is located for
            (None for a round 0 without ``first``).
        """
        if r >= 1 and self.feedback is not None:
            text = self.followups[min(r, len(self.followups)) - 1]
            if previous is None:
                variants = [self.feedback_text(example, p) for p in range(-1, len(example.options))]
                said = max(variants, key=len)
            else:
                said = self.feedback_text(example, previous)
            full = f"{said}\n{text}"
            return full, full
        if r == 0:
            block = self.question.format(
                context=example.context,
                question=example.question,
                options=format_options(example.options),
            ).strip()
            if self.first is None:
                return block, None
            return f"{block}\n\n{self.first}", self.first
        text = self.followups[min(r, len(self.followups)) - 1]
        return text, text

    def feedback_text(self, example: Example, previous: int) -> str:
        """The oracle's words on the answer ``previous``: ``correct`` when it is the correct
        option, else ``stereotyped`` when it is the bias target, else ``other``; {answer} is
        the option's text, {groups} the item's stereotyped groups.

        Args:
            example: The example (its ``label``, ``target``, options and stereotyped groups).
            previous: The option index answered (-1 or out of range: "no answer").

        Returns:
            The feedback text with its placeholders filled.
        """
        assert self.feedback is not None
        if previous == example.label:
            key = "correct"
        elif example.target is not None and previous == example.target:
            key = "stereotyped"
        else:
            key = "other"
        valid = 0 <= previous < len(example.options)
        answer = example.options[previous] if valid else "no answer"
        groups = ", ".join(example.stereotyped_groups) or "the people in the question"
        return self.feedback[key].format(answer=answer, groups=groups)

    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-ready dict (the manifest's ``plan``); ``feedback`` only when set."""
        out = asdict(self)
        out["followups"] = list(self.followups)
        if self.feedback is None:
            del out["feedback"]
        return out


def option_letter(i: SupportsIndex) -> str:
    """The letter of option ``i``: 0 is ``a``, 1 is ``b``, ...

    Args:
        i: The option index, 0..25.

    Returns:
        One lowercase letter.

    Raises:
        IndexError: ``i`` is 26 or more.
    """
    return "abcdefghijklmnopqrstuvwxyz"[i]


def format_options(options: tuple[str, ...]) -> str:
    """The options as lines ``(a) text``, ``(b) text``, ... (the ``{options}`` placeholder).

    Args:
        options: The options' texts.

    Returns:
        The lines joined by newlines.

    Examples:
        >>> print(format_options(("yes", "no", "unknown")))
        (a) yes
        (b) no
        (c) unknown
    """
    return "\n".join(f"({option_letter(i)}) {text}" for i, text in enumerate(options))


def _builtin() -> dict[str, Any]:
    text = resources.files("interp").joinpath("data/plans.yaml").read_text()
    return yaml.safe_load(text)


def list_plans() -> list[str]:
    """Names of the built-in plans, in the order the package lists them.

    Returns:
        The plan names.
    """
    return list(_builtin()["plans"])


def load_plan(name_or_path: str | Path) -> Plan:
    """A built-in plan by name, or a user plan from a YAML or JSON file.

    Args:
        name_or_path: A built-in plan's name, or a path to a ``.yaml``/``.yml``/``.json`` plan
            file (missing fields come from the built-in defaults).

    Returns:
        The plan.

    Raises:
        InterpError: Unknown name, no such file, or a plan file that does not parse or has bad
            fields or placeholders.
    """
    data = _builtin()
    defaults, builtin = data["defaults"], data["plans"]
    name = str(name_or_path)
    if name in builtin:
        return _make(name, {**defaults, **builtin[name]}, f"built-in plan {name}")
    path = Path(name).expanduser()
    if not path.suffix:
        raise InterpError(f"unknown plan {name!r}; built-in plans: {', '.join(builtin)}")
    if not path.is_file():
        raise InterpError(f"no such plan file: {path}")
    raw = _read_plan_file(path)
    return _make(str(raw.pop("name", path.stem)), {**defaults, **raw}, str(path))


def _read_plan_file(path: Path) -> dict[str, Any]:
    text = decode_utf8(read_bounded_bytes(path, MAX_PLAN_FILE_BYTES, "plan file"), str(path))
    if path.suffix == ".json":
        raw = parse_json_text(text, f"{path}: cannot parse plan")
    else:
        try:
            raw = yaml.safe_load(text)
        # ValueError: an integer past Python's int-string limit; RecursionError: deep nesting.
        except (yaml.YAMLError, ValueError) as err:
            raise InterpError(f"{path}: cannot parse plan ({_short(err)})") from None
        except RecursionError:
            raise InterpError(f"{path}: cannot parse plan (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise InterpError(f"{path}: a plan file holds one mapping of fields")
    unknown = set(raw) - set(_FIELDS) - {"name"}
    if unknown:
        raise InterpError(
            f"{path}: unknown plan field(s) {', '.join(sorted(unknown))}; "
            f"fields: name, {', '.join(_FIELDS)}"
        )
    return raw


def _make(name: str, fields: dict[str, Any], where: str) -> Plan:
    followups = fields.get("followups")
    if (
        not isinstance(followups, list)
        or not followups
        or not all(isinstance(f, str) for f in followups)
    ):
        raise InterpError(f"{where}: 'followups' must be a non-empty list of texts")
    if len(followups) > MAX_PLAN_FOLLOWUPS:
        raise InterpError(
            f"{where}: 'followups' has {len(followups)} texts; the limit is "
            f"{MAX_PLAN_FOLLOWUPS} (the last one repeats for later rounds)"
        )
    _check_lengths(name, fields, where)
    if not all(f.strip() for f in followups):
        raise InterpError(f"{where}: 'followups' must be a non-empty list of texts")
    for key in ("question", "answer_prefix"):
        if not isinstance(fields.get(key), str) or not fields[key]:
            raise InterpError(f"{where}: '{key}' must be a non-empty text")
    _check_placeholders(fields["question"], where)
    first = fields.get("first")
    if first is not None and (not isinstance(first, str) or not first.strip()):
        raise InterpError(f"{where}: 'first' must be a text or null")
    think = fields.get("think_tokens", 0)
    if not isinstance(think, int) or isinstance(think, bool) or think < 0:
        raise InterpError(f"{where}: 'think_tokens' must be a whole number >= 0")
    feedback = _check_feedback(fields.get("feedback"), where)
    return Plan(
        name=name,
        description=str(fields.get("description") or ""),
        question=fields["question"],
        first=first,
        followups=tuple(followups),
        answer_prefix=fields["answer_prefix"],
        think_tokens=think,
        feedback=feedback,
    )


def _check_feedback(value: Any, where: str) -> dict[str, str] | None:
    """``feedback``: null, or a mapping of exactly FEEDBACK_KEYS to non-empty texts that use
    only the placeholders {answer} and {groups} (plain names, as in 'question')."""
    if value is None:
        return None
    keys = ", ".join(FEEDBACK_KEYS)
    if not isinstance(value, dict) or set(value) != set(FEEDBACK_KEYS):
        raise InterpError(f"{where}: 'feedback' must map exactly {keys} to texts")
    for key in FEEDBACK_KEYS:
        text = value[key]
        if not isinstance(text, str) or not text.strip():
            raise InterpError(f"{where}: 'feedback.{key}' must be a non-empty text")
        if len(text) > MAX_PLAN_TEXT_CHARS:
            raise InterpError(
                f"{where}: 'feedback.{key}' has {len(text)} characters; the limit is "
                f"{MAX_PLAN_TEXT_CHARS}"
            )
        _check_fields(text, FEEDBACK_PLACEHOLDERS, f"{where}: 'feedback.{key}'")
    return {key: value[key] for key in FEEDBACK_KEYS}


def _check_fields(text: str, allowed: tuple[str, ...], what: str) -> None:
    names = ", ".join(f"{{{p}}}" for p in allowed)
    hint = f"{what} may use only {names} (write a literal brace as {{{{ or }}}})"
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as err:
        raise InterpError(f"{hint}; problem: {err}") from None
    for _, field_name, spec, conversion in parts:
        if field_name is not None and (field_name not in allowed or spec or conversion):
            raise InterpError(f"{hint}; found {{{field_name}}}")


def _check_lengths(name: str, fields: dict[str, Any], where: str) -> None:
    """Every text of the plan within ``MAX_PLAN_TEXT_CHARS`` (checked before any is copied)."""
    texts = {"name": name, **{k: fields.get(k) for k in ("description", "question", "first")}}
    texts["answer_prefix"] = fields.get("answer_prefix")
    texts.update({f"followups[{i}]": f for i, f in enumerate(fields["followups"])})
    for key, value in texts.items():
        if isinstance(value, str) and len(value) > MAX_PLAN_TEXT_CHARS:
            raise InterpError(
                f"{where}: '{key}' has {len(value)} characters; the limit is {MAX_PLAN_TEXT_CHARS}"
            )


def _check_placeholders(question: str, where: str) -> None:
    """The question template uses only the plain names of ``PLACEHOLDERS``, and needs
    {question} and {options}: no format spec, conversion, attribute or index, which would
    let a plan file allocate without bound (``{context:>100000000000}``) or reach into
    Python objects (``{question.__class__}``)."""
    allowed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
    hint = f"'question' may use only {allowed} (write a literal brace as {{{{ or }}}})"
    try:
        parts = list(string.Formatter().parse(question))
    except ValueError as err:
        raise InterpError(f"{where}: {hint}; problem: {err}") from None
    used = set()
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        text = "{" + field_name + (f"!{conversion}" if conversion else "")
        text += (f":{spec}" if spec else "") + "}"
        if field_name not in PLACEHOLDERS or spec or conversion:
            raise InterpError(f"{where}: {hint}; found {text[:60]!r}")
        used.add(field_name)
    if not {"question", "options"} <= used:
        raise InterpError(f"{where}: 'question' must contain {{question}} and {{options}}")


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[0]

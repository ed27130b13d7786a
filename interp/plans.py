"""Instruction plans: what the user says at each round (data in ``interp/data/plans.yaml``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from interp.errors import InterpError
from interp.tasks import Example

_FIELDS = ("description", "question", "first", "followups", "answer_prefix", "think_tokens")


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    question: str  # round 0's question block, with {context}, {question}, {options}
    first: str | None  # instruction appended to round 0, or None
    followups: tuple[str, ...]  # user text of rounds 1, 2, ...; the last repeats
    answer_prefix: str  # start of each assistant turn; ends at the read-out position
    think_tokens: int = 0  # > 0: greedy "thinking" before the answer prefix

    def user_turn(self, example: Example, r: int) -> tuple[str, str | None]:
        """Round ``r``'s user message and the instruction text inside it (or None)."""
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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["followups"] = list(self.followups)
        return out


def option_letter(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i]


def format_options(options: tuple[str, ...]) -> str:
    return "\n".join(f"({option_letter(i)}) {text}" for i, text in enumerate(options))


def _builtin() -> dict[str, Any]:
    text = resources.files("interp").joinpath("data/plans.yaml").read_text()
    return yaml.safe_load(text)


def list_plans() -> list[str]:
    return list(_builtin()["plans"])


def load_plan(name_or_path: str | Path) -> Plan:
    """A built-in plan by name, or a user plan from a YAML or JSON file."""
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
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
        else:
            raw = yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise InterpError(f"{path}: cannot parse plan ({_short(err)})") from None
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
        or not all(isinstance(f, str) and f.strip() for f in followups)
    ):
        raise InterpError(f"{where}: 'followups' must be a non-empty list of texts")
    for key in ("question", "answer_prefix"):
        if not isinstance(fields.get(key), str) or not fields[key]:
            raise InterpError(f"{where}: '{key}' must be a non-empty text")
    if "{question}" not in fields["question"] or "{options}" not in fields["question"]:
        raise InterpError(f"{where}: 'question' must contain {{question}} and {{options}}")
    try:
        fields["question"].format(context="", question="", options="")
    except (KeyError, IndexError, ValueError) as err:
        raise InterpError(
            f"{where}: 'question' may use only {{context}}, {{question}} and {{options}} "
            f"(write a literal brace as {{{{ or }}}}); problem: {err!r}"
        ) from None
    first = fields.get("first")
    if first is not None and (not isinstance(first, str) or not first.strip()):
        raise InterpError(f"{where}: 'first' must be a text or null")
    think = fields.get("think_tokens", 0)
    if not isinstance(think, int) or isinstance(think, bool) or think < 0:
        raise InterpError(f"{where}: 'think_tokens' must be a whole number >= 0")
    return Plan(
        name=name,
        description=str(fields.get("description") or ""),
        question=fields["question"],
        first=first,
        followups=tuple(followups),
        answer_prefix=fields["answer_prefix"],
        think_tokens=think,
    )


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[0]

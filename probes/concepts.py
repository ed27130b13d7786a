"""Concept data for probes: labelled contrast sentences, loaded and validated.

A concept file is JSONL, one statement per line::

    {"id": "stereotype/age/001/1", "pair": "stereotype/age/001", "text": "...",
     "label": 1, "category": "age"}

Required: ``id`` (string or integer, unique in the file), ``text`` (non-empty string),
``label`` (1 = the concept is present, 0 = its contrast). Optional: ``pair`` (string or
integer; either every line has one or none does, and each pair holds exactly one label-1 and
one label-0 item), ``category`` (string, default ""). Other keys are rejected, so a misspelt
key is an error rather than ignored. Blank lines are skipped.

Built-in concepts (``CONCEPTS``) ship in ``probes/data``; how they were written is in
``probes/data/README.md``. Any other file in the same format loads by path; its concept is
named ``user-<file stem>`` (see `user_concept_name`), so a user file can never take the place
of a built-in concept's results, and the name is always a safe folder name.

Files are read within the bounds of `interp.inputs.files`: at most 256 MiB a file, 64 KiB a line,
ids and pairs of at most 200 characters, JSON nested at most 32 deep.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.inputs.files import (
    MAX_DATA_FILE_BYTES,
    check_id_length,
    jsonl_objects,
    read_text_bounded,
)

CONCEPTS = ("stereotype", "morality")
COLUMNS = ("id", "pair", "text", "label", "category")

_REQUIRED = ("id", "text", "label")
_OPTIONAL = ("pair", "category")
USER_PREFIX = "user-"
_MAX_NAME_CHARS = 64


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames with == is elementwise
class ConceptData:
    """One concept's labelled statements, in file order."""

    name: str
    """Built-in name, or ``user-<file stem>`` for a user file (`user_concept_name`)."""
    items: pd.DataFrame
    """Columns id, pair (None when the file has no pairs), text, label (int64 0/1),
    category; row i is the i-th non-blank line of the file, index 0..n-1."""
    source: str
    """Where the data was read from (a path, or the package resource for built-ins)."""

    def texts(self) -> list[str]:
        """The statements' texts, in file order.

        Returns:
            One string per item.
        """
        return self.items["text"].tolist()

    def labels(self) -> np.ndarray:
        """The items' 0/1 labels, in file order.

        Returns:
            An int64 array, one label per item.
        """
        return self.items["label"].to_numpy(dtype=np.int64)

    @property
    def paired(self) -> bool:
        """Whether items come in matched label-1/label-0 pairs."""
        return bool(self.items["pair"].notna().all())


def list_concepts() -> list[str]:
    """Names of the built-in concepts, loadable with `load_concept`."""
    return list(CONCEPTS)


def load_concept(name_or_path: str | Path) -> ConceptData:
    """Load a built-in concept by name, or a user JSONL file in the same format by path.

    Args:
        name_or_path: A built-in concept's name (``CONCEPTS``) or the path to a ``.jsonl``
            concept file.

    Returns:
        The concept's items.

    Raises:
        InterpError: An unknown name, a file that cannot be read or is malformed, or a file
            name that cannot name a results folder.
    """
    if isinstance(name_or_path, str) and name_or_path in CONCEPTS:
        resource = resources.files("probes") / "data" / f"{name_or_path}.jsonl"
        source = f"probes/data/{name_or_path}.jsonl"
        text = resource.read_bytes().decode("utf-8-sig")
        return ConceptData(name_or_path, _parse(text, source), source)
    path = Path(name_or_path)
    looks_like_name = path.suffix == "" and len(path.parts) == 1
    if isinstance(name_or_path, str) and looks_like_name and not path.exists():
        raise InterpError(
            f"unknown concept {name_or_path!r}; built-in concepts: {', '.join(CONCEPTS)} "
            "(or pass the path to a .jsonl concept file)"
        )
    name = user_concept_name(path)
    return ConceptData(name, _parse(_read_text(path), str(path)), str(path))


def user_concept_name(path: str | Path) -> str:
    """The name a user concept file's results are stored under: ``user-`` + its file stem,
    with every character but letters, digits, "_" and "-" replaced by "_".

    The name becomes a folder (``<run>/probes/<name>/``): the prefix keeps a user file named
    ``morality.jsonl`` from replacing the built-in concept's results (and from the encodings
    cache folder), and the replacement keeps names like ``..`` or ``a/b`` from leaving it.

    Args:
        path: The concept file's path.

    Returns:
        ``user-`` and the sanitised stem.

    Raises:
        InterpError: The stem has no letter or digit, or more than 64 characters once
            sanitised.

    Examples:
        >>> user_concept_name("data/my concept.v2.jsonl")
        'user-my_concept_v2'
    """
    stem = Path(path).stem
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", stem).strip("_")
    if not re.search(r"[A-Za-z0-9]", safe):
        raise InterpError(
            f"{path}: a concept file's name needs a letter or digit (it names the results "
            "folder); rename the file, e.g. my_concept.jsonl"
        )
    if len(safe) > _MAX_NAME_CHARS:
        raise InterpError(
            f"{path}: a concept file's name may have at most {_MAX_NAME_CHARS} characters "
            "(it names the results folder); rename the file"
        )
    return USER_PREFIX + safe


def split_pairs(
    data: ConceptData, *, test_size: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices (sorted int64), split by pair.

    Both items of a pair land on the same side, so a probe cannot score by memorising a pair's
    topic; pairs are stratified by category, so each side covers the categories in proportion
    and, holding whole pairs, is exactly balanced. Files without pairs are split by item,
    stratified by label. The same seed gives the same split.

    Args:
        data: The concept's items.
        test_size: Share of pairs (or items) held out, strictly between 0 and 1.
        seed: Seed of the split.

    Returns:
        ``(train, test)`` row indices into ``data.items``.

    Raises:
        InterpError: ``test_size`` is not in (0, 1), or there are fewer than two pairs (or
            items) to split.
    """
    if not 0.0 < test_size < 1.0:
        raise InterpError(f"test_size must be between 0 and 1 (exclusive), got {test_size}")
    items = data.items
    if data.paired:
        groups = items["pair"].to_numpy()
        units, first = np.unique(groups, return_index=True)
        strata = items["category"].to_numpy()[first]
    else:
        groups = np.arange(len(items))
        units = groups
        strata = items["label"].to_numpy()
    what = "pairs" if data.paired else "items"
    if len(units) < 2:
        raise InterpError(f"{data.source}: need at least 2 {what} to split, got {len(units)}")
    test_units = units[_stratified_test_mask(strata, test_size, np.random.default_rng(seed))]
    is_test = np.isin(groups, test_units)
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Splitting


def _stratified_test_mask(
    strata: np.ndarray, test_size: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick round(n * test_size) units for test (at least 1, at most n - 1), spread over strata
    in proportion to their size (largest remainder, ties broken at random)."""
    n = len(strata)
    n_test = min(max(round(n * test_size), 1), n - 1)
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = counts * n_test / n
    take = np.floor(quota).astype(int)
    extra = n_test - take.sum()
    order = rng.permutation(len(counts))
    by_remainder = order[np.argsort(-(quota - take)[order], kind="stable")]
    take[by_remainder[:extra]] += 1
    mask = np.zeros(n, dtype=bool)
    for k, count in enumerate(take):
        members = np.flatnonzero(inverse == k)
        mask[rng.permutation(members)[:count]] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Reading and validating


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InterpError(
            f"{path}: file not found; pass a built-in concept ({', '.join(CONCEPTS)}) "
            "or the path to an existing .jsonl file"
        )
    return read_text_bounded(path, MAX_DATA_FILE_BYTES, "concept file")


def _parse(text: str, source: str) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, where, obj in jsonl_objects(text.splitlines(), source):
        rows.append(_row(obj, where))
        lines.append(lineno)
    if not rows:
        raise InterpError(f"{source}: no items; a concept file needs one JSON object per line")
    _check_ids(rows, lines, source)
    _check_pairs(rows, lines, source)  # before the label check: its errors name a line
    _check_labels_present(rows, source)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["label"] = frame["label"].astype(np.int64)
    return frame


def _row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise InterpError(f"{where}: missing field {', '.join(map(repr, missing))}")
    unknown = sorted(set(obj) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        allowed = ", ".join(_REQUIRED + _OPTIONAL)
        raise InterpError(f"{where}: unknown field {unknown[0]!r}; allowed fields: {allowed}")
    label = obj["label"]
    if type(label) is not int or label not in (0, 1):  # bool is an int; True is no label
        raise InterpError(f"{where}: label must be 0 or 1, got {json.dumps(label)}")
    text = obj["text"]
    if not isinstance(text, str) or not text.strip():
        raise InterpError(f"{where}: text must be a non-empty string")
    category = obj.get("category", "")
    if not isinstance(category, str):
        raise InterpError(f"{where}: category must be a string, got {json.dumps(category)}")
    return {
        "id": _key(obj["id"], "id", where),
        "pair": _key(obj["pair"], "pair", where) if "pair" in obj else None,
        "text": text,
        "label": label,
        "category": category,
    }


def _key(value: Any, field: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise InterpError(f"{where}: {field} must be a non-empty string or an integer")
    return check_id_length(str(value), field, where)


def _check_ids(rows: list[dict[str, Any]], lines: list[int], source: str) -> None:
    first_line: dict[str, int] = {}
    for row, lineno in zip(rows, lines, strict=True):
        seen = first_line.setdefault(row["id"], lineno)
        if seen != lineno:
            raise InterpError(
                f"{source}:{lineno}: duplicate id {row['id']!r} (first on line {seen})"
            )


def _check_labels_present(rows: list[dict[str, Any]], source: str) -> None:
    present = {row["label"] for row in rows}
    if present != {0, 1}:
        (only,) = present
        raise InterpError(
            f"{source}: every item has label {only}; a concept needs both label 1 and label 0"
        )


def _check_pairs(rows: list[dict[str, Any]], lines: list[int], source: str) -> None:
    with_pair = [row["pair"] is not None for row in rows]
    if not any(with_pair):
        return
    if not all(with_pair):
        bad = lines[with_pair.index(False)]
        good = lines[with_pair.index(True)]
        raise InterpError(
            f"{source}:{bad}: item has no 'pair' but line {good} has one; "
            "give every item a pair or none"
        )
    members: dict[str, dict[int, int]] = {}  # pair -> label -> line
    for row, lineno in zip(rows, lines, strict=True):
        by_label = members.setdefault(row["pair"], {})
        if row["label"] in by_label:
            raise InterpError(
                f"{source}:{lineno}: pair {row['pair']!r} already has a label-{row['label']} "
                f"item on line {by_label[row['label']]}; a pair holds one item of each label"
            )
        by_label[row["label"]] = lineno
    for pair, by_label in members.items():
        if len(by_label) == 1:
            ((label, lineno),) = by_label.items()
            raise InterpError(
                f"{source}:{lineno}: pair {pair!r} has no label-{1 - label} item; "
                "a pair holds one item of each label"
            )

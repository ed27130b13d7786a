"""Concept data: the built-in files, the loader's checks, and the pair-wise split (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from interp.errors import InterpError
from probes.concepts import (
    COLUMNS,
    CONCEPTS,
    ConceptData,
    list_concepts,
    load_concept,
    split_pairs,
    user_concept_name,
)


def _write(path: Path, rows: list[dict | str]) -> Path:
    """Write one line per row: a dict as JSON, a str as it is (for malformed lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _item(item_id: str, label: int, pair: str | None = None, **extra) -> dict:
    row = {"id": item_id, "text": f"statement {item_id}", "label": label, "category": "c"}
    if pair is not None:
        row["pair"] = pair
    return {**row, **extra}


def _paired_rows(n_pairs: int, categories: tuple[str, ...] = ("a", "b")) -> list[dict]:
    rows = []
    for i in range(n_pairs):
        category = categories[i % len(categories)]
        for label in (1, 0):
            rows.append(_item(f"p{i}/{label}", label, pair=f"p{i}", category=category))
    return rows


# ---------------------------------------------------------------------------------------------
# Built-in data


@pytest.fixture(scope="module", params=CONCEPTS)
def builtin(request) -> ConceptData:
    return load_concept(request.param)


def test_list_concepts_names_the_builtins():
    assert list_concepts() == list(CONCEPTS) == ["stereotype", "morality"]


def test_builtin_shape_and_balance(builtin):
    items = builtin.items
    assert list(items.columns) == list(COLUMNS)
    assert len(items) >= 340
    assert items["label"].dtype == np.int64
    assert set(items["label"]) == {0, 1}
    assert (items["label"] == 1).sum() == (items["label"] == 0).sum()
    assert items["id"].is_unique
    assert items["text"].is_unique
    assert list(items.index) == list(range(len(items)))


def test_builtin_pairs_complete_and_categories_covered(builtin):
    items = builtin.items
    assert builtin.paired
    for _, group in items.groupby("pair"):
        assert sorted(group["label"]) == [0, 1]
        assert group["category"].nunique() == 1
    pairs_per_category = items.groupby("category")["pair"].nunique()
    assert len(pairs_per_category) >= 9
    assert pairs_per_category.min() >= 18
    assert items["pair"].nunique() >= 170


def test_builtin_ids_follow_the_scheme(builtin):
    items = builtin.items
    prefixes = builtin.name + "/" + items["category"] + "/"
    assert all(p.startswith(q) for p, q in zip(items["pair"], prefixes, strict=True))
    assert items["pair"].str.fullmatch(r"[a-z]+/[a-z_]+/\d{3}").all()
    assert (items["id"] == items["pair"] + "/" + items["label"].astype(str)).all()


def test_builtin_sentence_lengths(builtin):
    words = builtin.items["text"].str.split().str.len()
    assert words.between(6, 25).all(), builtin.items["text"][~words.between(6, 25)].tolist()


def test_texts_and_labels_accessors(builtin):
    texts, labels = builtin.texts(), builtin.labels()
    assert isinstance(texts, list) and all(isinstance(t, str) for t in texts)
    assert labels.dtype == np.int64 and labels.shape == (len(texts),)
    assert builtin.source.endswith(f"{builtin.name}.jsonl")


def test_bag_of_words_probe_is_not_near_perfect(builtin):
    # Pairs share topic and wording, so words alone should not give the concept away.
    # Held-out accuracy at seed 0 when written: stereotype 0.78, morality 0.62.
    train, test = split_pairs(builtin, seed=0)
    texts, labels = np.array(builtin.texts()), builtin.labels()
    vectorizer = CountVectorizer()
    model = LogisticRegression(max_iter=2000)
    model.fit(vectorizer.fit_transform(texts[train]), labels[train])
    accuracy = (model.predict(vectorizer.transform(texts[test])) == labels[test]).mean()
    assert 0.5 < accuracy < 0.9


# ---------------------------------------------------------------------------------------------
# split_pairs


def test_split_pairs_keeps_pairs_together_and_balanced(builtin):
    train, test = split_pairs(builtin, seed=0)
    items = builtin.items
    assert train.dtype == test.dtype == np.int64
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(items)))
    assert not set(items["pair"].iloc[train]) & set(items["pair"].iloc[test])
    for side in (train, test):
        assert items["label"].iloc[side].mean() == 0.5
        assert set(items["category"].iloc[side]) == set(items["category"])
    n_pairs = items["pair"].nunique()
    assert len(test) // 2 == round(n_pairs * 0.3)


def test_split_pairs_deterministic_and_seed_dependent(builtin):
    first, second = split_pairs(builtin, seed=3), split_pairs(builtin, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other = split_pairs(builtin, seed=4)
    assert not np.array_equal(first[1], other[1])


def test_split_pairs_test_size(builtin):
    _, test = split_pairs(builtin, test_size=0.5, seed=0)
    assert len(test) // 2 == round(builtin.items["pair"].nunique() * 0.5)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.2, 1.5])
def test_split_pairs_rejects_bad_test_size(builtin, test_size):
    with pytest.raises(InterpError, match="test_size"):
        split_pairs(builtin, test_size=test_size)


def test_split_pairs_small_strata_still_split(tmp_path):
    # 5 pairs over 5 categories: rounding per category alone would put none in test.
    data = load_concept(_write(tmp_path / "tiny.jsonl", _paired_rows(5, tuple("abcde"))))
    train, test = split_pairs(data, test_size=0.3, seed=0)
    assert len(test) == 4 and len(train) == 6


def test_split_unpaired_falls_back_to_items_stratified_by_label(tmp_path):
    rows = [_item(f"u{i}", i % 2) for i in range(20)]
    data = load_concept(_write(tmp_path / "unpaired.jsonl", rows))
    assert not data.paired and data.items["pair"].isna().all()
    train, test = split_pairs(data, test_size=0.3, seed=1)
    assert len(test) == 6 and len(train) == 14
    assert data.labels()[test].sum() == 3
    again = split_pairs(data, test_size=0.3, seed=1)
    assert np.array_equal(test, again[1])


def test_split_needs_two_units(tmp_path):
    data = load_concept(_write(tmp_path / "one.jsonl", _paired_rows(1)))
    with pytest.raises(InterpError, match="at least 2 pairs"):
        split_pairs(data)


# ---------------------------------------------------------------------------------------------
# User files


def test_user_file_round_trip(tmp_path):
    original = load_concept("stereotype").items.head(40)
    rows = original.to_dict(orient="records")
    path = _write(tmp_path / "my_concept.jsonl", rows)
    for name_or_path in (path, str(path)):
        data = load_concept(name_or_path)
        assert data.name == "user-my_concept"  # apart from built-ins (user_concept_name)
        assert data.source == str(path)
        pd.testing.assert_frame_equal(data.items, original.reset_index(drop=True))


def test_user_file_optional_fields_and_blank_lines(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(
        '\n{"id": 1, "text": "a kind act", "label": 1}\n\n{"id": 2, "text": "a plain act", '
        '"label": 0}\n',
        encoding="utf-8",
    )
    data = load_concept(path)
    assert data.items["id"].tolist() == ["1", "2"]
    assert data.items["category"].tolist() == ["", ""]
    assert data.texts() == ["a kind act", "a plain act"]
    assert data.labels().tolist() == [1, 0]


# ---------------------------------------------------------------------------------------------
# Validation errors: one line, naming FILE:LINE


def _good() -> list[dict | str]:
    return _paired_rows(2)  # lines 1-4


BAD_FILES = {
    "invalid JSON": (_good()[:2] + ['{"id": "x", "text": "t", "label": 1'], 3, "invalid JSON"),
    "not an object": (_good()[:1] + ["[1, 0]"], 2, "expected a JSON object"),
    "missing field": (
        _good()[:3] + [{"id": "p1/0", "pair": "p1", "label": 0}],
        4,
        "missing field 'text'",
    ),
    "unknown field": (
        [_good()[0], {**_good()[1], "lable": 0}] + _good()[2:],
        2,
        "unknown field 'lable'",
    ),
    "label 2": ([_good()[0], {**_good()[1], "label": 2}] + _good()[2:], 2, "label must be 0 or 1"),
    "label string": (
        [{**_good()[0], "label": "1"}] + _good()[1:],
        1,
        "label must be 0 or 1",
    ),
    "label bool": ([{**_good()[0], "label": True}] + _good()[1:], 1, "label must be 0 or 1"),
    "empty text": ([{**_good()[0], "text": " "}] + _good()[1:], 1, "text must be"),
    "duplicate id": (
        _good() + [_item("p0/1", 1, pair="p9"), _item("p9/0", 0, pair="p9")],
        5,
        "duplicate id 'p0/1' (first on line 1)",
    ),
    "pair twice label 1": (
        _good()[:3] + [_item("p1/1b", 1, pair="p1")],
        4,
        "already has a label-1 item on line 3",
    ),
    "pair of three": (
        _good() + [_item("p0/0b", 0, pair="p0")],
        5,
        "already has a label-0 item on line 2",
    ),
    "pair missing a label": (_good()[:3], 3, "pair 'p1' has no label-0 item"),
    "some items without pair": (
        _good() + [_item("lonely", 1)],
        5,
        "no 'pair' but line 1 has one",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_validation_errors_name_file_and_line(tmp_path, case):
    rows, line, fragment = BAD_FILES[case]
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InterpError) as info:
        load_concept(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message
    assert "\n" not in message


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(_item("a", 1)) + "\n\n\nnot json\n", encoding="utf-8")
    with pytest.raises(InterpError, match=r"gaps\.jsonl:4: invalid JSON"):
        load_concept(path)


def test_single_label_file_is_rejected(tmp_path):
    path = _write(tmp_path / "ones.jsonl", [_item("a", 1), _item("b", 1)])
    with pytest.raises(InterpError, match="needs both label 1 and label 0"):
        load_concept(path)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InterpError, match="no items"):
        load_concept(path)


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(InterpError, match="unknown concept 'stereotypes'") as info:
        load_concept("stereotypes")
    assert "stereotype, morality" in str(info.value)


@pytest.mark.parametrize("name", ["missing.jsonl", "some/dir/missing"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(InterpError, match="file not found") as info:
        load_concept(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9", "label": 1}\n')
    with pytest.raises(InterpError, match="not UTF-8"):
        load_concept(path)


# ---------------------------------------------------------------------------------------------
# Names of user concepts: a folder name, kept apart from the built-ins (issue 10)


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("morality.jsonl", "user-morality"),
        ("stereotype.jsonl", "user-stereotype"),
        ("encodings.jsonl", "user-encodings"),
        ("my concept (v2).jsonl", "user-my_concept__v2"),
        ("bias.v2.jsonl", "user-bias_v2"),
        (".hidden.jsonl", "user-hidden"),
    ],
)
def test_user_concept_names_are_safe_and_apart(file, name):
    assert user_concept_name(file) == name


@pytest.mark.parametrize("file", ["...jsonl", "_.jsonl", "é.jsonl", "x" * 65 + ".jsonl"])
def test_user_concept_names_refused(file):
    with pytest.raises(InterpError, match="concept file's name"):
        user_concept_name(file)


def test_concept_line_bounds(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps(row) for row in _paired_rows(2)]
    path.write_text("\n".join([*lines, '{"id": 1' + "0" * 5000 + "}"]) + "\n")
    with pytest.raises(InterpError, match=r"c\.jsonl:5: a number has more than 18 digits"):
        load_concept(path)

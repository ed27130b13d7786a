"""User-given names in file and folder names (issue 22, risks): example ids and SAE or
transcoder folder names are used as they are when short and plain, and otherwise become a
slug of safe characters and a short hash, so markup, dots and very long names never reach
the filesystem as given."""

from __future__ import annotations

import re

import pytest

from interp.runs.store import SAFE_NAME_LIMIT, safe_name

SAFE = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*")
HOSTILE = [
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "..",
    ".hidden",
    "a b\tc\nd",
    "x" * 300,
    "名前/名前",
    "a\x00b",
    "$(rm -rf ~)",
]


@pytest.mark.parametrize("name", ["t64", "builtin_3", "sae-L1.k8", "r3-t0+x=1"])
def test_plain_names_are_kept(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("name", HOSTILE)
def test_odd_or_long_names_become_a_safe_slug_with_a_hash(name):
    out = safe_name(name)
    assert SAFE.fullmatch(out) and len(out) <= SAFE_NAME_LIMIT, out
    assert out == safe_name(name)  # the same name, the same folder
    assert re.search(r"[0-9a-f]{8}$", out)


def test_names_that_slug_alike_stay_apart():
    assert safe_name("a b") != safe_name("a\tb") and safe_name("a b") != "a_b"


def test_a_feature_circuit_of_a_hostile_example_id_has_a_safe_name():
    from interp.circuits.feature_level import FeatureCircuitConfig

    name = FeatureCircuitConfig(transcoders="/x/" + "t" * 300, round=1, example=HOSTILE[0]).name()
    assert SAFE.fullmatch(name) and len(name) < 255, name
    assert FeatureCircuitConfig(transcoders="/x/tcs", round=3, example="builtin/3").name() == (
        "r3-t0-builtin_3-tcs"  # plain names as before
    )


def test_an_sae_with_a_hostile_folder_name_files_under_a_safe_name(tmp_path):
    from interp.patching.analysis import PatchConfig
    from interp.sae.load import sae_name

    folder = tmp_path / ("<b>" + "s" * 200)
    assert SAFE.fullmatch(sae_name(folder)) and len(sae_name(folder)) <= SAFE_NAME_LIMIT
    config = PatchConfig(layer=1, round=1, component="sae", sae=str(folder), features="0,1")
    name = config.name()
    assert SAFE.fullmatch(name) and len(name) < 255, name
    assert sae_name(tmp_path / "t64") == "t64"

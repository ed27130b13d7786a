"""Shared fixtures: the tiny model for unit tests, the embedded model for integration tests.

Models are session-scoped: built once, never mutated by a test (tests that need to change
weights make their own copy).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")

SHARED_BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"


@pytest.fixture(scope="session")
def tiny_model():
    from interp.model.loading import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def embedded_model():
    from interp.model.loading import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def bbq_dir() -> Path:
    if not SHARED_BBQ.is_dir():
        pytest.skip(f"BBQ data not found at {SHARED_BBQ} (../shared beside the checkout)")
    return SHARED_BBQ


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules that run many tiny-model forwards: the tiny model's matrices are too small
    to gain from intra-op threads, and on a busy 2-core machine two threads wait on each
    other (a forward takes ~10x longer)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tl_calls(monkeypatch):
    """Counts calls of TransformerLens' block forward (the path the fast one replaces)."""
    from transformer_lens.components.transformer_block import TransformerBlock

    calls = []
    original = TransformerBlock.forward

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TransformerBlock, "forward", counted)
    return calls

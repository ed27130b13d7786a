"""interp: what self-correction instructions change inside a language model.

Replay multi-round self-correction conversations on a TransformerLens ``HookedTransformer``,
cache the activations that matter, and measure per round and per layer what moved.
"""

from interp.conversation import Conversation, RoundInput, RoundSpans, build_conversation
from interp.errors import InterpError
from interp.loading import ModelSource, load_model

__all__ = [
    "Conversation",
    "InterpError",
    "ModelSource",
    "RoundInput",
    "RoundSpans",
    "build_conversation",
    "load_model",
]

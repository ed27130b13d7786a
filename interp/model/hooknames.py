"""TransformerLens hook-point names, spelled in one place.

``act_name("resid_post", 3)`` is ``"blocks.3.hook_resid_post"``: the name
``transformer_lens.utilities.get_act_name`` gives (a test checks that they agree). It is
written out here because importing TransformerLens takes seconds, and modules that only read
run directories (``interp.runs.store``, metrics, export) must stay quick to import.
"""

from __future__ import annotations

import re

# Hook points directly on a block (``blocks.L.hook_<kind>``): what replay can store.
BLOCK_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
# Hook points inside the attention module (``blocks.L.attn.hook_<kind>``).
ATTN_KINDS = ("q", "k", "v", "z", "result", "pattern", "attn_scores", "rot_q", "rot_k")

_NAME = re.compile(r"blocks\.(0|[1-9]\d*)\.(?:attn\.)?hook_(\w+)")


def act_name(kind: str, layer: int) -> str:
    """The hook name of ``kind`` (e.g. ``resid_post``, ``pattern``) in block ``layer``.

    Args:
        kind: A block hook kind (``BLOCK_KINDS``) or an attention hook kind (``ATTN_KINDS``).
        layer: The block number, 0 up to ``n_layers - 1`` (not checked here).

    Returns:
        ``blocks.{layer}.hook_{kind}`` or ``blocks.{layer}.attn.hook_{kind}``.

    Raises:
        ValueError: ``kind`` is neither (a programming error, not user input).

    Examples:
        >>> act_name("resid_post", 3)
        'blocks.3.hook_resid_post'
        >>> act_name("pattern", 0)
        'blocks.0.attn.hook_pattern'
    """
    if kind in BLOCK_KINDS:
        return f"blocks.{layer}.hook_{kind}"
    if kind in ATTN_KINDS:
        return f"blocks.{layer}.attn.hook_{kind}"
    raise ValueError(f"unknown hook kind {kind!r}")


def is_act(name: str, kind: str) -> bool:
    """Whether ``name`` is ``kind``'s hook in some block (a ``names_filter`` for hooks).

    Args:
        name: A hook point name.
        kind: A hook kind, as :func:`act_name` takes it.

    Returns:
        True when ``name`` is ``act_name(kind, L)`` for some block L.
    """
    match = _NAME.fullmatch(name)
    return match is not None and act_name(kind, int(match.group(1))) == name


def act_layer(name: str) -> int:
    """The block number of a ``blocks.L....`` hook name.

    Args:
        name: A hook name of the form ``blocks.L.hook_<kind>`` or ``blocks.L.attn.hook_<kind>``.

    Returns:
        The block number L.

    Raises:
        ValueError: ``name`` is not a block hook name.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a block hook name: {name!r}")
    return int(match.group(1))

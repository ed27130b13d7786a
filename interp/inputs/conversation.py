"""Conversations as data: rounds of messages -> the tokenizer's own chat template -> tokens.

A round is one user turn and the model's answer to it. Each answered assistant turn starts
with a forced *answer prefix* (e.g. ``"The single most likely answer is ("``); its last token
is the round's **read-out position**, where options are scored and activations read.

Tokenization is split at every read-out position (and where each assistant turn starts): the
transcript is tokenized as segments that each end at such a cut, and the segments' tokens are
concatenated. So round r's prompt
(everything up to its read-out) is, token for token, a prefix of every later round's
transcript — which is what lets a replay reuse the KV cache and read every round's
activations from one forward pass over the final transcript. Without the split, BPE could
merge the prefix's last character with the answer letter (``"("`` + ``"b"`` -> ``"(b"``).
Inside a segment the tokenization is the tokenizer's own. No BOS is added: whatever the
template writes (a BOS or nothing) is what the model gets.

A tokenizer without a chat template (a base model, such as Gemma 3 270M) gets
:data:`PLAIN_TEMPLATE`: the tokenizer's BOS, then each turn as plain text under a ``User:`` /
``Assistant:`` line, turns separated by a blank line. A run records which template it used
(:func:`template_record`; replay writes it into the manifest when it is the plain one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from interp.errors import InterpError

Span = tuple[int, int]  # [start, end) token indices into Conversation.tokens

# For tokenizers without a chat template (base models). Each label ends its own line, so the
# assistant's text (the answer prefix first) starts a new token after "\n", as it does after
# ChatML's "<|im_start|>assistant\n"; the BOS (Gemma needs it) is written as the text's start.
PLAIN_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ 'Assistant:\n' + message['content'] + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:\n' }}{% endif %}"
)
PLAIN_TEMPLATE_NAME = "plain-text"


@dataclass(frozen=True)
class RoundInput:
    """What happens in one round, as text."""

    user: str  # the whole user message
    instruction: str | None = None  # a substring of ``user`` to locate (e.g. the instruction)
    answer: str | None = None  # assistant text after the answer prefix; None: not answered yet
    prefix: str | None = None  # this round's answer prefix, if not the conversation's


@dataclass(frozen=True)
class RoundSpans:
    """Token spans of one round inside the conversation."""

    round: int
    user: Span  # the user message's content
    instruction: Span | None  # the instruction text inside it
    prefix: Span | None  # the forced answer prefix (ends at the read-out); None if empty
    answer: Span | None  # the assistant's answer after the prefix
    readout: int  # index of the read-out token


@dataclass(frozen=True)
class Conversation:
    """A rendered, tokenized transcript and the token spans of each round.

    Attributes:
        text: The rendered transcript.
        tokens: Its token ids.
        rounds: The spans of each round, in order.
        offsets: Per token, its ``[start, end)`` characters in ``text``.
    """

    text: str  # the rendered transcript
    tokens: list[int]
    rounds: list[RoundSpans]
    offsets: list[Span] = field(repr=False)  # per token: [start, end) characters in text

    def prompt(self, r: int) -> list[int]:
        """Round ``r``'s prompt: the tokens up to and including its read-out position.

        Args:
            r: The round, 0..len(rounds) - 1.

        Returns:
            The token ids of the prompt.
        """
        return self.tokens[: self.rounds[r].readout + 1]

    def span_text(self, span: Span) -> str:
        """The text a token span covers.

        Args:
            span: ``[start, end)`` token indices into ``tokens`` (non-empty).

        Returns:
            The characters of ``text`` from the first token's start to the last token's end.
        """
        start, end = span
        return self.text[self.offsets[start][0] : self.offsets[end - 1][1]]


def build_conversation(
    tokenizer,
    rounds: Sequence[RoundInput],
    *,
    answer_prefix: str,
    system: str | None = None,
) -> Conversation:
    """Render ``rounds`` with the tokenizer's chat template (:data:`PLAIN_TEMPLATE` when it has
    none) and tokenize with spans.

    Every round but the last must be answered; if the last is not, the transcript ends at
    its read-out position (a prompt). ``system`` adds a system message (otherwise the
    template's default, if it has one, applies).

    Args:
        tokenizer: A Hugging Face tokenizer with offset mapping (and a chat template, else the
            plain one is used).
        rounds: The rounds, in order (at least one).
        answer_prefix: The text each assistant turn starts with, unless the round sets its own.
        system: A system message, or None.

    Returns:
        The transcript with its tokens and per-round spans.

    Raises:
        InterpError: No rounds, an unanswered round before the last, an instruction not found
            in its user message, or a chat template that does not render turns as prefixes of
            one another.
    """
    if not rounds:
        raise InterpError("a conversation needs at least one round")
    for i, rnd in enumerate(rounds[:-1]):
        if rnd.answer is None:
            raise InterpError(f"round {i} has no answer but later rounds follow it")
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    text = _render(tokenizer, messages) if messages else ""
    char_spans = []  # per round: user, instruction, prefix, answer (character spans)
    for i, rnd in enumerate(rounds):
        messages.append({"role": "user", "content": rnd.user})
        text, user_span = _append_message(tokenizer, messages, text, rnd.user)
        instr_span = _locate(rnd.user, rnd.instruction, user_span[0], i)
        prompt = _render(tokenizer, messages, add_generation_prompt=True)
        if not prompt.startswith(text):
            raise InterpError("the chat template's generation prompt does not extend the history")
        prefix = answer_prefix if rnd.prefix is None else rnd.prefix
        prefix_start = len(prompt)
        readout_char = prefix_start + len(prefix)
        if rnd.answer is None:
            text = prompt + prefix
            answer_span = None
        else:
            content = prefix + rnd.answer
            messages.append({"role": "assistant", "content": content})
            full = _render(tokenizer, messages)
            if not full.startswith(prompt + prefix):
                raise InterpError(
                    "the chat template changes the assistant's text (the answer prefix is not "
                    "kept verbatim); use a template that renders assistant content as given"
                )
            text = full
            answer_span = (readout_char, readout_char + len(rnd.answer))
        char_spans.append((user_span, instr_span, (prefix_start, readout_char), answer_span))
    # Cut at every assistant turn's start and read-out: a prompt ending at either is then a
    # token prefix of the transcript (the replay runs header-only prompts before "thinking").
    cuts = sorted({c for spans in char_spans for c in spans[2]})
    tokens, offsets = _tokenize_split(tokenizer, text, cuts)
    return Conversation(text, tokens, _token_rounds(char_spans, offsets), offsets)


def uses_plain_template(tokenizer) -> bool:
    """Whether conversations with ``tokenizer`` are rendered with :data:`PLAIN_TEMPLATE` (it has
    no chat template of its own).

    Args:
        tokenizer: A Hugging Face tokenizer.

    Returns:
        True when the tokenizer has no chat template.
    """
    return getattr(tokenizer, "chat_template", None) is None


def template_record(tokenizer) -> dict[str, str] | None:
    """What a run's manifest records about the template its conversations were rendered with:
    None for the tokenizer's own chat template (manifests made before the plain template
    existed stay as they were), else the plain template's name and text.

    Args:
        tokenizer: The model's tokenizer.

    Returns:
        ``{"name": "plain-text", "template": PLAIN_TEMPLATE, "why": ...}`` or None.
    """
    if not uses_plain_template(tokenizer):
        return None
    return {
        "name": PLAIN_TEMPLATE_NAME,
        "template": PLAIN_TEMPLATE,
        "why": "the tokenizer has no chat template (a base model)",
    }


def _render(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    template = PLAIN_TEMPLATE if uses_plain_template(tokenizer) else None
    return tokenizer.apply_chat_template(
        messages,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def _append_message(tokenizer, messages, before: str, content: str) -> tuple[str, Span]:
    """Render with the new (last) message; return the text and the content's character span."""
    text = _render(tokenizer, messages)
    if not text.startswith(before):
        raise InterpError(
            "the chat template re-renders earlier turns differently as the conversation grows; "
            "rounds cannot share a prefix with it"
        )
    start = text.rfind(content, len(before))
    if start < 0:
        raise InterpError("the chat template does not keep message text verbatim")
    return text, (start, start + len(content))


def _locate(user: str, part: str | None, offset: int, r: int) -> Span | None:
    if part is None:
        return None
    start = user.find(part)
    if start < 0:
        raise InterpError(f"round {r}: the instruction text is not inside the user message")
    return (offset + start, offset + start + len(part))


def _tokenize_split(tokenizer, text: str, cuts: list[int]) -> tuple[list[int], list[Span]]:
    """Tokenize ``text`` as segments ending at each cut; return tokens and char offsets."""
    tokens: list[int] = []
    offsets: list[Span] = []
    start = 0
    for end in [*cuts, len(text)]:
        if end <= start:
            continue
        enc = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
        tokens.extend(enc["input_ids"])
        offsets.extend((start + a, start + b) for a, b in enc["offset_mapping"])
        start = end
    return tokens, offsets


def _char_to_token_span(offsets: list[Span], span: Span) -> Span:
    """The tokens overlapping the character span ``[start, end)``."""
    start, end = span
    first = next(i for i, (a, b) in enumerate(offsets) if b > start)
    last = max(i for i, (a, b) in enumerate(offsets) if a < end)
    return (first, last + 1)


def _token_rounds(char_spans, offsets: list[Span]) -> list[RoundSpans]:
    out = []
    for r, (user, instr, prefix, answer) in enumerate(char_spans):
        readout = _char_to_token_span(offsets, (prefix[1] - 1, prefix[1]))[0]
        out.append(
            RoundSpans(
                round=r,
                user=_char_to_token_span(offsets, user),
                instruction=_char_to_token_span(offsets, instr) if instr else None,
                prefix=_char_to_token_span(offsets, prefix) if prefix[1] > prefix[0] else None,
                answer=_char_to_token_span(offsets, answer)
                if answer and answer[1] > answer[0]
                else None,
                readout=readout,
            )
        )
    return out

"""Reading user files within documented bounds, so bad input is an error, never a crash.

Every loader of user data (task and mc JSONL, concept JSONL, plan YAML/JSON) reads through
here. The bounds keep a hostile or mistaken file from exhausting memory or the parser before
any line is validated: one valid 5 MB JSON line once grew to 24 GB while the transcript was
built, a 5000-digit number trips Python's int-string limit, and JSON nested 100k deep
overflows the parser's recursion.

Limits (``InterpError`` names the file, and the line where there is one):

- a JSONL data file (tasks, mc, concepts): at most ``MAX_DATA_FILE_BYTES`` (256 MiB);
- one JSONL line: at most ``MAX_LINE_BYTES`` (64 KiB) of UTF-8;
- a plan file: at most ``MAX_PLAN_FILE_BYTES`` (1 MiB), each text in it at most
  ``MAX_PLAN_TEXT_CHARS`` (16 Ki characters), at most ``MAX_PLAN_FOLLOWUPS`` (1000) follow-ups;
- JSON nesting: at most ``MAX_JSON_DEPTH`` (32) levels; integers at most ``MAX_INT_DIGITS``
  (18) digits;
- an id: at most ``MAX_ID_CHARS`` (200) characters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from interp.errors import InterpError

MAX_DATA_FILE_BYTES = 256 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
MAX_PLAN_FILE_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 18
MAX_ID_CHARS = 200


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def read_bounded_bytes(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing a file larger than ``max_bytes``.

    The size is checked before reading where the file has one, and the read itself stops one
    byte past the limit, so a FIFO or ``/dev/zero`` is refused too instead of read forever.

    Args:
        path: The file to read.
        max_bytes: The largest size accepted, in bytes.
        what: What the file is, in the error message.

    Returns:
        The file's bytes.

    Raises:
        InterpError: The file is missing, a directory, unreadable, or larger than
            ``max_bytes``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > max_bytes:
                raise InterpError(
                    f"{path}: {what} is larger than the limit of {_size(max_bytes)}; "
                    "split it into several files"
                )
            data = f.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InterpError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise InterpError(f"{path}: is a directory, not a file") from exc
    except OSError as exc:
        raise InterpError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:
        raise InterpError(f"{path}: {what} is larger than the limit of {_size(max_bytes)}")
    return data


def decode_utf8(data: bytes, label: str) -> str:
    """UTF-8 text (a leading BOM dropped), or an error naming the byte that is not UTF-8.

    Args:
        data: The bytes to decode.
        label: What the bytes are (a path), in the error message.

    Returns:
        The text.

    Raises:
        InterpError: ``data`` is not UTF-8.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InterpError(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def read_text_bounded(path: str | Path, max_bytes: int, what: str = "file") -> str:
    """`read_bounded_bytes` decoded as UTF-8.

    Args:
        path: The file to read.
        max_bytes: The largest size accepted, in bytes.
        what: What the file is, in the error message.

    Returns:
        The file's text.

    Raises:
        InterpError: As :func:`read_bounded_bytes`, or the file is not UTF-8.
    """
    return decode_utf8(read_bounded_bytes(path, max_bytes, what), str(path))


class _NumberTooLong(ValueError):
    pass


def _parse_int(text: str) -> int:
    # Called by the JSON parser before it converts: a long digit string is refused here, with
    # a message, rather than by Python's int-string limit (4300 digits) with a bare ValueError.
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong(text)
    return int(text)


def parse_json_line(line: str, where: str) -> Any:
    """One JSON value from one line of a JSONL file, within the line, depth and number bounds.

    Args:
        line: One line of text.
        where: ``"file:line"``, in error messages.

    Returns:
        The parsed value.

    Raises:
        InterpError: The line exceeds ``MAX_LINE_BYTES``, or :func:`parse_json_text` refuses it.
    """
    if len(line) > MAX_LINE_BYTES or len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise InterpError(
            f"{where}: line is longer than the limit of {_size(MAX_LINE_BYTES)}; "
            "an example or statement this long does not fit a model's context"
        )
    return parse_json_text(line, where)


def parse_json_text(text: str, where: str) -> Any:
    """``json.loads`` whose failures are all ``InterpError`` naming ``where``.

    Args:
        text: JSON text.
        where: The location named in error messages.

    Returns:
        The parsed value.

    Raises:
        InterpError: Invalid JSON, an integer of more than ``MAX_INT_DIGITS`` digits, or
            nesting deeper than ``MAX_JSON_DEPTH``.
    """
    try:
        value = json.loads(text, parse_int=_parse_int)
    except _NumberTooLong as exc:
        raise InterpError(
            f"{where}: a number has more than {MAX_INT_DIGITS} digits ({str(exc)[:20]}...)"
        ) from None
    except json.JSONDecodeError as exc:
        raise InterpError(f"{where}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise InterpError(
            f"{where}: JSON nested too deeply (the limit is {MAX_JSON_DEPTH} levels)"
        ) from None
    except ValueError as exc:  # e.g. a float literal the platform cannot hold
        raise InterpError(f"{where}: invalid JSON ({exc})") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InterpError(f"{where}: JSON nested too deeply (the limit is {MAX_JSON_DEPTH} levels)")
    return value


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type ("object", "array", "integer" ...), for errors.

    Args:
        value: A value ``json.loads`` returned.

    Returns:
        ``"null"``, ``"object"``, ``"array"``, ``"string"``, ``"boolean"``, ``"number"`` or
        ``"integer"`` (else the Python type's name).
    """
    names = {dict: "object", list: "array", str: "string", bool: "boolean", float: "number"}
    if value is None:
        return "null"
    return names.get(type(value), "integer" if isinstance(value, int) else type(value).__name__)


def jsonl_objects(lines: Iterable[str], label: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "label:number", object) for every non-blank line of a JSONL file.

    Each line is parsed within the bounds of ``parse_json_line`` and must hold a JSON object.
    The caller splits the text, so each file format keeps its own notion of a line.

    Args:
        lines: The file's lines.
        label: The file's name, in locations.

    Yields:
        ``(number, where, object)`` per non-blank line, numbered from 1.

    Raises:
        InterpError: A line is not valid, bounded JSON or not an object.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{label}:{number}"
        obj = parse_json_line(line, where)
        if not isinstance(obj, dict):
            raise InterpError(f"{where}: expected a JSON object, got {json_type(obj)}")
        yield number, where, obj


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` and ``{}`` are 1).

    Args:
        value: A value ``json.loads`` returned.

    Returns:
        The depth, 0 or more.
    """
    depth, level = 0, [value]
    while level:  # breadth-first, so a deep value cannot overflow this function's stack
        nested = [v for v in level if isinstance(v, dict | list)]
        if not nested:
            break
        depth += 1
        level = [c for v in nested for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def check_id_length(value: str, field: str, where: str) -> str:
    """Refuse an id longer than ``MAX_ID_CHARS``: ids are shown in tables and reports.

    Args:
        value: The id.
        field: The field's name, in the error message.
        where: ``"file:line"``, in the error message.

    Returns:
        ``value`` unchanged.

    Raises:
        InterpError: ``value`` is longer than ``MAX_ID_CHARS``.
    """
    if len(value) > MAX_ID_CHARS:
        raise InterpError(
            f"{where}: {field} is {len(value)} characters long; the limit is {MAX_ID_CHARS}"
        )
    return value


# Plans: every text field (question, first, each follow-up, answer_prefix, description, name)
# at most this many characters, and at most this many follow-ups.
MAX_PLAN_TEXT_CHARS = 16 * 1024
MAX_PLAN_FOLLOWUPS = 1000

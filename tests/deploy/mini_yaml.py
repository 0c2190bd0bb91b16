"""A strict reader for the small YAML subset of deploy/docker-compose.yml.

PyYAML is not a project dependency, so the structural compose test reads the
file with this instead: block mappings, block sequences of scalars, JSON-style
flow sequences, quoted and plain scalars, comments. Anything else (anchors,
aliases, tags, block scalars, flow mappings, tabs, collections inside
sequences, duplicate keys) raises ValueError, so a check never runs on a
misread file.
"""

from __future__ import annotations

import json
import re

KEY = re.compile(r"^([A-Za-z0-9_.\-/]+):(?:\s+(.*))?$")
INT = re.compile(r"^[-+]?[0-9]+$")
Line = tuple[int, str, int]  # indent, content, line number


def _strip_comment(text: str) -> str:
    """`text` without a trailing ` # comment` outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or text[i - 1] in " [,:"):
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text: str, lineno: int) -> object:
    """One scalar (or a JSON-style flow sequence) on line `lineno`."""
    if text[0] in "&*!|>{%@`":
        raise ValueError(f"line {lineno}: unsupported YAML: {text!r}")
    if text[0] in '["':
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {lineno}: not JSON-compatible: {text!r}") from exc
    if text[0] == "'":
        if len(text) < 2 or not text.endswith("'"):
            raise ValueError(f"line {lineno}: unterminated quote: {text!r}")
        return text[1:-1].replace("''", "'")
    if ": " in text or text.endswith(":"):
        raise ValueError(f"line {lineno}: nested mapping on one line: {text!r}")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    return int(text) if INT.match(text) else text


def _block(lines: list[Line], pos: int, indent: int) -> tuple[object, int]:
    """The mapping or sequence starting at `pos` with this indentation."""
    content = lines[pos][1]
    if content == "-" or content.startswith("- "):
        return _sequence(lines, pos, indent)
    return _mapping(lines, pos, indent)


def _mapping(lines: list[Line], pos: int, indent: int) -> tuple[dict[str, object], int]:
    """A block mapping; returns it and the position after it."""
    result: dict[str, object] = {}
    while pos < len(lines):
        ind, content, lineno = lines[pos]
        if ind < indent:
            break
        match = KEY.match(content)
        if ind > indent or not match:
            raise ValueError(f"line {lineno}: expected 'key:' at indent {indent}: {content!r}")
        key, rest = match.group(1), match.group(2)
        if key in result:
            raise ValueError(f"line {lineno}: duplicate key {key!r}")
        pos += 1
        if rest:
            result[key] = _scalar(rest, lineno)
        elif pos < len(lines) and lines[pos][0] > indent:
            result[key], pos = _block(lines, pos, lines[pos][0])
        else:
            result[key] = None
    return result, pos


def _sequence(lines: list[Line], pos: int, indent: int) -> tuple[list[object], int]:
    """A block sequence of scalars; returns it and the position after it."""
    items: list[object] = []
    while pos < len(lines):
        ind, content, lineno = lines[pos]
        if ind < indent:
            break
        if ind > indent or not (content == "-" or content.startswith("- ")):
            raise ValueError(f"line {lineno}: expected '- item' at indent {indent}")
        item = content[1:].strip()
        if not item or KEY.match(item):
            raise ValueError(f"line {lineno}: collections inside sequences are not supported")
        items.append(_scalar(item, lineno))
        pos += 1
    return items, pos


def loads(text: str) -> object:
    """Parse `text` (the supported subset) into dicts, lists and scalars."""
    lines: list[Line] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.lstrip(" ")
        if stripped.startswith("\t"):
            raise ValueError(f"line {lineno}: tab indentation")
        content = _strip_comment(stripped)
        if not content:
            continue
        if content in ("---", "..."):
            raise ValueError(f"line {lineno}: multiple documents are not supported")
        lines.append((len(raw) - len(stripped), content, lineno))
    if not lines:
        return None
    value, pos = _block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ValueError(f"line {lines[pos][2]}: unexpected indentation")
    return value

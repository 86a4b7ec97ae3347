"""The terminal's request parser: JSON read the way Gson reads it in lenient mode.

The Theta Terminal is a Java program that parses requests with Gson, leniently: the vendor's own
Python samples send `str(dict)` (single quotes, `True`), production clients send numbers as
strings, and both work [doc/re]. What lenient Gson accepts and this reader reproduces: strings in
single or double quotes, unquoted names and values, `true`/`false`/`null` in any letter case,
`=` or `=>` between name and value, `;` between members, `//`, `#` and `/* */` comments. What it
still refuses: unbalanced brackets, a dangling name, a bad escape, anything after the first value.
"""

from __future__ import annotations

from typing import Any

# Characters that end an unquoted literal (Gson's JsonReader.isLiteral).
_DELIMITERS = frozenset("/\\;#={}[]:, \t\f\r\n")
_WHITESPACE = frozenset(" \t\n\r")
_ESCAPES = {
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "f": "\f",
    "r": "\r",
    "'": "'",
    '"': '"',
    "\\": "\\",
    "/": "/",
}


class LenientError(ValueError):
    """Not readable even leniently; the terminal answers REQ_RESPONSE ERROR."""


def loads(text: str | bytes) -> Any:
    """One JSON value, read leniently. Unquoted literals that are not keywords or JSON numbers
    come back as strings, as Gson returns them."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LenientError(f"not UTF-8: {exc}") from None
    reader = _Reader(text)
    value = reader.value()
    if reader.skip() is not None:
        raise LenientError(f"unexpected text after the value at {reader.pos}")
    return value


class _Reader:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self) -> str | None:
        """Skip whitespace and comments; the next character, or None at the end."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in _WHITESPACE:
                self.pos += 1
            elif c == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise LenientError("unterminated comment")
                self.pos = end + 2
            else:
                return c
        return None

    def value(self) -> Any:
        c = self.skip()
        if c is None:
            raise LenientError("end of input where a value was expected")
        if c == "{":
            return self._object()
        if c == "[":
            return self._array()
        if c in "\"'":
            return self._quoted(c)
        return self._literal_value()

    def _object(self) -> dict[str, Any]:
        self.pos += 1
        out: dict[str, Any] = {}
        if self.skip() == "}":
            self.pos += 1
            return out
        while True:
            c = self.skip()
            if c is None or c in "}]":
                raise LenientError(f"expected a name at {self.pos}")
            name = self._quoted(c) if c in "\"'" else self._literal()
            c = self.skip()
            if c == ":":
                self.pos += 1
            elif c == "=":
                self.pos += 2 if self.text.startswith("=>", self.pos) else 1
            else:
                raise LenientError(f"expected ':' after the name {name!r}")
            out[name] = self.value()  # a repeated name: the last one wins
            c = self.skip()
            if c in (",", ";"):
                self.pos += 1
            elif c == "}":
                self.pos += 1
                return out
            else:
                raise LenientError(f"unterminated object at {self.pos}")

    def _array(self) -> list[Any]:
        self.pos += 1
        out: list[Any] = []
        if self.skip() == "]":
            self.pos += 1
            return out
        while True:
            c = self.skip()
            if c in (",", ";"):  # an omitted element reads as null (lenient Gson)
                out.append(None)
            elif c == "]":
                out.append(None)
                self.pos += 1
                return out
            else:
                out.append(self.value())
            c = self.skip()
            if c in (",", ";"):
                self.pos += 1
            elif c == "]":
                self.pos += 1
                return out
            else:
                raise LenientError(f"unterminated array at {self.pos}")

    def _quoted(self, quote: str) -> str:
        text, n = self.text, len(self.text)
        self.pos += 1
        parts: list[str] = []
        start = self.pos
        while self.pos < n:
            c = text[self.pos]
            if c == quote:
                parts.append(text[start : self.pos])
                self.pos += 1
                # \u escapes are UTF-16 code units (a Java string): pair the surrogates
                return (
                    "".join(parts)
                    .encode("utf-16-le", "surrogatepass")
                    .decode("utf-16-le", "surrogatepass")
                )
            if c == "\\":
                parts.append(text[start : self.pos])
                if self.pos + 1 >= n:
                    break
                e = text[self.pos + 1]
                if e == "u":
                    digits = text[self.pos + 2 : self.pos + 6]
                    if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                        raise LenientError(f"bad \\u escape at {self.pos}")
                    parts.append(chr(int(digits, 16)))
                    self.pos += 6
                elif e in _ESCAPES:
                    parts.append(_ESCAPES[e])
                    self.pos += 2
                elif e == "\n":  # Gson accepts an escaped line break
                    parts.append("\n")
                    self.pos += 2
                else:
                    raise LenientError(f"invalid escape sequence \\{e} at {self.pos}")
                start = self.pos
            else:
                self.pos += 1
        raise LenientError("unterminated string")

    def _literal(self) -> str:
        text, n, start = self.text, len(self.text), self.pos
        while self.pos < n and text[self.pos] not in _DELIMITERS:
            self.pos += 1
        if self.pos == start:
            raise LenientError(f"unexpected character {text[start]!r} at {start}")
        return text[start : self.pos]

    def _literal_value(self) -> Any:
        word = self._literal()
        lower = word.lower()
        if lower == "true":
            return True
        if lower == "false":
            return False
        if lower == "null":
            return None
        number = _json_number(word)
        return word if number is None else number


def _json_number(word: str) -> int | float | None:
    """A strict JSON number (what Gson's peekNumber takes), else None: `01` or `+1` stay strings."""
    body = word[1:] if word.startswith("-") else word
    if not body or not body[0].isdigit():
        return None
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        return None
    if not all(ch in "0123456789.eE+-" for ch in body):
        return None
    try:
        if any(ch in body for ch in ".eE"):
            return float(word)
        return int(word)
    except ValueError:
        return None

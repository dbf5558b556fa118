"""The strict parse of a local JSON file: JSON Lines, or one JSON document (an array of rows, or one object).

`datasets`' own JSON reader guesses where input is odd (see `alignment.data.readers._read_json`), so every local JSON
file is parsed here first, by Python's strict `json`: duplicate keys, lone surrogates, rows that are not objects,
bytes that are not UTF-8 and invalid JSON are each a `DataError` naming the file and line (and column, byte offset or
element). `parse_json_lines` reads JSON Lines one line at a time; `JsonDocument` reads an array one element at a time
over a sliding window of its text, so that a corpus of any size is parsed in bounded memory, and names a file that
is cut off inside its last record (a download or copy that stopped), or reads it without that record under
`skip_invalid_rows`.
"""

from __future__ import annotations

import codecs
import itertools
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from alignment.data.rows import DataError, RowProblem, clip, describe

logger = logging.getLogger(__name__)

CUT_OFF = "cut off by the end of the file"  # the kind of the dropped record that a file ends inside
_JSON_WHITESPACE = " \t\r\n"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # where a lone surrogate may hide
_LONE_SURROGATE = "a string holds {}, half of a UTF-16 surrogate pair without its other half (not text)"
_CHUNK_BYTES = 1 << 22  # a JSON array is decoded 4 MiB at a time (more while one element is longer)
# A JSON string (closed or not: group 1 is its closing quote) or a bracket: what `_unclosed` counts.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*("?)|[][{}]', re.DOTALL)


def parse_json_lines(path: Path) -> Iterator[dict] | None:
    """A JSON Lines file's rows, each parsed strictly when iteration reaches it; None if the file is one JSON document.

    Lines end at "\\n" only (U+2028 and the like are text inside strings), a UTF-8 byte-order mark before the first
    line is skipped and blank lines are ignored. The file is one document when its first non-blank line opens an
    array, or is a lone "{" (an object written over several lines, as `json.dump(row, indent=2)` writes one).
    """
    if _first_character(path) == b"[":  # known without reading a whole line: a compact array is all one line
        return None
    lines = _non_blank_lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError(f"{path} is empty: no rows to read.")
    if first[1].strip(_JSON_WHITESPACE) == "{":
        lines.close()
        return None
    return (_parse_json_line(path, number, line) for number, line in itertools.chain([first], lines))


def _first_character(path: Path) -> bytes:
    """The first byte of `path` that is not JSON whitespace, after a UTF-8 byte-order mark; b"" if there is none."""
    with path.open("rb") as file:
        if file.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            file.seek(0)
        while chunk := file.read(1 << 16):
            content = chunk.lstrip(_JSON_WHITESPACE.encode())
            if content:
                return content[:1]
    return b""


def _non_blank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The 1-based number and UTF-8 text (line end stripped) of each non-blank line of `path`, read lazily."""
    offset = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):  # a binary file's lines end at b"\n" only
            skip = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            line = _decode(path, raw[skip:], offset=offset + skip, line=number).rstrip("\r\n")
            offset += len(raw)
            if line.strip(_JSON_WHITESPACE):
                yield number, line


def _parse_json_line(path: Path, number: int, line: str) -> dict:
    """Line `number` of JSON Lines file `path`: one JSON object, parsed strictly."""
    try:
        row = _json_loads(line)
    except json.JSONDecodeError as err:
        content = line.strip(_JSON_WHITESPACE)
        raise DataError(
            f"{path} line {number}: invalid JSON ({_json_error(err)} at column {err.colno}): {clip(content)}"
        ) from None
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path} line {number}: {err}.") from None
    if not isinstance(row, dict):
        raise DataError(f"{path} line {number}: expected one JSON object per line, got {describe(row)}.")
    surrogate = _lone_surrogate(row) if _SURROGATE_ESCAPE.search(line) else None
    if surrogate:
        raise DataError(f"{path} line {number}: {_LONE_SURROGATE.format(surrogate)}.")
    return row


class JsonDocument:
    """The rows of a file that is one JSON document (iterate it): the elements of its array, or the one object.

    An array is parsed one element at a time over a window of its text: memory holds that window (a few MiB, or one
    element when it is longer) and the element being read, whatever the file's size. Each element is parsed by
    Python's strict `json` (duplicate keys refused) at its place in the whole text, and errors come in the order, and
    with the message, that one `json.loads` of the whole file gave: a byte that is not UTF-8 anywhere first (the rest
    of the file is decoded before any other error is raised), then invalid JSON (line and column in the whole file),
    then an element that is not an object or holds a lone surrogate. An element that does not parse is parsed again
    with more of the file, until the file ends: only then is its error the file's.

    A file that ends before its array closes is cut off: inside element N (an open string or bracket at the end of
    the file) or after element N-1. The error then names the element and its byte offset; with `skip_invalid_rows`
    the N complete elements are the rows, one warning is logged, and the element cut off is in `dropped` (kind
    `CUT_OFF`, for the mixture's count of dropped rows).
    """

    def __init__(self, path: Path, *, skip_invalid_rows: bool = False):
        self.path, self.skip_invalid_rows = path, skip_invalid_rows
        self.dropped: list[RowProblem] = []

    def __iter__(self) -> Iterator[dict]:
        self.dropped = []
        if _first_character(self.path) != b"[":
            yield self._object()
            return
        with self.path.open("rb") as file:
            yield from self._elements(_Window(self.path, file))

    def _object(self) -> dict:
        """The one object of a file that is not an array (an object written over several lines), parsed whole."""
        data = self.path.read_bytes()
        skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        text = _decode(self.path, data[skip:], offset=skip)
        try:
            row = _json_loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{self.path} line {err.lineno} column {err.colno}: invalid JSON ({_json_error(err)})."
            ) from None
        except (ValueError, RecursionError) as err:
            raise DataError(f"{self.path}: {err}.") from None
        surrogate = _lone_surrogate(row) if _SURROGATE_ESCAPE.search(text) else None
        if surrogate:
            raise DataError(f"{self.path}: array element 0: {_LONE_SURROGATE.format(surrogate)}.")
        return row

    def _elements(self, text: _Window) -> Iterator[dict]:
        pos = text.skip_whitespace(text.skip_whitespace(0) + 1)  # past the "[" that makes the file an array
        index, problem, closed = 0, None, text.char(pos) == "]"
        while not closed:
            start = pos
            try:
                row, pos = text.value_at(start)
            except json.JSONDecodeError as err:
                cut = "after" if not text.char(start) else "inside" if _unclosed(text.slice(start)) else None
                self._fail(text, err, index, cut, start)
                break  # cut off, and skipped
            except DataError:  # a byte that is not UTF-8, met reading on
                raise
            except (ValueError, RecursionError) as err:  # a duplicate key, a number Python cannot hold, deep nesting
                text.decode_rest()
                raise DataError(f"{self.path}: {err}.") from None
            # After a bad element the later ones are only parsed: invalid JSON there is the file's first error.
            problem = problem or self._element_problem(row, index, text.slice(start, pos))
            if problem is None:
                yield row
            index += 1
            pos = text.skip_whitespace(pos)
            closed = text.char(pos) == "]"
            if not closed and text.char(pos) != ",":
                cut = None if text.char(pos) else "after"
                self._fail(text, text.error("Expecting ',' delimiter", pos), index, cut, pos)
                break  # cut off, and skipped
            if not closed:
                pos = text.skip_whitespace(pos + 1)
        if closed and text.char(end := text.skip_whitespace(pos + 1)):
            self._fail(text, text.error("Extra data", end), index, None, end)
        if problem:
            raise DataError(problem)
        if index == 0:
            raise DataError(f"{self.path} is empty: its JSON array has no rows.")

    def _element_problem(self, row: Any, index: int, source: str) -> str | None:
        """Why element `index` (parsed as `row` from the text `source`) is not a row, or None."""
        if not isinstance(row, dict):
            return f"{self.path}: array element {index} is {describe(row)}, expected an object."
        surrogate = _lone_surrogate(row) if _SURROGATE_ESCAPE.search(source) else None
        return f"{self.path}: array element {index}: {_LONE_SURROGATE.format(surrogate)}." if surrogate else None

    def _fail(self, text: _Window, err: json.JSONDecodeError, index: int, cut: str | None, start: int) -> None:
        """Raise invalid JSON error `err`, met parsing from `start` after `index` elements; `cut` says where the file
        ends ("inside" the element at `start`, "after" the last one) if it ends there, else is None.

        Return instead when the file is cut off after at least one element and `skip_invalid_rows` is set."""
        line, column = text.line_column(text.start + err.pos)
        detail = f"line {line} column {column}: invalid JSON ({_json_error(err)})"
        if cut is None:
            text.decode_rest()
            raise DataError(f"{self.path} {detail}.")
        if cut == "inside":
            where = f"inside array element {index}, which starts at byte offset {text.byte_offset(start)}"
        else:
            where = f'after array element {index - 1}, before the array\'s closing "]"' if index else 'after its "["'
        if not index:
            raise DataError(f"{self.path} {detail}: the file is cut off {where}.")
        if not self.skip_invalid_rows:
            raise DataError(
                f"{self.path} {detail}: the file is cut off {where}. Set `skip_invalid_rows: true` to read the "
                f"{index} elements before it."
            )
        logger.warning("%s is cut off %s (%s): read the %d elements before it", self.path, where, detail, index)
        if cut == "inside":
            self.dropped.append(RowProblem(CUT_OFF, f"{self.path}: array element {index} is {CUT_OFF} ({detail})"))


class _Window:
    """The text of an open JSON file, decoded forward in chunks into a window that forgets what was parsed.

    Positions are indices into the whole text (after any byte-order mark): `text[pos - start]` is the character at
    `pos`, and a position before the window's `start` is gone.
    """

    def __init__(self, path: Path, file: IO[bytes]):
        self.path, self.file = path, file
        self.skip = len(codecs.BOM_UTF8) if file.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
        file.seek(self.skip)
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.parser = json.JSONDecoder(object_pairs_hook=_unique_keys)
        self.text, self.start, self.at_end = "", 0, False
        self.start_byte, self.bytes_read = self.skip, self.skip
        self.lines_before, self.line_start = 0, 0  # "\n"s before the window, and where the line it starts in starts

    def read_more(self, keep: int) -> None:
        """Forget the text before position `keep`, and decode the next chunk of the file (at least as long as the
        window, so that an element longer than a chunk is parsed again a few times only)."""
        gone = self.text[: keep - self.start]
        self.lines_before += gone.count("\n")
        if "\n" in gone:
            self.line_start = self.start + gone.rindex("\n") + 1
        self.start_byte += len(gone.encode("utf-8"))
        self.text, self.start = self.text[len(gone) :], keep
        data = self.file.read(max(_CHUNK_BYTES, len(self.text)))
        self.bytes_read += len(data)
        self.at_end = not data
        try:
            self.text += self.decoder.decode(data, final=self.at_end)
        except UnicodeDecodeError:
            self.file.seek(0)
            _decode(self.path, self.file.read(self.bytes_read)[self.skip :], offset=self.skip)  # names the byte
            raise  # not reached: `_decode` raises on the bytes that failed here

    def char(self, pos: int) -> str:
        """The character at `pos`, or "" at the end of the file; reading on forgets the text before `pos`."""
        while pos - self.start >= len(self.text) and not self.at_end:
            self.read_more(pos)
        return self.text[pos - self.start : pos - self.start + 1]

    def skip_whitespace(self, pos: int) -> int:
        """The position of the first character at or after `pos` that is not JSON whitespace (or the end)."""
        while self.char(pos) and self.char(pos) in _JSON_WHITESPACE:
            rest = self.text[pos - self.start :]
            pos += len(rest) - len(rest.lstrip(_JSON_WHITESPACE))
        return pos

    def value_at(self, pos: int) -> tuple[Any, int]:
        """The JSON value at `pos` and the position after it, read with more text until it is whole.

        A value that does not parse, or that reaches the window's end (a number may go on), is parsed again with more
        of the file; its `json.JSONDecodeError` (positions within the window) is raised at the end of the file only.
        """
        while True:
            try:
                value, end = self.parser.raw_decode(self.text, pos - self.start)
                if end < len(self.text) or self.at_end:
                    return value, self.start + end
            except json.JSONDecodeError:
                if self.at_end:
                    raise
            self.read_more(pos)

    def error(self, message: str, pos: int) -> json.JSONDecodeError:
        """The error `json` raises with `message` at position `pos`, in the window's terms."""
        return json.JSONDecodeError(message, self.text, pos - self.start)

    def slice(self, begin: int, end: int | None = None) -> str:
        """The text from `begin` to `end` (default: the window's end)."""
        return self.text[begin - self.start : None if end is None else end - self.start]

    def line_column(self, pos: int) -> tuple[int, int]:
        """The 1-based line and column of `pos`, as `json.JSONDecodeError` counts them over the whole text."""
        before = self.text[: pos - self.start]
        newline = before.rfind("\n")
        line_start = self.line_start if newline < 0 else self.start + newline + 1
        return self.lines_before + before.count("\n") + 1, pos - line_start + 1

    def byte_offset(self, pos: int) -> int:
        """The offset in the file of the first byte of the character at `pos`."""
        return self.start_byte + len(self.slice(self.start, pos).encode("utf-8"))

    def decode_rest(self) -> None:
        """Decode the rest of the file (forgetting it), so that a byte that is not UTF-8 there is the error raised."""
        while not self.at_end:
            self.read_more(self.start + len(self.text))


def _unclosed(text: str) -> bool:
    """Whether JSON `text` (an element to the end of the file) ends inside a string or with a bracket still open."""
    depth = 0
    for token in _STRUCTURE.finditer(text):
        if token.group()[0] == '"':
            if not token.group(1):
                return True
        else:
            depth += 1 if token.group() in "[{" else -1
    return depth > 0


def _decode(path: Path, data: bytes, *, offset: int, line: int = 1) -> str:
    """`data` (the file's bytes from byte `offset`, on line `line`) as UTF-8 text; naming the first bad byte if not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line += before.count(b"\n")
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
        utf16 = offset + err.start == 0 and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise DataError(
            f"{path} line {line} column {column}: not UTF-8 text (byte 0x{data[err.start]:02x} at byte offset "
            f"{offset + err.start}){'; it starts with a UTF-16 byte-order mark' if utf16 else ''}: save it as UTF-8."
        ) from None


def _json_loads(text: str) -> Any:
    """Python's strict JSON parser, refusing duplicate keys (readers disagree on which value wins)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _json_error(err: json.JSONDecodeError) -> str:
    """Python's reason for `err`, naming the character where it is a raw control character inside a string."""
    if err.msg == "Invalid control character at":
        return f"unescaped control character U+{ord(err.doc[err.pos]):04X} in a string"
    return err.msg.removesuffix(" at")  # "Unterminated string starting at": the position follows in our message


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """One JSON object's key-value pairs as a dict; a key given twice is an error."""
    row = dict(pairs)
    if len(row) < len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise ValueError(f"duplicate key {duplicate!r} in one object")
    return row


def _lone_surrogate(value: Any) -> str | None:
    """The first unpaired UTF-16 surrogate (a `\\ud83d` escape without its other half) in `value`'s strings, or None.

    Python's `json` accepts such an escape; it is not text, and neither pyarrow nor a tokenizer can take it.
    """
    if isinstance(value, str):
        surrogate = next((char for char in value if "\ud800" <= char <= "\udfff"), None)
        return None if surrogate is None else f"\\u{ord(surrogate):04x}"
    parts = [*value, *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next(filter(None, map(_lone_surrogate, parts)), None)

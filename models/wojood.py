"""The Wojood corpus format: read, validate, write, summarise.

One token per line, ``token TAG1 [TAG2 ...]`` separated by whitespace, a blank line ends a sentence.
Tags are IOB2. A nested file lists the tags of every entity covering the token, outermost first; a flat
file carries exactly one tag per token. Every problem is reported as ``DataError`` naming file and line.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

# The 21 WojoodNER entity types. Heads are ordered alphabetically (see schema.py).
WOJOOD_TYPES: tuple[str, ...] = (
    "PERS", "NORP", "OCC", "ORG", "GPE", "LOC", "FAC", "EVENT", "DATE", "TIME", "LANGUAGE",
    "WEBSITE", "LAW", "PRODUCT", "CARDINAL", "ORDINAL", "PERCENT", "QUANTITY", "UNIT", "MONEY", "CURR",
)
TASKS = ("flat", "nested")

_TAG = re.compile(r"^(?:O|[BI]-[A-Za-z][A-Za-z0-9_]*)$")


class DataError(ValueError):
    """A malformed data file; the message names the file and line."""


@dataclass
class Sentence:
    """One sentence: its tokens and, per token, the tags outermost first (empty list: no gold tags)."""

    tokens: list[str]
    tags: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tags:
            self.tags = [[] for _ in self.tokens]

    def __len__(self) -> int:
        return len(self.tokens)


def _parse_tags(fields: list[str], where: str, task: str, types: frozenset[str] | None,
                lenient_o: bool = False) -> list[str]:
    if lenient_o and len(fields) > 1:  # a prediction file may write every head's tag, O included
        fields = [t for t in fields if t != "O"] or ["O"]
    for tag in fields:
        if not _TAG.match(tag):
            hint = " (B-/I- need a type, e.g. B-PERS)" if tag in ("B", "I", "B-", "I-") else ""
            raise DataError(f"{where}: malformed tag {tag!r}{hint}")
        if types is not None and tag != "O" and tag[2:] not in types:
            raise DataError(f"{where}: unknown entity type {tag[2:]!r} in tag {tag!r}")
    if len(fields) > 1 and "O" in fields:
        raise DataError(f"{where}: 'O' mixed with entity tags {' '.join(fields)!r}")
    if task == "flat" and len(fields) > 1:
        raise DataError(f"{where}: flat file has {len(fields)} tags on one token (is it a nested file?)")
    return fields


def parse_lines(
    lines: Iterable[str],
    source: str = "<text>",
    task: str = "nested",
    types: Sequence[str] | None = None,
    require_tags: bool = True,
    lenient_o: bool = False,
) -> list[Sentence]:
    """Parse Wojood-format lines (already decoded, without trailing newlines) into sentences.

    ``require_tags=False`` also accepts token-only lines (input to prediction); a file must then be
    consistently tagged or untagged. ``lenient_o`` (prediction files only) reads an ``O`` among entity
    tags as nothing; data files stay strict.
    """
    if task not in TASKS:
        raise DataError(f"{source}: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    type_set = frozenset(types) if types is not None else None
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[list[str]] = []
    tagged: bool | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if lineno == 1:
            line = line.lstrip("\ufeff")
        where = f"{source}:{lineno}"
        if "\ufeff" in line:  # a BOM is allowed only at the very start of the file
            raise DataError(f"{where}: byte-order mark (U+FEFF) inside the file (files concatenated?)")
        if "\r" in line:  # CRLF line ends are stripped; a CR elsewhere is an old-Mac line end or a stray byte
            raise DataError(f"{where}: carriage return (CR) inside a line: use LF or CRLF line ends")
        fields = line.split()
        if not fields:
            if tokens:
                sentences.append(Sentence(tokens, tags))
                tokens, tags = [], []
            continue
        has_tags = len(fields) > 1
        if require_tags and not has_tags:
            raise DataError(f"{where}: expected 'token TAG [TAG ...]', found only {fields[0]!r}")
        if tagged is not None and has_tags != tagged:
            raise DataError(f"{where}: some lines carry tags and others do not")
        tagged = has_tags
        tokens.append(fields[0])
        tags.append(_parse_tags(fields[1:], where, task, type_set, lenient_o) if has_tags else [])
    if tokens:
        sentences.append(Sentence(tokens, tags))
    if not sentences:
        raise DataError(f"{source}: no sentences (empty file)")
    return sentences


def read_file(
    path: str | Path,
    task: str = "nested",
    types: Sequence[str] | None = None,
    require_tags: bool = True,
    lenient_o: bool = False,
) -> list[Sentence]:
    """Read and validate one Wojood file. Raises DataError naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a data file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    lines = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})")
    return parse_lines(lines, str(path), task=task, types=types, require_tags=require_tags, lenient_o=lenient_o)


def _is_tabbed_predictions(lines: list[str]) -> bool:
    """The reference system's prediction file: a header line, then ``token<TAB>gold<TAB>pred`` lines."""
    body = [line for line in lines[1:] if line.strip()][:50]
    return bool(body) and all(len(line.rstrip("\r").split("\t")) == 3 for line in body)


def read_predictions(path: str | Path, task: str = "nested") -> list[Sentence]:
    """A prediction file to score: Wojood format (an ``O`` among entity tags reads as nothing), or the
    reference system's own output (a header line, then ``token<TAB>gold<TAB>pred`` with a token's tags
    joined by ``|``, one per head, ``O`` included); of the latter only the prediction column is read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})")
    if not _is_tabbed_predictions(lines):
        return read_file(path, task=task, lenient_o=True)
    out = []
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line.strip():
            out.append("")
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"{path}: expected token<TAB>gold<TAB>pred, found {line!r}")
        out.append(" ".join([parts[0].strip(), *parts[2].strip().split("|")]))
    return parse_lines(out, str(path), task=task, lenient_o=True)


def read_raw_text(path: str | Path) -> list[Sentence]:
    """One sentence per line, whitespace-tokenised, no tags (input for prediction)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})")
    sentences = [Sentence(line.split()) for line in text.splitlines() if line.strip()]
    if not sentences:
        raise DataError(f"{path}: no sentences (empty file)")
    return sentences


def read_input(path: str | Path, fmt: str = "auto", task: str = "nested") -> tuple[list[Sentence], str]:
    """Sentences to tag and the format they were read as (``wojood`` or ``raw``).

    ``fmt`` is ``wojood`` (a token per line, tags optional), ``raw`` (one sentence per line) or ``auto``: a
    token-per-line file if it parses as one and has tags or blank lines between sentences, else raw text.
    """
    if fmt == "raw":
        return read_raw_text(path), "raw"
    if fmt == "wojood":
        return read_file(path, task=task, require_tags=False), "wojood"
    try:
        sentences = read_file(path, task=task, require_tags=False)
    except DataError:
        return read_raw_text(path), "raw"
    text = Path(path).read_text(encoding="utf-8-sig")
    tagged = any(s.tags and any(s.tags) for s in sentences)
    if tagged or any(not line.strip() for line in text.strip().splitlines()):
        return sentences, "wojood"
    return read_raw_text(path), "raw"  # one word per line, no blank lines: raw text of one-word sentences


def sentence_lines(path: str | Path) -> list[int]:
    """The line number where each sentence of a (valid) Wojood file starts."""
    starts, blank = [], True
    for lineno, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        empty = not raw.strip().lstrip(b"\xef\xbb\xbf").strip()
        if not empty and blank:
            starts.append(lineno)
        blank = empty
    return starts


def format_sentences(sentences: Iterable[Sentence]) -> str:
    """Wojood text: ``token TAG ...`` per line, a blank line after every sentence."""
    out: list[str] = []
    for s in sentences:
        for token, tags in zip(s.tokens, s.tags):
            out.append(" ".join([token, *tags]) if tags else token)
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def write_file(path: str | Path, sentences: Iterable[Sentence]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(format_sentences(sentences), encoding="utf-8")


def to_flat(sentences: Iterable[Sentence]) -> list[Sentence]:
    """Keep only the outermost tag of every token (how Wojood's flat files are made)."""
    return [Sentence(list(s.tokens), [t[:1] for t in s.tags]) for s in sentences]


def spans_of(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end_inclusive)`` of one type-homogeneous or flat IOB2 sequence.

    Lenient, conlleval-style (as seqeval's default mode): an ``I-X`` after ``O`` or after another type
    starts an entity; ``B-X`` always starts one.
    """
    spans: list[tuple[str, int, int]] = []
    cur_type, start = None, 0
    for i, tag in enumerate(tags):
        prefix, typ = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if cur_type is not None and (prefix != "I" or typ != cur_type):
            spans.append((cur_type, start, i - 1))
            cur_type = None
        if prefix != "O" and cur_type is None:
            cur_type, start = typ, i
    if cur_type is not None:
        spans.append((cur_type, start, len(tags) - 1))
    return spans


def type_sequence(tags: Sequence[Sequence[str]], typ: str) -> list[str]:
    """Per token, the first tag of type ``typ`` (outermost), else ``O``: how nested data is scored."""
    out = []
    for token_tags in tags:
        out.append(next((t for t in token_tags if t != "O" and t[2:] == typ), "O"))
    return out


def nested_spans(sentence: Sentence) -> list[tuple[str, int, int]]:
    """All entities of a nested sentence, one type at a time (same-type nesting dropped, as scored)."""
    spans = []
    for typ in sorted({t[2:] for tags in sentence.tags for t in tags if t != "O"}):
        spans.extend(spans_of(type_sequence(sentence.tags, typ)))
    return spans


def stats(sentences: Sequence[Sentence]) -> dict:
    """Corpus statistics for ``nerlab data check``."""
    mentions: Counter[str] = Counter()
    depth: Counter[int] = Counter()
    for s in sentences:
        for tags in s.tags:
            depth[len([t for t in tags if t != "O"])] += 1
            mentions.update(t[2:] for t in tags if t.startswith("B-"))
    longest = max(sentences, key=len)
    return {
        "sentences": len(sentences),
        "tokens": sum(len(s) for s in sentences),
        "mentions": sum(mentions.values()),
        "mentions_per_type": dict(sorted(mentions.items(), key=lambda kv: (-kv[1], kv[0]))),
        "max_nesting_depth": max(depth) if depth else 0,
        "tokens_per_depth": {str(k): v for k, v in sorted(depth.items())},
        "longest_sentence": len(longest),
    }

"""Label schema: which entity types, in which head order, and how tags become head targets.

Head k tags every token ``O/B/I`` for type k; its target on a token is the first (outermost) tag of type k,
so same-type nesting is dropped in training and scoring alike. Heads are in alphabetical type order, which
is also the priority order when flat tags are read off the heads: the UM6P system's flat tag of a word is
that of the first head, alphabetically, that is not O (``predict.flat_tags_from_heads``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from nerlab.models.wojood import TASKS, WOJOOD_TYPES

BIO = ("O", "B", "I")  # class index of each head's output
# Under the reference normalisation (reproduction only) each head has a fourth class for padding; decoding
# reads it as O, never as an entity (the reference scored <pad> as one).
REFERENCE_CLASSES = (*BIO, "<pad>")
PAD_CLASS = REFERENCE_CLASSES.index("<pad>")
NORMALISATIONS = ("masked", "reference")


@dataclass(frozen=True)
class LabelSchema:
    types: tuple[str, ...]  # alphabetical: head order and flat priority
    task: str = "nested"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if not self.types or list(self.types) != sorted(set(self.types)):
            raise ValueError("schema types must be a non-empty, sorted list of distinct names")

    @classmethod
    def wojood(cls, task: str = "nested") -> "LabelSchema":
        return cls(tuple(sorted(WOJOOD_TYPES)), task)

    @property
    def num_heads(self) -> int:
        return len(self.types)

    @property
    def flat_labels(self) -> list[str]:
        return ["O"] + [f"{p}-{t}" for t in self.types for p in ("B", "I")]

    def head_targets(self, token_tags: Sequence[str]) -> list[int]:
        """Class index (0=O, 1=B, 2=I) of every head for one token's tags (outermost first)."""
        out = [0] * len(self.types)
        seen = set()
        for tag in token_tags:
            if tag == "O" or tag[2:] in seen:
                continue
            seen.add(tag[2:])
            out[self._index[tag[2:]]] = 1 if tag[0] == "B" else 2
        return out

    def flat_target(self, token_tags: Sequence[str]) -> int:
        tag = token_tags[0] if token_tags else "O"
        return self._flat_index[tag]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.types)}

    @cached_property
    def _flat_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.flat_labels)}

    def to_dict(self) -> dict:
        return {"task": self.task, "types": list(self.types), "head_classes": list(BIO),
                "flat_labels": self.flat_labels}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSchema":
        return cls(tuple(d["types"]), d.get("task", "nested"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")

"""An ensemble of trained taggers, combined at the word level, saved as one self-contained folder.

Combination rule: every member tags the sentences with its own tokenizer and windows; at each word's first
sub-word it gives, per entity-type head, a probability over O/B/I (softmax of that head's logits; a
reference-normalisation head's ``<pad>`` class counts as O, as decoding reads it). The ensemble averages
these per-word probabilities over the members (and the flat head's, when every member decodes flat tags
from its flat head), takes each head's most probable class, and decodes exactly as a single model does
(``predict.decode_words``). Averaging probabilities rather than voting: with two members a vote has no
majority to break a tie, and a confident member should outweigh an unsure one.

Members may differ in PLM, tokenizer, loss and λ; they must share the task, the label schema and the flat
decoding, else decoding would mean different things (``check_members`` refuses in one line).

A folder::

  ensemble.json     the rule, the members (their folders and where they came from)
  members/0/ ...    one ``MultiTaskTagger.save`` folder per member (weights as safetensors, own tokenizer)

``load_predictor`` reads either kind of folder and returns something with ``predict(sentences, ...)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nerlab.models.encoding import encode, iter_batches
from nerlab.models.precision import inference_dtype
from nerlab.models.predict import decode_words, inference_batches, predict
from nerlab.models.schema import BIO, PAD_CLASS, LabelSchema
from nerlab.models.tagger import META_FILE, MultiTaskTagger
from nerlab.models.wojood import Sentence

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"
RULE = "mean of per-type head probabilities at each word's first sub-word"


class Single:
    """One tagger behind the same interface as ``Ensemble``."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.schema = model.schema

    def predict(self, sentences: Sequence[Sentence], task: str | None = None, batch_size: int = 32,
                device: torch.device | str = "cpu") -> list[Sentence]:
        return predict(self.model, self.tokenizer, sentences, task=task, batch_size=batch_size, device=device)


@torch.inference_mode()
def word_probabilities(model, tokenizer, sentences: Sequence[Sentence], batch_size: int = 32,
                       device: torch.device | str = "cpu") -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Per sentence: head probabilities (n_words, K, 3) over O/B/I, and flat-head probabilities (n_words, F)
    or None, at each word's first sub-word (a word in two windows takes the later window, as ``assemble``)."""
    model.eval()
    device = torch.device(device)
    schema, K = model.schema, model.schema.num_heads
    dtype = inference_dtype(model, device)  # each member in the precision it trained in
    windows = encode(sentences, tokenizer, schema, model.config.max_length)
    heads_out = [np.zeros((len(s), K, len(BIO)), dtype=np.float32) for s in sentences]
    flat_out = [None] * len(sentences)
    if model.flat is not None:
        flat_out = [np.zeros((len(s), len(schema.flat_labels)), dtype=np.float32) for s in sentences]
    batches = inference_batches([len(w) for w in windows], batch_size, model.config.reference, device)
    for idx, batch in iter_batches(windows, batches, tokenizer.pad_token_id, K):
        mask = batch["label_mask"].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            heads, flat = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), mask)
        p = heads.float().softmax(-1)  # (N, K, C)
        if p.shape[-1] > len(BIO):  # the reference normalisation's <pad> class reads as O
            p = torch.cat([p[..., :1] + p[..., PAD_CLASS:PAD_CLASS + 1], p[..., 1:len(BIO)]], -1)
        p = p.cpu().numpy()
        pf = flat.float().softmax(-1).cpu().numpy() if flat is not None else None
        offset = 0
        for i, c in zip(idx, mask.sum(1).tolist()):
            w = windows[i]
            heads_out[w.sentence][w.word_index] = p[offset:offset + c]
            if pf is not None:
                flat_out[w.sentence][w.word_index] = pf[offset:offset + c]
            offset += c
    return heads_out, flat_out


def member_meta(folder: str | Path) -> dict:
    return json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))


def check_members(metas: Sequence[dict], names: Sequence[str] | None = None) -> None:
    """One-line ValueError unless every member has the first one's task, label schema and flat decoding."""
    names = list(names or [f"member {i}" for i in range(len(metas))])
    if not metas:
        raise ValueError("an ensemble needs at least one member")
    first = metas[0]
    for name, meta in zip(names[1:], metas[1:]):
        for what, get in (("task", lambda m: m["schema"].get("task", "nested")),
                          ("label schema", lambda m: m["schema"]["types"]),
                          ("flat decoding", lambda m: m["tagger"].get("flat_decoding", "heads"))):
            if get(meta) != get(first):
                raise ValueError(f"{name} differs from {names[0]} in its {what} ({get(meta)} vs {get(first)}): "
                                 f"ensemble members must share the task, label schema and flat decoding")


class Ensemble:
    def __init__(self, members: Sequence[tuple], info: dict | None = None):
        self.members, self.info = list(members), info or {}
        model = self.members[0][0]
        self.schema, self.flat_decoding = model.schema, model.config.flat_decoding

    def predict(self, sentences: Sequence[Sentence], task: str | None = None, batch_size: int = 32,
                device: torch.device | str = "cpu") -> list[Sentence]:
        task = task or self.schema.task
        heads = flats = None
        for model, tokenizer in self.members:
            h, f = word_probabilities(model.to(device), tokenizer, sentences, batch_size, device)
            heads = h if heads is None else [a + b for a, b in zip(heads, h)]
            flats = f if flats is None else [a + b if a is not None else None for a, b in zip(flats, f)]
        out = []
        for s, h, f in zip(sentences, heads, flats):
            # the sum over members has the mean's argmax; classes (n_words, K) and (n_words,)
            out.append(decode_words(s, h.argmax(-1), f.argmax(-1) if f is not None else None, self.schema, task,
                                    self.flat_decoding))
        return out

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Ensemble":
        folder = Path(folder)
        info = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        paths = [folder / m["folder"] for m in info["members"]]
        check_members([member_meta(p) for p in paths])
        return cls([MultiTaskTagger.load(p, device=device) for p in paths], info)


def save_ensemble(folder: str | Path, member_folders: Sequence[str | Path], members: Sequence[dict],
                  extra: dict | None = None) -> Path:
    """Copy the member folders into ``folder/members/<i>`` and write ``ensemble.json`` (``members``: what to
    record of each, e.g. its run, trial and configuration)."""
    folder = Path(folder)
    check_members([member_meta(p) for p in member_folders], [m.get("config", str(p)) for m, p in
                                                              zip(members, member_folders)])
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for i, (src, m) in enumerate(zip(member_folders, members)):
        rel = f"{MEMBERS_DIR}/{i}"
        shutil.copytree(src, folder / rel)
        listed.append({**m, "folder": rel})
    schema = LabelSchema.from_dict(member_meta(member_folders[0])["schema"])
    info = {"format": 1, "rule": RULE, "task": schema.task, "members": listed, **(extra or {})}
    (folder / ENSEMBLE_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    return folder


def is_model_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / META_FILE).is_file() or (folder / ENSEMBLE_FILE).is_file()


def load_predictor(folder: str | Path, device: str | torch.device = "cpu"):
    """A ``Single`` tagger or an ``Ensemble`` from its folder; both have ``predict`` and ``schema``."""
    folder = Path(folder)
    if (folder / ENSEMBLE_FILE).is_file():
        return Ensemble.load(folder, device=device)
    return Single(*MultiTaskTagger.load(folder, device=device))

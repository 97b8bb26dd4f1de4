"""From head outputs to Wojood tags, and whole-corpus prediction with a trained tagger."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from nerlab.models.encoding import Window, WordPieces, encode, eval_batches, iter_batches
from nerlab.models.precision import inference_dtype
from nerlab.models.schema import BIO, LabelSchema
from nerlab.models.wojood import Sentence, spans_of


def nested_tags(head_classes: np.ndarray, types: Sequence[str]) -> list[list[str]]:
    """(n_words, K) head classes -> per word the tags of the entities covering it, outermost first.

    Each head is decoded leniently (an I after O starts an entity) and every entity is written with a
    B- on its first word, so the written file scores exactly as the head outputs do. Longer entities
    are outer; ties keep head (alphabetical) order.
    """
    n = head_classes.shape[0]
    spans = []
    for k, typ in enumerate(types):
        col = head_classes[:, k]
        if col.any():
            spans.extend(spans_of([f"{BIO[c]}-{typ}" if c else "O" for c in col]))
    spans.sort(key=lambda s: (-(s[2] - s[1]), s[1]))
    out: list[list[str]] = [[] for _ in range(n)]
    for typ, start, end in spans:
        out[start].append(f"B-{typ}")
        for i in range(start + 1, end + 1):
            out[i].append(f"I-{typ}")
    return [tags or ["O"] for tags in out]


def flat_tags_from_heads(head_classes: np.ndarray, types: Sequence[str]) -> list[list[str]]:
    """The UM6P rule: a word's flat tag is that of the first head (alphabetical) that is not O."""
    out = []
    for row in head_classes:
        k = int(np.argmax(row != 0)) if row.any() else -1
        out.append([f"{BIO[row[k]]}-{types[k]}"] if k >= 0 else ["O"])
    return out


# On a CPU, prediction cuts its length-sorted batches at this many padded sub-words too, not only at the batch
# size: a served request of 32 sentences of mixed lengths, one batch padded to its longest, computed 3.6x its
# tokens. Measured on the Wojood sample's test split with a 2 x 768 tagger, 2 threads, in 32-sentence requests:
# 2.7x (fp32) and 2.4x (bf16) faster than one batch per request, the whole split at once 1.16x / 0.98x; 1,024
# and 2,048 sub-words gave less. On a GPU the batch size alone: fewer, larger kernels outweigh the padding.
CPU_BATCH_TOKENS = 512
CPU_BATCH_TOKENS_ENV = "NERLAB_CPU_BATCH_TOKENS"  # an operator's (or a benchmark's) budget; 0: none


def cpu_batch_tokens() -> int | None:
    """The CPU's token budget per prediction batch: ``CPU_BATCH_TOKENS``, or ``$NERLAB_CPU_BATCH_TOKENS`` (0: none)."""
    env = os.environ.get(CPU_BATCH_TOKENS_ENV, "")
    if not env:
        return CPU_BATCH_TOKENS
    if not env.isdigit():
        raise ValueError(f"{CPU_BATCH_TOKENS_ENV} must be a whole number of sub-words (0: no budget), not {env!r}")
    return int(env) or None


def inference_batches(lengths: Sequence[int], batch_size: int, reference: bool, device: torch.device,
                      rank: int = 0, world: int = 1) -> list[list[int]]:
    """``encoding.eval_batches`` for predictions (validation F1, test scores, ``predict``, ensembles, the served
    model), with the CPU's token budget. The validation loss keeps plain ``eval_batches``: it is a mean over
    batches, which another batching would change."""
    return eval_batches(lengths, batch_size, reference, rank, world,
                        cpu_batch_tokens() if torch.device(device).type == "cpu" else None)


@torch.inference_mode()
def predict_windows(model, windows: Sequence[Window], batch_size: int, pad_id: int,
                    device: torch.device | str = "cpu", autocast_dtype=None, rank: int = 0, world: int = 1):
    """Head classes (and flat classes) per labelled word of every window, in window order; with ``world`` > 1
    only for the windows of rank ``rank``'s batches (``inference_batches``), None for the others."""
    model.eval()
    device = torch.device(device)
    heads_out: list[np.ndarray | None] = [None] * len(windows)
    flat_out: list[np.ndarray | None] = [None] * len(windows)
    batches = inference_batches([len(w) for w in windows], batch_size, model.config.reference, device, rank, world)
    for idx, batch in iter_batches(windows, batches, pad_id, model.schema.num_heads):
        mask = batch["label_mask"].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            heads, flat = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), mask)
        counts = mask.sum(1).tolist()
        heads = heads.argmax(-1)  # (N, K)
        heads = heads.masked_fill(heads >= len(BIO), 0).cpu().numpy()  # <pad> (reference heads) reads as O
        flat = flat.argmax(-1).cpu().numpy() if flat is not None else None
        offset = 0
        for i, c in zip(idx, counts):
            heads_out[i] = heads[offset:offset + c]
            if flat is not None:
                flat_out[i] = flat[offset:offset + c]
            offset += c
    return heads_out, flat_out


def predict_sentences(model, sentences: Sequence[Sentence], windows: Sequence[Window], batch_size: int, pad_id: int,
                      device: torch.device | str = "cpu", autocast_dtype=None, task: str | None = None,
                      rank: int = 0, world: int = 1, gather=None) -> list[Sentence]:
    """Every sentence tagged (as ``task``, default the model's): this rank predicts its evaluation batches,
    ``gather`` (for ``world`` > 1) turns this rank's ``(window indices, heads, flat)`` into every rank's, and the
    windows are stitched back into sentences. The one path of validation, test scoring and prediction."""
    heads, flat = predict_windows(model, windows, batch_size, pad_id, device, autocast_dtype, rank, world)
    if world > 1:
        mine = [i for i, h in enumerate(heads) if h is not None]
        for idx, hs, fs in gather((mine, [heads[i] for i in mine], [flat[i] for i in mine])):
            for i, h, f in zip(idx, hs, fs):
                heads[i], flat[i] = h, f
    return assemble(sentences, windows, heads, flat, model.schema, task or model.schema.task,
                    model.config.flat_decoding)


def assemble(sentences: Sequence[Sentence], windows: Sequence[Window], heads_out, flat_out,
             schema: LabelSchema, task: str, flat_decoding: str = "heads") -> list[Sentence]:
    """Stitch window outputs back into whole sentences with predicted tags."""
    K = schema.num_heads
    per_sent = [np.zeros((len(s), K), dtype=np.int64) for s in sentences]
    per_sent_flat = [np.zeros(len(s), dtype=np.int64) for s in sentences]
    for w, h, f in zip(windows, heads_out, flat_out):
        per_sent[w.sentence][w.word_index] = h
        if f is not None:
            per_sent_flat[w.sentence][w.word_index] = f
    return [decode_words(s, h, f, schema, task, flat_decoding) for s, h, f in zip(sentences, per_sent, per_sent_flat)]


def decode_words(sentence: Sentence, heads: np.ndarray, flat: np.ndarray, schema: LabelSchema, task: str,
                 flat_decoding: str = "heads") -> Sentence:
    """One sentence's tags from its words' head classes (n_words, K) and flat classes (n_words,)."""
    if task == "nested":
        tags = nested_tags(heads, schema.types)
    elif flat_decoding == "flat_head":
        tags = [[schema.flat_labels[c]] for c in flat]
    else:
        tags = flat_tags_from_heads(heads, schema.types)
    return Sentence(list(sentence.tokens), tags)


def predict(model, tokenizer, sentences: Sequence[Sentence], task: str | None = None, batch_size: int = 32,
            device: torch.device | str = "cpu", pieces: WordPieces | None = None) -> list[Sentence]:
    """Tag sentences with a trained tagger, in the precision it trained in (``precision.inference_dtype``);
    every token gets a prediction, whatever the length."""
    windows = encode(sentences, tokenizer, model.schema, model.config.max_length, pieces)
    return predict_sentences(model, sentences, windows, batch_size, tokenizer.pad_token_id, device,
                             inference_dtype(model, device), task=task)

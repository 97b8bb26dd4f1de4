"""Sub-word alignment, windowing of long sentences, collation and batching.

Expectations come from the tokenizer's own ``word_ids()`` and from labels worked out here, not from the
encoding code under test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from nerlab.models.encoding import (
    Window,
    bucketed_batches,
    collate,
    encode,
    padding_efficiency,
    random_batches,
    shard,
)
from nerlab.models.predict import assemble
from nerlab.models.schema import LabelSchema
from nerlab.models.wojood import Sentence, read_file

NESTED = LabelSchema.wojood("nested")
FLAT = LabelSchema.wojood("flat")


def expected_heads(token_tags: Sequence[str], types: Sequence[str]) -> list[int]:
    """Per type: 1 if its first (outermost) tag on the token is B, 2 if I, 0 if none."""
    out = []
    for typ in types:
        first = next((t for t in token_tags if t != "O" and t[2:] == typ), None)
        out.append(0 if first is None else {"B": 1, "I": 2}[first[0]])
    return out


def first_piece_positions(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Word index -> position of its first sub-word, read off the tokenizer's ``word_ids()``."""
    first: dict[int, int] = {}
    for pos, w in enumerate(word_ids):
        if w is not None and w not in first:
            first[w] = pos
    return first


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """Each word's sub-words as the tokenizer splits the whole sentence (no special tokens)."""
    enc = tokenizer(list(words), is_split_into_words=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for tid, w in zip(enc["input_ids"], enc.word_ids()):
        pieces[w].append(tid)
    return pieces


# ---- alignment ------------------------------------------------------------------------------------------
def test_first_subword_carries_the_label_and_the_rest_is_masked(sample_dir: Path, sample_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(sample_plm)
    sentences = read_file(sample_dir / "val.txt")
    windows = encode(sentences, tok, NESTED, max_length=512)
    assert len(windows) == len(sentences)  # the longest sample sentence fits in 512 sub-words
    multi_piece_words = 0
    for sent, win in zip(sentences, windows):
        enc = tok(sent.tokens, is_split_into_words=True)
        word_ids = enc.word_ids()
        assert set(w for w in word_ids if w is not None) == set(range(len(sent)))  # every word has pieces
        first = first_piece_positions(word_ids)
        multi_piece_words += sum(c > 1 for c in Counter(w for w in word_ids if w is not None).values())
        assert win.input_ids.tolist() == enc["input_ids"]
        assert win.label_pos.tolist() == [first[i] for i in range(len(sent))]
        assert win.word_index.tolist() == list(range(len(sent)))
        assert win.head_targets.tolist() == [expected_heads(t, NESTED.types) for t in sent.tags]
        assert [FLAT.flat_labels[c] for c in win.flat_targets] == [t[0] for t in sent.tags]

        batch = collate([win], tok.pad_token_id, NESTED.num_heads)
        mask = batch["label_mask"][0].tolist()
        # Labelled exactly at first sub-words; later sub-words and [CLS]/[SEP] (word id None) are masked.
        assert mask == [w is not None and first[w] == pos for pos, w in enumerate(word_ids)]
        heads = batch["head_targets"][0]
        assert not heads[~batch["label_mask"][0]].any()
    assert multi_piece_words > 100  # the check above really exercised later sub-words


def test_word_without_pieces_falls_back_to_unknown(tiny_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_plm)
    words = ["محمد", "\u200b", "الخطيب", "\x01", "في", "القدس"]
    tags = [["B-PERS"], ["I-PERS"], ["I-PERS"], ["O"], ["O"], ["B-GPE"]]
    # The premise: the tokenizer itself yields no piece for the zero-width space and the control char.
    present = {w for w in tok(words, is_split_into_words=True).word_ids() if w is not None}
    assert present == {0, 2, 4, 5}

    [win] = encode([Sentence(words, tags)], tok, NESTED, max_length=64)
    pieces = word_pieces(tok, words)
    expected_ids = [tok.cls_token_id]
    expected_pos = []
    for p in pieces:
        expected_pos.append(len(expected_ids))
        expected_ids.extend(p or [tok.unk_token_id])
    expected_ids.append(tok.sep_token_id)
    assert win.input_ids.tolist() == expected_ids
    assert win.label_pos.tolist() == expected_pos
    assert win.input_ids[win.label_pos[1]] == win.input_ids[win.label_pos[3]] == tok.unk_token_id
    # Words after the empty ones keep their own labels: القدس is still B-GPE, not shifted.
    assert win.head_targets.tolist() == [expected_heads(t, NESTED.types) for t in tags]
    assert win.head_targets[5, NESTED.types.index("GPE")] == 1


# ---- windows for long sentences -------------------------------------------------------------------------
def check_windows(tok, sentence: Sentence, max_length: int) -> list[Window]:
    """Windows of one long sentence: size, exactly-once labelling, piece alignment, full reassembly."""
    windows = encode([sentence], tok, NESTED, max_length)
    assert len(windows) > 1
    assert all(len(w) <= max_length for w in windows)
    labelled = np.concatenate([w.word_index for w in windows]).tolist()
    assert sorted(labelled) == list(range(len(sentence)))  # every word in exactly one window

    pieces = word_pieces(tok, sentence.tokens)
    full = [p or [tok.unk_token_id] for p in pieces]
    flat = [t for p in full for t in p]
    starts = np.cumsum([0] + [len(p) for p in full]).tolist()  # piece offset of each word, then the total
    boundaries = set(starts)
    for w in windows:
        ids = w.input_ids.tolist()
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert tok.cls_token_id not in ids[1:-1] and tok.sep_token_id not in ids[1:-1]
        # The core is a contiguous run of words, and the body a run of whole words around it.
        core_start, core_end = int(w.word_index[0]), int(w.word_index[-1]) + 1
        assert w.word_index.tolist() == list(range(core_start, core_end))
        body = ids[1:-1]
        assert any(flat[starts[left]:starts[left] + len(body)] == body
                   and starts[left] + len(body) in boundaries and starts[left] + len(body) >= starts[core_end]
                   for left in range(core_start + 1))
        for pos, wi in zip(w.label_pos, w.word_index):
            assert ids[pos:pos + len(full[wi])] == full[wi]
        assert w.head_targets.tolist() == [expected_heads(sentence.tags[i], NESTED.types) for i in w.word_index]

    # Reassembly: give every word a prediction that encodes its own index, then read it back per token.
    labels = FLAT.flat_labels
    code = [1 + i % (len(labels) - 1) for i in range(len(sentence))]
    flat_out = [np.array([code[i] for i in w.word_index]) for w in windows]
    heads_out = [np.zeros((len(w.word_index), FLAT.num_heads), dtype=np.int64) for w in windows]
    [pred] = assemble([sentence], windows, heads_out, flat_out, FLAT, "flat", flat_decoding="flat_head")
    assert pred.tokens == sentence.tokens
    assert pred.tags == [[labels[c]] for c in code]
    return windows


def test_sixty_words_at_max_length_16(synth_dir: Path, tiny_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_plm)
    source = read_file(synth_dir / "val.txt")
    words = [w for s in source for w in s.tokens][:60]
    tags = [t for s in source for t in s.tags][:60]
    windows = check_windows(tok, Sentence(words, tags), max_length=16)
    assert len(windows) >= 60 // 14  # 14 sub-words of room per window, at least one per word


def test_real_202_token_sentence_at_max_length_64(sample_dir: Path, sample_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(sample_plm)
    longest = max(read_file(sample_dir / "train.txt"), key=len)
    assert len(longest) == 202
    check_windows(tok, longest, max_length=64)


def test_every_word_of_the_sample_is_labelled_once_at_max_length_64(sample_dir: Path, sample_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(sample_plm)
    sentences = read_file(sample_dir / "train.txt")
    windows = encode(sentences, tok, NESTED, max_length=64)
    assert max(len(w) for w in windows) <= 64
    seen = Counter((w.sentence, int(i)) for w in windows for i in w.word_index)
    assert set(seen.values()) == {1}
    assert len(seen) == sum(len(s) for s in sentences) == 18_887


# ---- collation ------------------------------------------------------------------------------------------
def test_collate_pads_to_the_longest_window_and_masks(tiny_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_plm)
    short = Sentence(["القدس"], [["B-GPE"]])
    long = Sentence(["محمد", "الخطيب", "في", "جامعة", "بيرزيت"],
                    [["B-PERS"], ["I-PERS"], ["O"], ["B-ORG"], ["I-ORG", "B-GPE"]])
    untagged = Sentence(["في", "القدس"])
    windows = encode([short, long, untagged], tok, NESTED, max_length=64)
    lengths = [len(w) for w in windows]
    batch = collate(windows, tok.pad_token_id, NESTED.num_heads)

    T = max(len(tok(s.tokens, is_split_into_words=True)["input_ids"]) for s in (short, long, untagged))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["label_mask"].shape == (3, T)
    assert batch["head_targets"].shape == (3, T, NESTED.num_heads)
    for b, (w, n) in enumerate(zip(windows, lengths)):
        assert batch["input_ids"][b, :n].tolist() == w.input_ids.tolist()
        assert (batch["input_ids"][b, n:] == tok.pad_token_id).all()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (T - n)
        assert torch.nonzero(batch["label_mask"][b]).flatten().tolist() == w.label_pos.tolist()
    g, o, p = (NESTED.types.index(t) for t in ("GPE", "ORG", "PERS"))
    lp = windows[1].label_pos
    heads = batch["head_targets"][1]
    assert heads[lp[0], p] == 1 and heads[lp[1], p] == 2 and not heads[lp[2]].any()
    assert heads[lp[4], o] == 2 and heads[lp[4], g] == 1 and heads[lp[4]].sum() == 3
    assert batch["flat_targets"][1, lp].tolist() == [FLAT.flat_labels.index(t[0]) for t in long.tags]
    # An untagged window (prediction input) still marks its words but carries no targets.
    assert batch["label_mask"][2].sum() == 2 and not batch["head_targets"][2].any()


# ---- batching -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_lengths(sample_dir: Path, sample_plm: Path) -> list[int]:
    tok = AutoTokenizer.from_pretrained(sample_plm)
    return [len(w) for w in encode(read_file(sample_dir / "train.txt"), tok, NESTED, max_length=512)]


def test_bucketed_batches_are_a_deterministic_permutation(sample_lengths: list[int]) -> None:
    n = len(sample_lengths)
    a = bucketed_batches(sample_lengths, 16, seed=1)
    assert sorted(i for b in a for i in b) == list(range(n))
    assert all(1 <= len(b) <= 16 for b in a)
    assert a == bucketed_batches(sample_lengths, 16, seed=1)
    assert a != bucketed_batches(sample_lengths, 16, seed=2)


def test_a_short_last_pool_is_sorted_with_the_pool_before() -> None:
    # Pools of 2 batches x 2 windows: 5 windows make a pool of 4 and a last one of 1 (under half a pool),
    # which joins the first: one sorted pool, so the batches hold neighbours in length.
    lengths = [50, 1, 40, 2, 45]
    for seed in range(5):
        batches = bucketed_batches(lengths, 2, seed=seed, bucket_batches=2)
        assert sorted(sorted(lengths[i] for i in b) for b in batches) == [[1, 2], [40, 45], [50]]
    # A last pool of half a pool or more stays a pool of its own.
    assert max(len(b) for b in bucketed_batches(list(range(6)), 2, seed=0, bucket_batches=2)) == 2


def test_bucketing_pads_less_than_random_order(sample_lengths: list[int]) -> None:
    for bs in (16, 32):
        bucketed = np.mean([padding_efficiency(sample_lengths, bucketed_batches(sample_lengths, bs, s))
                            for s in range(3)])
        rand = np.mean([padding_efficiency(sample_lengths, random_batches(len(sample_lengths), bs, s))
                        for s in range(3)])
        assert bucketed > rand + 0.2, (bs, bucketed, rand)
        assert bucketed > 0.8  # sorted pools leave only the long tail badly padded


def test_padding_efficiency_hand_worked() -> None:
    # Batch [2, 4] pads to 2*4 = 8, batch [3, 1] to 2*3 = 6: 10 real tokens in 14 positions.
    assert padding_efficiency([2, 4, 3, 1], [[0, 1], [2, 3]]) == pytest.approx(10 / 14)


@pytest.mark.parametrize("n, world", [(10, 3), (10, 4), (12, 4), (2, 4), (1, 2)])
def test_even_shards_have_equal_batch_counts(n: int, world: int) -> None:
    batches = [[i] for i in range(n)]
    shards = [shard(batches, r, world, even=True) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) >= 1
    taken = [b[0] for s in shards for b in s]
    if n >= world:  # disjoint; only the tail that cannot be spread evenly is dropped
        assert len(set(taken)) == len(taken) == n // world * world


def test_uneven_shards_cover_every_batch_once() -> None:
    batches = [[i] for i in range(10)]
    shards = [shard(batches, r, 3, even=False) for r in range(3)]
    assert sorted(b[0] for s in shards for b in s) == list(range(10))
    assert [len(s) for s in shards] == [4, 3, 3]

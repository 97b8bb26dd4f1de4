"""Which batches evaluation runs on: masked models (the default) on length-sorted batches of twice the training
batch size; the reference normalisation, whose encoder sees no attention mask so that every output depends on
its batch's padding, on file-order batches of ``train.batch_size``, as the reference system validated and
predicted. Checked against batches built by hand, through the worker's own validation loss and predictions."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from nerlab.losses import LossConfig
from nerlab.models.encoding import Window, collate, eval_batches
from nerlab.models.predict import assemble
from nerlab.models.schema import BIO, LabelSchema
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
from nerlab.models.training import TrainConfig, eval_batch_size, task_losses
from nerlab.models.wojood import Sentence
from nerlab.platform.training.worker import Worker

SCHEMA = LabelSchema(("ORG", "PERS"), "nested")
PAD, CLS, SEP = 0, 2, 3
N = 40  # windows: two full batches of 16 and a last one of 8
CFG = TrainConfig(batch_size=16, batch_order="random", select_by="val_loss")
LOSS = LossConfig.preset("unified-seed")  # CE + IRM, Dice, Tversky, Focal: Dice, Tversky and IRM are per batch


def corpus() -> tuple[list[Sentence], list[Window]]:
    """N one-window sentences of 1..28 words, one sub-word each, random ids and O/B/I targets."""
    rng = random.Random(0)
    sentences, windows = [], []
    for s in range(N):
        n = rng.randint(1, 28)
        ids = [CLS] + [rng.randint(5, 29) for _ in range(n)] + [SEP]
        heads = np.array([[rng.randint(0, 2) for _ in SCHEMA.types] for _ in range(n)], dtype=np.int8)
        windows.append(Window(s, np.array(ids), np.arange(1, n + 1), np.arange(n), heads, np.zeros(n, np.int16)))
        sentences.append(Sentence([f"w{i}" for i in range(n)], [["O"]] * n))
    return sentences, windows


def tagger(normalisation: str) -> MultiTaskTagger:
    torch.manual_seed(0)
    enc = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                    add_pooling_layer=False)
    return MultiTaskTagger(enc, SCHEMA, TaggerConfig(plm="x", dropout=0.0, normalisation=normalisation)).eval()


def worker(model: MultiTaskTagger) -> Worker:
    """Rank 0 of 1 with the evaluation batch size the worker loop gives it."""
    return Worker(0, 1, torch.device("cpu"), None, model, SimpleNamespace(pad_token_id=PAD),
                  eval_batch_size(CFG, model.config.reference), job=SimpleNamespace(spec=SimpleNamespace(train=CFG)),
                  loss=LOSS)


@torch.no_grad()
def hand_val_loss(model, windows, batches) -> float:
    """Sum of the task losses over the batches, per batch, as the reference system averaged them."""
    total = torch.zeros(())
    for b in batches:
        batch = collate([windows[i] for i in b], PAD, SCHEMA.num_heads)
        total += task_losses(model, batch, LOSS, torch.device("cpu")).sum()
    return float(total) / len(batches)


@torch.no_grad()
def hand_predictions(model, sentences, windows, batches) -> list[Sentence]:
    heads_out = [None] * len(windows)
    for b in batches:
        batch = collate([windows[i] for i in b], PAD, SCHEMA.num_heads)
        heads, _ = model(batch["input_ids"], batch["attention_mask"], batch["label_mask"])
        classes = heads.argmax(-1).masked_fill(heads.argmax(-1) >= len(BIO), 0).numpy()
        offset = 0
        for i, c in zip(b, batch["label_mask"].sum(1).tolist()):
            heads_out[i], offset = classes[offset:offset + c], offset + c
    return assemble(sentences, windows, heads_out, [None] * len(windows), SCHEMA, "nested")


FILE_ORDER_16 = [list(range(0, 16)), list(range(16, 32)), list(range(32, 40))]  # the indices chunked by hand


def by_length(windows, size: int) -> list[list[int]]:
    """Length-sorted batches (ties in file order), built by hand."""
    order = sorted(range(len(windows)), key=lambda i: (len(windows[i]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_reference_batches_are_file_order_of_the_training_batch_size():
    lengths = [len(w) for w in corpus()[1]]
    assert eval_batch_size(CFG, reference=True) == CFG.batch_size == 16
    assert eval_batches(lengths, 16, reference=True) == FILE_ORDER_16
    # two ranks take whole file-order batches in turn
    assert eval_batches(lengths, 16, reference=True, rank=0, world=2) == [FILE_ORDER_16[0], FILE_ORDER_16[2]]
    assert eval_batches(lengths, 16, reference=True, rank=1, world=2) == [FILE_ORDER_16[1]]


def test_masked_batches_are_unchanged_length_sorted_of_twice_the_batch_size():
    windows = corpus()[1]
    lengths = [len(w) for w in windows]
    assert eval_batch_size(CFG, reference=False) == 32
    assert eval_batches(lengths, 32) == by_length(windows, 32)
    odd = [i for b in by_length(windows, N) for i in b if i % 2 == 1]  # rank 1 of 2: its windows 1::2, by length
    assert eval_batches(lengths, 8, rank=1, world=2) == [odd[i:i + 8] for i in range(0, len(odd), 8)]


def test_reference_worker_validates_and_predicts_on_file_order_batches_of_16():
    sentences, windows = corpus()
    model = tagger("reference")
    w = worker(model)
    val_loss = w.val_loss(windows)
    assert val_loss == pytest.approx(hand_val_loss(model, windows, FILE_ORDER_16), rel=1e-6)
    before = hand_val_loss(model, windows, by_length(windows, 32))  # the batches it used before: another loss
    assert abs(val_loss - before) > 1e-3 * abs(val_loss)
    _, pred = w.evaluate(sentences, windows)
    assert [s.tags for s in pred] == [s.tags for s in hand_predictions(model, sentences, windows, FILE_ORDER_16)]


def test_masked_worker_validates_on_length_sorted_batches_of_32():
    sentences, windows = corpus()
    model = tagger("masked")
    assert worker(model).val_loss(windows) == pytest.approx(hand_val_loss(model, windows, by_length(windows, 32)),
                                                            rel=1e-6)


def test_a_token_budget_cuts_length_sorted_batches_at_their_padded_size():
    """``max_tokens``: a batch stops before its windows x its longest would pass the budget (by hand: lengths
    sorted 2, 2, 3, 5, 9, 30 under 10 padded sub-words: [2, 2, 3] is 9, adding 5 would be 20; [5] and [9] alone
    (two would be 18); 30 alone although it passes the budget); the batch size still bounds a batch."""
    lengths = [9, 2, 30, 3, 5, 2]  # window i has lengths[i]
    assert eval_batches(lengths, 8, max_tokens=10) == [[1, 5, 3], [4], [0], [2]]
    assert eval_batches(lengths, 2, max_tokens=100) == [[1, 5], [3, 4], [0, 2]]
    assert eval_batches(lengths, 8, reference=True, max_tokens=10) == [[0, 1, 2, 3, 4, 5]]  # file order, as ever


def test_predictions_do_not_depend_on_the_token_budget(monkeypatch):
    """A masked model's outputs do not depend on what shares a window's batch: on the CPU, batches cut by a
    small token budget (one to a few windows each) predict what one batch of every window predicts."""
    from nerlab.models import predict as P

    sentences, windows = corpus()
    model = tagger("masked")
    assert len(P.inference_batches([len(w) for w in windows], 64, False, torch.device("cpu"))) > 1
    monkeypatch.setenv(P.CPU_BATCH_TOKENS_ENV, "0")  # no budget
    assert len(P.inference_batches([len(w) for w in windows], 64, False, torch.device("cpu"))) == 1
    whole = P.predict_windows(model, windows, 64, PAD)
    monkeypatch.setenv(P.CPU_BATCH_TOKENS_ENV, "40")  # windows of 3..30 sub-words: 1 to 13 per batch
    assert len(P.inference_batches([len(w) for w in windows], 64, False, torch.device("cpu"))) >= 10
    cut = P.predict_windows(model, windows, 64, PAD)
    for a, b in zip(whole[0], cut[0]):
        np.testing.assert_array_equal(a, b)

"""The reference normalisation switch (reproduction only) on a hand-built batch, and the masked default.

What goes into each head's loss is checked by catching the arguments the training step hands to the loss,
and the encoder's attention mask by a spy encoder; expected positions and classes are written out by hand.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from nerlab.losses import LossConfig
from nerlab.models import training
from nerlab.models.encoding import Window, collate
from nerlab.models.predict import assemble, predict_windows
from nerlab.models.schema import LabelSchema
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
from nerlab.models.training import TrainConfig, task_losses, train_batches
from nerlab.models.wojood import Sentence

SCHEMA = LabelSchema(("ORG", "PERS"), "nested")
PAD, CLS, SEP = 0, 2, 3
O, B, I, P = 0, 1, 2, 3  # head classes; P = <pad>


class SpyEncoder(nn.Module):
    """Records the attention mask it is called with; hidden states from an embedding."""

    def __init__(self, hidden: int = 8, vocab: int = 20):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden)
        self.emb = nn.Embedding(vocab, hidden)
        self.seen: list = []

    def forward(self, input_ids, attention_mask=None):
        self.seen.append(attention_mask)
        return SimpleNamespace(last_hidden_state=self.emb(input_ids))


def hand_batch() -> tuple[list[Window], dict]:
    """Sentence 1: word 0 = pieces (5, 6) with ORG B, word 1 = piece 7 with ORG I + PERS B.
    Sentence 2: word 0 = piece 8 with PERS B. Padded to 5 positions."""
    w1 = Window(0, np.array([CLS, 5, 6, 7, SEP]), np.array([1, 3]), np.array([0, 1]),
                np.array([[B, O], [I, B]], dtype=np.int8), np.zeros(2, dtype=np.int16))
    w2 = Window(1, np.array([CLS, 8, SEP]), np.array([1]), np.array([0]),
                np.array([[O, B]], dtype=np.int8), np.zeros(1, dtype=np.int16))
    return [w1, w2], collate([w1, w2], PAD, SCHEMA.num_heads)


# Reference targets of every position, row-major over (batch, position): [CLS], continuation sub-words and
# [SEP] are O, padding is <pad>, first sub-words carry their word's class.
REFERENCE_TARGET = torch.tensor([
    [O, O], [B, O], [O, O], [I, B], [O, O],  # CLS, w0 (first piece), w0 (##6), w1, SEP
    [O, O], [O, B], [O, O], [P, P], [P, P],  # CLS, w0, SEP, pad, pad
])
MASKED_TARGET = torch.tensor([[B, O], [I, B], [O, B]])  # first sub-words only


def tagger(normalisation: str) -> MultiTaskTagger:
    torch.manual_seed(0)
    return MultiTaskTagger(SpyEncoder(), SCHEMA, TaggerConfig(plm="spy", normalisation=normalisation)).eval()


def catch_loss(monkeypatch) -> list:
    caught = []
    real = training.combined

    def spy(logits, target, mask, spec):
        caught.append((logits.detach(), target.clone(), mask))
        return real(logits, target, mask, spec)

    monkeypatch.setattr(training, "combined", spy)
    return caught


def test_reference_puts_every_padded_position_and_four_classes_into_the_loss(monkeypatch):
    _, batch = hand_batch()
    model = tagger("reference")
    caught = catch_loss(monkeypatch)
    losses = task_losses(model, batch, LossConfig({"ce": 1.0}), torch.device("cpu"))
    (logits, target, mask), = caught
    assert mask is None and logits.shape == (10, 2, 4)
    assert torch.equal(target, REFERENCE_TARGET)
    # The encoder was called without an attention mask (padding attended to), as the reference did.
    assert model.encoder.seen == [None]
    # Each head's loss is the plain mean CE over all 10 positions and 4 classes.
    expected = torch.stack([F.cross_entropy(logits[:, k], REFERENCE_TARGET[:, k]) for k in range(2)])
    torch.testing.assert_close(losses, expected)


def test_masked_default_uses_first_sub_words_three_classes_and_the_attention_mask(monkeypatch):
    _, batch = hand_batch()
    model = tagger("masked")
    caught = catch_loss(monkeypatch)
    task_losses(model, batch, LossConfig({"ce": 1.0}), torch.device("cpu"))
    (logits, target, mask), = caught
    assert mask is None and logits.shape == (3, 2, 3)
    assert torch.equal(target, MASKED_TARGET)
    seen, = model.encoder.seen
    assert torch.equal(seen, torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))


def test_seed_unified_irm_halves_are_over_all_padded_positions(monkeypatch):
    """With the IRM term the loss still sees the 10 positions unmasked: even/odd split the padded batch."""
    _, batch = hand_batch()
    caught = catch_loss(monkeypatch)
    task_losses(tagger("reference"), batch, LossConfig.preset("unified-seed"), torch.device("cpu"))
    (logits, target, mask), = caught
    assert mask is None and logits.shape[0] == 10 and (target != -100).all()


def test_padding_is_attended_to_only_under_the_reference_switch():
    """A real BERT: appending padding changes a sentence's logits only when the mask is dropped."""
    def logits(normalisation: str, ids: list[int]) -> torch.Tensor:
        torch.manual_seed(0)
        enc = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32), add_pooling_layer=False)
        model = MultiTaskTagger(enc, SCHEMA, TaggerConfig(plm="x", normalisation=normalisation)).eval()
        ids_t = torch.tensor([ids])
        with torch.no_grad():
            return model(ids_t, (ids_t != PAD).long())[0][0, :4]

    short, padded = [CLS, 5, 7, SEP], [CLS, 5, 7, SEP, PAD, PAD, PAD]
    torch.testing.assert_close(logits("masked", short), logits("masked", padded))
    assert not torch.allclose(logits("reference", short), logits("reference", padded))


def test_pad_is_never_decoded_as_an_entity():
    windows, _ = hand_batch()
    model = tagger("reference")
    with torch.no_grad():
        model.heads.weight.zero_()
        model.heads.bias.copy_(torch.tensor([0.0, 1.0, 0.5, 9.0] * SCHEMA.num_heads))  # <pad> wins everywhere
    heads, flat = predict_windows(model, windows, 2, PAD)
    assert all((h == O).all() for h in heads)
    sentences = [Sentence(["a", "b"], [["O"], ["O"]]), Sentence(["c"], [["O"]])]
    pred = assemble(sentences, windows, heads, flat, SCHEMA, "nested")
    assert [t for s in pred for t in s.tags] == [["O"], ["O"], ["O"]]


def test_reference_cannot_have_a_flat_head_and_names_are_checked():
    with pytest.raises(ValueError, match="flat_head"):
        TaggerConfig(plm="x", normalisation="reference", flat_head=True)
    with pytest.raises(ValueError, match="normalisation"):
        TaggerConfig(plm="x", normalisation="padded")
    with pytest.raises(ValueError, match="batch_order"):
        TrainConfig(batch_order="sorted")


def test_batch_order_setting():
    """``random``: the seed's shuffle of all windows cut into batches in that order, lengths playing no part;
    ``bucketed``: every window once, in batches of windows of similar length."""
    lengths = [5, 50, 7, 60, 9, 8, 40, 41]
    order = list(range(8))
    random.Random(11).shuffle(order)  # Python's seeded shuffle: the same order on every machine
    cfg = TrainConfig(batch_size=3, batch_order="random")
    assert train_batches(lengths, cfg, 11) == [order[:3], order[3:6], order[6:]]
    assert train_batches(lengths[::-1], cfg, 11) == train_batches(lengths, cfg, 11)
    bucketed = train_batches(lengths, TrainConfig(batch_size=3), 11)
    assert sorted(i for b in bucketed for i in b) == list(range(8))

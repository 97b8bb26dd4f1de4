"""The tiny PLM: loads like a hub checkpoint, knows the corpus' Arabic pieces, is seed-deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, BertModel

from nerlab.models.tiny_plm import NOTE_FILE, build_tiny_plm
from nerlab.models.wojood import read_file


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _sizes(folder: Path) -> tuple[int, int, int, int]:
    cfg = AutoModel.from_pretrained(folder).config
    return cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loads_with_auto_classes_as_safetensors(tiny_plm: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_plm)
    model = AutoModel.from_pretrained(tiny_plm)
    assert isinstance(model, BertModel)
    cfg = model.config
    assert _sizes(tiny_plm) == (2, 64, 2, 256)
    assert cfg.vocab_size == len(tok) <= 3000 and tok.model_max_length == 512 == cfg.max_position_embeddings
    assert (tiny_plm / "model.safetensors").is_file() and not list(tiny_plm.glob("*.bin"))
    note = json.loads((tiny_plm / NOTE_FILE).read_text(encoding="utf-8"))
    assert (note["layers"], note["hidden"], note["heads"], note["seed"]) == (2, 64, 2, 0)


def test_arabic_words_split_into_known_pieces(tiny_plm: Path, synth_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_plm)
    words = [w for s in read_file(synth_dir / "test.txt") for w in s.tokens]
    pieces = [tok.tokenize(w) for w in words]
    unknown = sum(not p or tok.unk_token in p for p in pieces)
    assert unknown / len(words) < 0.05
    voweled = "حالياً"  # in the corpus; its tanween must survive normalisation, not be stripped
    assert "".join(p.removeprefix("##") for p in tok.tokenize(voweled)) == voweled
    ids = tok("قال الوزير")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_forward_pass_shape(tiny_plm: Path, synth_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_plm)
    model = AutoModel.from_pretrained(tiny_plm).eval()
    batch = [s.tokens for s in read_file(synth_dir / "val.txt")[:3]]
    enc = tok(batch, is_split_into_words=True, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape == (3, enc["input_ids"].shape[1], 64)


def test_same_seed_same_model_and_vocabulary(tiny_plm: Path, synth_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    corpus = [synth_dir / "train.txt"]
    again = build_tiny_plm(corpus, tmp_path / "again", layers=2, hidden=64, heads=2, seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert _same(_weights(again), _weights(tiny_plm))
    assert (again / "tokenizer.json").read_bytes() == (tiny_plm / "tokenizer.json").read_bytes()
    other = build_tiny_plm(corpus, tmp_path / "other", layers=2, hidden=64, heads=2, seed=1)
    assert not _same(_weights(other), _weights(tiny_plm))


def test_untagged_corpus_and_custom_sizes(synth_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    sentences = read_file(synth_dir / "val.txt")
    raw.write_text("".join("\n".join(s.tokens) + "\n\n" for s in sentences), encoding="utf-8")
    out = build_tiny_plm(
        [raw], tmp_path / "plm", layers=1, hidden=32, heads=4, intermediate=48, vocab_size=500,
        max_position=128,
    )
    assert _sizes(out) == (1, 32, 4, 48)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= 500 and tok.model_max_length == 128

"""The tagger's saved folder, and decoding head outputs into flat and nested Wojood tags."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from nerlab.models.encoding import collate, encode
from nerlab.models.precision import CPU_BF16_ENV, inference_dtype
from nerlab.models.predict import flat_tags_from_heads, nested_tags, predict
from nerlab.models.schema import LabelSchema
from nerlab.models.scoring import score
from nerlab.models.tagger import MODEL_FILE, MultiTaskTagger, TaggerConfig
from nerlab.models.tiny_plm import build_tiny_plm
from nerlab.models.wojood import WOJOOD_TYPES, Sentence, read_file, write_file

NESTED = LabelSchema.wojood("nested")
# Pickle streams start with the PROTO opcode; torch.save writes a zip archive.
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, read by hand: u64 little-endian length, then JSON."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


# ---- save / load ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(synth_dir: Path, tmp_path_factory) -> tuple[MultiTaskTagger, object, Path]:
    """A tagger with a flat head, saved; the PLM folder it came from is deleted afterwards."""
    plm = build_tiny_plm([synth_dir / "train.txt"], tmp_path_factory.mktemp("plm"), seed=5)
    tok = AutoTokenizer.from_pretrained(plm)
    torch.manual_seed(0)
    model = MultiTaskTagger.from_plm(str(plm), NESTED, TaggerConfig(plm=str(plm), flat_head=True, max_length=64))
    folder = model.save(tmp_path_factory.mktemp("model") / "tagger", tok)
    shutil.rmtree(plm)  # loading must need nothing but the saved folder
    return model.eval(), tok, folder


def test_saved_folder_is_safetensors_with_tokenizer_and_no_pickle(saved) -> None:
    model, _, folder = saved
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {MODEL_FILE, "nerlab_model.json", "encoder/config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]
    for p in folder.rglob("*"):
        if p.is_file():
            assert not p.read_bytes()[:4].startswith(PICKLE_MAGIC), p
    header = safetensors_header(folder / MODEL_FILE)
    stored = {k for k in header if k != "__metadata__"}
    assert stored == set(model.state_dict())  # every weight, encoder and heads alike
    meta = json.loads((folder / "nerlab_model.json").read_text(encoding="utf-8"))
    assert meta["schema"]["types"] == sorted(WOJOOD_TYPES) and meta["tagger"]["flat_head"] is True


def test_loaded_model_gives_identical_logits_and_predictions(saved, synth_dir: Path) -> None:
    model, tok, folder = saved
    loaded, loaded_tok = MultiTaskTagger.load(folder)
    assert not loaded.training and loaded.config == model.config and loaded.schema == model.schema

    val = read_file(synth_dir / "val.txt")[:40]
    # The tokenizer travelled with the weights: same ids for every sentence.
    assert [loaded_tok(s.tokens, is_split_into_words=True)["input_ids"] for s in val] == \
           [tok(s.tokens, is_split_into_words=True)["input_ids"] for s in val]
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k

    batch = collate(encode(val, tok, NESTED, 64), tok.pad_token_id, NESTED.num_heads)
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"])
        b = loaded(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert predict(loaded, loaded_tok, val) == predict(model, tok, val)
    assert predict(loaded, loaded_tok, val, task="flat") == predict(model, tok, val, task="flat")


def test_a_model_predicts_in_the_precision_it_trained_in(saved, tmp_path: Path, monkeypatch) -> None:
    """The precision travels with the saved model; a bf16 model predicts in bf16 where the device has it, in fp32
    where not (NERLAB_CPU_BF16=0 stands for a CPU without it), an fp32 model always in fp32."""
    model, tok, _ = saved
    model.precision = "bf16"
    try:
        loaded, _ = MultiTaskTagger.load(model.save(tmp_path / "bf16", tok))
    finally:
        model.precision = "fp32"
    assert loaded.precision == "bf16" and MultiTaskTagger.load(saved[2])[0].precision == "fp32"
    for env, dtype in (("1", torch.bfloat16), ("0", None)):
        monkeypatch.setenv(CPU_BF16_ENV, env)
        assert inference_dtype(loaded, "cpu") is dtype and inference_dtype(model, "cpu") is None


def test_loading_a_folder_that_is_not_a_model_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a nerlab model folder"):
        MultiTaskTagger.load(tmp_path)


# ---- decoding -------------------------------------------------------------------------------------------
TYPES = ("DATE", "EVENT", "GPE", "ORG")  # alphabetical, as heads are ordered


def test_flat_tag_is_the_first_non_o_head_in_alphabetical_order() -> None:
    heads = np.array([
        [0, 0, 0, 0],  # nothing: O
        [0, 2, 1, 0],  # EVENT and GPE fire: EVENT comes first
        [1, 0, 0, 2],  # DATE beats ORG
        [0, 0, 0, 1],  # only ORG
        [0, 0, 2, 1],  # GPE beats ORG, and keeps its I
    ])
    assert flat_tags_from_heads(heads, TYPES) == [["O"], ["I-EVENT"], ["B-DATE"], ["B-ORG"], ["I-GPE"]]


def test_nested_tags_are_written_outermost_first() -> None:
    # "مؤتمر جامعة بيرزيت عام 2020 في القدس X": an EVENT around an ORG around a GPE, a DATE inside the
    # EVENT, a lone I-GPE (lenient: starts an entity, written with B-) and two one-word entities.
    heads = np.array([
        # DATE EVENT GPE ORG
        [0, 1, 0, 0],
        [0, 2, 0, 1],
        [0, 2, 1, 2],
        [1, 2, 0, 0],
        [2, 2, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 2, 0],
        [0, 0, 1, 1],  # equal spans: head (alphabetical) order
    ])
    assert nested_tags(heads, TYPES) == [
        ["B-EVENT"],
        ["I-EVENT", "B-ORG"],
        ["I-EVENT", "I-ORG", "B-GPE"],
        ["I-EVENT", "B-DATE"],
        ["I-EVENT", "I-DATE"],
        ["O"],
        ["B-GPE"],
        ["B-GPE", "B-ORG"],
    ]


def lenient_entity_count(heads: np.ndarray) -> int:
    """Entities per head column: a B, or an I that does not continue an entity of the same head."""
    count = 0
    for col in heads.T:
        prev = 0
        for c in col:
            count += c == 1 or (c == 2 and prev == 0)
            prev = c
    return int(count)


@pytest.mark.parametrize("task", ["nested", "flat"])
def test_written_predictions_score_as_in_memory(task: str, sample_dir: Path, tmp_path: Path) -> None:
    gold = read_file(sample_dir / "val.txt")
    types = NESTED.types
    rng = np.random.default_rng(0)
    pred, entities = [], 0
    for s in gold:
        # Mostly O, with random B/I: overlapping types, stray I's and back-to-back B's all occur.
        heads = rng.choice(3, size=(len(s), len(types)), p=[0.99, 0.005, 0.005])
        for i, tags in enumerate(s.tags):  # copy some gold so the score is not trivially 0
            if i % 2 == 0:
                heads[i] = [next((1 if t[0] == "B" else 2 for t in tags if t[2:] == typ), 0) for typ in types]
        entities += lenient_entity_count(heads)
        decode = nested_tags if task == "nested" else flat_tags_from_heads
        pred.append(Sentence(list(s.tokens), decode(heads, types)))
    if task == "flat":
        gold = [Sentence(s.tokens, [t[:1] for t in s.tags]) for s in gold]

    write_file(tmp_path / "pred.txt", pred)
    reread = read_file(tmp_path / "pred.txt", task=task, types=WOJOOD_TYPES)
    in_memory, from_file = score(gold, pred, task), score(gold, reread, task)
    assert from_file.to_dict() == in_memory.to_dict()
    assert 0 < in_memory.micro.f1 < 1
    if task == "nested":
        # Every head entity survives writing: none merged, split or dropped by the outermost-first layout.
        assert in_memory.micro.predicted == entities

"""The word-level ensemble against an independent computation, its folder round trip and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nerlab.models.ensemble import Ensemble, check_members, load_predictor, member_meta, save_ensemble
from nerlab.models.predict import nested_tags, predict
from nerlab.models.schema import LabelSchema
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
from nerlab.models.wojood import read_file


def member(tiny_plm, folder, seed: int, task: str = "nested", max_length: int = 64):
    torch.manual_seed(seed)
    model = MultiTaskTagger.from_plm(str(tiny_plm), LabelSchema.wojood(task), TaggerConfig(str(tiny_plm),
                                                                                          max_length=max_length))
    with torch.no_grad():  # random heads big enough that the members disagree and tag entities
        model.heads.weight.mul_(30)
    from nerlab.models.tagger import load_tokenizer

    model.save(folder, load_tokenizer(tiny_plm))
    return folder


@pytest.fixture(scope="module")
def members(tiny_plm, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [member(tiny_plm, root / f"m{i}", seed=i) for i in range(2)]


def by_hand(folders, sentences):
    """Mean over members of softmax(head logits) at each word's first sub-word, one sentence at a time."""
    out = []
    for s in sentences:
        probs = 0
        for f in folders:
            model, tok = MultiTaskTagger.load(f)
            enc = tok(s.tokens, is_split_into_words=True, return_tensors="pt")
            first, seen = [], set()
            for pos, w in enumerate(enc.word_ids()):
                if w is not None and w not in seen:
                    seen.add(w)
                    first.append(pos)
            with torch.no_grad():
                heads, _ = model(enc["input_ids"], enc["attention_mask"])  # (1, T, K, 3)
            probs = probs + heads[0, first].softmax(-1).numpy()  # (n_words, K, 3)
        out.append(nested_tags(np.asarray(probs).argmax(-1), LabelSchema.wojood().types))
    return out


def test_ensemble_averages_member_probabilities_per_word(members, synth_dir, tmp_path):
    sentences = [s for s in read_file(synth_dir / "val.txt") if len(s) < 20][:12]
    folder = save_ensemble(tmp_path / "ens", members, [{"config": "a"}, {"config": "b"}])
    ens = load_predictor(folder)
    assert isinstance(ens, Ensemble) and len(ens.members) == 2
    got = ens.predict(sentences)
    assert [s.tags for s in got] == by_hand(members, sentences)
    singles = [predict(*MultiTaskTagger.load(f), sentences) for f in members]
    assert singles[0] != singles[1] and any(t != ["O"] for s in got for t in s.tags)  # not a trivial case
    info = json.loads((folder / "ensemble.json").read_text())
    assert [m["folder"] for m in info["members"]] == ["members/0", "members/1"] and info["task"] == "nested"


def test_one_member_ensemble_is_the_single_model_even_across_windows(members, synth_dir, tmp_path):
    sentences = read_file(synth_dir / "val.txt")[:30]
    long = [t for s in sentences for t in s.tokens][:200]  # many windows of 64 sub-words
    from nerlab.models.wojood import Sentence

    sentences = sentences + [Sentence(long)]
    ens = load_predictor(save_ensemble(tmp_path / "ens1", members[:1], [{}]))
    single = load_predictor(members[0])
    assert [s.tags for s in ens.predict(sentences)] == [s.tags for s in single.predict(sentences)]


def test_members_of_different_tasks_are_refused(members, tiny_plm, tmp_path):
    flat = member(tiny_plm, tmp_path / "flat", seed=3, task="flat")
    with pytest.raises(ValueError, match="differs from .* in its task .*must share") as e:
        save_ensemble(tmp_path / "bad", [members[0], flat], [{"config": "nested one"}, {"config": "flat one"}])
    assert "\n" not in str(e.value) and "flat one" in str(e.value)
    check_members([member_meta(m) for m in members])  # same task and schema: fine

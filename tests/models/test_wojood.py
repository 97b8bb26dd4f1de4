"""Reading, validating and writing the Wojood format."""

from __future__ import annotations

import pytest

from nerlab.models.wojood import (
    WOJOOD_TYPES, DataError, Sentence, format_sentences, parse_lines, read_file, read_raw_text, spans_of,
    stats, to_flat,
)


def write(tmp_path, data: bytes, name="f.txt"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_real_sample_reads_with_stated_sizes(sample_dir):
    sizes = {"train": (1114, 18887), "val": (158, 2743), "test": (357, 5344)}
    for split, (n_sent, n_tok) in sizes.items():
        sents = read_file(sample_dir / f"{split}.txt", types=WOJOOD_TYPES)
        assert (len(sents), sum(len(s) for s in sents)) == (n_sent, n_tok)
    train = read_file(sample_dir / "train.txt")
    assert max(len(s) for s in train) == 202
    assert max(len(t) for s in train for t in s.tags) == 4
    assert any("$#$" in s.tokens for s in train)  # an ordinary token


def test_round_trip_is_byte_identical(sample_dir, tmp_path):
    text = (sample_dir / "val.txt").read_text(encoding="utf-8")
    sents = read_file(sample_dir / "val.txt")
    assert format_sentences(sents).strip() == text.strip()


def test_flat_sample_is_outermost_tag(sample_dir, sample_flat_dir):
    nested = read_file(sample_dir / "val.txt")
    flat = read_file(sample_flat_dir / "val.txt", task="flat")
    assert [s.tags for s in to_flat(nested)] == [s.tags for s in flat]


def test_crlf_bom_and_tabs_are_accepted(tmp_path):
    p = write(tmp_path, "\ufeffقال\tO\r\nمحمد B-PERS\r\n\r\nذهب O\r\n".encode("utf-8"))
    sents = read_file(p)
    assert [s.tokens for s in sents] == [["قال", "محمد"], ["ذهب"]]
    assert sents[0].tags == [["O"], ["B-PERS"]]


@pytest.mark.parametrize("content, line, words", [
    (b"a O\nb X-PERS\n", 2, "malformed tag"),
    (b"a O\nb B-\n", 2, "need a type"),
    (b"a O\nb B\n", 2, "need a type"),
    (b"a O\n\nb B-FOO\n", 3, "unknown entity type 'FOO'"),
    (b"a O\nb\n", 2, "expected 'token TAG"),
    (b"a O\nb O B-PERS\n", 2, "'O' mixed"),
    (b"a O\n\xff\xfe O\n", 2, "not UTF-8"),
])
def test_malformed_lines_name_file_and_line(tmp_path, content, line, words):
    p = write(tmp_path, content)
    with pytest.raises(DataError) as e:
        read_file(p, types=WOJOOD_TYPES)
    assert f"{p}:{line}:" in str(e.value) and words in str(e.value)


def test_flat_file_with_several_tags_is_rejected(tmp_path):
    p = write(tmp_path, "a B-ORG\nb I-ORG B-GPE\n".encode())
    with pytest.raises(DataError, match=r":2: flat file has 2 tags"):
        read_file(p, task="flat")


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        read_file(write(tmp_path, b"\n\n  \n"))
    with pytest.raises(DataError, match="no such file"):
        read_file(tmp_path / "nope.txt")


def test_untagged_input_for_prediction(tmp_path):
    p = write(tmp_path, "قال\nمحمد\n\nذهب\n".encode())
    sents = read_file(p, require_tags=False)
    assert [len(s) for s in sents] == [2, 1] and sents[0].tags == [[], []]
    with pytest.raises(DataError, match=":2: some lines carry tags"):
        parse_lines(["a O", "b"], require_tags=False)
    raw = write(tmp_path, "قال محمد اليوم\n\nذهب\n".encode(), "raw.txt")
    assert [s.tokens for s in read_raw_text(raw)] == [["قال", "محمد", "اليوم"], ["ذهب"]]


def test_lenient_spans():
    # a stray I- starts an entity; a type switch inside I- ends one and starts another
    assert spans_of(["O", "I-PERS", "I-PERS", "B-PERS", "I-ORG", "O"]) == [
        ("PERS", 1, 2), ("PERS", 3, 3), ("ORG", 4, 4)]


def test_stats_counts_depth_and_mentions():
    s = [Sentence(["a", "b", "c"], [["B-ORG"], ["I-ORG", "B-GPE"], ["O"]])]
    st = stats(s)
    assert st["mentions"] == 2 and st["max_nesting_depth"] == 2 and st["longest_sentence"] == 3


# ---- prediction files from other systems (nerlab evaluate --pred) ---------------------------------------
def test_reference_prediction_file_reads_as_the_same_tags(tmp_path):
    from nerlab.models.wojood import DataError, read_predictions

    wojood = tmp_path / "pred.txt"
    wojood.write_text("a B-ORG\nb I-ORG B-PERS\nc O\n\nd O\n", encoding="utf-8")
    tabbed = tmp_path / "seed.txt"
    tabbed.write_text("Token\tGold\tPred\n"
                      "a\tB-ORG|O|O\tB-ORG|O|O\nb\tI-ORG|B-PERS|O\tI-ORG|O|B-PERS\nc\tO|O|O\tO|O|O\n\n"
                      "d\tO|O|O\tO|O|O\n", encoding="utf-8")
    lenient = tmp_path / "lenient.txt"
    lenient.write_text("a B-ORG O O\nb I-ORG O B-PERS\nc O O O\n\nd O\n", encoding="utf-8")
    want = read_predictions(wojood)
    assert [s.tokens for s in want] == [["a", "b", "c"], ["d"]]
    for f in (tabbed, lenient):
        got = read_predictions(f)
        assert [s.tokens for s in got] == [s.tokens for s in want]
        assert [[sorted(t) for t in s.tags] for s in got] == [[sorted(t) for t in s.tags] for s in want]
    with pytest.raises(DataError, match="'O' mixed"):  # data files stay strict
        read_file(lenient)

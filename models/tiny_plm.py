"""A tiny, randomly initialised BERT with a WordPiece vocabulary learned from a Wojood corpus.

There is no model hub here, and real Arabic PLMs are far too large for tests and smoke runs. A tiny BERT
saved like a hub checkpoint (``save_pretrained``: config, safetensors weights, tokenizer files) goes
through exactly the same ``AutoTokenizer`` / ``AutoModel`` code path as ARBERTv2 or CAMeLBERT, so the
training code needs no special case for it. Its vocabulary is learned from the corpus so that Arabic
words split into known pieces instead of collapsing into ``[UNK]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, BertTokenizerFast

from nerlab.models.wojood import read_file

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NOTE_FILE = "nerlab_tiny.json"


def _corpus_sentences(corpus_files: Sequence[Path]) -> Iterator[str]:
    """The corpus as whitespace-joined sentences, tags dropped (tagged and untagged files both work)."""
    for path in corpus_files:
        for sentence in read_file(path, require_tags=False):
            yield " ".join(sentence.tokens)


def _bert_pipeline(tok: Tokenizer) -> Tokenizer:
    """BERT's normaliser (keeping Arabic letters and diacritics intact), pre-tokeniser and decoder."""
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _continuation_pieces(tok: Tokenizer, sentences: Sequence[str]) -> list[str]:
    """Every ``##c`` the trainer will need, sorted.

    The trainer creates these lazily in hash-map order, so their ids, and through merge tie-breaking the
    learned vocabulary, change from run to run (huggingface/tokenizers#1794). Registering them up front
    fixes their ids and makes training deterministic.
    """
    chars: set[str] = set()
    for sentence in sentences:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(sentence)):
            chars.update(word[1:])
    return [f"##{c}" for c in sorted(chars)]


def train_wordpiece(corpus_files: Sequence[Path], vocab_size: int) -> Tokenizer:
    """A BERT-style WordPiece tokenizer learned from the corpus tokens; deterministic for a corpus."""
    sentences = list(_corpus_sentences(corpus_files))
    probe = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")))
    pinned = _continuation_pieces(probe, sentences)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + pinned, show_progress=False
    )
    probe.train_from_iterator(sentences, trainer=trainer)
    # Rebuild from the learned vocabulary so that the pinned pieces are ordinary, not special, tokens.
    tok = _bert_pipeline(Tokenizer(models.WordPiece(probe.get_vocab(), unk_token="[UNK]")))
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def build_tiny_plm(
    corpus_files: list[Path],
    out_dir: Path,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 2,
    intermediate: int | None = None,
    vocab_size: int = 3000,
    max_position: int = 512,
    seed: int = 0,
) -> Path:
    """Train the vocabulary, initialise a BertModel from ``seed`` and save both to ``out_dir``.

    The folder then loads with ``AutoTokenizer.from_pretrained`` and ``AutoModel.from_pretrained``.
    The global torch RNG is left as it was, so building a PLM does not perturb a caller's seeding.
    """
    corpus_files = [Path(p) for p in corpus_files]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(
        tokenizer_object=train_wordpiece(corpus_files, vocab_size),
        model_max_length=max_position,
        do_lower_case=False,
        strip_accents=False,
        **dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS)),
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    note = {
        "corpus_files": [str(p) for p in corpus_files], "layers": layers, "hidden": hidden, "heads": heads,
        "intermediate": intermediate, "vocab_size": vocab_size, "learned_vocab_size": len(tokenizer),
        "max_position": max_position, "seed": seed,
    }
    (out_dir / NOTE_FILE).write_text(json.dumps(note, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out_dir

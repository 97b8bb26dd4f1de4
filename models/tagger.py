"""The multi-task tagger: a shared pretrained encoder with one O/B/I head per entity type.

A model is saved as a self-contained folder, never a pickle:
  model.safetensors     all weights (encoder + heads)
  encoder/config.json   the encoder's architecture, so loading needs no hub
  nerlab_model.json     tagger settings and the label schema
  tokenizer files       the tokenizer the model was trained with (the reference system's evaluation once
                        reloaded the wrong one and scored F1 0.002)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from nerlab.models.schema import BIO, NORMALISATIONS, REFERENCE_CLASSES, LabelSchema

MODEL_FILE = "model.safetensors"
META_FILE = "nerlab_model.json"


@dataclass(frozen=True)
class TaggerConfig:
    """The tagger's settings, checked here once (a run spec's ``model`` section extends this class)."""

    plm: str = "tiny:2x64"  # hub name, folder or tiny:LAYERSxHIDDEN the encoder came from (informational once saved)
    dropout: float = 0.1  # the reference system's setting
    flat_head: bool = False  # extra softmax head over all flat labels (the upstream baseline)
    flat_decoding: str = "heads"  # flat tags from the per-type heads (the UM6P rule) or from the flat head
    max_length: int = 512  # sub-words per window, specials included
    # "masked": first sub-words only, O/B/I heads, attention mask (the default). "reference", only to reproduce
    # the reference system: O/B/I/<pad> heads trained on every padded position, encoder called without a mask.
    normalisation: str = "masked"

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, not {self.max_length}")
        if self.flat_decoding not in ("heads", "flat_head"):
            raise ValueError(f"flat_decoding must be 'heads' or 'flat_head', not {self.flat_decoding!r}")
        if self.flat_decoding == "flat_head" and not self.flat_head:
            raise ValueError("flat_decoding 'flat_head' needs flat_head: true")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, not {self.normalisation!r}")
        if self.reference and self.flat_head:
            raise ValueError("flat_head: the reference normalisation has per-type heads only (a flat head with a "
                             "<pad> class is no part of the reference system); set flat_head: false")

    @property
    def reference(self) -> bool:
        return self.normalisation == "reference"

    @property
    def head_classes(self) -> tuple[str, ...]:
        return REFERENCE_CLASSES if self.reference else BIO


def load_tokenizer(plm: str | Path, trust_remote_code: bool = False):
    """The PLM's tokenizer; a hub repo's own code runs only when the spec turns ``trust_remote_code`` on."""
    return AutoTokenizer.from_pretrained(plm, trust_remote_code=trust_remote_code)


class MultiTaskTagger(nn.Module):
    def __init__(self, encoder: nn.Module, schema: LabelSchema, config: TaggerConfig):
        super().__init__()
        self.encoder, self.schema, self.config = encoder, schema, config
        self.precision = "fp32"  # what it trained in (fp32, bf16, fp16): saved with it, predicted in (predict.py)
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        # All type heads as one Linear: (B, T, H) -> (B, T, K * C), a single matmul for 21 heads (C = 3, or 4
        # with the reference's <pad> class).
        self.heads = nn.Linear(hidden, schema.num_heads * len(config.head_classes))
        self.flat = nn.Linear(hidden, len(schema.flat_labels)) if config.flat_head else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, label_mask=None):
        """Logits at the labelled positions only when ``label_mask`` is given (saves the head matmuls).

        Returns ``(head_logits, flat_logits)``: (N, K, C) and (N, F) for N labelled positions, or
        (B, T, K, C) and (B, T, F) without a mask; ``flat_logits`` is None without a flat head.
        Under the reference normalisation the encoder gets no attention mask (padding is attended to), as
        the reference system's code called it.
        """
        if self.config.reference:
            attention_mask = None
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        if label_mask is not None:
            h = h[label_mask]  # (N, H)
        h = self.dropout(h)
        heads = self.heads(h).unflatten(-1, (self.schema.num_heads, len(self.config.head_classes)))  # (..., K, C)
        flat = self.flat(h) if self.flat is not None else None
        return heads, flat

    # ---- building, saving, loading -------------------------------------------------------------------
    @classmethod
    def from_plm(cls, plm: str, schema: LabelSchema, config: TaggerConfig | None = None,
                 trust_remote_code: bool = False) -> "MultiTaskTagger":
        """The encoder from a folder or hub name; its weights come only from safetensors, never a pickle."""
        config = config or TaggerConfig(plm=plm)
        try:
            encoder = AutoModel.from_pretrained(plm, add_pooling_layer=False, trust_remote_code=trust_remote_code,
                                                use_safetensors=True, hidden_dropout_prob=config.dropout,
                                                attention_probs_dropout_prob=config.dropout)
        except OSError as e:
            if "safetensors" not in str(e):
                raise
            raise OSError(f"{plm}: no safetensors weights ({e}); nerlab never loads pickled weights "
                          f"(pytorch_model.bin): convert the checkpoint to model.safetensors") from None
        return cls(encoder, schema, config)

    def save(self, folder: str | Path, tokenizer) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / MODEL_FILE))
        self.encoder.config.save_pretrained(folder / "encoder")
        tokenizer.save_pretrained(folder)
        meta = {"format": 1, "tagger": asdict(self.config), "schema": self.schema.to_dict(),
                "precision": self.precision}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu"):
        """Load ``(model, tokenizer)`` from a saved folder; weights come only from safetensors."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"{folder}: not a nerlab model folder (no {META_FILE})")
        if not (folder / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {MODEL_FILE}; nerlab never loads pickled weights")
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder / "encoder"), add_pooling_layer=False)
        model = cls(encoder, LabelSchema.from_dict(meta["schema"]), TaggerConfig(**meta["tagger"]))
        load_model(model, str(folder / MODEL_FILE), device=str(device))
        model.precision = meta.get("precision", "fp32")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return model.to(device).eval(), tokenizer

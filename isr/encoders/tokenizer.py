"""Wordpiece tokenizers: loaded from a local directory, or trained on the training captions.

Entry points: :func:`load_tokenizer`, :func:`train_tokenizer`, :func:`tokenize`.
Nothing is ever fetched from a hub: loading passes ``local_files_only=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from isr.errors import CorruptIndex, InvalidInput

__all__ = ["load_tokenizer", "tokenize", "train_tokenizer"]

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A tokenizer saved with ``save_pretrained`` in ``path`` (never a hub name)."""
    if not path.is_dir():
        raise CorruptIndex(f"tokenizer directory {path} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # any parse failure: a garbled tokenizer.json raises KeyError, ...
        raise CorruptIndex(
            f"tokenizer in {path} cannot be loaded ({type(e).__name__}: {e}); "
            "its files (tokenizer.json, tokenizer_config.json) are damaged or incomplete"
        ) from e
    if tok.cls_token_id is None or tok.pad_token_id is None:
        raise CorruptIndex(f"tokenizer in {path} has no [CLS] or [PAD] token")
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000) -> PreTrainedTokenizerBase:
    """Train an uncased BERT-style WordPiece tokenizer on ``texts``.

    The vocabulary stops growing when the texts run out of merges, so ``vocab_size`` is an
    upper bound. [PAD] gets id 0 (the embedding's padding row).
    """
    if vocab_size < len(_SPECIALS) + 1:
        raise InvalidInput(f"vocab_size must be > {len(_SPECIALS)}, got {vocab_size}")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIALS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece()
    assert tok.token_to_id("[PAD]") == 0
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tokenize(
    tok: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wordpiece ids (B, n) and mask (B, n) bool, [CLS] first, truncated to ``max_len``."""
    enc = tok(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    assert ids.shape[1] <= max_len
    return ids, mask

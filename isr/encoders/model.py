"""The dual encoder of Inflate and Shrink: one transformer shared by the text and image towers.

Entry point: :class:`DualEncoder`, built from an :class:`~isr.encoders.config.EncoderConfig`.

- Text tower: wordpieces ([CLS] ... [SEP], at most 32) -> BERT embeddings -> shared layers.
- Image tower: m region features (any dim D) -> linear to ``hidden`` -> a first token is
  prepended (a learned vector, plus the mean of the projected regions when
  ``first_token == "mean"``) -> the same BERT embedding LayerNorm (token type 1, every region at position 0,
  as regions form a set) -> the same shared layers. Optional k-means to ``kmeans_k`` centres.
- Inflated model: k learned code tokens (one set per side) appended to each side's input,
  each plus the mean of the side's token inputs when ``code_input == "mean"``.
- Text first token: [CLS]'s embedding, plus the mean of the caption's other word embeddings
  when ``first_token == "mean"`` (see :func:`_with_mean`: why).
- Head: a linear projection to d, L2-normalised: fragments. The fast vector is fragment 0.
- Keyword heads (Cao et al.): one multi-label classifier per tower (:mod:`isr.encoders.
  keyword_heads`): the paper's linear layer on the first token, attention pooling with a query
  per label over every token, or max-sim of the fragments against label vectors both towers
  share (``kw_labels``).

The shared layers are transformers' own ``BertModel`` fed with ``inputs_embeds``, so loading a
BERT checkpoint (MiniLM) is exactly the checkpoint's computation for text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from isr.encoders.config import EncoderConfig
from isr.encoders.keyword_heads import make_head
from isr.encoders.kmeans import kmeans_reduce
from isr.encoders.scoring import fast_scores, maxsim_scores
from isr.errors import InvalidInput

__all__ = ["DualEncoder", "TowerOutput"]


@dataclass(frozen=True)
class TowerOutput:
    """One tower's output for a batch of B items.

    fast:   (B, d) L2-normalised first output token (the fast vector).
    frags:  (B, n, d) L2-normalised fragments used by this model's score (F: the first token
            only; B: up to ``max_frags`` token outputs; I: those plus the k code outputs).
    mask:   (B, n) bool, True where a fragment is real.
    logits: (B, L) keyword logits, or None when the model has no keyword heads.
    hidden, hidden_mask: (B, n[+k], H) last hidden states and their mask: what the keyword
            heads read (kept so a head stage can train heads on a frozen tower).
    """

    fast: torch.Tensor
    frags: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor | None
    hidden: torch.Tensor | None = None
    hidden_mask: torch.Tensor | None = None


class DualEncoder(nn.Module):
    """F, B or I (``cfg.type``); the same parameters encode texts and images."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        bert_cfg = BertConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            intermediate_size=cfg.intermediate,
            max_position_embeddings=cfg.max_positions,
            type_vocab_size=2,  # 0: text, 1: image
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            layer_norm_eps=cfg.layer_norm_eps,
            pad_token_id=cfg.pad_token_id,
        )
        self.bert = BertModel(bert_cfg, add_pooling_layer=False)
        h = cfg.hidden
        self.image_proj = nn.Linear(cfg.image_in_dim, h)
        self.image_first = nn.Parameter(torch.randn(h) * 0.02)
        if cfg.codes:
            self.text_codes = nn.Parameter(torch.randn(cfg.codes, h) * 0.02)
            self.image_codes = nn.Parameter(torch.randn(cfg.codes, h) * 0.02)
        self.proj = nn.Linear(h, cfg.dim)
        if cfg.n_labels:
            self.kw_text = make_head(cfg.keyword_head, h, cfg.n_labels)
            self.kw_image = make_head(cfg.keyword_head, h, cfg.n_labels)
            if cfg.keyword_head == "maxsim":
                self.kw_labels = nn.Parameter(torch.randn(cfg.n_labels, cfg.dim) * 0.02)

    # -- towers -------------------------------------------------------------------------------

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> TowerOutput:
        """ids (B, n) wordpiece ids with [CLS] first, mask (B, n) bool; n <= max_text_len."""
        n = ids.shape[1]
        assert n <= self.cfg.max_text_len, (n, self.cfg.max_text_len)
        x = self.bert.embeddings.word_embeddings(ids)  # (B, n, H)
        if self.cfg.first_token == "mean":
            x = _with_mean(x, mask.bool(), x[:, 0])
        pos = torch.arange(n, device=ids.device)
        codes = self.text_codes if self.cfg.codes else None
        return self._run(x, mask.bool(), pos, 0, codes)

    def encode_image(self, feats: torch.Tensor, mask: torch.Tensor) -> TowerOutput:
        """feats (B, m, D) region features, mask (B, m) bool with at least one real region."""
        k = self.cfg.kmeans_k
        if k and feats.shape[1] > k:
            feats, mask = kmeans_reduce(feats, mask.bool(), k)
        b, m, _ = feats.shape
        x = self.image_proj(feats.to(self.image_proj.weight.dtype))  # (B, m, H)
        first = self.image_first.expand(b, 1, -1)  # (B, 1, H)
        x = torch.cat([first, x], 1)  # (B, 1+m, H)
        mask = torch.cat([mask.new_ones(b, 1), mask.bool()], 1)
        if self.cfg.first_token == "mean":
            x = _with_mean(x, mask, first[:, 0])
        # Regions are a set: every image token sits at position 0 and differs by content only.
        pos = torch.zeros(1 + m, dtype=torch.long, device=feats.device)
        codes = self.image_codes if self.cfg.codes else None
        return self._run(x, mask, pos, 1, codes)

    def _run(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        token_type: int,
        codes: torch.Tensor | None,
    ) -> TowerOutput:
        b, n, _ = x.shape
        if codes is not None:
            k = codes.shape[0]
            c = codes.expand(b, -1, -1).to(x.dtype)  # (B, k, H)
            if self.cfg.code_input == "mean":  # see EncoderConfig.code_input: why
                m = mask[:, 1:, None].to(x.dtype)  # (B, n-1, 1)
                c = c + ((x[:, 1:] * m).sum(1) / m.sum(1).clamp(min=1.0))[:, None]
            x = torch.cat([x, c], 1)  # (B, n+k, H)
            mask = torch.cat([mask, mask.new_ones(b, k)], 1)
            # Codes are free parameters, so their position embedding is only an offset.
            pos = torch.cat([pos, pos.new_zeros(k)])
        types = torch.full(x.shape[:2], token_type, dtype=torch.long, device=x.device)
        out = self.bert(
            inputs_embeds=x,
            attention_mask=mask.long(),
            position_ids=pos[None].expand(b, -1),
            token_type_ids=types,
        )
        hs = out.last_hidden_state  # (B, n[+k], H)
        if self.cfg.type == "fast" and self.cfg.fast_pool == "mean":  # see EncoderConfig: why
            m = mask[..., None].to(hs.dtype)  # (B, n, 1)
            sel, smask = ((hs * m).sum(1) / m.sum(1).clamp(min=1.0))[:, None], mask[:, :1]
        elif self.cfg.type == "fast":
            sel, smask = hs[:, :1], mask[:, :1]
        else:
            keep = min(n, self.cfg.max_frags)
            sel = torch.cat([hs[:, :keep], hs[:, n:]], 1)  # tokens, then codes (if any)
            smask = torch.cat([mask[:, :keep], mask[:, n:]], 1)
        frags = F.normalize(self.proj(sel).float(), dim=-1)  # (B, n', d)
        frags = frags * smask[..., None]
        logits = None
        if self.cfg.n_labels:
            logits = self.keyword_logits(
                "text" if token_type == 0 else "image", hs, mask, frags, smask
            )
        return TowerOutput(
            fast=frags[:, 0], frags=frags, mask=smask, logits=logits, hidden=hs, hidden_mask=mask
        )

    def keyword_logits(
        self,
        tower: str,
        hs: torch.Tensor,
        mask: torch.Tensor,
        frags: torch.Tensor,
        fmask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, L) keyword logits of one tower ("text" or "image") from its hidden states
        hs (B, n, H) with mask (B, n) and fragments frags (B, n', d) with fmask (B, n')."""
        head = self.kw_text if tower == "text" else self.kw_image
        shared = self.kw_labels if self.cfg.keyword_head == "maxsim" else None
        out: torch.Tensor = head(hs, mask.bool(), frags, fmask.bool(), shared)
        return out

    # -- scores -------------------------------------------------------------------------------

    def similarity(
        self, t: TowerOutput, i: TowerOutput, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """(T, I) scores of this model's type: Eq. 3 for "fast", Eq. 5 max-sim otherwise.
        ``dtype``: the max-sim interactions' type (see :func:`maxsim_scores`)."""
        if self.cfg.type == "fast":
            return fast_scores(t.fast, i.fast)
        return maxsim_scores(t.frags, t.mask, i.frags, i.mask, dtype=dtype)

    # -- weights ------------------------------------------------------------------------------

    def load_backbone(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Copy a BERT checkpoint's embeddings and first ``layers`` layers into the shared model.

        ``state`` uses BertModel names ("embeddings.*", "encoder.layer.N.*"), optionally with
        a "bert." prefix; the pooler and deeper layers are ignored.
        """
        own = self.bert.state_dict()
        picked: dict[str, torch.Tensor] = {}
        for key, t in state.items():
            k = key.removeprefix("bert.")
            if k not in own:
                continue
            if k == "embeddings.token_type_embeddings.weight":
                t = t.repeat(2, 1)[:2] if t.shape[0] < 2 else t[:2]  # need text + image rows
            if tuple(t.shape) != tuple(own[k].shape):
                raise InvalidInput(
                    f"{source}: tensor {key} has shape {tuple(t.shape)}, "
                    f"the encoder expects {tuple(own[k].shape)}"
                )
            picked[k] = t
        missing = sorted(set(own) - set(picked))
        if missing:
            raise InvalidInput(
                f"{source}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}"
            )
        self.bert.load_state_dict(picked)


def _with_mean(x: torch.Tensor, mask: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """x (B, n, H) with token 0 replaced by ``first`` (B, H) plus the masked mean of tokens 1..

    Why: a first token whose input is a constant ([CLS], or a learned image token) starts out
    identical for every item; at random init attention is near uniform and its residual share
    small (init std 0.02 at width 64), so the first output token, the fast vector, holds almost
    no item information (mean pairwise cosine ~1.0 at init) and dropout noise swamps the
    triplet's signal: F trained from scratch did not move. Giving it the items' mean at the
    input makes it item-specific from step one; attention refines it from there.
    """
    m = mask[:, 1:, None].to(x.dtype)  # (B, n-1, 1)
    mean = (x[:, 1:] * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
    return torch.cat([(first + mean)[:, None], x[:, 1:]], 1)

"""PRH-Net: product-aware helpfulness prediction network (Fan, Feng, Guo, Sun & Li, WWW 2019).

A review is judged against the metadata of its product. Review tokens and product tokens are
encoded by two BiLSTMs (H_r (B, Lr, 2h), H_p (B, Lp, 2h)). The product-aware attention lets
every review token attend over the product tokens,

    A = softmax_j(H_r W_a H_p^T)        (bilinear scores, masked over the real product tokens)
    C = A H_p                           (the product context of each review token)
    U = tanh(W_u [H_r; C; H_r * C])     (product-aware review token representations)

and attention pooling turns U into the product-aware review vector r_p. The review's own
representation r_s is an attention pooling of H_r. An MLP maps [r_s; r_p] to the score.

| component | paper | here |
|---|---|---|
| inputs | product metadata (title, brand, category, description) + review text + star rating | product model text (name + description) + review text, as token features from the store (incl. [CLS]); the star rating is not in the shared MRHP inputs, so it is not used |
| encoders | BiLSTM over product words, BiLSTM over review words | same (the backward direction starts at the last real token: padding never reaches a real state) |
| product-aware attention | review-to-product attention producing product-aware review representations | bilinear masked attention; fusion [H_r; C; H_r*C] -> tanh layer (one concrete reading) |
| review representation | combined with the review's own encoding | attention pooling of H_r, concatenated with the pooled product-aware representation |
| output | regression / classification of helpfulness | MLP -> one score, trained with the shared ranking loss |
| sizes | hidden 128+ | hidden 64 (option) |

No extra loss: ``aux_loss`` is None. Image inputs are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines.common import MaskedBiLSTM, text_inputs
from mmss_lib.models.masked import AttentionPool, masked_attention


class ProductAwareAttention(nn.Module):
    """Review-to-product attention: (H_r (B, Lr, k), H_p (B, Lp, k)) -> U (B, Lr, k).

    Review tokens whose product has no real token get C = 0 (their U still depends on H_r).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bilinear = nn.Linear(dim, dim, bias=False)  # W_a
        self.fuse = nn.Linear(3 * dim, dim)  # W_u

    def forward(self, hr, rm, hp, pm):
        ctx = masked_attention(self.bilinear(hr), hp, hp, pm, scale=1.0)  # (B, Lr, k), bilinear scores
        u = torch.tanh(self.fuse(torch.cat([hr, ctx, hr * ctx], dim=-1)))  # (B, Lr, k)
        return u * rm.unsqueeze(-1).to(u.dtype)


class PRHNet(nn.Module):
    """PRH-Net over review text and product text -> helpfulness score (B,).

    Options: ``hidden`` (LSTM size per direction), ``dropout``.
    """

    def __init__(self, *, text_dim: int, region_dim: int = 2048, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.text_dim, self.region_dim = text_dim, region_dim
        k = 2 * hidden
        self.review_encoder = MaskedBiLSTM(text_dim, hidden)
        self.product_encoder = MaskedBiLSTM(text_dim, hidden)
        self.product_attention = ProductAwareAttention(k)
        self.pool_self = AttentionPool(k)
        self.pool_aware = AttentionPool(k)
        self.drop = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * k, k), nn.ReLU(), nn.Dropout(dropout), nn.Linear(k, 1))

    def forward(self, batch: Batch) -> ModelOutput:
        (p, pm), (r, rm) = text_inputs(batch, self.text_dim, system="PRHNet")
        hr = self.drop(self.review_encoder(r, rm))  # (B, Lr, 2h)
        hp = self.drop(self.product_encoder(p, pm))  # (B, Lp, 2h)
        u = self.product_attention(hr, rm, hp, pm)  # (B, Lr, 2h)
        r_self = self.pool_self(hr, rm)  # (B, 2h)
        r_aware = self.pool_aware(u, rm)  # (B, 2h)
        return ModelOutput(score=self.mlp(torch.cat([r_self, r_aware], dim=-1)).squeeze(-1))

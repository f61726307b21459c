"""MCR (Liu et al., ACL 2021): multi-perspective coherent reasoning for multimodal review helpfulness.

"Multi-perspective coherent reasoning for helpfulness prediction of multimodal reviews" (the
owners of the Amazon-/Lazada-MRHP benchmarks) scores a review by how coherent it is, from three
perspectives:

- *intra-review coherence*: review text and review images reason jointly (a reasoning attention
  over the concatenated text tokens and regions, pooled with the product as the "claim");
- *intra-modal product-review coherence*: product text vs review text, product images vs review
  images;
- *inter-modal product-review coherence*: product text vs review images, product images vs review
  text.

Each product-review coherence is a cross-modal match (SCAN-style): every review element attends
over the product elements, and its coherence is the cosine between it and what it attended to;
the coherence vector is pooled. All perspectives are concatenated -> MLP -> score.

| component                 | paper (and its public code)                        | here                                                        |
|---------------------------|----------------------------------------------------|-------------------------------------------------------------|
| text encoder              | GloVe / BERT + contextual encoder                  | store token features -> Linear(-GELU) -> 1 masked self-attention block, shared by product and review text |
| image encoder             | bottom-up RoI features, gated-tanh projection      | same RoI features; gated-tanh projection (+ box embedding)  |
| items without images      | 16 zero regions treated as real                    | explicit all-False masks: never attended to, zero features  |
| intra-review coherence    | pairwise-relation reasoning graph over text ++ regions, attention pooling with the product as claim | one masked self-attention block over review text ++ review regions (dot-product instead of the O(L^2 d) pairwise MLP, for CPU), attention pooling with the product as claim |
| product-review coherence  | cross-modal match: attend, cosine per review element, pool | same for (pt, rt), (pv, rv) [intra-modal] and (pv, rt), (pt, rv) [inter-modal]; pooled by masked max, masked mean and a coherence-weighted sum of the review elements |
| output                    | MLP -> score                                       | same                                                        |
| loss                      | label-gap hinge max(0, (y+ - y-) - (s+ - s-)) (docs/MRHP.md section 5) | the harness's loss (``mmss_lib.models.losses.label_gap_hinge`` reproduces MCR's own); no extra loss here |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines._mm_common import CrossAttention, InputEncoder, ScoreHead, TransformerBlock, check_batch
from mmss_lib.models.masked import AttentionPool, has_any, masked_max, masked_mean, masked_softmax, zero_padding


class GatedTanh(nn.Module):
    """y = tanh(W x) * sigmoid(W' x): MCR's gated projection of region (and text) features."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.lin, self.gate = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.lin(x)) * torch.sigmoid(self.gate(x))


class CoherenceMatch(nn.Module):
    """Product-review coherence of one (review side, product side) pair -> (B, d + 2).

    Every review element attends over the product elements; its coherence is the cosine between
    its (projected) representation and the attended product context, (B, L_r). The output is
    [coherence-weighted sum of review elements (d), masked max coherence, masked mean coherence].
    A review or product side with no real element gives zeros.
    """

    def __init__(self, d: int, *, n_heads: int, dropout: float, temperature: float = 0.1):
        super().__init__()
        self.left = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.right = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.attend = CrossAttention(d, n_heads=n_heads)
        self.temperature = temperature

    def forward(self, review: Tensor, r_mask: Tensor, product: Tensor, p_mask: Tensor) -> Tensor:
        left, right = self.left(review), self.right(product)
        ctx = self.attend(left, right, p_mask)  # (B, Lr, d); zero rows when the product side is empty
        coherence = F.cosine_similarity(left, ctx, dim=-1, eps=1e-6)  # (B, Lr)
        both = r_mask & has_any(p_mask)[:, None]  # (B, Lr): a real review element with real context
        coherence = coherence.masked_fill(~both, 0.0)
        w = masked_softmax(coherence / self.temperature, both, dim=-1, method="shifted")  # (B, Lr)
        pooled = (w.unsqueeze(-1) * zero_padding(review, r_mask)).sum(1)  # (B, d)
        c = coherence.unsqueeze(-1)  # (B, Lr, 1)
        return torch.cat([pooled, masked_max(c, both), masked_mean(c, both)], dim=-1)  # (B, d + 2)


class MCR(nn.Module):
    """MCR for MRHP: ``forward(batch) -> ModelOutput(score=(B,))``.

    Options: ``d`` width, ``n_heads``, ``dropout``, ``use_boxes``.
    """

    PAIRS = (("rt", "pt"), ("rv", "pv"), ("rt", "pv"), ("rv", "pt"))  # intra-modal x2, inter-modal x2

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int = 2048,
        d: int = 128,
        n_heads: int = 4,
        dropout: float = 0.1,
        use_boxes: bool = True,
    ):
        super().__init__()
        self.text_dim, self.region_dim = text_dim, region_dim
        self.inputs = InputEncoder(
            text_dim=text_dim, region_dim=region_dim, d=d, dropout=dropout, use_boxes=use_boxes, type_embeddings=True
        )
        self.text_encoder = TransformerBlock(d, n_heads=n_heads, dropout=dropout)
        self.image_gate = GatedTanh(d, d)
        self.review_reasoning = TransformerBlock(d, n_heads=n_heads, dropout=dropout)
        self.review_pool = AttentionPool(
            d, claim_dim=d, hidden=64, activation="relu", score_bias=True, softmax="shifted", weighted_sum="broadcast"
        )
        self.matches = nn.ModuleDict(
            {f"{r}_{p}": CoherenceMatch(d, n_heads=n_heads, dropout=dropout) for r, p in self.PAIRS}
        )
        self.head = ScoreHead(2 * d + len(self.PAIRS) * (d + 2) + 1, d, dropout=dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, text_dim=self.text_dim, region_dim=self.region_dim, system="MCR")
        s = self.inputs(batch)
        enc = {k: (self.text_encoder(x, m), m) for k, (x, m) in s.items() if k in ("pt", "rt")}
        enc.update({k: (zero_padding(self.image_gate(x), m), m) for k, (x, m) in s.items() if k in ("pv", "rv")})
        # product claim: mean of its available modalities
        zp_t, zp_v = masked_mean(*enc["pt"]), masked_mean(*enc["pv"])
        hp = has_any(enc["pv"][1]).to(zp_t.dtype)[:, None]  # (B, 1)
        claim = (zp_t + zp_v * hp) / (1.0 + hp)  # (B, d)
        # intra-review coherence: reasoning over review text ++ review regions, product as claim
        joint = torch.cat([enc["rt"][0], enc["rv"][0]], dim=1)  # (B, Lr + Nr, d)
        joint_m = torch.cat([enc["rt"][1], enc["rv"][1]], dim=1)
        intra_review = self.review_pool(self.review_reasoning(joint, joint_m), joint_m, claim)  # (B, d)
        # product-review coherence: intra-modal (pt-rt, pv-rv) and inter-modal (pv-rt, pt-rv)
        coh = [self.matches[f"{r}_{p}"](*enc[r], *enc[p]) for r, p in self.PAIRS]
        hv = has_any(batch.rv_mask).to(zp_t.dtype)[:, None]
        g = torch.cat([intra_review, claim, *coh, hv], dim=-1)
        return ModelOutput(score=self.head(g), features={"g": g})

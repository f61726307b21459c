"""MCL (Nguyen et al., EMNLP 2022): adaptive contrastive learning on a multimodal transformer.

"Adaptive contrastive learning on multimodal transformer for review helpfulness prediction" adds
to a multimodal transformer over product and review text and images (i) a contrastive objective
that maximises mutual information between the modalities of a sample (InfoNCE with a temperature,
in-batch negatives), (ii) an adaptive weighting of the contrastive pairs for more flexible
optimisation, and (iii) a multimodal interaction module for unaligned modalities. The fused
representation is scored.

| component               | paper                                              | here                                                            |
|-------------------------|----------------------------------------------------|-----------------------------------------------------------------|
| text / image inputs     | GloVe or BERT tokens; bottom-up RoI features       | store token features; RoI features (2048-d) + box embedding     |
| multimodal transformer / interaction | cross-modal transformer layers over unaligned modalities | ``n_layers`` masked transformer blocks over pt ++ rt ++ pv ++ rv with stream-type embeddings (every position attends to every modality: no alignment needed) |
| contrastive terms       | InfoNCE between modality representations           | (a) review text vs review images; (b) product vs review (each the mean of its available modality vectors); symmetric, temperature ``tau``, projection heads, other reviews of the same product are not negatives in (b) |
| adaptive weighting      | per-pair adaptive weights of the contrastive logits | our reading: circle-loss-style detached weights, positive a_p = relu(1 + m - s_p), negative a_n = relu(s_n + m), logits a_p (s_p - (1 - m)) / tau and a_n (s_n - m) / tau, so far-from-optimal pairs get larger gradients (``adaptive=False``: plain InfoNCE) |
| samples in the contrast | those with images                                  | only samples whose review has images; zero loss when none has   |
| output                  | MLP -> score; ranking loss + contrastive loss      | MLP -> score; ``aux_loss`` = ``aux_weight`` x mean of (a), (b) |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines._mm_common import InputEncoder, ScoreHead, TransformerBlock, check_batch
from mmss_lib.models.masked import has_any, masked_mean


def adaptive_info_nce(
    a: Tensor,
    b: Tensor,
    valid: Tensor,
    *,
    tau: float = 0.1,
    not_negative: Tensor | None = None,
    adaptive: bool = True,
    margin: float = 0.25,
) -> Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (B, k): row i of ``a`` and row i of ``b``
    are the positive pair; other ``valid`` rows are in-batch negatives.

    ``valid`` (B,) bool selects the samples that take part (e.g. those with images);
    ``not_negative`` (B, B) bool excludes further off-diagonal pairs from the negatives (e.g.
    reviews of the same product when contrasting product with review). With ``adaptive`` each
    logit is weighted as in circle loss (weights detached). Returns a scalar; exactly 0 when no
    sample is valid.

    Example: identical, orthogonal rows give a small loss::

        >>> import torch
        >>> e = torch.eye(3)
        >>> round(float(adaptive_info_nce(e, e, torch.ones(3, dtype=torch.bool), adaptive=False)), 4)
        0.0001
    """
    B = a.shape[0]
    s = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (B, B) cosine similarities
    eye = torch.eye(B, dtype=torch.bool, device=a.device)
    neg = valid[:, None] & valid[None, :] & ~eye  # (B, B) usable negatives
    if not_negative is not None:
        neg &= ~not_negative
    if adaptive:
        w = torch.where(eye, F.relu(1.0 + margin - s), F.relu(s + margin)).detach()
        delta = torch.where(eye, torch.full_like(s, 1.0 - margin), torch.full_like(s, margin))
        logits = w * (s - delta) / tau
    else:
        logits = s / tau
    keep = neg | eye
    n = valid.sum().clamp_min(1).to(a.dtype)

    def one_direction(lg: Tensor, kp: Tensor) -> Tensor:
        lg = lg.masked_fill(~kp, float("-inf"))
        pos = torch.diagonal(lg)  # (B,)
        nll = torch.logsumexp(lg, dim=1) - pos  # (B,)
        return torch.where(valid, nll, torch.zeros_like(nll)).sum() / n

    return 0.5 * (one_direction(logits, keep) + one_direction(logits.T, keep.T))


class MCL(nn.Module):
    """MCL for MRHP: ``forward(batch) -> ModelOutput(score=(B,), aux_loss=scalar)``.

    Options: ``d`` width, ``n_layers`` / ``n_heads`` of the multimodal transformer, ``tau``
    contrastive temperature, ``aux_weight`` weight of the contrastive loss in ``aux_loss``,
    ``adaptive`` (adaptive weighting on/off), ``margin`` (its relaxation m), ``dropout``,
    ``use_boxes``.
    """

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int = 2048,
        d: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        tau: float = 0.1,
        aux_weight: float = 0.1,
        adaptive: bool = True,
        margin: float = 0.25,
        dropout: float = 0.1,
        use_boxes: bool = True,
    ):
        super().__init__()
        assert tau > 0, f"tau must be positive, got {tau}"
        self.text_dim, self.region_dim = text_dim, region_dim
        self.tau, self.aux_weight, self.adaptive, self.margin = tau, aux_weight, adaptive, margin
        self.inputs = InputEncoder(
            text_dim=text_dim, region_dim=region_dim, d=d, dropout=dropout, use_boxes=use_boxes, type_embeddings=True
        )
        self.layers = nn.ModuleList(TransformerBlock(d, n_heads=n_heads, dropout=dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        # projection heads for the contrastive space
        self.proj = nn.ModuleDict(
            {
                k: nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
                for k in ("text", "image", "product", "review")
            }
        )
        self.head = ScoreHead(5 * d + 1, d, dropout=dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, text_dim=self.text_dim, region_dim=self.region_dim, system="MCL")
        s = self.inputs(batch)
        streams = list(s)  # pt, rt, pv, rv
        x = torch.cat([s[k][0] for k in streams], dim=1)  # (B, Lp + Lr + Np + Nr, d)
        m = torch.cat([s[k][1] for k in streams], dim=1)
        for layer in self.layers:
            x = layer(x, m)
        x = self.ln(x)
        z, start = {}, 0
        for k in streams:  # pool each stream back out of the joint sequence
            L = s[k][1].shape[1]
            z[k] = masked_mean(x[:, start : start + L], s[k][1])  # (B, d)
            start += L
        hp = has_any(batch.pv_mask).to(x.dtype)[:, None]  # (B, 1)
        hr = has_any(batch.rv_mask).to(x.dtype)[:, None]
        product = (z["pt"] + z["pv"] * hp) / (1.0 + hp)  # mean of available modalities (B, d)
        review = (z["rt"] + z["rv"] * hr) / (1.0 + hr)
        score = self.head(torch.cat([review, product, review * product, z["rt"], z["rv"], hr], -1))

        # contrastive terms over samples whose review has images
        with_img = hr.squeeze(-1).bool()
        same_product = batch.product[:, None] == batch.product[None, :]  # (B, B)
        kw = dict(tau=self.tau, adaptive=self.adaptive, margin=self.margin)
        l_ti = adaptive_info_nce(self.proj["text"](z["rt"]), self.proj["image"](z["rv"]), with_img, **kw)
        l_pr = adaptive_info_nce(
            self.proj["review"](review), self.proj["product"](product), with_img, not_negative=same_product, **kw
        )
        aux = self.aux_weight * 0.5 * (l_ti + l_pr)
        return ModelOutput(score=score, aux_loss=aux, features={"g": torch.cat([review, product], -1)})

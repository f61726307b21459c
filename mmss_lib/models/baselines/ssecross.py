"""SSE-Cross (Abavisani et al., CVPR 2020): stochastic shared embeddings + cross-modal attention.

"Multimodal categorization of crisis events in social media" classifies image-text pairs with a
text encoder, an image encoder, a cross-modal attention that lets each modality attend to (and
suppress noise in) the other, and the SSE regulariser (Wu et al., NeurIPS 2019): during training,
with probability ``p`` the embedding of one modality of a sample is replaced by the embedding of
the same modality of another sample of the same class. The MM-SS paper uses it as a multimodal
MRHP baseline (Tables 1-2); here it ranks reviews of a product.

| component              | paper                                        | here                                                       |
|------------------------|----------------------------------------------|------------------------------------------------------------|
| text encoder           | fine-tuned BERT                              | store token features -> Linear -> 1 self-attention block   |
| image encoder          | DenseNet on the whole image                  | RoI features (2048-d) + box embedding -> Linear            |
| inputs                 | one tweet text + one image                   | text = review tokens ++ product tokens (segment embedding: product text is context); image = review regions ++ product regions |
| cross-modal attention  | text <-> image attention/gating              | text tokens attend to regions and regions to text tokens (multi-head, masked), plus sigmoid gating of each pooled modality by the other |
| SSE                    | swap a modality embedding with a same-class sample's, prob. p, training only | same: pooled text / image embeddings swapped with a same-label sample's (y_g) in the batch, prob. ``p_sse``, per modality; image swaps only between samples with images; off in eval |
| fusion / output        | concat -> classifier                         | [t, v, t*v] -> MLP -> score (B,)                            |
| loss                   | cross-entropy                                | the harness's ranking loss; no extra loss                  |

Samples without any image get a zero image embedding (never attended to); the fusion MLP also
sees a has-image flag.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines._mm_common import CrossAttention, InputEncoder, ScoreHead, TransformerBlock, check_batch
from mmss_lib.models.masked import has_any, masked_mean


def stochastic_shared_embedding(
    z: Tensor, label: Tensor, eligible: Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """SSE swap: each eligible row of ``z`` (B, d) is, with probability ``p``, replaced by the row
    of another eligible sample with the same ``label`` (chosen uniformly). Vectorised.

    Returns ``(z_new, swapped)`` with ``swapped`` (B,) bool. Rows with no same-label partner keep
    their own embedding.
    """
    B = z.shape[0]
    dev = z.device
    same = (label[:, None] == label[None, :]) & eligible[:, None] & eligible[None, :]
    same &= ~torch.eye(B, dtype=torch.bool, device=dev)  # (B, B) candidate partners
    rnd = torch.rand(B, B, device=dev, generator=generator).masked_fill(~same, -1.0)
    partner = rnd.argmax(dim=1)  # uniform among candidates  (B,)
    swapped = (torch.rand(B, device=dev, generator=generator) < p) & same.any(1)
    return torch.where(swapped[:, None], z[partner], z), swapped


class SSECross(nn.Module):
    """SSE-Cross for MRHP: ``forward(batch) -> ModelOutput(score=(B,))``.

    Options: ``d`` model width, ``n_heads`` attention heads, ``p_sse`` SSE swap probability
    (training only), ``dropout``, ``use_boxes`` (add a box embedding to region features).
    """

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int = 2048,
        d: int = 128,
        n_heads: int = 4,
        p_sse: float = 0.2,
        dropout: float = 0.1,
        use_boxes: bool = True,
    ):
        super().__init__()
        assert 0.0 <= p_sse <= 1.0, f"p_sse must be a probability, got {p_sse}"
        self.text_dim, self.region_dim, self.p_sse = text_dim, region_dim, p_sse
        self.inputs = InputEncoder(
            text_dim=text_dim, region_dim=region_dim, d=d, dropout=dropout, use_boxes=use_boxes, type_embeddings=True
        )
        self.text_encoder = TransformerBlock(d, n_heads=n_heads, dropout=dropout)
        self.text_to_image = CrossAttention(d, n_heads=n_heads)
        self.image_to_text = CrossAttention(d, n_heads=n_heads)
        self.ln_t, self.ln_v = nn.LayerNorm(d), nn.LayerNorm(d)
        # cross-modal gating: each modality's pooled embedding gates the other's
        self.gate_t, self.gate_v = nn.Linear(d, d), nn.Linear(d, d)
        self.head = ScoreHead(3 * d + 1, d, dropout=dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, text_dim=self.text_dim, region_dim=self.region_dim, system="SSE-Cross")
        s = self.inputs(batch)
        # text = review tokens ++ product tokens (product as context); image = review ++ product regions
        t = torch.cat([s["rt"][0], s["pt"][0]], dim=1)  # (B, Lr + Lp, d)
        t_mask = torch.cat([s["rt"][1], s["pt"][1]], dim=1)
        v = torch.cat([s["rv"][0], s["pv"][0]], dim=1)  # (B, Nr + Np, d)
        v_mask = torch.cat([s["rv"][1], s["pv"][1]], dim=1)
        t = self.text_encoder(t, t_mask)
        # cross-modal attention: text attends to regions, regions attend to text
        t_x = self.ln_t(t + self.text_to_image(t, v, v_mask))  # (B, Lt, d)
        v_x = self.ln_v(v + self.image_to_text(v, t, t_mask))  # (B, Nv, d)
        has_img = has_any(v_mask)
        zt = masked_mean(t_x, t_mask)  # (B, d)
        zv = masked_mean(v_x, v_mask)  # (B, d); zero without images
        if self.training and self.p_sse > 0:
            # stochastic shared embeddings: swap a modality with a same-label sample's
            zt, _ = stochastic_shared_embedding(zt, batch.label, torch.ones_like(has_img), self.p_sse)
            zv, _ = stochastic_shared_embedding(zv, batch.label, has_img, self.p_sse)
        hv = has_img.to(zt.dtype)[:, None]  # (B, 1)
        gt = zt * torch.sigmoid(self.gate_t(zv))  # image gates text
        gv = zv * torch.sigmoid(self.gate_v(zt)) * hv  # text gates image (0 without images)
        score = self.head(torch.cat([gt, gv, gt * gv, hv], dim=-1))
        return ModelOutput(score=score, features={"g": torch.cat([gt, gv], dim=-1)})

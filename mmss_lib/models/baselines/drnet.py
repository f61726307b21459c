"""D&R Net (Xu, Zeng & Mao, ACL 2020): decomposition and relation network.

"Reasoning with multimodal sarcastic tweets via modeling cross-modality contrast and semantic
association" has two parts: a *decomposition network* that projects text and image into a shared
space (their commonality) and into modality-specific spaces (their discrepancy), and a *relation
network* in which the image's adjective-noun pairs (ANPs) attend over the contextual text and are
weighted by their detector confidences, modelling the semantic association across modalities.
The two are concatenated with the text representation and classified. The MM-SS paper uses it as a
multimodal MRHP baseline (Tables 1-2); here it ranks reviews of a product.

| component              | paper                                            | here                                                         |
|------------------------|--------------------------------------------------|--------------------------------------------------------------|
| text encoder           | GloVe + BiLSTM                                   | store token features -> Linear -> 1 masked self-attention block (shared by product and review text) |
| image                  | ResNet image vector + ANPs (SentiBank)           | RoI features (2048-d) + box embedding; **no ANPs are available, so regions play the ANPs' role** |
| decomposition          | shared projection (commonality) + specific projections (discrepancy) of text and image | same, on (review text, review images) and (product text, review images): commonality = c_t * c_v, discrepancy = abs(d_t - d_v) |
| relation network       | ANPs attend over text; weighted by ANP confidence | (a) review regions attend over review tokens, (b) product tokens attend over review tokens; a learned attention pool replaces the ANP confidences |
| fusion / output        | [text, decomposition, relation] -> softmax       | same concatenation -> MLP -> score (B,)                      |
| loss                   | cross-entropy                                    | the harness's ranking loss; no extra loss                    |

Image-dependent parts (decomposition pairs and relation (a)) are zero for a review without
images; a has-image flag enters the fusion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines._mm_common import CrossAttention, InputEncoder, ScoreHead, TransformerBlock, check_batch
from mmss_lib.models.masked import AttentionPool, has_any, masked_mean


class Decomposition(nn.Module):
    """Decomposition network: (text (B, d), image (B, d)) -> (B, 2d) = [commonality, discrepancy].

    A projection shared by both modalities maps each into the common space; modality-specific
    projections map each into its own space. Commonality is the element-wise product of the two
    common-space vectors, discrepancy the absolute difference of the specific-space vectors.
    """

    def __init__(self, d: int):
        super().__init__()
        self.shared = nn.Linear(d, d)
        self.specific_text, self.specific_image = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, t: Tensor, v: Tensor) -> Tensor:
        commonality = torch.tanh(self.shared(t)) * torch.tanh(self.shared(v))
        discrepancy = (torch.tanh(self.specific_text(t)) - torch.tanh(self.specific_image(v))).abs()
        return torch.cat([commonality, discrepancy], dim=-1)  # (B, 2d)


class Relation(nn.Module):
    """Relation network: each "concept" (a region, or a product token) attends over the contextual
    text; the attended contexts are pooled with learned concept weights (the ANP confidences'
    role) -> (B, d). Zero when the concept side has no real position."""

    def __init__(self, d: int, *, n_heads: int, dropout: float):
        super().__init__()
        self.attend = CrossAttention(d, n_heads=n_heads)
        self.ln = nn.LayerNorm(d)
        self.pool = AttentionPool(
            d, hidden=64, activation="relu", score_bias=True, softmax="shifted", weighted_sum="broadcast"
        )

    def forward(self, concepts: Tensor, c_mask: Tensor, text: Tensor, t_mask: Tensor) -> Tensor:
        a = self.ln(concepts + self.attend(concepts, text, t_mask))  # (B, Lc, d)
        return self.pool(a, c_mask)  # (B, d)


class DRNet(nn.Module):
    """D&R Net for MRHP: ``forward(batch) -> ModelOutput(score=(B,))``.

    Options: ``d`` width, ``n_heads``, ``dropout``, ``use_boxes``.
    """

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
        self.inputs = InputEncoder(text_dim=text_dim, region_dim=region_dim, d=d, dropout=dropout, use_boxes=use_boxes)
        self.text_encoder = TransformerBlock(d, n_heads=n_heads, dropout=dropout)
        self.decompose_review = Decomposition(d)  # review text vs review images
        self.decompose_product = Decomposition(d)  # product text vs review images
        self.relate_image = Relation(d, n_heads=n_heads, dropout=dropout)  # review regions -> review text
        self.relate_product = Relation(d, n_heads=n_heads, dropout=dropout)  # product tokens -> review text
        self.head = ScoreHead(7 * d + 1, d, dropout=dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(batch, text_dim=self.text_dim, region_dim=self.region_dim, system="D&R Net")
        s = self.inputs(batch)
        rt, rt_m = self.text_encoder(*s["rt"]), s["rt"][1]  # (B, Lr, d)
        pt, pt_m = self.text_encoder(*s["pt"]), s["pt"][1]  # (B, Lp, d)
        rv, rv_m = s["rv"]  # (B, Nr, d)
        hv = has_any(rv_m).to(rt.dtype)[:, None]  # (B, 1)
        zt, zp, zv = masked_mean(rt, rt_m), masked_mean(pt, pt_m), masked_mean(rv, rv_m)
        dec = torch.cat([self.decompose_review(zt, zv), self.decompose_product(zp, zv)], -1) * hv  # (B, 4d)
        rel = torch.cat(
            [
                self.relate_image(rv, rv_m, rt, rt_m),  # zero without review images
                self.relate_product(pt, pt_m, rt, rt_m),
            ],
            -1,
        )  # (B, 2d)
        g = torch.cat([zt, dec, rel, hv], dim=-1)  # (B, 7d + 1)
        return ModelOutput(score=self.head(g), features={"g": g})

"""EG-CNN: embedding-gated CNN for review helpfulness (Chen et al., NAACL 2018 / arXiv 1808.09896).

The review text alone is scored (the product is ignored, which the MM-SS paper notes as the reason
EG-CNN is the weakest baseline). Each token representation e_i passes a word-level embedding gate

    g_i = sigmoid(w_g . e_i + b_g),     e'_i = g_i * e_i          (one gate per token; ``gate="vector"``
                                                                   gives one gate per dimension)

so uninformative words can be switched off; a multi-width CNN (widths 1, 2, 3 by default, ReLU)
runs over the gated sequence, each width is max-pooled over time, and the concatenation goes
through dropout and a linear layer to the score.

| component | paper | here |
|---|---|---|
| token representation | word embeddings + character-based representation, each gated | token features from the store (incl. [CLS]); one gated representation, no character channel |
| embedding gate | sigmoid gate per word, multiplying its embedding | same (``gate="token"``, default) or per dimension (``gate="vector"``) |
| encoder | CNN with several filter widths, max-pooling over time | same; windows start at real tokens only, so padding never enters a pooled feature |
| cross-domain relationship learning | shared/private encoders over several product domains, auxiliary domain discriminators | not applicable: every run trains on one category (one domain), so there is no domain to transfer from and no auxiliary loss (``aux_loss`` is None) |
| output | regression of the helpfulness ratio | one score, trained with the shared ranking loss |
| sizes | 100 filters per width | 64 filters per width (option) |

Image inputs and the product text are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines.common import NGramConv, text_inputs
from mmss_lib.models.masked import masked_max


class EmbeddingGate(nn.Module):
    """Word-level embedding gate: ``e' = sigmoid(W e + b) * e`` per token (B, L, d) -> (B, L, d).

    ``mode="token"``: one scalar gate per token; ``mode="vector"``: one gate per dimension.
    """

    def __init__(self, dim: int, mode: str = "token"):
        super().__init__()
        if mode not in ("token", "vector"):
            raise ValueError(f"EmbeddingGate mode must be 'token' or 'vector', got {mode!r}")
        self.proj = nn.Linear(dim, 1 if mode == "token" else dim)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(e)) * e  # (B, L, d)


class EGCNN(nn.Module):
    """Embedding-gated CNN over the review text -> helpfulness score (B,).

    Options: ``filters`` per width, ``widths`` (n-gram sizes), ``gate`` ("token" | "vector"),
    ``dropout``.
    """

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int = 2048,
        filters: int = 64,
        widths: tuple[int, ...] = (1, 2, 3),
        gate: str = "token",
        dropout: float = 0.1,
    ):
        super().__init__()
        self.text_dim, self.region_dim = text_dim, region_dim
        self.gate = EmbeddingGate(text_dim, gate)
        self.convs = nn.ModuleList(NGramConv(text_dim, filters, n) for n in widths)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(filters * len(widths), 1)

    def forward(self, batch: Batch) -> ModelOutput:
        ((r, rm),) = text_inputs(batch, self.text_dim, system="EGCNN", fields=("rt",))
        e = self.drop(self.gate(r))  # (B, L, d)
        pooled = [masked_max(conv(e, rm), rm, ties="first") for conv in self.convs]  # each (B, F)
        h = self.drop(torch.cat(pooled, dim=-1))  # (B, F * n_widths)
        return ModelOutput(score=self.out(h).squeeze(-1))

"""BiMPM: Bilateral Multi-Perspective Matching (Wang, Hamza & Florian, IJCAI 2017) as an MRHP scorer.

The product text P and the review text Q are encoded by one shared context BiLSTM, then every
time step of each text is matched against the other text (P -> Q and Q -> P, "bilateral") with
four strategies, each in both LSTM directions, through the multi-perspective cosine

    m_k = cos(W_k * v1, W_k * v2),  k = 1..l          (W in R^{l x h}: one weight row per perspective)

* full matching: each step against the other text's final state (forward: last real token,
  backward: first token);
* max-pooling matching: each step against every step of the other text, max over those;
* attentive matching: against the attention-weighted mean of the other text's steps, the weights
  coming from the plain cosine between the contextual states;
* max-attentive matching: against the other text's step with the highest cosine.

That gives 8 vectors of l numbers per time step (4 strategies x 2 directions). An aggregation
BiLSTM reads each text's matching sequence; the four final states (2 texts x 2 directions) are
concatenated and a two-layer MLP maps them to the helpfulness score.

| component | paper | here |
|---|---|---|
| word representation | GloVe 300-d + character-composed LSTM embedding | token features from the store (incl. [CLS]), no character embeddings |
| context layer | shared BiLSTM over P and Q | same (each direction reads only the real tokens first, so padding never reaches a real state) |
| matching | 4 strategies x 2 directions x l perspectives, both P->Q and Q->P | same; separate perspective weights per strategy, direction and matching side |
| attentive weights | cosine-weighted mean, sum_j a_ij h_j / sum_j a_ij | masked softmax over the cosines (the plain ratio divides by a sum of cosines that can be ~0) |
| aggregation | BiLSTM over each matching sequence, last states concatenated | same |
| prediction | 2-layer MLP + softmax over classes | 2-layer MLP -> one score, trained with the shared ranking loss |
| sizes | l = 20, hidden 100 | l = 10, hidden 64 (CPU-friendly defaults, options) |

No extra loss: ``aux_loss`` is None. Image inputs are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines.common import MaskedBiLSTM, text_inputs
from mmss_lib.models.masked import masked_max, masked_softmax

_EPS = 1e-8


def _perspective_norms(v: Tensor, w2: Tensor) -> Tensor:
    """||W_k * v|| for each perspective k: (..., h) -> (..., l), never below _EPS (finite gradients at 0)."""
    return torch.einsum("...h,kh->...k", v * v, w2).clamp_min(_EPS**2).sqrt()


def multi_perspective_cosine(v1: Tensor, v2: Tensor, weight: Tensor) -> Tensor:
    """The BiMPM matching function f_m: ``m_k = cos(W_k * v1, W_k * v2)`` for each perspective k.

    ``v1`` and ``v2`` broadcast against each other with shape (..., h); ``weight`` is (l, h).
    Returns (..., l). Expanded as ``sum_h w_kh^2 v1_h v2_h / (||W_k v1|| ||W_k v2||)`` so that no
    (..., l, h) tensor is materialised.
    """
    w2 = weight * weight  # (l, h)
    num = torch.einsum("...h,kh->...k", v1 * v2, w2)  # (..., l)
    return num / (_perspective_norms(v1, w2) * _perspective_norms(v2, w2))


def pairwise_multi_perspective_cosine(h1: Tensor, h2: Tensor, weight: Tensor) -> Tensor:
    """All-pairs f_m between the steps of h1 (B, L1, h) and h2 (B, L2, h) -> (B, L1, L2, l)."""
    w2 = weight * weight  # (l, h)
    num = torch.einsum("bih,kh,bjh->bijk", h1, w2, h2)  # (B, L1, L2, l)
    n1 = _perspective_norms(h1, w2)  # (B, L1, l)
    n2 = _perspective_norms(h2, w2)  # (B, L2, l)
    return num / (n1[:, :, None, :] * n2[:, None, :, :])


class MultiPerspectiveMatching(nn.Module):
    """Match every step of one text against another text: 4 strategies x 2 LSTM directions.

    ``forward(h1, mask1, h2, mask2, final2)`` with context states (B, L, 2h) (forward half, backward
    half) and ``final2`` = (last forward state, last backward state) of text 2, each (B, h).
    Returns (B, L1, 8 * l); padded steps of text 1 are zero.
    """

    def __init__(self, hidden: int, perspectives: int):
        super().__init__()
        self.hidden = hidden
        # one (l, h) weight per strategy x direction: full, maxpool, attentive, max-attentive
        self.weight = nn.Parameter(torch.rand(4, 2, perspectives, hidden))

    def forward(self, h1: Tensor, mask1: Tensor, h2: Tensor, mask2: Tensor, final2: tuple[Tensor, Tensor]) -> Tensor:
        hd = self.hidden
        out = []
        for d in range(2):  # 0 = forward, 1 = backward
            s1 = h1[..., d * hd : (d + 1) * hd]  # (B, L1, h)
            s2 = h2[..., d * hd : (d + 1) * hd]  # (B, L2, h)
            # full matching: against text 2's final state of this direction
            out.append(multi_perspective_cosine(s1, final2[d][:, None, :], self.weight[0, d]))
            # max-pooling matching: max over the real steps of text 2
            pair = pairwise_multi_perspective_cosine(s1, s2, self.weight[1, d])  # (B, L1, L2, l)
            m2 = mask2[:, None, :].expand(-1, s1.shape[1], -1)  # (B, L1, L2)
            out.append(masked_max(pair, m2, dim=2, ties="first"))  # (B, L1, l)
            # cosine between the contextual states drives both attentive strategies
            cos = torch.einsum(
                "bih,bjh->bij", F.normalize(s1, dim=-1, eps=_EPS), F.normalize(s2, dim=-1, eps=_EPS)
            )  # (B, L1, L2)
            # attentive matching: against the (softmax-)weighted mean of text 2
            att = masked_softmax(cos, mask2[:, None, :], dim=-1)  # (B, L1, L2)
            mean2 = torch.einsum("bij,bjh->bih", att, s2)  # (B, L1, h)
            out.append(multi_perspective_cosine(s1, mean2, self.weight[2, d]))
            # max-attentive matching: against text 2's step with the highest cosine
            best = cos.masked_fill(~mask2[:, None, :], -2.0).argmax(-1)  # (B, L1)
            pick = s2.gather(1, best.unsqueeze(-1).expand(-1, -1, hd))  # (B, L1, h)
            out.append(multi_perspective_cosine(s1, pick, self.weight[3, d]))
        m = torch.cat(out, dim=-1)  # (B, L1, 8l)
        return m * mask1.unsqueeze(-1).to(m.dtype)


class BiMPM(nn.Module):
    """BiMPM over product text (P) and review text (Q) -> helpfulness score (B,).

    Options: ``hidden`` (context LSTM size per direction), ``perspectives`` (l),
    ``agg_hidden`` (aggregation LSTM size per direction), ``dropout``.
    """

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int = 2048,
        hidden: int = 64,
        perspectives: int = 10,
        agg_hidden: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.text_dim, self.region_dim = text_dim, region_dim
        self.drop = nn.Dropout(dropout)
        self.context = MaskedBiLSTM(text_dim, hidden)  # shared by P and Q
        self.match_pq = MultiPerspectiveMatching(hidden, perspectives)  # P against Q
        self.match_qp = MultiPerspectiveMatching(hidden, perspectives)  # Q against P
        self.aggregate = MaskedBiLSTM(8 * perspectives, agg_hidden)  # shared by both sides
        self.predict = nn.Sequential(
            nn.Linear(4 * agg_hidden, 2 * agg_hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(2 * agg_hidden, 1)
        )

    def forward(self, batch: Batch) -> ModelOutput:
        (p, pm), (q, qm) = text_inputs(batch, self.text_dim, system="BiMPM")
        hp = self.drop(self.context(p, pm))  # (B, Lp, 2h)
        hq = self.drop(self.context(q, qm))  # (B, Lq, 2h)
        final_p = (self.context.last_forward(hp, pm), self.context.last_backward(hp, pm))
        final_q = (self.context.last_forward(hq, qm), self.context.last_backward(hq, qm))
        mp = self.drop(self.match_pq(hp, pm, hq, qm, final_q))  # (B, Lp, 8l)
        mq = self.drop(self.match_qp(hq, qm, hp, pm, final_p))  # (B, Lq, 8l)
        ap = self.aggregate(mp, pm)  # (B, Lp, 2a)
        aq = self.aggregate(mq, qm)  # (B, Lq, 2a)
        agg = torch.cat(
            [
                self.aggregate.last_forward(ap, pm),
                self.aggregate.last_backward(ap, pm),
                self.aggregate.last_forward(aq, qm),
                self.aggregate.last_backward(aq, qm),
            ],
            dim=-1,
        )  # (B, 4a)
        return ModelOutput(score=self.predict(agg).squeeze(-1))

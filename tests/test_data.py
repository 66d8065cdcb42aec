import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from retina_trt.cli import main
from retina_trt.data.coco import CocoDataset, DatasetError
from retina_trt.data.synthetic import CLASS_NAMES, SyntheticConfig, generate_dataset


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = generate_dataset(tmp_path / "a", num_images=6, seed=3)
    b = generate_dataset(tmp_path / "b", num_images=6, seed=3)
    c = generate_dataset(tmp_path / "c", num_images=6, seed=4)
    assert _digest(a.parent) == _digest(b.parent)
    assert _digest(a.parent) != _digest(c.parent)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(out, num_images=60, seed=0, split="val")


def test_dataset_properties(synthetic):
    data = json.loads(synthetic.read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES) and len(CLASS_NAMES) >= 5
    per_image = Counter(a["image_id"] for a in data["annotations"])
    counts = [per_image.get(im["id"], 0) for im in data["images"]]
    assert min(counts) == 0 and max(counts) <= 30 and max(counts) >= 10
    frequency = Counter(a["category_id"] for a in data["annotations"])
    assert len(frequency) == len(CLASS_NAMES)
    assert frequency[1] > 2 * frequency[6], "class frequencies are uneven"
    sizes = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert sizes.min() <= 14 and sizes.max() >= 200, "objects span ~10 px to most of the image"
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        im = images[ann["image_id"]]
        assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
        assert 0 < ann["area"] <= w * h


def test_coco_reader(synthetic):
    dataset = CocoDataset.load(synthetic, synthetic.parent / "val")
    assert len(dataset) == 60 and dataset.class_names == CLASS_NAMES
    sample = dataset[1]
    assert sample.image.dtype == np.uint8 and sample.image.ndim == 3
    assert sample.boxes.shape[1] == 4 and sample.labels.max(initial=0) < len(CLASS_NAMES)
    assert np.all(sample.boxes[:, 2] > sample.boxes[:, 0])


def test_coco_reader_errors(tmp_path, synthetic):
    with pytest.raises(DatasetError, match="annotation file not found"):
        CocoDataset.load(tmp_path / "x.json", tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a COCO detection annotation file"):
        CocoDataset.load(tmp_path / "bad.json", tmp_path)
    with pytest.raises(DatasetError, match="image folder not found"):
        CocoDataset.load(synthetic, tmp_path / "missing")


def test_config_validation():
    with pytest.raises(ValueError, match="min_object"):
        SyntheticConfig(min_object=1)
    with pytest.raises(ValueError, match="num_images"):
        generate_dataset("/nonexistent", num_images=0)


def test_cli(tmp_path, capsys):
    assert main(["data", "synthetic", "--out", str(tmp_path), "--images", "3", "--seed", "1", "--split", "val"]) == 0
    assert (tmp_path / "instances_val.json").is_file() and len(list((tmp_path / "val").glob("*.jpg"))) == 3
    with pytest.raises(SystemExit) as exit_:
        main(["data", "synthetic", "--out", str(tmp_path), "--images", "0"])
    assert exit_.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_synthetic_video_is_a_real_video(tmp_path):
    import cv2

    from retina_trt.data.synthetic import write_video

    path = write_video(tmp_path / "pan.avi", num_frames=12, seed=2, frame_size=(96, 128), step=4)
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 12 and frames[0].shape == (96, 128, 3)
    # the view pans: frame 1 shifted left by 4 px matches frame 0 (up to JPEG noise)
    diff = np.abs(frames[1][:, :-4].astype(int) - frames[0][:, 4:].astype(int)).mean()
    assert diff < 12 and np.abs(frames[1].astype(int) - frames[0].astype(int)).mean() > diff

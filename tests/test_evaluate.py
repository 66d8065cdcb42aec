"""COCO evaluation on hand-made detections with known AP, and faster-coco-eval vs pycocotools."""

import contextlib
import io
import json

import numpy as np
import pytest

from retina_trt.cli import main
from retina_trt.evaluate import METRICS, coco_metrics, evaluate

GT = {
    "images": [
        {"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"},
        {"id": 2, "width": 200, "height": 200, "file_name": "b.jpg"},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 100, 60, 40], "area": 2400, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 30, 100, 120], "area": 12000, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [150, 150, 20, 20], "area": 400, "iscrowd": 0},
    ],
}


def _det(ann, score, shift=0.0):
    x, y, w, h = ann["bbox"]
    return {
        "image_id": ann["image_id"],
        "category_id": ann["category_id"],
        "bbox": [x + shift, y, w, h],
        "score": score,
    }


def test_perfect_detections_give_ap_1(tmp_path):
    results = [_det(a, 0.9) for a in GT["annotations"]]
    metrics = coco_metrics(GT, results)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_no_detections_give_ap_0():
    assert coco_metrics(GT, []) == dict.fromkeys(METRICS, 0.0)


def test_half_the_objects_of_one_class():
    """Class 'a' has 3 objects, 1 found exactly (precision 1 up to recall 1/3): 101-point
    interpolated AP = 34/101; class 'b' found exactly: AP 1. Mean over classes."""
    results = [_det(GT["annotations"][0], 0.9), _det(GT["annotations"][1], 0.8)]
    metrics = coco_metrics(GT, results)
    assert metrics["AP"] == pytest.approx((34 / 101 + 1.0) / 2, abs=1e-6)


def test_faster_coco_eval_agrees_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    results = []
    for ann in GT["annotations"]:
        for k in range(3):  # noisy duplicates with varying scores, some false positives
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 4, 4)
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": int(rng.integers(1, 3)) if k == 2 else ann["category_id"],
                    "bbox": [x + jitter[0], y + jitter[1], max(2, w + jitter[2]), max(2, h + jitter[3])],
                    "score": float(rng.uniform(0.1, 1.0)),
                }
            )
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    ours = coco_metrics(path, results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    for name, value in zip(METRICS, evaluator.stats[:6]):
        assert ours[name] == pytest.approx(max(0.0, value), abs=1e-6), name
    assert 0 < ours["AP"] < 1


def test_evaluate_a_model_end_to_end(tiny_checkpoint, tmp_path):
    from retina_trt.data.coco import DatasetError
    from retina_trt.data.synthetic import generate_dataset

    ann = generate_dataset(tmp_path, num_images=4, seed=5, split="val")
    out = tmp_path / "metrics.json"
    # the tiny model's 5 class names are among the 6 synthetic categories: mapped by name
    assert (
        main(
            [
                "eval",
                str(tiny_checkpoint),
                "--annotations",
                str(ann),
                "--images",
                str(tmp_path / "val"),
                "--json",
                str(out),
                "--max-images",
                "2",
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert set(METRICS) <= set(metrics) and metrics["images"] == 2
    assert all(0.0 <= metrics[m] <= 1.0 for m in METRICS)
    # categories that match neither by name nor by count are a clear error
    data = json.loads(ann.read_text())
    for cat in data["categories"]:
        cat["name"] = f"other_{cat['id']}"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="5 classes"):
        evaluate(tiny_checkpoint, renamed, tmp_path / "val")


def test_demo_model_analysis_accounts_for_every_object(tmp_path):
    """analysis.py: per-class AP for every class, and a confusion matrix whose rows add up to
    the ground-truth objects of each class (each object is matched, confused or missed)."""
    from pathlib import Path

    from retina_trt.analysis import analyse, markdown
    from retina_trt.data.coco import CocoDataset
    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset

    config = SyntheticConfig(min_height=256, max_height=256, min_width=256, max_width=256)
    annotations = generate_dataset(tmp_path, num_images=12, seed=5, split="val", config=config)
    model = Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt"
    report = analyse(model, annotations, tmp_path / "val", min_score=0.3)
    dataset = CocoDataset.load(annotations, tmp_path / "val")
    per_class = np.bincount(
        np.concatenate([dataset.targets(i)[1] for i in range(len(dataset))]), minlength=len(report["classes"])
    )
    confusion = np.array(report["confusion"])
    assert confusion.sum(axis=1).tolist() == per_class.tolist()
    assert np.trace(confusion) > confusion[:, :-1].sum() - np.trace(confusion)  # mostly right where found
    assert set(report["per_class_AP"]) == set(report["classes"]) and 0 < report["AP"] <= 100
    assert "| true \\ detected |" in markdown(report)


def _one_image_set(tmp_path, boxes_xywh):
    import cv2

    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((256, 256, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 256, "width": 256}],
        "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(6)],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": 1, "bbox": list(b), "iscrowd": 0, "area": b[2] * b[3]}
            for k, b in enumerate(boxes_xywh)
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    return tmp_path / "a.json", tmp_path / "img"


def test_anchor_coverage_counts_the_anchors_that_reach_iou_half(tmp_path):
    """A box equal to one 32-px P4 anchor is covered with best IoU 1; a 4-px box is covered by none.
    Sizes one octave down give the 32-px box to a P5 anchor (exact too) and the 4-px box IoU 1/4."""
    from pathlib import Path

    from retina_trt import load_checkpoint
    from retina_trt.analysis import anchor_coverage
    from retina_trt.data.coco import CocoDataset

    spec = load_checkpoint(Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt").spec
    assert spec.anchor_sizes[1] == 32 and spec.min_size == 256
    annotations, images = _one_image_set(tmp_path, [(48, 48, 32, 32), (100, 100, 4, 4)])  # P4 anchor at (64, 64)
    dataset = CocoDataset.load(annotations, images)
    own = anchor_coverage(spec, dataset)
    assert own["objects"] == 2 and own["small_objects"] == 1
    assert own["covered"] == 0.5 and own["covered_small"] == 0.0
    assert own["median_best_iou"] == pytest.approx((1.0 + 16 / (16 * 16)) / 2, abs=1e-3)  # 4x4 inside a 16x16 anchor
    shifted = anchor_coverage(spec, dataset, (8, 16, 32, 64, 128))
    assert shifted["anchor_sizes"] == [8, 16, 32, 64, 128] and shifted["covered"] == 0.5
    assert shifted["median_best_iou"] == pytest.approx((1.0 + 16 / 64) / 2, abs=1e-3)  # 4x4 inside an 8x8 anchor
    with pytest.raises(ValueError, match="5 positive sizes"):
        anchor_coverage(spec, dataset, (8, 16))


def test_analysis_cli_reports_anchor_coverage_and_the_generalization_gap(tmp_path, capsys):
    """The same images as training and held-out set: training AP equals held-out AP (gap 0)."""
    from pathlib import Path

    from retina_trt.cli import main as cli_main

    def main(argv):
        return cli_main(["error-analysis", *argv])

    from retina_trt.data.synthetic import SyntheticConfig, generate_dataset

    config = SyntheticConfig(min_height=256, max_height=256, min_width=256, max_width=256)
    annotations = generate_dataset(tmp_path, num_images=6, seed=5, split="val", config=config)
    model = str(Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt")
    common = [
        model,
        "--annotations",
        str(annotations),
        "--images",
        str(tmp_path / "val"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert (
        main(
            [
                *common,
                "--anchor-sizes",
                "12,24,48,96,192",
                "--train-annotations",
                str(annotations),
                "--train-images",
                str(tmp_path / "val"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert [row["anchor_sizes"] for row in report["anchor_coverage"]] == [[16, 32, 64, 128, 256], [12, 24, 48, 96, 192]]
    assert report["generalization"]["gap"] == 0.0 and report["generalization"]["train_images"] == 6
    assert "Anchor coverage" in capsys.readouterr().out
    assert main([*common, "--train-annotations", str(annotations)]) == 2
    assert "go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--anchor-sizes", "a,b"])
    assert exit_info.value.code == 2


def test_analysis_cli_refuses_bad_input_before_the_work(tmp_path, capsys):
    """Bad flags exit 2 at parse time; an output path that is a file and a missing training set
    are one-line errors (return 2) found before any image is run, and nothing is written."""
    from pathlib import Path

    from retina_trt.cli import main as cli_main

    def main(argv):
        return cli_main(["error-analysis", *argv])

    annotations, images = _one_image_set(tmp_path, [(48, 48, 32, 32)])
    model = str(Path(__file__).parent.parent / "samples" / "models" / "shapes_r18.pt")
    common = [model, "--annotations", str(annotations), "--images", str(images)]
    for flags in (["--train-max-images", "0"], ["--anchor-sizes", "8,16"], ["--anchor-sizes", "8,16,32,64,0"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--out", str(tmp_path / "out"), *flags])
        assert exit_info.value.code == 2, flags
    assert "5 positive sizes" in capsys.readouterr().err
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    assert main([*common, "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err and blocker.read_text() == "keep me"
    missing = tmp_path / "missing.json"
    assert (
        main(
            [
                *common,
                "--out",
                str(tmp_path / "out2"),
                "--train-annotations",
                str(missing),
                "--train-images",
                str(images),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1
    assert not (tmp_path / "out2" / "analysis.json").exists()

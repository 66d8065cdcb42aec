import json
import subprocess
import sys

import cv2
import pytest

from retina_trt.cli import main


def _retina_trt(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "retina_trt.cli", *map(str, args)], capture_output=True, text=True, **kwargs
    )


def test_export_then_detect_images_and_video(tiny_checkpoint, image_dir, video_file, tmp_path):
    model = tmp_path / "tiny.onnx"
    assert (
        main(
            [
                "export",
                "--weights",
                str(tiny_checkpoint),
                "--output",
                str(model),
                "--dynamic-shapes",
                "--batch",
                "1:2:4",
            ]
        )
        == 0
    )
    assert model.is_file()
    out = tmp_path / "out"
    code = main(["detect", str(model), str(image_dir), str(video_file), "--output", str(out), "--min-score", "0.1"])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip.jsonl", "clip.mp4", "detections.jsonl", "img0.jpg", "img1.jpg", "img2.jpg"]
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(min(r["scores"], default=1) >= 0.1 for r in records)
    assert sum(len(r["scores"]) for r in records) > 0
    frames = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [f["frame"] for f in frames] == list(range(12))
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    capture.release()


def test_detect_json_per_image_and_glob(onnx_models, image_dir, tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "detect",
            str(onnx_models[("none", True)]),
            str(image_dir / "img*.jpg"),
            "--output",
            str(out),
            "--json",
            "--no-draw",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img1.json", "img2.json"]
    record = json.loads((out / "img1.json").read_text())
    assert record["width"] == 200 and record["height"] == 300


def test_pt_checkpoint_detect_with_max_frames(tiny_checkpoint, video_file, tmp_path):
    out = tmp_path / "out"
    assert main(["detect", str(tiny_checkpoint), str(video_file), "--output", str(out), "--max-frames", "3"]) == 0
    assert len((out / "clip.jsonl").read_text().splitlines()) == 3


def test_bad_image_in_a_folder_is_reported_others_processed(onnx_models, images, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), images[0])
    (folder / "b.jpg").write_bytes(b"")  # empty file
    (folder / "c.png").write_bytes(b"\x89PNG broken")
    cv2.imwrite(str(folder / "d.jpg"), images[1])
    out = tmp_path / "out"
    assert main(["detect", str(onnx_models[("onnx", True)]), str(folder), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "b.jpg: image file is empty" in err and "c.png: cannot decode" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "d.jpg", "detections.jsonl"]
    assert len((out / "detections.jsonl").read_text().splitlines()) == 2


def test_unopenable_video_is_reported(onnx_models, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    assert main(["detect", str(onnx_models[("onnx", True)]), str(broken), "--output", str(out)]) == 2
    assert "cannot open video" in capsys.readouterr().err
    assert not any(out.iterdir()), "no half-written outputs"


@pytest.mark.parametrize(
    "args, message",
    [
        (["detect", "{missing}", "{image}", "--output", "{out}"], "model not found"),
        (["detect", "{onnx}", "{tmp}/nothing.jpg", "--output", "{out}"], "source not found"),
        (["detect", "{onnx}", "{tmp}/*.nomatch", "--output", "{out}"], "no files match"),
        (["detect", "{onnx}", "{ckpt}", "--output", "{out}"], "unsupported file type .pt"),
        (["detect", "{ckpt}", "{image}", "--output", "{out}", "--min-score", "2"], "expected a number in [0, 1]"),
        (["detect", "{image}", "{image}", "--output", "{out}"], "cannot tell the model type"),
        (["export", "--weights", "{image}", "--output", "{out}/m.onnx"], "not a readable PyTorch checkpoint"),
        (["export", "--weights", "{ckpt}", "--output", "{out}/m.onnx", "--input-size", "300x300"], "multiples"),
        (["export", "--weights", "{ckpt}", "--output", "{out}/m.onnx", "--batch", "4:2:1"], "min <= opt <= max"),
        (["export", "--weights", "{ckpt}", "--output", "{out}/m.onnx", "--input-size", "big"], "HEIGHTxWIDTH"),
        (["info", "{image}"], "not a readable"),
        (["detect", "{onnx}", "{image}", "--output", "{out}", "--max-frames", "0"], "expected a positive integer"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message, tiny_checkpoint, onnx_models, image_dir, tmp_path, capsys):
    values = {
        "missing": tmp_path / "missing.onnx",
        "image": image_dir / "img0.jpg",
        "onnx": onnx_models[("onnx", True)],
        "ckpt": tiny_checkpoint,
        "out": tmp_path / "out",
        "tmp": tmp_path,
    }
    try:
        code = main([a.format(**values) for a in args])
    except SystemExit as exit_:  # argparse rejects malformed values itself, also with code 2
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "no half-written outputs"


def test_process_exit_code_and_verbose_traceback(tmp_path):
    result = _retina_trt("info", tmp_path / "missing.pt")
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr
    result = _retina_trt("-v", "info", tmp_path / "missing.pt")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_info_prints_the_spec(onnx_models, tiny_checkpoint, capsys):
    import json

    for model in (onnx_models[("onnx", False)], tiny_checkpoint):
        assert main(["info", str(model)]) == 0
        out = capsys.readouterr().out
        assert "resnet18-FPN64" in out and "5 classes: circle, square" in out and '"backbone"' not in out
        assert len(out.splitlines()) <= 12  # a short summary
        assert main(["info", str(model), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["spec"]["backbone"] == "resnet18"


def test_info_names_unrecorded_classes_in_one_line(tmp_path, capsys):
    from helpers import make_tiny_model

    from retina_trt import save_checkpoint
    from retina_trt.spec import torchvision_spec

    model = make_tiny_model(torchvision_spec(2, num_classes=91).replace(backbone="resnet18", fpn_channels=64))
    path = save_checkpoint(model, tmp_path / "tv.pt")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "91 classes (names not recorded: class_0..class_90)" in out and "class_5" not in out


def test_detect_never_writes_over_an_input_or_another_output(onnx_models, image_dir, video_file, tmp_path):
    """--output may be the source folder: annotated copies never replace the images, and a video
    called detections.* never replaces the images' detections.jsonl."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    sources = sorted(image_dir.glob("*.jpg"))[:2]
    for src in sources:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "detections.avi").write_bytes(video_file.read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["detect", str(onnx_models[("onnx", False)]), str(folder), "--output", str(folder)]) == 0
    assert all((folder / name).read_bytes() == data for name, data in before.items())  # inputs unchanged
    names = {p.name for p in folder.iterdir()} - set(before)
    assert {f"{s.stem}_2.jpg" for s in sources} <= names  # annotated copies under new names
    assert {"detections.jsonl", "detections_2.mp4", "detections_2.jsonl"} <= names
    assert len((folder / "detections.jsonl").read_text().splitlines()) == 2  # the images' records
    assert len((folder / "detections_2.jsonl").read_text().splitlines()) == 12  # the video's frames

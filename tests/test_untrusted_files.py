"""Untrusted files cannot exhaust memory or crash the readers (issue: failure behaviour, sec. 2):
every field read from a file is checked, by type and range, before anything is allocated from it;
an image's declared size is checked before decoding. Each case: one line, exit 2 at the CLI."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import onnx
import pytest
from helpers import TINY_SPEC

from retina_trt import Detector, ModelSpec
from retina_trt.cli import main
from retina_trt.contract.engine_file import MAGIC, make_header, read_engine_header, write_engine
from retina_trt.errors import BatchImageError, ImageError, ModelFormatError, SpecError
from retina_trt.image import declared_size, read_image


def _png(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares width x height (its data is one empty row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "field",
    [
        {"num_classes": 10**8},
        {"size_divisible": 10**6},
        {"min_size": 200000, "max_size": 200000},
        {"fpn_channels": 3_200_000},
        {"detections_per_img": 10**7},
        {"anchor_sizes": [1e9] * 5},
    ],
)
def test_spec_fields_out_of_range_are_refused_before_any_allocation(field):
    data = {**TINY_SPEC.to_dict(), **field, "class_names": []}
    with pytest.raises(SpecError, match="must be"):
        ModelSpec.from_dict(data)


def test_huge_declared_images_are_refused_before_decoding(tmp_path, image_dir, onnx_models, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(_png(30000, 30000))
    assert declared_size(big.read_bytes()) == (30000, 30000)
    jpeg = sorted(image_dir.glob("*.jpg"))[0]
    assert declared_size(jpeg.read_bytes()) == read_image(jpeg).shape[1::-1]
    with pytest.raises(ImageError, match="declares 30000x30000 pixels"):
        read_image(big)
    # in a folder with good images: reported, skipped, the rest written (detections.jsonl too)
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg.read_bytes())
    (folder / "b.png").write_bytes(_png(60000, 60000))
    code = main(["detect", str(onnx_models[("onnx", False)]), str(folder), "--output", str(tmp_path / "out")])
    assert code == 2 and "declares 60000x60000" in capsys.readouterr().err
    assert len((tmp_path / "out" / "detections.jsonl").read_text().splitlines()) == 1
    with Detector(onnx_models[("onnx", False)]) as det, pytest.raises(BatchImageError) as info:
        det.predict_batch([jpeg, folder / "b.png"])
    assert info.value.results[0] is not None and info.value.results[1] is None  # the good result kept


def test_a_huge_declared_image_stays_well_under_a_gigabyte(tmp_path):
    """Decoding 30000 x 30000 BGR would take 2.7 GB: the refusal allocates next to nothing."""
    big = tmp_path / "big.png"
    big.write_bytes(_png(30000, 30000))
    code = (
        "import resource\nfrom retina_trt.image import read_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"try:\n    read_image({str(big)!r})\nexcept Exception as err:\n    print(type(err).__name__)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "ImageError" and int(out[1]) < 64, out  # MiB of peak memory growth


def _header(**changes) -> dict:
    header = make_header(
        spec=TINY_SPEC,
        tensorrt_version="10.13.3.9",
        device_name="GPU",
        compute_capability=(8, 9),
        precision="fp16",
        onnx_sha256="0" * 64,
        export={"nms": "onnx", "input_size": [256, 384]},
        build={"batch": [1, 1, 8]},
        plan=b"plan",
    )
    for dotted, value in changes.items():
        node = header
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return header


@pytest.mark.parametrize(
    "changes",
    [
        {"spec.num_classes": 10**8},
        {"build.batch": "x"},
        {"build.batch": [1, 8, 2]},
        {"export.nms": "magic"},
        {"export.input_size": [65536, 65536]},
        {"precision": "fp4"},
        {"targets": "all"},
        {"export.outputs": ["x"]},
        {"export.classes_dtype": "float64"},
        # issue #28: fields of the wrong type or out of range
        {"device.compute_capability": [1e400, 0]},
        {"targets": [[8, 10**30]]},
        {"build.layer_precisions": "78 Half"},
        {"build.layer_precisions": [1, 2]},
        {"build.layer_precisions": {"convolutions": "78"}},
        {"build.layer_precisions": {"layers": 1e400}},
    ],
)
def test_tampered_engine_headers_are_one_clear_error(changes, tmp_path, capsys):
    path = tmp_path / "m.engine"
    write_engine(path, _header(**changes), b"plan")
    with pytest.raises(ModelFormatError, match="damaged header"):
        read_engine_header(path)
    for command in (["info", str(path)], ["export-triton", str(path), "--repo", str(tmp_path / "repo")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "damaged header" in err[0]


def test_truncated_and_deeply_nested_engine_headers(tmp_path, capsys):
    (tmp_path / "short.engine").write_bytes(MAGIC + b"\x05\x00")
    nested = b"[" * 200_000 + b"]" * 200_000
    (tmp_path / "nested.engine").write_bytes(MAGIC + struct.pack("<Q", len(nested)) + nested)
    for name in ("short.engine", "nested.engine"):
        with pytest.raises(ModelFormatError, match="damaged header"):
            read_engine_header(tmp_path / name)
        assert main(["info", str(tmp_path / name)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("change", ["drop_batch", "bad_spec", "nested"])
def test_tampered_onnx_metadata_is_one_clear_error(change, onnx_models, image_dir, tmp_path, capsys):
    model = onnx.load(str(onnx_models[("onnx", False)]))
    props = {p.key: p for p in model.metadata_props}
    if change == "drop_batch":
        export = json.loads(props["retina_trt.export"].value)
        del export["batch"]
        props["retina_trt.export"].value = json.dumps(export)
    elif change == "bad_spec":
        spec = json.loads(props["retina_trt.spec"].value)
        spec.update(num_classes=10**8, class_names=[])
        props["retina_trt.spec"].value = json.dumps(spec)
    else:
        props["retina_trt.export"].value = "[" * 200_000 + "]" * 200_000
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match="damaged retina_trt metadata"):
        Detector(path)
    for command in (
        ["detect", str(path), str(image_dir), "--output", str(tmp_path / "o")],
        ["build-engine", "--onnx", str(path), "--dry-run", "--output", str(tmp_path / "m.engine")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "damaged retina_trt metadata" in err[0], err


def test_oversized_input_size_flags_are_one_line(tiny_checkpoint, tmp_path, capsys):
    for command in (
        [
            "export",
            "--weights",
            str(tiny_checkpoint),
            "--output",
            str(tmp_path / "m.onnx"),
            "--input-size",
            "65536x65536",
        ],
        [
            "build-engine",
            "--weights",
            str(tiny_checkpoint),
            "--output",
            str(tmp_path / "m.engine"),
            "--input-size",
            "65536x65536",
            "--dry-run",
        ],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 2 and "each side must be in 1..8192" in capsys.readouterr().err
    from retina_trt import export_onnx

    with pytest.raises(ValueError, match="larger than 8192"):
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", input_size=(65536, 65536))
    assert not list(tmp_path.glob("*.onnx"))


def test_output_locations_are_checked_before_the_work(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for command in (
        ["export-deepstream", str(tiny_checkpoint), "--out", str(blocker / "ds")],
        ["train", "--annotations", str(blocker), "--images", str(tmp_path), "--output", str(blocker / "m.pt")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a file, not a folder" in err[0], err


def test_sizes_from_metadata_that_cannot_fit_are_refused_before_allocating(tmp_path, monkeypatch, capsys):
    """Issue #38: metadata min_size/max_size 8192 (in range) on a dynamic graph failed at the first
    image with "Failed to allocate 2147483648 bytes". The largest input is now checked against
    the memory available before anything is allocated: one line, exit 2 at the CLI."""
    import importlib.util
    from pathlib import Path

    import cv2
    import numpy as np

    from retina_trt import export_onnx
    from retina_trt.runtime import input_memory

    demo = Path(__file__).resolve().parents[1] / "samples" / "models" / "shapes_r18.pt"
    model = onnx.load(str(export_onnx(demo, tmp_path / "dynamic.onnx", dynamic_shapes=True)))
    for prop in model.metadata_props:
        if prop.key == "retina_trt.spec":
            spec = json.loads(prop.value)
            spec["min_size"] = spec["max_size"] = 8192
            prop.value = json.dumps(spec)
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    monkeypatch.setattr(input_memory, "available_bytes", lambda: 2 * 2**30)
    backends = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for backend in backends:
        with pytest.raises(ModelFormatError, match=r"min_size/max_size \(8192x8192\) needs at least 4.3 GB per image"):
            Detector(path, backend=backend)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert main(["detect", str(path), str(image), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2.1 GB are available" in err
    monkeypatch.setattr(input_memory, "available_bytes", lambda: 5 * 2**30)  # enough: the check passes
    input_memory.check_input_fits(ModelSpec.from_json(json.dumps(spec)), None, "m")

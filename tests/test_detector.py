import importlib.util
import json

import cv2
import numpy as np
import pytest

from retina_trt import BackendUnavailableError, Detections, Detector, ImageError, ModelFormatError
from retina_trt.errors import BatchImageError
from retina_trt.image import preprocess_batch, resize_scale, to_bgr


def test_detections_api():
    dets = Detections(
        np.array([[1, 2, 11, 22], [5, 5, 6, 6]], np.float32),
        np.array([0.9, 0.2], np.float32),
        np.array([1, 0]),
        ("cat", "dog"),
    )
    assert len(dets) == 2 and dets.class_names == ["dog", "cat"]
    first = next(iter(dets))
    assert first.class_name == "dog" and first.score == pytest.approx(0.9) and first.box_xyxy == (1, 2, 11, 22)
    assert len(dets.filter(min_score=0.5)) == 1 and len(dets.filter(class_ids=[0])) == 1
    assert json.loads(json.dumps(dets.to_dict()))["class_names"] == ["dog", "cat"]
    coco = dets.to_coco(7, category_ids=[17, 18])
    assert coco[0] == {"image_id": 7, "category_id": 18, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.9)}
    image = np.zeros((40, 40, 3), np.uint8)
    drawn = dets.draw(image)
    assert drawn.shape == image.shape and drawn.any() and not image.any()
    assert len(Detections.empty(("a",))) == 0
    with pytest.raises(ValueError, match="as many"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))


def test_image_conversions():
    gray = np.full((10, 12), 7, np.uint8)
    assert to_bgr(gray).shape == (10, 12, 3)
    assert to_bgr(gray[:, :, None]).shape == (10, 12, 3)
    bgra = np.zeros((10, 12, 4), np.uint8)
    assert to_bgr(bgra).shape == (10, 12, 3)
    with pytest.raises(ImageError, match="dtype uint8"):
        to_bgr(np.zeros((10, 12, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        to_bgr(np.zeros((10, 12, 5), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        to_bgr([[1, 2]])


def test_resize_rules():
    assert resize_scale(480, 640, min_size=800, max_size=1333) == pytest.approx(800 / 480)
    assert resize_scale(100, 10000, min_size=800, max_size=1333) == pytest.approx(1333 / 10000)
    assert resize_scale(480, 640, min_size=800, max_size=1333, input_size=(512, 512)) == pytest.approx(512 / 640)
    batch = preprocess_batch(
        [np.zeros((1, 1, 3), np.uint8), np.zeros((10000, 100, 3), np.uint8)],
        min_size=256,
        max_size=384,
        size_divisible=128,
    )
    assert batch.pixels.shape[1] % 128 == 0 and batch.pixels.shape[2] % 128 == 0
    assert batch.image_sizes.tolist() == [[256, 256], [384, 3]]


@pytest.mark.parametrize(
    "shape, detects", [((1, 1), False), ((10000, 100), True), ((100, 10000), True), ((37, 53), False)]
)
def test_extreme_image_sizes(onnx_models, images, shape, detects):
    """A scene squeezed to extreme sizes: valid Detections; where the model finds objects, every
    box lies inside the original image."""
    image = cv2.resize(images[0], (shape[1], shape[0]), interpolation=cv2.INTER_AREA).reshape(*shape, 3)
    with Detector(onnx_models[("onnx", True)]) as det:
        dets = det(image)
    assert dets.boxes_xyxy.shape == (len(dets), 4) and dets.boxes_xyxy.dtype == np.float32
    if detects:  # the tall and wide ones are resized to 256 on the short side: the tiny model finds objects
        assert len(dets) > 0
        assert dets.boxes_xyxy[:, 0::2].max() <= shape[1] and dets.boxes_xyxy[:, 1::2].max() <= shape[0]
        assert dets.boxes_xyxy.min() >= 0


def test_grayscale_bgra_and_paths(onnx_models, images, image_dir):
    with Detector(onnx_models[("onnx", True)], min_score=0.2) as det:
        gray = cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)
        assert isinstance(det(gray), Detections)
        assert isinstance(det(cv2.cvtColor(images[0], cv2.COLOR_BGR2BGRA)), Detections)
        by_path = det(image_dir / "img0.jpg")
        assert np.all(by_path.scores >= 0.2)


def test_batch_with_a_bad_image_processes_the_others(onnx_models, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with Detector(onnx_models[("onnx", True)]) as det:
        expected = det.predict_batch([images[0], images[1]])
        with pytest.raises(BatchImageError, match="1 of 3 images failed.*cannot decode") as info:
            det.predict_batch([images[0], bad, images[1]])
        results = info.value.results
        assert results[1] is None and list(info.value.failures) == [1]
        for got, exp in zip([results[0], results[2]], expected):
            np.testing.assert_allclose(got.boxes_xyxy, exp.boxes_xyxy, atol=1e-4)


def test_batches_beyond_the_maximum_are_split(onnx_models, images):
    """ONNX Runtime itself would take a batch of 10; the backend is wrapped to enforce the
    export's maximum (8) the way a TensorRT profile does, so the split is what is tested."""
    with Detector(onnx_models[("onnx", True)], backend="onnxruntime") as det:
        assert det.max_batch == 8
        backend, seen = det._backend, []
        real_run = backend.run

        def enforcing_run(batch):
            seen.append(len(batch.pixels))
            if len(batch.pixels) > backend.max_batch:
                raise ValueError(f"batch {len(batch.pixels)} exceeds the profile's maximum {backend.max_batch}")
            return real_run(batch)

        backend.run = enforcing_run
        results = det.predict_batch([images[0]] * 19)  # one size: padding is the same in every chunk
        single = det(images[0])
    assert seen[:3] == [8, 8, 3] and len(results) == 19
    for result in results:
        np.testing.assert_allclose(result.boxes_xyxy, single.boxes_xyxy, atol=1e-4)
        assert len(result) > 0


def test_detector_timer_is_thread_safe():
    """Stage times accumulate exactly under 8 threads (the Timer behind ``det.timer``)."""
    import sys
    import threading

    from retina_trt.utils import Timer

    timer, calls = Timer(), 4000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a lost update would show
    try:

        def work():
            for _ in range(calls):
                with timer("inference"):
                    pass

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert timer.counts == {"inference": 8 * calls}
    assert timer.mean_ms()["inference"] >= 0


def test_bounded_workers_keep_at_most_n_in_flight():
    """The pool behind the TensorRT backend's ``submit`` (one worker per execution context): two
    items run at once and no more, submit blocks meanwhile, results and errors reach the futures."""
    import threading
    import time

    from retina_trt.utils import BoundedWorkers

    running, most, lock = [0], [0], threading.Lock()

    def work(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        if item == 3:
            raise ValueError("item 3 fails")
        return item * 10

    workers = BoundedWorkers(work, 2)
    futures, in_flight = [], []
    for item in range(8):
        futures.append(workers.submit(item))
        in_flight.append(sum(not f.done() for f in futures))
    workers.close()
    assert most[0] == 2 and max(in_flight) <= 2, (most, in_flight)
    assert [f.result() for f in futures if f.exception() is None] == [0, 10, 20, 40, 50, 60, 70]
    assert "item 3 fails" in str(futures[3].exception())
    with pytest.raises(RuntimeError):
        workers.submit(9)  # closed


def test_torch_backend_threads_do_not_change_the_process(tiny_checkpoint, images):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with Detector(tiny_checkpoint, num_threads=1) as det:
            assert len(det(images[0])) > 0
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_model_files(tmp_path, images):
    with pytest.raises(ModelFormatError, match="not found"):
        Detector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelFormatError, match="cannot load"):
        Detector(tmp_path / "junk.onnx")
    import onnx

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "other.onnx")
    with pytest.raises(ModelFormatError, match="not a retina_trt ONNX model"):
        Detector(tmp_path / "other.onnx")
    (tmp_path / "m.xyz").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="cannot tell the model type"):
        Detector(tmp_path / "m.xyz")
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="not a retina_trt engine"):
        Detector(tmp_path / "m.engine")
    if importlib.util.find_spec("tensorrt") is None:  # a well-formed engine file, no TensorRT here
        from helpers import TINY_SPEC

        from retina_trt.contract.engine_file import make_header, write_engine

        header = make_header(
            spec=TINY_SPEC,
            tensorrt_version="10.13.3.9",
            device_name="GPU",
            compute_capability=(8, 9),
            precision="fp16",
            onnx_sha256="0" * 64,
            export={"nms": "onnx"},
            build={"batch": [1, 1, 1]},
            plan=b"plan",
        )
        write_engine(tmp_path / "ok.engine", header, b"plan")
        # a TensorRT 10/11 engine needs TensorRT 10/11 (TensorRT-RTX cannot run it): says how to get it
        with pytest.raises(BackendUnavailableError, match=r"pip install 'retina-trt\[trt-cu12\]'"):
            Detector(tmp_path / "ok.engine")
    with pytest.raises(ValueError, match="min_score"):
        Detector(tmp_path / "m.xyz", min_score=3)


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_closed_detector_is_one_clear_error_for_every_backend(kind, onnx_models, tiny_checkpoint, images):
    from retina_trt.errors import RetinaTrtError

    det = Detector(onnx_models[("onnx", False)] if kind == "onnx" else tiny_checkpoint)
    det(images[0])
    det.close()
    det.close()  # idempotent
    with pytest.raises(RetinaTrtError, match="is closed; create a new Detector"):
        det(images[0])
    with pytest.raises(RetinaTrtError, match="is closed"):
        det.predict_batch([images[0]])


def test_bad_thread_counts_and_drawing_on_a_float_image(onnx_models, images):
    for bad in (-1, 0, True):
        with pytest.raises(ValueError, match="num_threads must be a positive integer"):
            Detector(onnx_models[("onnx", False)], num_threads=bad)
    with Detector(onnx_models[("onnx", False)], num_threads=1) as det:
        dets = det(images[0])
    with pytest.raises(TypeError, match="HxWx3 uint8 BGR"):
        dets.draw(images[0].astype(np.float32))
    assert dets.draw(images[0]).shape == images[0].shape


def test_atomic_output_cleanup_never_masks_the_real_error(tmp_path, monkeypatch):
    """On a read-only file system the temporary file cannot be removed either (EROFS): the error
    the caller sees is the one that stopped the write, not the cleanup's."""
    import errno
    from pathlib import Path

    from retina_trt.utils import atomic_path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(PermissionError, match="the real error"), atomic_path(tmp_path / "out.json"):
        raise PermissionError("the real error")
    assert not (tmp_path / "out.json").exists()


def test_cli_reports_file_system_errors_in_one_line_and_bugs_with_a_traceback(
    onnx_models, image_dir, tmp_path, capsys, monkeypatch
):
    from retina_trt import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for output, message in ((blocker / "m.onnx", "is a file, not a folder"), (tmp_path, "is a folder")):
        # refused at once, before the checkpoint is even read
        code = cli.main(["export", "--weights", "nonexistent.pt", "--output", str(output)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
        code = cli.main(
            [
                "build-engine",
                "--onnx",
                str(onnx_models[("onnx", False)]),
                "--dry-run",
                "--output",
                str(blocker / "m.engine"),
            ]
        )
        assert code == 2 and "is a file, not a folder" in capsys.readouterr().err

    def buggy(args):
        raise TypeError("a bug, not a user error")

    from retina_trt.cli import model as model_commands

    monkeypatch.setattr(model_commands, "_cmd_info", buggy)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["info", str(onnx_models[("onnx", False)])])


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_eight_threads_on_one_detector_equal_sequential_runs(kind, onnx_models, tiny_checkpoint, images):
    import concurrent.futures

    with Detector(onnx_models[("onnx", False)] if kind == "onnx" else tiny_checkpoint) as det:
        inputs = [images[i % len(images)] for i in range(16)]
        sequential = [det(image) for image in inputs]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(det, inputs))
    for a, b in zip(sequential, threaded):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert sum(len(d.scores) for d in sequential) > 0


def test_renamed_names_still_work_with_a_deprecation_warning():
    """Names renamed for clarity (docs/ARCHITECTURE.md, "Names") keep working for one release."""
    from retina_trt.contract import RawDetections

    dets = Detections(np.zeros((1, 4)), np.ones(1), np.zeros(1), ("person", "car"))
    assert dets.all_class_names == ("person", "car") and dets.class_names == ["person"]
    with pytest.warns(DeprecationWarning, match="all_class_names"):
        assert dets.names == ("person", "car")
    raw = RawDetections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.array([1]))
    with pytest.warns(DeprecationWarning, match="class_ids"):
        assert raw.labels.tolist() == [1]


def test_labels_do_not_cover_each_other_where_there_is_room():
    """Three nearly identical boxes (the demo's crowded case): their labels go to four different
    spots instead of one pile (issue #17, readable demo images)."""
    from retina_trt.runtime.detections import place_labels

    boxes = [(50, 60, 120, 130), (52, 61, 122, 131), (54, 62, 124, 132)]
    sizes = [(60, 14)] * 3
    corners = place_labels(boxes, sizes, (256, 256))
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes)]
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 256 and 0 <= a[1] and a[3] <= 256
        for b in rects[:i]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    image = np.zeros((256, 256, 3), np.uint8)
    dets = Detections(np.array(boxes, np.float32), np.array([0.9, 0.8, 0.7]), np.array([0, 1, 2]), ("a", "b", "c"))
    drawn = dets.draw(image)
    assert drawn.shape == image.shape and drawn.any() and not image.any()


def test_backend_options_objects_and_the_old_keywords(onnx_models):
    """Detector(m, options=...): each backend's typed options; the options of a backend that does
    not run are ignored; the old keywords still work; every backend keeps the Backend protocol."""
    from retina_trt import OnnxRuntimeOptions, OpenVinoOptions
    from retina_trt.runtime.backend import AsyncBackend, Backend

    model = onnx_models[("onnx", False)]
    with Detector(model, backend="onnxruntime", options=OnnxRuntimeOptions(num_threads=1)) as det:
        assert isinstance(det.backend_instance, Backend) and det.backend == "onnxruntime"
        assert det.backend_instance.session.get_session_options().intra_op_num_threads == 1
    with Detector(model, backend="onnxruntime", options=OpenVinoOptions(precision="bf16")) as det:
        assert det.backend == "onnxruntime"  # OpenVINO's options: not this backend's, ignored
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoOptions(precision="int4")
    with pytest.raises(TypeError, match="backend options objects"):
        Detector(model, options={"precision": "f32"})
    with pytest.raises(TypeError, match="unexpected keyword"):
        Detector(model, precison="f32")
    pytest.importorskip("openvino")
    both = (OpenVinoOptions(precision="f32"), OnnxRuntimeOptions(num_threads=1))
    with Detector(model, options=both) as det, Detector(model, precision="f32") as old:
        assert det.backend == old.backend == "openvino" and det.precision == old.precision == "f32"
        assert isinstance(det.backend_instance, AsyncBackend)
        assert det(np.zeros((64, 64, 3), np.uint8)).boxes_xyxy.shape[1] == 4

"""The retina_trt error hierarchy.

Every error the SDK raises on purpose derives from :class:`RetinaTrtError`, so applications can
catch one type; the CLI turns them into a one-line message and exit code 2. Each subclass names
the stage that failed: checkpoint, spec, export, precision (``retina_trt.calibration.PrecisionError``),
engine build, model file, image, video, backend.
"""

from __future__ import annotations


class RetinaTrtError(Exception):
    """Base class of all retina_trt errors."""


class CheckpointError(RetinaTrtError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""


class SpecError(RetinaTrtError, ValueError):
    """A ModelSpec (or its JSON) is invalid."""


class ExportError(RetinaTrtError):
    """The ONNX export failed or produced a model that does not pass its checks."""


class EngineBuildError(RetinaTrtError):
    """TensorRT could not parse the ONNX or build the engine (or cannot build this NMS kind)."""


class ModelFormatError(RetinaTrtError):
    """A model file (ONNX, engine) is not a retina_trt model or does not match what is expected."""


class ImageError(RetinaTrtError):
    """An image cannot be read or decoded, or has an unsupported layout or dtype."""


class VideoError(RetinaTrtError):
    """A video or stream cannot be opened or written."""


class BackendUnavailableError(RetinaTrtError):
    """The requested runtime backend (TensorRT, ONNX Runtime, torch) is not installed here."""


class BackendError(RetinaTrtError):
    """A backend call failed at run time (a Triton server that is down, times out or refuses)."""


class BatchImageError(ImageError):
    """Some images of a batch could not be read; the others were processed.

    Attributes:
        results: per input, its Detections, or None where the image failed.
        failures: input index -> the error for that image.
    """

    def __init__(self, results: list, failures: dict[int, Exception]) -> None:
        self.results = results
        self.failures = failures
        detail = "; ".join(f"#{i}: {err}" for i, err in failures.items())
        super().__init__(f"{len(failures)} of {len(results)} images failed ({detail})")

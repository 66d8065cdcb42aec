"""TensorRT registration of the three NMS plugins (``tensorrt.plugin``, AOT implementations).

``retina_trt::RetinaNMSSort``, ``retina_trt::RetinaNMSMask`` and ``retina_trt::RetinaNMS`` are
registered with their shape/type
descriptors and ``aot_impl`` functions that compile the Triton kernels to PTX for the GPU at hand
(or any target) and return the launch parameters; TensorRT embeds the PTX in the engine, so the
engine needs neither Python nor a plugin library at run time. AOT attributes are not serialized:
the thresholds, D and the candidate block become compile-time constants of the PTX.

Only checked here for API conformance (the real 10.x/11.x bindings over stub libraries) and by
calling the ``aot_impl`` functions with constant-shape descriptors (Triton compiles real PTX);
never built into an engine or run on a GPU.

No ``from __future__ import annotations`` here: TensorRT validates the descriptor and aot_impl
signatures from their annotation objects.
"""

from typing import Any

from .aot import driver_ptx_isa, launchable_ptx
from .compile import SORT_CHUNK, compile_mask, compile_nms, compile_sort
from .kernels import MASK_ROWS

NAMESPACE = "retina_trt"
SORT_ID = f"{NAMESPACE}::RetinaNMSSort"
MASK_ID = f"{NAMESPACE}::RetinaNMSMask"
NMS_ID = f"{NAMESPACE}::RetinaNMS"
_registered = False
# How the next build's PTX is made (set by the builder through ``configure_ptx``): a target compute
# capability (None: the GPU at hand; 80 for ampere_plus engines, whose family PTX later GPUs JIT),
# "a"-suffix PTX only for same_cc engines, the PTX ISA the driver loads; and what was embedded.
_ptx_options: dict[str, Any] = {"cc": None, "same_cc": False, "ptx_isa": None}
embedded_ptx: list[dict[str, Any]] = []


def configure_ptx(*, hardware_compat: str = "none", ptx_isa: str | None = None) -> None:
    """Choose the PTX the next engine build embeds (aot.py: launchable_ptx) and clear the record
    of what was embedded. ``ptx_isa`` None: the build machine's driver's (aot.driver_ptx_isa)."""
    _ptx_options.update(
        cc=80 if hardware_compat == "ampere_plus" else None,
        same_cc=hardware_compat == "same_cc",
        ptx_isa=ptx_isa or driver_ptx_isa(),
    )
    embedded_ptx.clear()


def _launchable(kernel, trt_args: int) -> tuple[str, str]:
    """(entry, PTX) as TensorRT launches it; records what was embedded for the engine header."""
    fixed = launchable_ptx(kernel, trt_args=trt_args, ptx_isa=_ptx_options["ptx_isa"], same_cc=_ptx_options["same_cc"])
    embedded_ptx.append(
        {"entry": fixed.entry, "target": fixed.target, "ptx_isa": fixed.ptx_isa, "params": fixed.params}
    )
    return fixed.entry, fixed.ptx


# long function: TensorRT's plugin registration: the decorated functions must be defined together in one scope
def register_plugin(*, lazy: bool = True) -> None:
    """Register the three plugins with TensorRT (idempotent).

    The builder calls it with ``lazy=False`` before parsing: a lazily registered plugin is not put
    into the plugin registry, which is where TensorRT's ONNX parser looks plugin creators up. The
    conformance probe uses ``lazy=True`` (over stub libraries there is no registry to write to)."""
    global _registered
    if _registered:
        return
    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(SORT_ID, lazy_register=lazy)
    def sort_desc(scores: trtp.TensorDesc, score_thresh: float) -> tuple[trtp.TensorDesc]:
        return (trtp.from_shape_expr(scores.shape_expr, dtype=trt.int32),)

    @trtp.aot_impl(SORT_ID)
    def sort_aot(
        scores: trtp.TensorDesc, score_thresh: float, outputs: tuple[trtp.TensorDesc], tactic: int
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        return sort_launch(trtp, scores, score_thresh)

    @trtp.register(MASK_ID, lazy_register=lazy)
    def mask_desc(
        boxes: trtp.TensorDesc, classes: trtp.TensorDesc, order: trtp.TensorDesc, nms_thresh: float
    ) -> tuple[trtp.TensorDesc]:
        batch, n = boxes.shape_expr[0], boxes.shape_expr[1]
        return (trtp.from_shape_expr((batch, n, trtp.cdiv(n, 64)), dtype=trt.int64),)

    @trtp.aot_impl(MASK_ID)
    def mask_aot(
        boxes: trtp.TensorDesc,
        classes: trtp.TensorDesc,
        order: trtp.TensorDesc,
        nms_thresh: float,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        return mask_launch(trtp, boxes, nms_thresh)

    @trtp.register(NMS_ID, lazy_register=lazy)
    def nms_desc(
        boxes: trtp.TensorDesc,
        scores: trtp.TensorDesc,
        classes: trtp.TensorDesc,
        order: trtp.TensorDesc,
        mask: trtp.TensorDesc,
        detections_per_img: int,
        block: int,
    ) -> tuple[trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc]:
        batch, d = boxes.shape_expr[0], int(detections_per_img)
        return (
            trtp.from_shape_expr((batch, 1), dtype=trt.int32),
            trtp.from_shape_expr((batch, d, 4), dtype=trt.float32),
            trtp.from_shape_expr((batch, d), dtype=trt.float32),
            trtp.from_shape_expr((batch, d), dtype=trt.int32),
        )

    @trtp.aot_impl(NMS_ID)
    def nms_aot(
        boxes: trtp.TensorDesc,
        scores: trtp.TensorDesc,
        classes: trtp.TensorDesc,
        order: trtp.TensorDesc,
        mask: trtp.TensorDesc,
        detections_per_img: int,
        block: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        return nms_launch(trtp, boxes, detections_per_img, block)

    _registered = True


def sort_launch(trtp, scores, score_thresh: float, cc: int | None = None) -> tuple[str, str, Any, Any]:
    """(kernel name, PTX, launch parameters, scalar args) of the rank plugin; the PTX declares
    exactly TensorRT's 3 arguments (scores, N, order)."""
    kernel = compile_sort(score_thresh=score_thresh, cc=cc or _ptx_options["cc"])
    batch, n = scores.shape_expr[0], scores.shape_expr[1]
    launch = trtp.KernelLaunchParams()
    launch.grid_x = batch
    launch.grid_y = trtp.cdiv(n, SORT_CHUNK)
    launch.block_x = kernel.metadata.num_warps * 32
    launch.shared_mem = kernel.metadata.shared
    extra = trtp.SymIntExprs(1)
    extra[0] = trtp.SymInt32(n)
    return (*_launchable(kernel, 3), launch, extra)


def mask_launch(trtp, boxes, nms_thresh: float, cc: int | None = None) -> tuple[str, str, Any, Any]:
    """(kernel name, PTX, launch parameters, scalar args) of the bitmask plugin; the PTX declares
    exactly TensorRT's 5 arguments (boxes, classes, order, N, mask)."""
    kernel = compile_mask(nms_thresh=nms_thresh, cc=cc or _ptx_options["cc"])
    batch, n = boxes.shape_expr[0], boxes.shape_expr[1]
    launch = trtp.KernelLaunchParams()
    launch.grid_x = batch
    launch.grid_y = trtp.cdiv(n, MASK_ROWS)
    launch.block_x = kernel.metadata.num_warps * 32
    launch.shared_mem = kernel.metadata.shared
    extra = trtp.SymIntExprs(1)
    extra[0] = trtp.SymInt32(n)
    return (*_launchable(kernel, 5), launch, extra)


def nms_launch(trtp, boxes, detections_per_img: int, block: int, cc: int | None = None) -> tuple[str, str, Any, Any]:
    """(kernel name, PTX, launch parameters, scalar args) of the walk plugin; the PTX declares
    exactly TensorRT's 10 arguments (5 inputs, N, 4 outputs)."""
    kernel = compile_nms(detections_per_img=detections_per_img, block=block, cc=cc or _ptx_options["cc"])
    launch = trtp.KernelLaunchParams()
    launch.grid_x = boxes.shape_expr[0]
    launch.block_x = kernel.metadata.num_warps * 32
    launch.shared_mem = kernel.metadata.shared
    extra = trtp.SymIntExprs(1)
    extra[0] = trtp.SymInt32(boxes.shape_expr[1])
    return (*_launchable(kernel, 10), launch, extra)

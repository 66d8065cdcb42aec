"""The PTX the NMS plugin hands TensorRT, made launchable and checked (issue #16, part 1).

TensorRT's AOT plugin launcher passes a kernel exactly its input tensors, the scalar arguments and
its output tensors, in that order. Triton 3.8 kernels declare two more ``.param``s after ours
(``global_scratch``, ``profile_scratch``), and it emits architecture-specific PTX (``sm_90a`` at
PTX ISA 8.8, ``sm_100a`` at 9.3) that only that exact GPU, and only a driver of that CUDA release
or newer, can load. :func:`launchable_ptx` therefore

1. proves the hidden parameters are unused (the compiled kernel's scratch sizes are 0 and the
   PTX body never names them) and removes them from the entry, so the entry declares exactly the
   arguments TensorRT passes; a kernel for which this cannot be proven is refused
   (:class:`PTXError`);
2. retargets ``sm_XXa`` to ``sm_XX`` (family PTX any later GPU's driver can JIT) unless the build
   asks for ``same_cc``;
3. lowers ``.version`` to ``ptx_isa`` (the build machine's driver, or a floor the user asks for),
   never below what the target needs;

and :func:`assemble` runs Triton's own ``ptxas`` on the result, which rejects any instruction the
target or ISA version does not have. That is the proof this module gives without a GPU.

``python -m retina_trt.plugins.aot --arch sm_80,sm_90 --out DIR`` writes each kernel's PTX for
each target and ``manifest.json`` (entry, params, trt_args, target, ptx_isa, grid/block for a
given B and N), assembling every file with ``ptxas``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The PTX ISA each CUDA release brings (the newest a driver of that release loads) ...
CUDA_PTX_ISA = {
    (12, 0): "8.0",
    (12, 1): "8.1",
    (12, 2): "8.2",
    (12, 3): "8.3",
    (12, 4): "8.4",
    (12, 5): "8.5",
    (12, 6): "8.5",
    (12, 8): "8.7",
    (12, 9): "8.8",
    (13, 0): "9.0",
    (13, 1): "9.1",
    (13, 2): "9.2",
}
# ... and the oldest ISA each target exists in (PTX ISA documentation, "PTX ISA version" notes).
TARGET_MIN_ISA = {75: "6.3", 80: "7.0", 86: "7.1", 87: "7.4", 89: "7.8", 90: "7.8", 100: "8.6", 120: "8.7"}
TARGETS = (75, 80, 86, 89, 90, 100, 120)


class PTXError(RuntimeError):
    """PTX that TensorRT could not launch as built: the message says why and what to do."""


@dataclass(frozen=True)
class KernelPTX:
    """One kernel's launchable PTX and what the manifest records about it."""

    name: str
    entry: str
    ptx: str
    target: str
    ptx_isa: str
    params: int
    trt_args: int
    removed_params: int


def _isa(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def isa_for_cuda(version: tuple[int, int]) -> str:
    """The newest PTX ISA a driver of CUDA ``version`` (major, minor) loads."""
    known = [v for v in sorted(CUDA_PTX_ISA) if v <= tuple(version)]
    if not known:
        raise PTXError(f"CUDA {version[0]}.{version[1]} is older than any driver the NMS plugin supports (12.0+)")
    return CUDA_PTX_ISA[known[-1]]


def driver_ptx_isa() -> str | None:
    """The PTX ISA this machine's CUDA driver loads (None: no driver visible)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, version = cudart.cudaDriverGetVersion()
    if int(err) != 0 or not version:
        return None
    return isa_for_cuda((version // 1000, (version % 1000) // 10))


def _entry(ptx: str) -> tuple[str, list[str], int, int]:
    """(entry name, its param names, start and end offsets of the parameter list)."""
    match = re.search(r"\.entry\s+(\w+)\s*\(", ptx)
    if match is None:
        raise PTXError("no .entry in the PTX")
    end = ptx.index(")", match.end())
    names = re.findall(r"\.param\s+[^,)]*?\b(\w+)\s*(?:,|$)", ptx[match.end() : end] + ",")
    return match.group(1), names, match.end(), end


def launchable_ptx(kernel: Any, *, trt_args: int, ptx_isa: str | None = None, same_cc: bool = False) -> KernelPTX:
    """``kernel`` (a ``triton.compile`` result) as PTX TensorRT's AOT launcher can launch (module
    docstring). ``trt_args``: inputs + scalars + outputs TensorRT passes.

    Raises:
        PTXError: the hidden parameters are used, the kernel declares fewer parameters than
            TensorRT passes, or ``ptx_isa`` is below what the target needs.
    """
    ptx, md = kernel.asm["ptx"], kernel.metadata
    entry, params, start, end = _entry(ptx)
    if len(params) < trt_args:
        raise PTXError(f"{entry} declares {len(params)} parameters, TensorRT passes {trt_args}")
    hidden = params[trt_args:]
    for field in ("global_scratch_size", "profile_scratch_size"):
        if int(getattr(md, field, 0) or 0) != 0:
            raise PTXError(
                f"{entry} needs Triton's {field.replace('_size', '')} ({getattr(md, field)} bytes), which "
                "TensorRT's launcher does not pass: this kernel cannot be registered"
            )
    body = ptx[end:]
    used = [name for name in hidden if re.search(rf"\b{re.escape(name)}\b", body)]
    if used:
        raise PTXError(
            f"{entry} reads its hidden parameters {used}, which TensorRT's launcher does not pass: "
            "this kernel cannot be registered"
        )
    kept_decls = [decl for decl in ptx[start:end].split(",") if not any(re.search(rf"\b{h}\b", decl) for h in hidden)]
    ptx = ptx[:start] + ",".join(kept_decls).rstrip() + "\n" + ptx[end:]
    target_match = re.search(r"^\.target\s+sm_(\d+)(a?)", ptx, flags=re.M)
    version_match = re.search(r"^\.version\s+(\d+\.\d+)", ptx, flags=re.M)
    if target_match is None or version_match is None:
        raise PTXError(f"{entry}: no .target / .version line in the PTX")
    cc = int(target_match.group(1))
    target = f"sm_{cc}{'a' if same_cc and target_match.group(2) else ''}"
    ptx = ptx[: target_match.start()] + f".target {target}" + ptx[target_match.end() :]
    isa = version_match.group(1)
    if ptx_isa is not None and _isa(ptx_isa) < _isa(isa):
        floor = TARGET_MIN_ISA.get(cc, isa)
        if _isa(ptx_isa) < _isa(floor):
            raise PTXError(
                f"PTX ISA {ptx_isa} (the driver's) is older than {target} needs ({floor}): update the GPU driver"
            )
        isa = ptx_isa
        ptx = re.sub(r"^\.version\s+\d+\.\d+", f".version {isa}", ptx, count=1, flags=re.M)
    return KernelPTX(
        name=entry,
        entry=entry,
        ptx=ptx,
        target=target,
        ptx_isa=isa,
        params=len(_entry(ptx)[1]),
        trt_args=trt_args,
        removed_params=len(hidden),
    )


def ptxas_path() -> Path:
    """Triton's bundled ``ptxas`` (the Blackwell build for sm_100+ targets when present)."""
    import triton

    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    found = folder / "ptxas"
    if not found.is_file():
        raise PTXError(f"Triton's ptxas is not in {folder}")
    return found


def assemble(ptx: str, target: str) -> int:
    """Assemble ``ptx`` for ``target`` with ptxas; the cubin's size. Raises PTXError with ptxas's
    message when it refuses (an instruction the target or ISA lacks, a malformed entry)."""
    binary = ptxas_path()
    cc = int(re.sub(r"\D", "", target))
    blackwell = binary.with_name("ptxas-blackwell")
    if cc >= 100 and blackwell.is_file():
        binary = blackwell
    with tempfile.TemporaryDirectory() as tmp:
        source, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        source.write_text(ptx)
        run = subprocess.run(
            [str(binary), f"-arch={target}", str(source), "-o", str(cubin)], capture_output=True, text=True
        )
        if run.returncode != 0:
            raise PTXError(f"ptxas ({target}) refused the PTX: {run.stderr.strip()[:500]}")
        return cubin.stat().st_size


# ---- the plugin's kernels, as TensorRT launches them -------------------------------------------


def plugin_kernels(cc: int, *, score_thresh: float, nms_thresh: float, detections_per_img: int, block: int):
    """[(kernel, trt_args)] of the three plugins for compute capability ``cc``: scores, N, order |
    boxes, classes, order, N, mask | boxes, scores, classes, order, mask, N, 4 outputs."""
    from .compile import compile_mask, compile_nms, compile_sort

    sort = compile_sort(score_thresh=score_thresh, cc=cc)
    mask = compile_mask(nms_thresh=nms_thresh, cc=cc)
    nms = compile_nms(detections_per_img=detections_per_img, block=block, cc=cc)
    return [(sort, 3), (mask, 5), (nms, 10)]


def write(out: Path, archs: list[int], *, ptx_isa: str | None, batch: int, candidates: int) -> dict:
    """PTX per kernel and target, and ``manifest.json``; every file assembled with ptxas."""
    from .compile import SORT_CHUNK
    from .kernels import MASK_ROWS

    out.mkdir(parents=True, exist_ok=True)
    block = 1 << max(4, (candidates - 1).bit_length())
    manifest: dict[str, Any] = {"ptx_isa_cap": ptx_isa, "batch": batch, "candidates": candidates, "kernels": []}
    for cc in archs:
        kernels = plugin_kernels(cc, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, block=block)
        grids = ([batch, -(-candidates // SORT_CHUNK), 1], [batch, -(-candidates // MASK_ROWS), 1], [batch, 1, 1])
        for (kernel, trt_args), grid in zip(kernels, grids):
            fixed = launchable_ptx(kernel, trt_args=trt_args, ptx_isa=ptx_isa)
            name = f"{fixed.entry}.{fixed.target}.ptx"
            (out / name).write_text(fixed.ptx)
            cubin = assemble(fixed.ptx, fixed.target)
            record = {k: v for k, v in asdict(fixed).items() if k != "ptx"}
            warps = kernel.metadata.num_warps
            record.update(
                ptx=name,
                grid=grid,
                block=[warps * 32, 1, 1],
                shared_mem=kernel.metadata.shared,
                cubin_bytes=cubin,
                triton_params=fixed.params + fixed.removed_params,
            )
            manifest["kernels"].append(record)
            print(
                f"{name}: {fixed.params} params (TensorRT passes {trt_args}), {fixed.target}, PTX ISA {fixed.ptx_isa}, "
                f"ptxas ok ({cubin} bytes)"
            )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(  # (not `parser`: the TensorRT API scan reads that name as an OnnxParser)
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--arch", default=",".join(f"sm_{t}" for t in TARGETS), help="comma-separated sm_XX targets")
    cli.add_argument("--out", required=True, help="folder for the PTX files and manifest.json")
    cli.add_argument("--ptx-isa", default=None, help="cap the PTX ISA (e.g. 8.4 for CUDA 12.4 drivers)")
    cli.add_argument("--batch", type=int, default=1, help="B for the manifest's grid")
    cli.add_argument("--candidates", type=int, default=5000, help="N for the manifest's grid")
    args = cli.parse_args(argv)
    if args.ptx_isa is not None and not re.fullmatch(r"\d+\.\d", args.ptx_isa):
        cli.error(f"--ptx-isa takes a PTX ISA version such as 8.4, got {args.ptx_isa!r}")
    if args.batch < 1 or args.candidates < 1:
        cli.error("--batch and --candidates must be >= 1")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        # `import retina_trt` put Triton in interpreter mode (no NVIDIA driver here) before the
        # kernels were decorated: compile in a fresh process where Triton compiles for real.
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        os.execve(
            sys.executable,
            [sys.executable, "-m", "retina_trt.plugins.aot", *(argv if argv is not None else sys.argv[1:])],
            env,
        )
    try:
        archs = [int(a.strip().removeprefix("sm_")) for a in args.arch.split(",")]
    except ValueError:
        cli.error(f"--arch takes sm_XX targets, got {args.arch!r}")
    unknown = [a for a in archs if a not in TARGETS]
    if unknown:
        cli.error(f"unsupported targets {unknown}; choose from {', '.join(f'sm_{t}' for t in TARGETS)}")
    try:
        write(Path(args.out), archs, ptx_isa=args.ptx_isa, batch=args.batch, candidates=args.candidates)
    except PTXError as err:
        print(f"retina_trt.plugins.aot: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

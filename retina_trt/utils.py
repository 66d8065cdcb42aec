"""Small shared helpers: atomic file output, timing, a bounded pool of worker threads."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

CACHE_ENV = "RETINA_TRT_CACHE"


def cache_root() -> Path:
    """Where retina_trt caches derived files: ``$RETINA_TRT_CACHE``, else ``~/.cache/retina_trt``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "retina_trt"


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name an output is written under before it is renamed to ``path``: hidden,
    beside it (so the rename is atomic), unique per process, keeping the suffix (writers such as
    ``cv2.imwrite`` pick the format from it). The one temp-name rule of every writer."""
    final = Path(path)
    return final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Nothing is left under ``path`` (or the temporary name) when the block raises, so a reader
    never sees a half-written file. The parent directory is created if needed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(OSError):  # never mask the block's own error (read-only FS: EROFS)
            tmp.unlink()


def available_bytes() -> int:
    """Memory available to a new allocation now: ``MemAvailable`` (Linux), else physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Like :func:`check_output_file` for a folder: it (or a parent) must not be a file, and it
    must be creatable and writable. Creates it.

    Raises:
        OSError: with a message that names ``path`` and what is wrong.
    """
    if not str(path).strip():
        raise ValueError(f"{what} is an empty path; give a folder (. for the current one)")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file, not a folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {folder}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create {what} {folder}: {err.strerror}") from err
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{what} {folder} is not writable")
    return folder


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail early, before any slow work, when ``path`` cannot be written: it is a folder, a parent
    is a file, or the folder it goes into is not writable. Creates the parent folders.

    Raises:
        OSError: with a message that names ``path`` and what is wrong.
    """
    if not str(path).strip():
        raise ValueError(f"{what} is an empty path; give a file name")
    final = Path(path)
    if final.is_dir():
        raise IsADirectoryError(f"{what} {final} is a folder; give a file name")
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {final}: {parent} is a file, not a folder")
            break
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the folder for {what} {final}: {err.strerror}") from err
    if not os.access(final.parent, os.W_OK):
        raise PermissionError(f"{what} {final}: the folder {final.parent} is not writable")
    return final


def printable(text: str) -> str:
    """``text`` with control and formatting characters (ESC, NUL, right-to-left overrides, ...)
    escaped, for printing strings read from untrusted files to a terminal."""
    import unicodedata

    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in str(text)
    )


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file, however spelled (symlinks, ``./``, relative or
    absolute, hard links); a path that does not exist yet is compared by its resolved spelling."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or inside it, however either is spelled (symlinks resolved)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def refuse_overwrite(output: str | os.PathLike, inputs, what: str = "output") -> None:
    """Raise ValueError when ``output`` is one of the files a command reads (``inputs``; None
    entries and non-paths are skipped): no command writes over its own input."""
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and str(source) and same_file(output, source):
            raise ValueError(
                f"{what} {output} is also an input ({source}): refusing to write over a file this "
                "command reads; give the output another name"
            )


def refuse_overlap(outputs, inputs=(), folders=()) -> None:
    """Raise ValueError unless every output (``(what, path)`` pairs; None paths skipped) is apart
    from every input, from every file of the input ``folders`` the command reads, and from the
    other outputs: no command writes over what it reads, nor two of its outputs into one file."""
    seen: list[tuple[str, str | os.PathLike]] = []
    for what, output in outputs:
        if output is None or not str(output):
            continue
        in_folders = [Path(f) / Path(output).name for f in folders if f is not None and Path(f).is_dir()]
        refuse_overwrite(output, [*inputs, *(p for p in in_folders if p.is_file())], what)
        for other_what, other in seen:
            if same_file(output, other):
                raise ValueError(f"{what} {output} is the same file as {other_what} {other}; give each its own name")
        seen.append((what, output))


class Timer:
    """Accumulates wall time per named stage: ``with timer("preprocess"): ...``."""

    def __init__(self) -> None:
        self.totals_s: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()  # one Detector serves many threads

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, elapsed_s: float) -> None:
        """Count one call of ``stage`` that took ``elapsed_s`` seconds."""
        with self._lock:
            self.totals_s[stage] = self.totals_s.get(stage, 0.0) + elapsed_s
            self.counts[stage] = self.counts.get(stage, 0) + 1

    def mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per call of each stage."""
        with self._lock:
            return {k: 1000.0 * v / self.counts[k] for k, v in self.totals_s.items()}


class BoundedWorkers:
    """``workers`` threads that run ``fn(item)``; :meth:`submit` returns a Future and blocks while
    every worker is busy, so at most ``workers`` items are in flight (a backend's parallel
    requests: one per TensorRT execution context)."""

    def __init__(self, fn: Callable, workers: int, name: str = "retina-trt-worker") -> None:
        self.fn, self.workers = fn, max(1, int(workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(self.workers)

    def submit(self, item) -> Future:
        self._slots.acquire()
        try:
            future = self._pool.submit(self.fn, item)
        except BaseException:  # shut down: the slot is not taken
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        """Wait for the items in flight, then stop the threads (idempotent)."""
        self._pool.shutdown(wait=True)

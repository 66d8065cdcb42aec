"""The ``retina-trt`` command: one module per command group, each adding its subcommands.

  model.py      export, info            engine.py    build-engine (retina_trt/pipeline.py)
  detect.py     detect                  serving.py   export-triton, export-deepstream
  analytics.py  analyze
  training.py   data, train, eval       bench.py     bench
  args.py       argparse types

User errors (bad paths, bad options, unreadable inputs) print one line and exit with code 2;
``-v`` adds the traceback. Heavy modules are imported inside the commands, so
``retina-trt --help`` loads neither torch nor any GPU library (tests/test_hygiene.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from retina_trt._version import __version__
from retina_trt.cli import analysis, analytics, bench, detect, engine, model, serving, training
from retina_trt.cli.flags import cli_message
from retina_trt.errors import RetinaTrtError

logger = logging.getLogger("retina_trt.cli")

EXIT_USAGE = 2
GROUPS = (model, detect, analytics, training, analysis, serving, bench, engine)  # the order of `retina-trt --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retina-trt",
        description="Deploy RetinaNet detectors: ONNX export, detection, TensorRT engines.",
    )
    parser.add_argument("--version", action="version", version=f"retina-trt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    _verbose_everywhere(sub)  # `retina-trt build-engine ... -v` works as the hints say
    return parser


def _verbose_everywhere(sub) -> None:
    """``-v`` on every command and nested command (``data synthetic ... -v``), not only first."""
    for command in sub.choices.values():
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging and tracebacks"
        )
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_everywhere(action)


def process_defaults() -> None:
    """What the command sets in its own process before anything imports OpenCV or Triton (the
    library never touches the environment):

    * ``TRITON_INTERPRET=1`` on a machine without an NVIDIA driver, so the NMS plugin's Triton
      kernels run on CPU tensors (Triton decides when it is first imported);
    * ``OPENCV_IO_MAX_IMAGE_PIXELS``: OpenCV's own decoder limit (read when cv2 is first imported)
      for formats whose header the image reader does not check itself, set to the same pixel
      limit (``RETINA_TRT_MAX_IMAGE_PIXELS``; a bad value is reported by the image reader, and
      only values OpenCV can parse are passed on: its parser aborts past 2^64).
    A variable the user set is left as it is."""
    if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
        os.environ["TRITON_INTERPRET"] = "1"
    limit = os.environ.get("RETINA_TRT_MAX_IMAGE_PIXELS", str(1 << 27))
    if "cv2" not in sys.modules and limit.isdigit() and 0 < int(limit) <= 1 << 40:
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", limit)


def main(argv: Sequence[str] | None = None) -> int:
    process_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("onnxslim", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    previous = _stop_on_signals()
    try:
        return args.run(args)
    except BrokenPipeError:  # `retina-trt info M | head -1`: the reader left; go quietly, as Unix tools do
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except (RetinaTrtError, ValueError, OSError) as err:  # user errors; a TypeError is a bug: traceback
        if args.verbose:
            logger.exception("failed")
        print(f"retina-trt {args.command}: error: {cli_message(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(
            f"retina-trt {args.command}: interrupted ({signal.Signals(signum).name}); finished outputs are kept",
            file=sys.stderr,
        )
        return 128 + int(signum)
    finally:
        _restore_signals(previous)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured): nothing to silence
        pass


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C, so every output is finalized on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> dict | None:
    """SIGINT and SIGTERM raise :class:`Interrupted` once; later ones are ignored, so a second
    Ctrl-C during finalization cannot leave a half-written file. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict | None) -> None:
    for sig, old in (previous or {}).items():
        signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())

"""Multi-source streams: frames of many cameras or files batched into one model call
(``streams/multistream.py``), each source read, buffered and reconnected in its own thread
(``streams/source.py``). ``Detector.streams([...])`` builds one."""

from .multistream import MultiFrame, MultiStream, SourceEnd
from .source import SourceStats

__all__ = ["MultiFrame", "MultiStream", "SourceEnd", "SourceStats"]

"""Where frames come from and where results go, below the runtime: ``sources.py`` (live or file,
SOURCE arguments, ``FrameSource``), ``reconnect.py`` (the reconnect policy of every live source),
``writers.py`` (annotated videos, JSON lines, output names, the output-folder lock)."""

"""``python -m retina_trt.cli``: the same as ``retina-trt``."""

import sys

from retina_trt.cli import main

sys.exit(main())

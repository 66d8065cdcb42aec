"""A detector in ten lines: python samples/embed_minimal.py MODEL VIDEO_OR_STREAM"""

import sys

from retina_trt import Detector

with Detector(sys.argv[1], min_score=0.4) as det, det.stream(sys.argv[2]) as frames:
    for index, timestamp, _frame, dets in frames:
        print(f"frame {index} at {timestamp:.2f} s: {len(dets)} objects {sorted({d[3] for d in dets})}")

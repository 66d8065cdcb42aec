# retina-trt: the two commands of the README (`make demo`, `make test`) set everything up on a
# fresh machine. The virtual environment is .venv; pins come from constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: venv system-deps test test-all test-install lint readme-check soak demo demo-model paper-claims precision bench bench-gpu gpu-check serve-env test-serve serve-bench clean

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml constraints.txt tests/trt_bindings.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade "pip>=24" "setuptools>=68" wheel
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[build,dev,int8,trt-rtx,openvino,analytics]"
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt --no-deps trackers  # not its opencv-python
	$(BIN)/python tests/trt_bindings.py
	@touch $(STAMP)

# ruff decides the layout (line length 120, E501 enforced): both checks run in `make test`.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# Debian packages the tests run for real (Mosquitto, Redis, headless Chromium): installed when
# missing, as root (.ci/system-deps); elsewhere those tests skip.
system-deps:
	@bash .ci/system-deps

# The default run: everything but tests marked `slow` and `serve` (`gpu` tests skip without a GPU).
test: lint system-deps
	$(BIN)/python -m pytest -m "not slow and not serve" -q

# Everything, slow and Triton-server tests included.
test-all: lint $(SERVE_STAMP)
	$(BIN)/python -m pytest -q

# `pip install .` in a fresh venv is the runtime only (no torch) and runs `retina-trt detect`.
test-install: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/test_layers.py -k runtime_only_install -s

# The README's Python block as written: a seeded torchvision ResNet-50-FPN, 512 calibration images
# at 800x1344, an INT8 TensorRT-RTX engine (slow: tests/test_readme.py).
readme-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_readme.py -m slow

demo: $(STAMP)
	$(BIN)/python samples/demo.py --out demo-output

# Reproduces samples/models/shapes_r18.pt in seven stages (docs/training.md#the-demo-model gives
# each stage's wall time on 2 CPU cores; about 7 hours in all): 1500 iterations from scratch,
# then four times 2400 more, each from the previous stage's FP16 weights with a fresh optimizer and
# learning-rate schedule (--init-from), then 500 on images of mixed aspect ratios (so the padding
# below or beside a non-square frame is seen in training), 35% of them on plain backgrounds (stage
# 6: the model stopped firing frame-sized boxes on flat backgrounds), then 2400 on 20,000 fresh
# images of mixed shapes, 15% plain (stage 7: won back the held-out AP stage 6 had cost, and more).
# Stages 1-3 train on 2,000 images; stages 4 and 5 each on 20,000 fresh ones (seeds 0 and 5;
# held-out splits use seeds 1, 3, 7 and 11), because the stage-3 model had memorized its 2,000
# (training AP 67.4 against 41.3 held out). --resume continues an interrupted stage.
SHAPES := data/shapes
DEMO_MODEL_OPTIONS := --backbone resnet18 --fpn-channels 64 --head-norm group_norm --anchor-sizes 16,32,64,128,256 \
  --min-size 256 --max-size 256 --batch-size 8 --warmup-iters 100 --low-quality-matches \
  --backbone-bn train --save-every 100 --resume
SMALL_SET := --annotations $(SHAPES)/instances_train.json --images $(SHAPES)/train --lr 0.02
demo-model: $(STAMP)
	$(BIN)/retina-trt data synthetic --out $(SHAPES) --images 2000 --seed 0 --split train --height 256 --width 256
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) $(SMALL_SET) --iterations 1500 --seed 0 \
	  --output $(SHAPES)/shapes_r18_stage1.train.pt --deploy $(SHAPES)/shapes_r18_stage1.pt
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) $(SMALL_SET) --iterations 2400 --seed 1 --init-from $(SHAPES)/shapes_r18_stage1.pt \
	  --output $(SHAPES)/shapes_r18_stage2.train.pt --deploy $(SHAPES)/shapes_r18_stage2.pt
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) $(SMALL_SET) --iterations 2400 --seed 2 --init-from $(SHAPES)/shapes_r18_stage2.pt \
	  --output $(SHAPES)/shapes_r18_stage3.train.pt --deploy $(SHAPES)/shapes_r18_stage3.pt
	$(BIN)/retina-trt data synthetic --out $(SHAPES)20k --images 20000 --seed 0 --split train --height 256 --width 256
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) --annotations $(SHAPES)20k/instances_train.json --images $(SHAPES)20k/train \
	  --lr 0.01 --iterations 2400 --seed 3 --init-from $(SHAPES)/shapes_r18_stage3.pt \
	  --output $(SHAPES)/shapes_r18_stage4.train.pt --deploy $(SHAPES)/shapes_r18_stage4.pt
	$(BIN)/retina-trt data synthetic --out $(SHAPES)20k_s5 --images 20000 --seed 5 --split train --height 256 --width 256
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) --annotations $(SHAPES)20k_s5/instances_train.json --images $(SHAPES)20k_s5/train \
	  --lr 0.01 --iterations 2400 --seed 4 --init-from $(SHAPES)/shapes_r18_stage4.pt \
	  --output $(SHAPES)/shapes_r18_stage5.train.pt --deploy $(SHAPES)/shapes_r18_stage5.pt
	$(BIN)/retina-trt data synthetic --out $(SHAPES)_plain --images 6000 --seed 6 --split train --height 192:320 --width 192:416 \
	  --plain-fraction 0.35
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) --annotations $(SHAPES)_plain/instances_train.json --images $(SHAPES)_plain/train \
	  --lr 0.005 --iterations 500 --seed 5 --init-from $(SHAPES)/shapes_r18_stage5.pt \
	  --output $(SHAPES)/shapes_r18_stage6.train.pt --deploy $(SHAPES)/shapes_r18_stage6.pt
	$(BIN)/retina-trt data synthetic --out $(SHAPES)_plain20k --images 20000 --seed 9 --split train --height 192:320 --width 192:416 \
	  --plain-fraction 0.15
	$(BIN)/retina-trt train $(DEMO_MODEL_OPTIONS) --annotations $(SHAPES)_plain20k/instances_train.json --images $(SHAPES)_plain20k/train \
	  --lr 0.01 --iterations 2400 --seed 6 --init-from $(SHAPES)/shapes_r18_stage6.pt \
	  --output $(SHAPES)/shapes_r18_stage7.train.pt --deploy samples/models/shapes_r18.pt
	$(BIN)/retina-trt data synthetic --out $(SHAPES) --images 300 --seed 1 --split val --height 256 --width 256
	$(BIN)/retina-trt eval samples/models/shapes_r18.pt --annotations $(SHAPES)/instances_val.json --images $(SHAPES)/val
	$(BIN)/retina-trt data synthetic --out $(SHAPES)_seed3 --images 300 --seed 3 --split val --height 256 --width 256
	$(BIN)/retina-trt eval samples/models/shapes_r18.pt --annotations $(SHAPES)_seed3/instances_val.json --images $(SHAPES)_seed3/val

# The paper's loss claims at small scale (three trainings of the same budget at 128 px).
paper-claims: $(STAMP)
	$(BIN)/python -m retina_trt.bench.paper_claims --iterations 1500 --image-size 128 --out bench-output/paper_claims

# FP32 / FP16 / INT8 of the demo model on the CPU: held-out AP and CPU latency through ONNX
# Runtime, and OpenVINO FP32 / BF16 / INT8 beside them (about 10 minutes on 2 cores).
precision: $(STAMP)
	$(BIN)/python -m retina_trt.bench.precision --out bench-output/precision

# The CPU benchmark set: ResNet-50-FPN (seeded torchvision weights, see retina_trt/bench/weights.py)
# at 400/600/800 px and the demo model, the CPU routes side by side in one run (ONNX Runtime FP32,
# OpenVINO FP32 / BF16 / INT8) against torchvision eager, beside the paper's Table 1e; bench.json
# records the CPU and its ISA.
BENCH := bench-output/bench
bench: $(STAMP)
	$(BIN)/python -m retina_trt.bench.weights bench-output/r50_bench.pth
	$(BIN)/retina-trt bench bench-output/r50_bench.pth --scale 600,400,800 --threads 2 --iterations 10 --routes cpu \
	  --compare-paper --compare torchvision --out $(BENCH) --json $(BENCH)/summary.json
	$(BIN)/retina-trt bench samples/models/shapes_r18.pt --threads 2 --iterations 20 --routes cpu \
	  --out bench-output/bench-demo --json bench-output/bench-demo/summary.json
	$(BIN)/python -m retina_trt.bench.stream --out bench-output/stream
	$(BIN)/python -m retina_trt.bench.graph_nms --out bench-output/graph_nms
	$(BIN)/retina-trt export --weights samples/models/shapes_r18.pt --output bench-output/shapes_r18.onnx
	$(BIN)/python -m retina_trt.bench.startup --model bench-output/shapes_r18.onnx --out bench-output/startup
	$(BIN)/python -m retina_trt.bench.ov_shapes --model bench-output/shapes_r18.onnx --out bench-output/ov_shapes
	$(BIN)/python -m retina_trt.bench.multisource --model bench-output/shapes_r18.onnx --out bench-output/multisource
	$(BIN)/python -m retina_trt.bench.tracking --model bench-output/shapes_r18.onnx --out bench-output/tracking
	$(BIN)/retina-trt export --weights samples/models/shapes_r18.pt --input-size 256x384 --output bench-output/shapes_r18_256x384.onnx
	$(BIN)/python -m retina_trt.bench.schedule --model bench-output/shapes_r18_256x384.onnx --out bench-output/schedule
	$(BIN)/python -m retina_trt.bench.operations --model bench-output/shapes_r18.onnx --out bench-output/operations

# Multi-source soak: 4 MJPEG cameras at 30 fps (localhost) into the demo model on the CPU for 10
# minutes; RSS and p99 latency per 30 s window (bench-output/soak: soak.md, soak.png, soak.json).
soak: $(STAMP)
	$(BIN)/retina-trt export --weights samples/models/shapes_r18.pt --output bench-output/soak/shapes_r18.onnx
	$(BIN)/python -m retina_trt.bench.soak --model bench-output/soak/shapes_r18.onnx --minutes 10 --out bench-output/soak

# The paper's Table 1e sweep on a GPU (TensorRT FP16 engines per scale; needs TensorRT + CUDA).
bench-gpu: $(STAMP)
	$(BIN)/python -m retina_trt.bench.weights bench-output/r50_bench.pth
	$(BIN)/retina-trt bench bench-output/r50_bench.pth --backend tensorrt --precision fp16 \
	  --scale 400,500,600,700,800 --batch 1,8 --iterations 200 --compare-paper --compare torchvision \
	  --out bench-output/bench-gpu --json bench-output/bench-gpu/summary.json

# The one command for a GPU machine: installs TensorRT 10.x (CUDA 12 set; if the registry is
# unreachable it goes on without it), runs the `gpu` tests (tests/test_trt_gpu.py) and the GPU
# measurements (retina_trt/bench/gpu.py), then writes one report of both (bench/gpu_report.py:
# gpu_check.md / .json; exit 1 if anything failed). On a machine without .venv (needs pytest):
#   PYTHONPATH=. python3 -m pytest -m gpu tests/test_trt_gpu.py --junitxml=DIR/tests.xml
#   PYTHONPATH=. python3 -m retina_trt.bench.gpu --out DIR --quick
#   PYTHONPATH=. python3 -m retina_trt.bench.gpu_report --out DIR
GPU_CHECK_OUT ?= gpu-check-output
gpu-check: $(STAMP)
	-$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[build,dev,int8,trt-rtx,trt-cu12]"
	@mkdir -p $(GPU_CHECK_OUT)
	-$(BIN)/python -m pytest -m gpu -q tests/test_trt_gpu.py --junitxml=$(GPU_CHECK_OUT)/tests.xml
	-$(BIN)/python -m retina_trt.bench.gpu --out $(GPU_CHECK_OUT)
	$(BIN)/python -m retina_trt.bench.gpu_report --out $(GPU_CHECK_OUT)

# The Triton serving environment (retina-trt serve): its own venv, as PyTriton pins numpy<2.
serve-env: $(SERVE_STAMP)

$(SERVE_STAMP): requirements-serve.txt setup.py
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-serve.txt
	$(SERVE_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

# Load test of retina-trt serve: 1, 4 and 16 concurrent clients against a real Triton server.
serve-bench: $(STAMP) $(SERVE_STAMP)
	$(BIN)/retina-trt export --weights samples/models/shapes_r18.pt --output bench-output/serve/shapes_r18.onnx
	$(BIN)/python -m retina_trt.bench.serve --model bench-output/serve/shapes_r18.onnx --out bench-output/serve

# Tests against a real Triton Inference Server (needs serve-env; not part of `make test`).
test-serve: $(STAMP) $(SERVE_STAMP)
	$(BIN)/python -m pytest -m serve -q tests/test_serve.py tests/test_triton_backend.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) demo-output build *.egg-info

# Veritas — quick start: `make demo`, then `make test`.
# Each target sets up what is missing (.venv, the package, redis-server) and then runs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUILD  ?= build
# Re-install when pyproject.toml changes.
STAMP  := $(VENV)/.installed

.PHONY: demo demo-weights test setup redis live-servers lint clean gpu-wheels gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# torchattacks: a test-time reference only. Its metadata pins requests~=2.25, which
	# would downgrade idna under huggingface_hub; it never imports requests.
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	@touch $(STAMP)

# redis-server is needed by the job queue and its tests; installed through apt when absent.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# Real streaming servers for the live-feed tests (tests/servers.py): GStreamer's RTSP
# server, nginx with the RTMP module, srt-live-transmit (SRT relay), ffmpeg (publishers,
# SRT bridge, live HLS); installed through apt when absent.
LIVE_PACKAGES = ffmpeg nginx libnginx-mod-rtmp gir1.2-gst-rtsp-server-1.0 python3-gi \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
  srt-tools
live-servers:
	@{ command -v ffmpeg && command -v nginx && command -v srt-live-transmit && test -f /usr/lib/nginx/modules/ngx_rtmp_module.so \
	  && /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')"; } >/dev/null 2>&1 || { \
	  echo "live-feed test servers missing: installing them with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(LIVE_PACKAGES) >/dev/null; }

# The demo clip (real, self-blended fake, PGD-attacked fake; lossless FFV1) judged with the
# proxy-trained demo weights in demo/weights (not for real footage), then scored per segment.
demo: setup redis
	@mkdir -p $(BUILD)
	$(PY) -m training.demo clip $(BUILD)/demo_clip.mkv
	$(VENV)/bin/veritas run $(BUILD)/demo_clip.mkv --config engine/configs/demo.toml \
	  --out $(BUILD)/demo.jsonl --annotate $(BUILD)/demo.mp4
	$(PY) -m training.demo score $(BUILD)/demo.jsonl $(BUILD)/demo_clip.json

# Remake demo/weights with the project's own training path (the proxy run's demo size).
demo-weights: setup
	$(PY) -m training.demo weights demo/weights

# The suite, then its numerically sensitive tests (marker `numerics`) again as an AVX2-only
# x86 CPU runs them: the same results must hold whatever kernels the CPU picks.
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

# On a CPU with nothing beyond AVX2 (no AVX-512, AVX-VNNI or AMX) the first run already used
# those kernels (PyTorch, oneDNN and MKL pick AVX2 there by themselves): the second pass
# would repeat it exactly, so it is left out.
test: setup redis live-servers
	$(PY) -m pytest -q
	@if grep -qwE 'avx512f|avx_vnni|amx_tile' /proc/cpuinfo 2>/dev/null; then \
	  echo "$(AVX2_ENV) $(PY) -m pytest -q -m numerics"; \
	  $(AVX2_ENV) $(PY) -m pytest -q -m numerics; \
	else \
	  echo "numerics: this CPU has nothing beyond AVX2; the run above used AVX2 kernels already"; \
	fi

# The GPU check (benchmarks/gpu_check.py, steps in benchmarks/README.md). Here, with network:
# `make gpu-wheels` puts into $(GPU_DIR) the wheels the GPU machine lacks and the bundle
# (a 1080p H.264 clip and PyAV's frames of it). There, with no network and its own
# python3 (no venv): `make gpu-check` installs those wheels into /tmp/site and runs.
GPU_DIR    ?= .gpu
GPU_PYTHON ?= python3
GPU_OUT    ?= $(BUILD)/gpu-check
GPU_ARGS   ?=
GPU_WHEELS ?= pynvvideocodec==2.2.4 captum==0.9.0
GPU_PLATFORMS = --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
gpu-wheels: setup
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(GPU_PLATFORMS) -d $(GPU_DIR)/wheels $(GPU_WHEELS)
	$(PY) -m benchmarks.gpu_check bundle $(GPU_DIR)
	@du -sh $(GPU_DIR)

gpu-check:
	@if ls $(GPU_DIR)/wheels/*.whl >/dev/null 2>&1; then \
	  $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
	    --upgrade --target /tmp/site $(GPU_DIR)/wheels/*.whl; fi
	PYTHONPATH=.:/tmp/site PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m benchmarks.gpu_check \
	  --bundle $(GPU_DIR) --out $(GPU_OUT) $(GPU_ARGS)

lint: setup
	$(VENV)/bin/ruff check engine kernels training benchmarks tests

clean:
	rm -rf $(BUILD) .pytest_cache

# `make test` and `make demo` work from a clean clone: they create .venv when absent.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
NVFP4  := $(VENV)/bin/nvfp4
STAMP  := $(VENV)/.installed
DEMO   := build/demo

.PHONY: test demo clean

# torch first and pinned: 2.13.0 is a CPU wheel on disk here, a bare `torch` pulls a CUDA build.
# Elsewhere: TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'.
TORCH_PIP_ARGS ?=
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(NVFP4) --version
	$(NVFP4) quantize sample_ckpts/tiny-llama -o $(DEMO)/tiny-llama-rs --mode rs --seed 7 --max-shard-size 1MB
	$(NVFP4) inspect $(DEMO)/tiny-llama-rs
	$(NVFP4) verify $(DEMO)/tiny-llama-rs
	$(NVFP4) quantize sample_ckpts/tiny-llama -o $(DEMO)/tiny-llama-nvfp4
	$(NVFP4) quantize sample_ckpts/tiny-llama --format modelopt -o $(DEMO)/tiny-llama-modelopt
	$(NVFP4) diff sample_ckpts/tiny-llama $(DEMO)/tiny-llama-nvfp4 --sqnr --min-sqnr 15
	$(NVFP4) diff $(DEMO)/tiny-llama-nvfp4 $(DEMO)/tiny-llama-modelopt --top 5
	$(NVFP4) quantize sample_ckpts/tiny-llama -o $(DEMO)/tiny-llama-nvfp4-w2 --workers 2
	$(NVFP4) diff $(DEMO)/tiny-llama-nvfp4 $(DEMO)/tiny-llama-nvfp4-w2 --top 3
	$(NVFP4) verify $(DEMO)/tiny-llama-nvfp4-w2
	$(NVFP4) verify $(DEMO)/tiny-llama-nvfp4
	$(NVFP4) verify $(DEMO)/tiny-llama-modelopt
	$(NVFP4) quantize sample_ckpts/deepseek-v3-fp8 -o $(DEMO)/deepseek-v3-nvfp4
	$(NVFP4) verify $(DEMO)/deepseek-v3-nvfp4
	$(NVFP4) diff sample_ckpts/deepseek-v3-fp8 $(DEMO)/deepseek-v3-nvfp4 --sqnr --top 3 --min-sqnr 15
	$(NVFP4) inspect sample_ckpts/gpt-oss-mxfp4 --json > $(DEMO)/gpt-oss-inspect.json
	$(NVFP4) quantize sample_ckpts/gpt-oss-mxfp4 -o $(DEMO)/gpt-oss-nvfp4
	$(NVFP4) verify $(DEMO)/gpt-oss-nvfp4
	$(NVFP4) diff sample_ckpts/gpt-oss-mxfp4 $(DEMO)/gpt-oss-nvfp4 --sqnr --top 3
	$(NVFP4) quantize sample_ckpts/tiny-llama -o $(DEMO)/tiny-llama-w4a4 --scheme w4a4 --calibration sample_ckpts/calibration.txt --samples 32 --seq-len 64
	$(NVFP4) verify $(DEMO)/tiny-llama-w4a4
	$(NVFP4) bench --shape 1024x1024 --iters 5

clean:
	rm -rf $(VENV) build

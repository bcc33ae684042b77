# `make run`: set up the venv and run the main job. `make test`: set up and run the tests.
# Both create .venv on first use (python3 >= 3.11 with venv) and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-slow bench clean bench-scale bench-diagnosis bench-hpo

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench,llm]'
	$(BIN)/python -m pip install -q --no-deps 'torchattacks==3.5.1'  # its requests~=2.25.1 pin conflicts with mlflow (pyproject.toml)
	touch $@

run: $(BIN)/.installed
	$(BIN)/methodo run examples/digits.yaml

# `make test` runs one pytest-xdist worker per core (each computing on one thread, tests/conftest.py), the files
# shared out whole (`--dist loadfile`: a file's module fixtures run once).
# PostgreSQL (methodo tune's many-worker storage) is started by scripts/ensure-postgres.sh, which prints the
# DSN the tests read from METHODO_TEST_POSTGRES.
test: $(BIN)/.installed
	bash scripts/ensure-chromium.sh
	dsn="$$(bash scripts/ensure-postgres.sh)" && METHODO_TEST_POSTGRES="$$dsn" $(BIN)/python -m pytest -q -n auto --dist loadfile

test-slow: $(BIN)/.installed
	dsn="$$(bash scripts/ensure-postgres.sh)" && METHODO_TEST_POSTGRES="$$dsn" $(BIN)/python -m pytest -q -m slow

bench: $(BIN)/.installed
	$(BIN)/python bench/loop_overhead.py --write BENCHMARKS.md

bench-hpo: $(BIN)/.installed
	$(BIN)/python bench/hpo.py --write BENCHMARKS.md

bench-scale: $(BIN)/.installed
	$(BIN)/python bench/scale.py --write BENCHMARKS.md

bench-diagnosis: $(BIN)/.installed
	$(BIN)/python bench/diagnosis.py --write BENCHMARKS.md

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts mlruns .pytest_cache

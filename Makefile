# Two commands do all set-up on a fresh machine with Python 3.11 and make:
#   make demo   creates .venv, installs kerasls, generates demo/ from the tabular-intent template, trains it,
#               exports it and serves one row from the export
#   make test   creates .venv, installs kerasls[test,encoders], runs the house rules (ruff, import-linter)
#               and the whole test suite (about 20 minutes on 2 cores)
#   make test-fast   the house rules and the tests that train nothing (no `e2e` or `slow` mark; about 1 minute)
#   make benchmarks  runs every script in benchmarks/ (about 20 minutes on 2 cores; prints ratio tables)
#   make docs   builds the reference site in docs/ with mkdocs (--strict: a broken link fails); make test runs it
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo lint docs test test-fast benchmarks clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# setuptools announces every editable install of a package_dir mapping (setup.cfg maps templates/ onto
	@# kerasls.templates) in a "!!" box that reads like a problem; only that notice is silenced
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[test,encoders]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/kerasls new tabular-intent --no-input --force project_slug=demo project_name="Demo purchase intent"
	cd demo && ../$(BIN)/python train.py training.verbose=2 | tee .last_train.log
	head -n 2 demo/data/test.csv > demo/one_row.csv
	@run=$$(tail -n 1 demo/.last_train.log | sed 's/^run: //'); \
	echo; echo "served by $$run/export (keras-free SavedModel):"; \
	$(BIN)/kerasls predict "$$run/export" demo/one_row.csv; \
	echo; echo "headline metrics:"; grep -E '^(test|val) n=|^prediction sets |^note: ' demo/.last_train.log; \
	echo "report: $$run/report.html"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --quiet

test: lint docs
	$(BIN)/python -m pytest -q --durations=20

test-fast: lint docs
	$(BIN)/python -m pytest -q -m "not e2e and not slow" --durations=10

benchmarks: $(BIN)/.installed
	$(BIN)/python benchmarks/tabular_pipeline.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/image_pipeline.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/text_encoder.py
	$(BIN)/python benchmarks/sparse_first_layer.py
	$(BIN)/python benchmarks/out_of_scope.py

clean:
	rm -rf demo build *.egg-info .pytest_cache

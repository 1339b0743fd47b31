# One command per chore. `make demo` and `make test` create .venv and install on a fresh machine
# (and re-install when pyproject.toml changes); nothing else is needed first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Label Studio pins what Andon cannot (Django, its own pandas): its own environment, for the
# integration test against a real Label Studio server (tests/integration/test_label_studio.py)
LS_VENV  := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed-stamp
# the suite runs on three pytest-xdist workers, a test module a unit, each worker's torch on one
# thread (tests/conftest.py): 720-728 s in three CI runs on 2 cores of an AMD EPYC, 975-1,188 s on
# the earlier Xeon (1,059 s there on two; a third worker fills the waits on servers and subprocesses)
TEST_WORKERS ?= 3

.PHONY: venv labelstudio demo test test-unit test-integration lint typecheck format bench clean lock

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Andon and its dependencies into $(VENV) (first time: about 4 minutes)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -m pip install -qq --disable-pip-version-check -c requirements.lock -e '.[all,dev]' 2>&1 | grep -vE "is ignored|^\s*$$" || true
	@$(BIN)/python -c "import andon, torch, prefect, mlflow" || (echo "install failed" && exit 1)
	@touch $(STAMP)

venv: $(STAMP)

$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	@echo "installing Label Studio into $(LS_VENV) for its integration test (about 1 minute the first time)"
	@$(LS_VENV)/bin/python -m pip install -qq --disable-pip-version-check label-studio==1.23.2
	@touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

demo: $(STAMP)
	$(BIN)/andon demo

test: $(STAMP) $(LS_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS)

test-unit: $(STAMP)
	$(BIN)/pytest -m unit

test-integration: $(STAMP)
	$(BIN)/pytest -m integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory typecheck

# mypy checks the installed layout (cli/ flows/ tasks/ are andon.cli, andon.flows, andon.tasks),
# which it cannot see through setuptools' editable finder: a tree of links under build/ shows it.
typecheck: $(STAMP)
	@rm -rf build/typecheck && mkdir -p build/typecheck/andon
	@for f in andon/* cli flows tasks; do ln -s "$$PWD/$$f" "build/typecheck/andon/$${f#andon/}"; done
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml andon

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# the exact versions of a fresh install of pyproject.toml's ranges, kept as requirements.lock
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	{ head -2 requirements.lock; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^andon'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

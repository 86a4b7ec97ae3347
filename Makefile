# feedlab: `make demo` and `make test` set everything up themselves (a .venv beside this file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean fuzz chaos soak

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/feedlab demo

# pytest's exit code 5 means it collected no test: that is a failure here, not a pass.
# On every core (pytest-xdist): one process took 400-455 s of CI's 5-minute budget.
test: $(STAMP)
	@$(BIN)/python -m pytest -q -n auto --dist worksteal; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$status

# A deep fuzzing campaign (issue 10): 5,000 examples per mock, 15,000 scripts per built-in client.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q tests/test_fuzz_mocks.py tests/test_fuzz_clients.py

# A long chaos campaign against the built-in clients (issue 10): at least 500 distinct schedules
# per vendor (Hypothesis draws a few twice, hence 520). CI runs a short one (tests/test_chaos_search.py).
# A seed draws the same schedules every time: `make chaos CHAOS_SEED=N` explores others.
CHAOS_SEED ?= 1
chaos: $(STAMP)
	@for v in massive theta amberdata; do \
	  $(BIN)/feedlab chaos --vendor $$v --examples 520 --seed $(CHAOS_SEED) --out chaos-found-$$v.toml || exit 1; \
	done

# Ten minutes of 50 clients connecting, reading and dropping against `feedlab serve all`:
# fails if the server's memory grows beyond noise, it dies, or it stops serving.
soak: $(STAMP)
	$(BIN)/python bench/soak.py --minutes 10

lint: $(STAMP)
	$(BIN)/ruff check mocks clients scenarios tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench/*.py  # scripts, not a package: a stale call into soak.py is caught here

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

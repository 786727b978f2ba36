# Two commands on a fresh machine (Python 3.11+, make):  make report   and   make test
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= smoke
STAMP   := $(VENV)/.installed-stamp

.PHONY: install constraints report test test-fast book bench clean-run browser

# pyproject.toml lists the dependencies; constraints.txt pins the versions CI tested.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,dev,lab,sweep]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (backfill)" >/dev/null
	@touch $@

install: $(STAMP)

# Rewrite constraints.txt with the exact versions in .venv (after changing pyproject.toml and installing).
constraints:
	$(BIN)/python scripts/constraints.py constraints.txt

# Run every notebook with params/$(PROFILE).yaml into runs/$(PROFILE)/, then build the book.
report: $(STAMP)
	$(BIN)/python -m backfill run params/$(PROFILE).yaml
	$(BIN)/python -m backfill book runs/$(PROFILE)

book: $(STAMP)
	$(BIN)/python -m backfill book runs/$(PROFILE)

bench: $(STAMP)
	$(BIN)/python -m backfill bench

# Headless Chromium for the browser test of the built book (Debian packages; skipped when unavailable).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) ; } || \
	  echo "note: chromium could not be installed; the browser test will be skipped"

# Unit, property and integration tests, then nbval over the notebooks on params/test.yaml.
test: $(STAMP) browser
	rm -rf runs/nbval
	BACKFILL_PARAMS=$(CURDIR)/params/test.yaml BACKFILL_RUN_DIR=$(CURDIR)/runs/nbval \
	  $(BIN)/python -m pytest tests --nbval-lax --nbval-current-env --durations=15 notebooks

# The quick lane: every test but those marked slow (the whole pipeline, sweeps, executed notebooks, training).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

clean-run:
	rm -rf runs/$(PROFILE)

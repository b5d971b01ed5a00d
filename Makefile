# Two commands for a fresh machine:
#   make run    builds .venv and runs the default study (offline, CPU is enough)
#   make test   builds .venv and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2

# The pinned requirements, then the package itself (editable, no dependencies) so that
# `python -m firstlayer_zoo` and `import firstlayer_zoo` work from any folder.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

.PHONY: run test report
run: $(VENV)/.installed
	$(VENV)/bin/snakemake --cores $(CORES)

report: $(VENV)/.installed
	$(VENV)/bin/snakemake --report results/report.html

# Two pytest workers, each taking whole test files (their module fixtures run once): most tests wait on
# subprocesses and start-up rather than on the CPU.
TEST_WORKERS ?= 2

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

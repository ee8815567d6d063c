# vpr_ros: `make setup` once (idempotent), then `make demo`, `make test`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# DDS stays on this machine; each run gets its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 100 + 100 )))
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp

.PHONY: setup demo test test-fast bench bench-full clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py tools/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The test, demo and benchmark harness (tools/vpr_harness), apart from the package.
	$(PY) -m pip install -q --no-deps --no-build-isolation -e tools
	touch $(STAMP)

demo: setup
	$(PY) -m vpr_harness.demo.run --out demo_out

test: setup
	$(PY) -m pytest -q test

# Everything but the tests marked slow (real-node campaigns, exports, training, colcon): a quick check while developing.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" test

# One Markdown report of every benchmark, about 15 minutes; `make bench-full` adds the long runs.
bench: setup
	$(PY) bench/report.py --out bench_out/report.md

bench-full: setup
	$(PY) bench/report.py --full --out bench_out/report-full.md

clean:
	rm -rf demo_out eval_out bench_out .pytest_cache

# vpr_ros: `make setup` once (idempotent), then `make demo`, `make test`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vpr_ros.msg: the node's messages (msg/*.msg), generated and compiled by colcon (see below)
MSGS := vpr_ros/msg/__init__.py
COLCON_WS := $(VENV)/colcon
# DDS stays on this machine; each run gets its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 100 + 100 )))
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
PY_INCLUDE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NUMPY_INCLUDE = $(shell $(PY) -c 'import numpy; print(numpy.get_include())')

.PHONY: setup demo test test-fast bench bench-full clean

setup: $(STAMP) $(MSGS)

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

# The messages, built by colcon as in a ROS workspace, with the PyPI wheels as the underlay. The
# wheels' exported CMake files name their builder's Python and numpy include directories
# (/opt/python/...): pointed at this venv's first. The package is copied into a workspace of its
# own: CMake refuses to export include directories (this venv's numpy) inside the source tree.
# The generated Python modules go beside the source package, as `pip install -e` builds extensions
# in place (git-ignored; AMENT_IGNORE keeps the linters out), their libraries into .venv/lib,
# which the wheels put on LD_LIBRARY_PATH.
$(MSGS): $(STAMP) CMakeLists.txt package.xml $(wildcard msg/*.msg)
	sed -i -E -e 's#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$(PY_INCLUDE)#g' \
	  -e 's#/opt/python/[^;"]*/numpy/_core/include#$(NUMPY_INCLUDE)#g' \
	  $(VENV)/share/*/cmake/*__rosidl_generator_pyExport.cmake
	rm -rf $(COLCON_WS)/src
	mkdir -p $(COLCON_WS)/src/vpr_ros
	cp -r CMakeLists.txt package.xml msg vpr_ros launch config $(COLCON_WS)/src/vpr_ros/
	AMENT_PREFIX_PATH=$(CURDIR)/$(VENV) $(VENV)/bin/colcon --log-base $(COLCON_WS)/log build \
	  --base-paths $(COLCON_WS)/src --build-base $(COLCON_WS)/build \
	  --install-base $(COLCON_WS)/install --event-handlers console_direct- \
	  --cmake-args -DPython3_EXECUTABLE=$(CURDIR)/$(PY) -DBUILD_TESTING=OFF
	rm -rf vpr_ros/msg vpr_ros/vpr_ros_s__*.so
	mkdir vpr_ros/msg
	touch vpr_ros/msg/AMENT_IGNORE
	cp $(COLCON_WS)/install/vpr_ros/lib/libvpr_ros__*.so $(VENV)/lib/
	cp $(COLCON_WS)/install/vpr_ros/lib/python3*/site-packages/vpr_ros/vpr_ros_s__*.so vpr_ros/
	cp $(COLCON_WS)/install/vpr_ros/lib/python3*/site-packages/vpr_ros/msg/*.py vpr_ros/msg/

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

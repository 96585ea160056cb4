# salt-virt: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install host-libvirtd lab-up lab-down lab-status lab-clean test test-unit demo bench lint docs minion-image

install:
	bash scripts/install.sh

host-libvirtd: install
	bash scripts/host-libvirtd.sh

lab-up: install
	$(PY) lab/labctl.py up

lab-down:
	@if [ -x $(PY) ]; then $(PY) lab/labctl.py down; else python3 lab/labctl.py down; fi

lab-status:
	$(PY) lab/labctl.py status

# Removes the lab's state directory too (CA, keys, guest disks).
lab-clean: lab-down
	rm -rf $${LAB_DIR:-/var/lib/svlab}

# Debian guest with a real salt-minion for the seeding end-to-end test (cached: ~2 min cold,
# ~0.1 s when up to date; tests/integration/test_seeding_e2e.py runs it too).
MINION_IMAGE_DIR ?= /var/cache/salt-virt-lab/minion-image
minion-image: install
	bash lab/image/build-minion-image.sh $(MINION_IMAGE_DIR)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The whole suite: unit, functional (this host's libvirtd) and integration (the lab). Two
# things start in the background while the functional tests run: the lab (the integration
# tests wait for it: LAB_UP_STATUS, see tests/integration/conftest.py) and the minion image
# (~2 min on a fresh machine; the first test that needs it waits for the build's lock, and
# builds it itself if the build failed: its log is $(MINION_IMAGE_DIR)/build.log).
LAB_UP_LOG ?= $(CURDIR)/.lab-up.log
test: install
	@mkdir -p $(MINION_IMAGE_DIR); rm -f $(LAB_UP_LOG).rc; \
	bash lab/image/build-minion-image.sh $(MINION_IMAGE_DIR) > $(MINION_IMAGE_DIR)/build.log 2>&1 & \
	{ $(PY) lab/labctl.py up > $(LAB_UP_LOG) 2>&1; echo $$? > $(LAB_UP_LOG).rc; } & \
	bash scripts/host-libvirtd.sh && LAB_UP_STATUS=$(LAB_UP_LOG) $(PY) -m pytest -ra --durations=30 $(PYTEST_ARGS); \
	rc=$$?; wait; cat $(LAB_UP_LOG); exit $$rc

demo: host-libvirtd lab-up
	bash lab/demo.sh

bench: host-libvirtd lab-up
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# ruff (rules in pyproject.toml) and the check that every public Salt function documents an
# example (scripts/check_cli_examples.py); both run, and any finding fails the target.
lint: install
	@rc=0; \
	$(VENV)/bin/ruff check . || rc=1; \
	$(PY) scripts/check_cli_examples.py || rc=1; \
	exit $$rc

# The HTML documentation, docs/_build/html/index.html: the guides and a reference generated
# from the Salt modules' docstrings (docs/_ext/saltvirt_ref.py). Any Sphinx warning fails it.
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# Two entry points on a fresh Debian 12 machine, as root:
#   make demo   - install everything, then run the lab demo (the paper's Fig. 7)
#   make test   - install everything, then run the whole test suite
# `make test-fast` runs the layer that needs neither root nor the lab.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
CJB     := $(VENV)/bin/cjb
# Debian packages the product and its tests use (tools/debian-packages.txt is the list).
DEBS    := $(shell grep -v '^\#' tools/debian-packages.txt)

.PHONY: setup system-packages demo test test-fast lint typecheck bench clean bpf fig8 deb mutation

setup: system-packages $(VENV)/.installed bpf

# The kernel fast path and the VXLAN guard: built here, never committed
# (*.bpf.o is gitignored).
BPF_OBJ := gateway/dataplane/bpf/xlat.bpf.o
GUARD_OBJ := common/vxlan_guard/guard.bpf.o
bpf: $(BPF_OBJ) $(GUARD_OBJ)

%.bpf.o: %.bpf.c
	clang -O2 -g -target bpf -mcpu=v3 -I/usr/include/$$(uname -m)-linux-gnu -Wall -c $< -o $@

system-packages:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages: $$missing -- run as root (sudo make ...)"; exit 1; fi; \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		for pair in nginx-light:nginx apache2:apache2 haproxy:haproxy; do \
			if [ -d /run/systemd/system ] && echo "$$missing" | grep -qx "$${pair%%:*}"; then \
				echo "stopping the $${pair#*:} system service just installed (tests run their own in lab namespaces)"; \
				systemctl disable --now "$${pair#*:}.service" || true; \
			fi; \
		done; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,fuzz]'
	touch $@

demo: setup
	$(CJB) lab demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m 'not root and not slow'

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy needs the import names (cjb.common, ...), which live in folders named common/, ...
typecheck: setup
	mkdir -p .typecheck/cjb
	for d in common gateway appliance service lab cli; do ln -sfn ../../$$d .typecheck/cjb/$$d; done
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml cjb/common cjb/gateway cjb/appliance cjb/service cjb/lab cjb/cli

# cjb-gateway and cjb-appliance .debs in dist/deb (tools/deb/build.py says what goes in).
deb: setup
	$(PY) tools/deb/build.py --out dist/deb

bench: setup
	$(PY) bench/xlat_core.py

clean:
	rm -rf $(VENV) .typecheck .mutation build *.egg-info

# Fig. 8 of the paper, extended: root, a few minutes; writes results/fig8.*
fig8: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/fig8.py

# Mutation testing of gateway/xlat, common/packet and gateway/control against the fast tests
# that exercise each (tools/mutation.py; resumable, hours for every mutant, one worker).
# SAMPLE=N tests a fixed-seed sample of N mutants per package; PACKAGES=packet narrows it.
SAMPLE   ?=
PACKAGES ?= packet control xlat
mutation: setup
	$(PY) -m pip install -q -e '.[mutation]'
	$(PY) tools/mutation.py $(if $(SAMPLE),--sample $(SAMPLE)) $(foreach p,$(PACKAGES),--package $(p))

# The two commands of the README: `make run` (the service) and `make test` (the suite).
# Both install what is missing first: Debian packages (with sudo when not root) and the venv.
PYTHON ?= python3
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the service and its tests need (watchdog's build-deps are covered
# by debhelper and build-essential).
APT_PACKAGES := build-essential dpkg-dev debhelper fakeroot quilt patch gnupg \
	redis-server python3-venv python3-dev git ca-certificates po-debconf debootstrap gpgv

.PHONY: run test deps venv lint openapi clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

# constraints.txt pins the versions the suite passed with (regenerate with
# `.venv/bin/pip freeze --exclude-editable > constraints.txt` after an upgrade).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

run: deps venv
	$(VENV)/bin/clusterforge run

test: deps venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

openapi: venv
	$(VENV)/bin/clusterforge export-openapi

clean:
	rm -rf $(VENV) var

# Two commands on a fresh machine with Python 3.11 and make: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every resolved dependency at one version (the `dev` extra, so tests and tools too): `make install`,
# CI and infra/Dockerfile install from it; pyproject.toml keeps the ranges. Regenerate: `make lock`.
LOCK := requirements/lock.txt
DATA_DIR ?= $(or $(RECSYS_DATA_DIR),data)
DEMO_DIR := $(DATA_DIR)/demo
API_PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install lock run demo-data test test-slow clean mongo-start mongo-stop \
	prefect-up prefect-down prefect-deploy

# The locked set exactly, then the project itself without resolving anything again.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve $(LOCK) from pyproject.toml with uv (from the dev extra) for Python 3.11 on every
# platform (one file for Linux x86_64 and aarch64 alike). The current pins are kept where they still
# fit; move them with LOCK_ARGS=--upgrade or LOCK_ARGS="--upgrade-package NAME". The gpu extra
# (torch) is left out: it is installed on its own where wanted. `make install` then applies it.
# The file is replaced only when it changed, so an unchanged lock does not trigger a reinstall.
# Needs only uv (not the installed project), so a new dependency in pyproject.toml can be locked.
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv; }
	cp $(LOCK) $(LOCK).new
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --quiet \
		--custom-compile-command "make lock" --output-file $(LOCK).new $(LOCK_ARGS)
	@if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; echo "$(LOCK) unchanged"; \
	else mv $(LOCK).new $(LOCK); echo "$(LOCK) updated"; fi

mongo-start: $(STAMP)
	@if [ -z "$$MONGODB_URI" ]; then $(BIN)/recsys mongo start; \
	else echo "using MONGODB_URI=$$MONGODB_URI"; fi

mongo-stop: $(STAMP)
	$(BIN)/recsys mongo stop

demo-data: $(STAMP)
	@test -f $(DEMO_DIR)/interactions.parquet || \
		$(BIN)/recsys generate --users 2000 --items 1000 --interactions 100000 $(DEMO_DIR)

run: mongo-start demo-data
	$(BIN)/recsys pipeline --input $(DEMO_DIR)
	@echo
	@echo "API on http://127.0.0.1:$(API_PORT) (OpenAPI: http://127.0.0.1:$(API_PORT)/docs). Try:"
	@echo "  curl 'http://127.0.0.1:$(API_PORT)/users/u0000001/recommendations?k=5'"
	@echo "  curl 'http://127.0.0.1:$(API_PORT)/items/i000001/similar?k=5'"
	@echo "  curl 'http://127.0.0.1:$(API_PORT)/ready'"
	@echo "Stop with Ctrl-C; stop the embedded MongoDB with 'make mongo-stop'."
	$(BIN)/recsys serve --port $(API_PORT)

# Two processes (pytest-xdist), whole files per process so module fixtures are built once,
# handed out longest first (tests/conftest.py, LONGEST_FILES); TEST_WORKERS=0 runs everything
# in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# Prefect server + process worker in the background, then the deployments of prefect.yaml.
# UI: http://127.0.0.1:$(PREFECT_PORT) (its pages call the API on the same port, not Prefect's
# default 4200). Stop with `make prefect-down`. Everything (the server's SQLite database and
# settings under home/, logs, pids) stays in $(PREFECT_RUN), never in ~/.prefect; PREFECT_PORT
# and RECSYS_DATA_DIR move it, so a test can run its own.
PREFECT_PORT ?= 4200
PREFECT_RUN := $(abspath $(DATA_DIR))/prefect
PREFECT_BASE_ENV := PREFECT_HOME=$(PREFECT_RUN)/home PREFECT_SERVER_ANALYTICS_ENABLED=false
PREFECT_ENV := $(PREFECT_BASE_ENV) PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
	RECSYS_PROJECT_DIR=$(CURDIR) GX_ANALYTICS_ENABLED=False
PREFECT_DEPLOY := $(PREFECT_ENV) $(BIN)/prefect --no-prompt deploy --all
# Each background process leads its own process group, so prefect-down can stop it with its children.
SETSID := $(shell command -v setsid)
# Shell helpers. `alive PID`: PID, or a process in the group PID leads, is running (zombies aside).
# `running NAME`: what NAME.pid names is alive: the Prefect process itself, or, when it has exited,
# the children left in its group (a pid is not reused while its group exists).
PREFECT_PROCS = alive() { ps -eo pid=,pgid=,stat= | awk -v p="$$1" \
		'($$1 == p || $$2 == p) && $$3 !~ /^Z/ {found = 1} END {exit !found}'; }; \
	running() { pid=$$(cat $(PREFECT_RUN)/$$1.pid 2>/dev/null) || return 1; \
		if ps -p "$$pid" >/dev/null 2>&1; then ps -o args= -p "$$pid" | grep -q prefect; \
		else alive "$$pid"; fi; }

prefect-up: $(STAMP)
	@mkdir -p $(PREFECT_RUN)/home
	@$(PREFECT_PROCS); if running server; \
	then echo "Prefect server already running (pid $$(cat $(PREFECT_RUN)/server.pid))"; \
	else $(PREFECT_BASE_ENV) PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
		nohup $(SETSID) $(BIN)/prefect server start --host 127.0.0.1 \
		--port $(PREFECT_PORT) < /dev/null > $(PREFECT_RUN)/server.log 2>&1 & \
		echo $$! > $(PREFECT_RUN)/server.pid; fi
	@$(PREFECT_PROCS); for i in $$(seq 1 240); do \
		curl -fsS http://127.0.0.1:$(PREFECT_PORT)/api/health >/dev/null 2>&1 && exit 0; \
		running server || break; sleep 0.5; done; \
		echo "Prefect server did not start, see $(PREFECT_RUN)/server.log" >&2; exit 1
	$(PREFECT_ENV) $(BIN)/prefect work-pool create recsys-local --type process --overwrite >/dev/null
	$(PREFECT_DEPLOY)
	@$(PREFECT_PROCS); if running worker; \
	then echo "worker already running (pid $$(cat $(PREFECT_RUN)/worker.pid))"; \
	else $(PREFECT_ENV) nohup $(SETSID) $(BIN)/prefect worker start --pool recsys-local \
		--type process < /dev/null > $(PREFECT_RUN)/worker.log 2>&1 & \
		echo $$! > $(PREFECT_RUN)/worker.pid; fi
	@# Up means polling: a worker still starting also ignores a first SIGINT (see prefect-down).
	@$(PREFECT_PROCS); for i in $$(seq 1 240); do \
		grep -q "started!" $(PREFECT_RUN)/worker.log 2>/dev/null && exit 0; \
		running worker || break; sleep 0.5; done; \
		echo "Prefect worker did not start, see $(PREFECT_RUN)/worker.log" >&2; exit 1
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (logs in $(PREFECT_RUN)/)"

prefect-deploy: $(STAMP)
	$(PREFECT_DEPLOY)

# Worker first, then server; each in its own process group (the process and its children). SIGINT,
# as Ctrl-C would: the server shuts down on it. Prefect's worker does not: it turns a first SIGTERM
# or SIGINT into a SIGINT to itself and keeps running; a second SIGINT makes it kill itself. So:
# SIGINT, SIGINT, SIGTERM, SIGKILL to the group, each followed by a wait of up to PREFECT_STOP_WAIT
# seconds that ends as soon as no process of the group is running (zombies aside); "stopped" is
# printed only then, and the target fails if anything is still running after SIGKILL.
PREFECT_STOP_WAIT ?= 5
prefect-down:
	@$(PREFECT_PROCS); \
	stop() { running $$1 || { rm -f $(PREFECT_RUN)/$$1.pid; return 0; }; \
		for sig in INT INT TERM KILL; do \
			kill -s $$sig -- -$$pid 2>/dev/null || kill -s $$sig $$pid 2>/dev/null; \
			i=0; while alive $$pid && [ $$i -lt $$(( $(PREFECT_STOP_WAIT) * 4 )) ]; do \
				sleep 0.25; i=$$((i + 1)); done; \
			if ! alive $$pid; then rm -f $(PREFECT_RUN)/$$1.pid; \
				echo "stopped Prefect $$1 (pid $$pid, SIG$$sig)"; return 0; fi; \
		done; echo "Prefect $$1 (pid $$pid) is still running" >&2; return 1; }; \
	stop worker; worker=$$?; stop server && [ $$worker -eq 0 ]

clean:
	rm -rf $(VENV) .pytest_cache

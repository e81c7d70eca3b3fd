# Two commands on a fresh machine with Python 3.11 and make: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= $(or $(RECSYS_DATA_DIR),data)
DEMO_DIR := $(DATA_DIR)/demo
API_PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run demo-data test test-slow clean mongo-start mongo-stop \
	prefect-up prefect-down prefect-deploy

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

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

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# Prefect server + process worker in the background (logs and pids in $(PREFECT_RUN)), then the
# deployments of prefect.yaml. UI: http://127.0.0.1:$(PREFECT_PORT). Stop with `make prefect-down`.
PREFECT_PORT ?= 4200
PREFECT_RUN := $(DATA_DIR)/prefect
PREFECT_ENV := PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api RECSYS_PROJECT_DIR=$(CURDIR) \
	PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=False

prefect-up: $(STAMP)
	@mkdir -p $(PREFECT_RUN)
	@if [ -f $(PREFECT_RUN)/server.pid ] && kill -0 $$(cat $(PREFECT_RUN)/server.pid) 2>/dev/null; \
	then echo "Prefect server already running (pid $$(cat $(PREFECT_RUN)/server.pid))"; \
	else PREFECT_SERVER_ANALYTICS_ENABLED=false nohup $(BIN)/prefect server start --host 127.0.0.1 \
		--port $(PREFECT_PORT) > $(PREFECT_RUN)/server.log 2>&1 & echo $$! > $(PREFECT_RUN)/server.pid; fi
	@for i in $$(seq 1 120); do curl -fsS http://127.0.0.1:$(PREFECT_PORT)/api/health >/dev/null 2>&1 \
		&& break; sleep 1; done; curl -fsS http://127.0.0.1:$(PREFECT_PORT)/api/health >/dev/null \
		|| (echo "server did not start, see $(PREFECT_RUN)/server.log"; exit 1)
	$(PREFECT_ENV) $(BIN)/prefect work-pool create recsys-local --type process --overwrite >/dev/null
	$(MAKE) --no-print-directory prefect-deploy
	@if [ -f $(PREFECT_RUN)/worker.pid ] && kill -0 $$(cat $(PREFECT_RUN)/worker.pid) 2>/dev/null; \
	then echo "worker already running (pid $$(cat $(PREFECT_RUN)/worker.pid))"; \
	else $(PREFECT_ENV) nohup $(BIN)/prefect worker start --pool recsys-local --type process \
		> $(PREFECT_RUN)/worker.log 2>&1 & echo $$! > $(PREFECT_RUN)/worker.pid; fi
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (logs in $(PREFECT_RUN)/)"

prefect-deploy: $(STAMP)
	$(PREFECT_ENV) $(BIN)/prefect --no-prompt deploy --all

prefect-down:
	@for name in worker server; do pidfile=$(PREFECT_RUN)/$$name.pid; \
		if [ -f $$pidfile ] && kill -0 $$(cat $$pidfile) 2>/dev/null; then \
		kill $$(cat $$pidfile) && echo "stopped Prefect $$name (pid $$(cat $$pidfile))"; fi; \
		rm -f $$pidfile; done

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands on a fresh machine with Python 3.11 and make: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= $(or $(RECSYS_DATA_DIR),data)
DEMO_DIR := $(DATA_DIR)/demo
API_PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run demo-data test test-slow clean mongo-start mongo-stop

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

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands on a fresh machine: `make run` (the app and its workers) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-s3 lint services system-packages bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Kodiak needs Python 3.11 ($(PYTHON))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/kodiak run

# Redis and PostgreSQL for the integration tests: started only when not already answering.
services:
	@$(BIN)/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379).ping()" 2>/dev/null \
	  || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@pg_isready -q -h 127.0.0.1 -p 5432 \
	  || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done

# docker-compose (v1) validates the compose file, Chromium runs the browser tests;
# both come from Debian when missing.
system-packages:
	@command -v docker-compose >/dev/null && test -x /usr/bin/chromium || { command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq docker-compose chromium >/dev/null; }; } || true

lint: install
	$(BIN)/ruff check app workers tests bench
	$(BIN)/lint-imports

test: install services system-packages lint
	$(BIN)/pytest

# The suite again with every test app's storage on an S3 server (moto, started on loopback
# for the run). The integration and browser tests start their own processes with their own
# stores (the scale-out test runs on S3 in `make test` already), so they run once, there.
# TESTS narrows it: make test-s3 TESTS="tests/test_storage.py tests/web"
TESTS ?=
S3_MARKS ?= not integration and not browser
test-s3: install services system-packages
	KODIAK_TEST_STORAGE=s3 $(BIN)/pytest -m "$(S3_MARKS)" $(TESTS)

bench: install
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) var .pytest_cache

# The one entry point for people and CI. `make demo` and `make test` need only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/thresher/v1/*.proto)
GENERATED := $(PROTOS:proto/%.proto=%_pb2.py)
TYPED := thresher services bench examples

.PHONY: install proto demo up test tools elasticmq kube lint format bench clean image

# Bytecode compiled ahead, as an installed package has it: otherwise, where PYTHONDONTWRITEBYTECODE is set, every
# process (each worker, each dequeuer, each test's subprocess) would compile what it imports at each start.
install: $(STAMP) $(GENERATED)
	@$(PY) -m compileall -q thresher services examples bench

# editable_mode=compat: the project on sys.path through a path in a .pth file, not setuptools' import hook, which
# every Python process of the venv would load at start (9% of a worker's start).
$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

proto: $(GENERATED)

# mypy-protobuf's plugins write the stubs mypy reads: messages (`--mypy_out`) and the gRPC stubs and servicers
# (`--mypy_grpc_out`, which `--pyi_out` does not cover).
$(GENERATED) &: $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=quiet:. \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=quiet:. $(PROTOS)

demo: install
	$(PY) -m examples.demo

up: install
	$(VENV)/bin/thresher up

# A fixture that cannot be had does not stop the other tests: the tests that need it fail and say why.
test: install tools
	@$(MAKE) --no-print-directory elasticmq || echo "make test: could not fetch ElasticMQ; its tests will say so"
	@$(MAKE) --no-print-directory kube || echo "make test: could not build the Kubernetes control plane; tests/kube will say so"
	$(PY) -m pytest -q

# Test tools that are not Python packages, from Debian (as root): promtool (prometheus) for the alerting rules'
# tests; chromium and its chromedriver for the console's browser tests (tests/browser), which never fetch a browser.
tools:
	@command -v promtool >/dev/null || $(call apt_install,prometheus) || \
		echo "make tools: could not install promtool (Debian's prometheus); its tests will say so"
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || $(call apt_install,chromium chromium-driver) || \
		echo "make tools: could not install Debian's chromium and chromium-driver; tests/browser will say so"

apt_install = { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null; }

# ElasticMQ, the second (strict) SQS server of the tests: its jars from Maven Central through mvn, once, cached
# outside the repository (~/.cache/thresher/elasticmq-<version>/).
elasticmq:
	@tests/fixtures/fetch-elasticmq.sh >/dev/null

# A real Kubernetes control plane for tests/kube (kube-apiserver, kube-controller-manager, etcd), built from the Go
# module proxy once and cached in ~/.cache/thresher: 15-25 minutes the first time, nothing after.
kube:
	tests/fixtures/build-kube.sh

# mypy --strict (configured in pyproject.toml) checks the types; the generated stubs come from `make proto`.
lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports
	$(VENV)/bin/mypy $(TYPED)

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: install
	$(PY) -m bench $(if $(QUICK),--quick)

IMAGE_TAG ?= dev

# The Thresher image (every service and the dequeuer) and the textstats example worker on top of it.
image:
	@if docker info >/dev/null 2>&1; then \
		docker build -t thresher:$(IMAGE_TAG) . && \
		docker build -f examples/textstats/Dockerfile --build-arg BASE=thresher:$(IMAGE_TAG) \
			-t thresher-example-textstats:$(IMAGE_TAG) . ; \
	else \
		echo "make image: no Docker engine here (docker info failed); nothing built."; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache thresher/v1/*_pb2*.py thresher/v1/*_pb2*.pyi

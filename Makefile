# The two commands a fresh machine needs: `make demo` and `make test`. Each creates or refreshes the
# local virtual environment (.venv) and installs the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench cluster docs lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# llama.cpp for the GGUF export tests: built from source once for a portable CPU baseline (.ci/llama-cpp)
	.ci/llama-cpp $(PY) \
		|| echo "llama-cpp-python could not be built; the llama.cpp export tests will be skipped" >&2
	# compressed-tensors for the int8 export tests: pulls in torch (several GB, about 2 min once; pip caches it)
	$(PY) -m pip install --quiet -e '.[int8-test]' \
		|| echo "compressed-tensors could not be installed; the int8 export tests will be skipped" >&2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/grokweights demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) tests/bench/bench_verify.py

# Root only, Linux: hosts in network namespaces on shaped links, every scenario of docs/cluster.md (~8 min).
# Results and plots go to build/cluster; `make cluster PUBLISH=1` also copies them to the tracked docs/cluster.
cluster: $(STAMP)
	$(PY) -m tests.cluster --out build/cluster $(if $(PUBLISH),--publish docs/cluster)

docs: $(STAMP)
	$(PY) -m grokweights.cli._docs > docs/cli.md

lint: $(STAMP)
	$(VENV)/bin/ruff check grokweights tests

clean:
	rm -rf $(VENV) .pytest_cache

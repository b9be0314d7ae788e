# election-operator: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CRD := crds/electionpolicies.election.dev.yaml

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## Build everything, start the local control plane, install with Helm, show a leader and a failover
	e2e/demo

.PHONY: demo-stop
demo-stop: ## Stop the demo and the local control plane
	e2e/cluster down

.PHONY: test
test: check-free lint rules unit e2e ## Everything CI runs: lint, rule tests, unit tests, e2e tests on the real control plane

# Stops make test at once, before minutes of lint and build, while the demo holds the cluster.
.PHONY: check-free
check-free:
	@e2e/cluster check-free

.PHONY: lint
lint: ## cargo fmt --check, clippy -D warnings, helm lint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	e2e/bin/helm lint --strict charts/election-operator
	e2e/bin/helm lint --strict charts/election-operator --set prometheusRule.enabled=true,metrics.serviceMonitor.enabled=true,legacyLocks.enabled=true,leaderPodLabel.enabled=true,grafanaDashboard.enabled=true
	@# Renders without --kube-version: e2e/bin/helm assumes the Kubernetes its client-go is for.
	e2e/bin/helm template election-operator charts/election-operator >/dev/null

.PHONY: rules
rules: ## promtool check and unit tests of the chart's alert rules (Prometheus built from its Go module)
	e2e/check-rules

.PHONY: unit
unit: ## Unit tests of the operator (no cluster needed)
	cargo test -p election-operator

.PHONY: e2e
e2e: ## End-to-end tests: starts the local control plane, runs them, stops it
	e2e/run-tests

.PHONY: bench
bench: check-free ## Benchmark: N=100, 1000 and 10000 policies, 5000 noise Leases, next to kube-state-metrics
	e2e/run-bench

.PHONY: crd
crd: ## Regenerate the CRD (and its chart and kustomize copies) from src/api.rs
	cargo run --quiet --bin crdgen > $(CRD)
	cp $(CRD) charts/election-operator/crds/
	cp $(CRD) config/crd/bases/

.PHONY: cluster-up
cluster-up: ## Start the local control plane (etcd, kube-apiserver, kube-controller-manager)
	e2e/cluster up

.PHONY: cluster-down
cluster-down: ## Stop it and delete its data
	e2e/cluster down

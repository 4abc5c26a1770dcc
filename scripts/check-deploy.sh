#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/k8s against the Kubernetes API
# schema (strict: unknown fields are errors) with kubernetes-validate from
# PyPI, which ships the schemas (no cluster, no network at check time).
# certificate.yaml is a cert-manager custom resource, outside that schema;
# tests/e2e/deploy.rs checks it structurally.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'kubernetes-validate>=1.31,<2'
fi
kubernetes-validate --strict --quiet deploy/k8s/service.yaml deploy/k8s/mend-config.yaml deploy/k8s/statefulset.yaml
echo "deploy/k8s: schema check passed"

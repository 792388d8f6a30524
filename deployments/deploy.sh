#!/usr/bin/env bash
# Deploy every bvh-ops deployment to the Prefect API in PREFECT_API_URL (idempotent).
#   PREFECT_API_URL=http://127.0.0.1:4200/api deployments/deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}
export BVH_OPS_PROJECT_DIR=${BVH_OPS_PROJECT_DIR:-$PWD}
# Create the process work pool once; an existing pool is kept as it is.
if ! "$PREFECT" work-pool inspect bvh-ops >/dev/null 2>&1; then
  "$PREFECT" work-pool create bvh-ops --type process
fi
"$PREFECT" --no-prompt deploy --all

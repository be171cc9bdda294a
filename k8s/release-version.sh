#!/usr/bin/env bash
# k8s/release-version.sh vX.Y.Z: prints X.Y.Z, the version a release tag publishes, once
# charts/flashsale/Chart.yaml says the same. Its version is the chart's OCI tag, and its
# appVersion the image tag the chart runs by default: a mismatch would publish a chart that
# pulls an image nobody pushed. release.yml runs this first.
set -euo pipefail

tag=${1:?usage: k8s/release-version.sh vX.Y.Z}
chart=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/charts/flashsale/Chart.yaml

# SemVer without build metadata: OCI tags cannot hold "+".
[[ $tag =~ ^v([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)$ ]] ||
  { echo "release tag $tag is not v<major>.<minor>.<patch>[-<pre-release>]" >&2; exit 1; }
version=${BASH_REMATCH[1]}

# A top-level scalar of Chart.yaml, quotes removed.
field() { awk -F': *' -v key="$1" '$1 == key { gsub(/["'"'"']/, "", $2); print $2 }' "$chart"; }

for key in version appVersion; do
  found=$(field "$key")
  [[ $found == "$version" ]] ||
    { echo "release tag $tag, but Chart.yaml's $key is ${found:-missing}: make them agree" >&2; exit 1; }
done
echo "$version"

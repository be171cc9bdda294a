#!/usr/bin/env bash
# The command-line tools the kind e2e run, ci.yml's chart job and the release use, at the
# versions k8s/versions.env pins, whatever the machine has installed:
#
#   k8s/tools.sh install   kind, kubectl, helm and ct into $FLASHSALE_TOOLS/bin (default
#                          ~/.cache/flashsale-tools/bin), each checked against the checksum its
#                          project publishes; prints that directory (a step appends it to
#                          $GITHUB_PATH, k8s/e2e.sh puts it first in PATH). Kept between runs:
#                          a version is downloaded once.
#   k8s/tools.sh env       the KEY=value lines of k8s/versions.env (for $GITHUB_ENV)
#
# The checksums come from the same release as the files: they catch a truncated or corrupted
# download, not a compromised release.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=k8s/versions.env
source "$here/versions.env"

home=${FLASHSALE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/flashsale-tools}

log() { echo "==> $*" >&2; }
die() {
  echo "k8s/tools.sh: $*" >&2
  exit 1
}

os=$(uname -s | tr '[:upper:]' '[:lower:]')
case $(uname -m) in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "no $(uname -m) builds of the tools" ;;
esac

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

# download URL SUMS_URL FILE: URL into FILE, checked against SUMS_URL, which holds either the
# bare hash or "hash  name" lines (then the line naming URL's file).
download() {
  local url=$1 sums=$2 file=$3 expected actual
  curl -fsSL --retry 5 --retry-delay 2 -o "$file" "$url"
  expected=$(curl -fsSL --retry 5 --retry-delay 2 "$sums" |
    awk -v name="${url##*/}" 'NF == 1 { print $1; exit } { sub(/^\*/, "", $2) } $2 == name { print $1; exit }')
  actual=$(sha256 "$file")
  [[ -n $expected && $expected == "$actual" ]] || die "$url: sha256 $actual, published ${expected:-nothing}"
}

# fetch_TOOL DIR: put the tool's executable into DIR.
fetch_kind() {
  local url=https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-$os-$arch
  download "$url" "$url.sha256sum" "$1/kind"
}

fetch_kubectl() {
  local url=https://dl.k8s.io/release/$KUBECTL_VERSION/bin/$os/$arch/kubectl
  download "$url" "$url.sha256" "$1/kubectl"
}

fetch_helm() {
  local url=https://get.helm.sh/helm-$HELM_VERSION-$os-$arch.tar.gz
  download "$url" "$url.sha256sum" "$1/helm.tar.gz"
  tar -xzf "$1/helm.tar.gz" -C "$1" --strip-components 1 "$os-$arch/helm"
  rm "$1/helm.tar.gz"
}

fetch_ct() {
  local release=https://github.com/helm/chart-testing/releases/download/v$CT_VERSION
  download "$release/chart-testing_${CT_VERSION}_${os}_$arch.tar.gz" "$release/checksums.txt" "$1/ct.tar.gz"
  tar -xzf "$1/ct.tar.gz" -C "$1" ct
  rm "$1/ct.tar.gz"
}

# install_tool NAME VERSION: $home/tools/NAME-VERSION/NAME, linked as $home/bin/NAME.
install_tool() {
  local name=$1 version=$2 dir=$home/tools/$1-$2 partial
  if [[ ! -x $dir/$name ]]; then
    log "$name $version"
    partial=$(mktemp -d "$home/tools/.partial.XXXXXX")
    "fetch_$name" "$partial"
    chmod +x "$partial/$name"
    rm -rf "$dir"
    mv "$partial" "$dir"
  fi
  ln -sfn "$dir/$name" "$home/bin/$name"
}

case ${1:-} in
  install)
    mkdir -p "$home/bin" "$home/tools"
    install_tool kind "$KIND_VERSION"
    install_tool kubectl "$KUBECTL_VERSION"
    install_tool helm "$HELM_VERSION"
    install_tool ct "$CT_VERSION"
    echo "$home/bin"
    ;;
  env) grep -E '^[A-Z0-9_]+=' "$here/versions.env" ;;
  *) die "usage: k8s/tools.sh install|env" ;;
esac

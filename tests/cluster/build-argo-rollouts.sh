#!/usr/bin/env bash
# Builds Argo Rollouts' controller from its Go module github.com/argoproj/argo-rollouts, for the
# scale benchmark's side-by-side run only (tests/examples/scale-bench.rs --controller argo): CI
# neither runs nor needs it. Into the same cache as build.sh:
#   <cache>/argo-rollouts-<version>/rollouts-controller
#   <cache>/argo-rollouts-<version>/crds/*.yaml   (the module's manifests/crds)
#
# Its go.mod has replace directives (k8s.io/* pinned to one minor), which apply only in the main
# module, so like Traefik in build.sh it is built inside a copy of its downloaded module with its
# own go.mod and go.sum. One change: when its go.mod asks for a newer Go patch release than the
# local toolchain, the copy's `go` line is lowered to the local version, because no other
# toolchain can be had here (GOTOOLCHAIN=local); a patch release changes no language feature.
#
# Usage: tests/cluster/build-argo-rollouts.sh   prints the output directory on its last line.
# Env:   SLUICE_CACHE (default ~/.cache/sluice), ARGO_ROLLOUTS_VERSION (default below)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
version=${ARGO_ROLLOUTS_VERSION:-v1.10.2}
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
out="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/argo-rollouts-$version"

say() { printf '[build-argo-rollouts %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -x "$out/rollouts-controller" && -f "$out/crds/.complete" ]]; then
  say "cached"
  echo "$out"
  exit 0
fi

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
started=$SECONDS
say "downloading github.com/argoproj/argo-rollouts@$version"
# `go mod download -json` reports an error when the module's go line is newer than the toolchain,
# after it has downloaded and extracted the module: the Dir is what is wanted.
src_dir=$({ GOFLAGS=-mod=mod go mod download -json "github.com/argoproj/argo-rollouts@$version" || true; } |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir", ""))')
if [[ -z $src_dir ]]; then
  zip=$(go env GOMODCACHE)/cache/download/github.com/argoproj/argo-rollouts/@v/$version.zip
  [[ -f $zip ]] || { echo "github.com/argoproj/argo-rollouts@$version could not be downloaded" >&2; exit 1; }
  unpack=$(mktemp -d)
  trap 'rm -rf "$unpack"' EXIT
  (cd "$unpack" && python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall()' "$zip")
  src_dir="$unpack/github.com/argoproj/argo-rollouts@$version"
fi

work="$out/src"
rm -rf "$work"
mkdir -p "$out"
cp -R "$src_dir" "$work"
chmod -R u+w "$work"

local_go=$(go env GOVERSION)
local_go=${local_go#go}
wanted_go=$(cd "$work" && go mod edit -json | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')
if [[ $(printf '%s\n%s\n' "$wanted_go" "$local_go" | sort -V | tail -1) != "$local_go" ]]; then
  say "its go.mod asks for go $wanted_go; building with the local go $local_go"
  (cd "$work" && go mod edit -go="$local_go")
fi

say "downloading its dependencies"
(cd "$work" && go mod download)
say "building ./cmd/rollouts-controller (several minutes on a cold cache)"
pkg=github.com/argoproj/argo-rollouts
ldflags="-s -w -X $pkg/utils/version.version=${version#v}"
ldflags+=" -X $pkg/utils/version.buildDate=1970-01-01T00:00:00Z"
ldflags+=" -X $pkg/utils/version.gitCommit=module-$version -X $pkg/utils/version.gitTreeState=clean"
ldflags+=" -X $pkg/utils/version.gitTag=$version"
(cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$out/rollouts-controller.tmp" ./cmd/rollouts-controller)
mv "$out/rollouts-controller.tmp" "$out/rollouts-controller"

rm -rf "$out/crds"
mkdir -p "$out/crds"
install -m 0644 "$work"/manifests/crds/*-crd.yaml "$out/crds/"
touch "$out/crds/.complete"
rm -rf "$work"
say "built in $((SECONDS - started))s"
echo "$out"

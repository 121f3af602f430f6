#!/usr/bin/env bash
# Renders a kustomize directory with what this machine has, for the Kubernetes manifests' test
# (tests/integration/k8s-manifests.integration.test.ts) and for people:
#
#   bash scripts/kustomize.sh build deploy/k8s/overlays/async   # the rendered YAML on stdout
#   bash scripts/kustomize.sh install                            # the pinned kustomize, when none is here
#   bash scripts/kustomize.sh which                              # the command `build` would use
#
# In order: $TIDEMARK_KUSTOMIZE (a kustomize binary), `kubectl kustomize` (kubectl 1.32 embeds
# kustomize v5.5.0), `kustomize` on PATH, then .tools/bin/kustomize. `install` builds kustomize
# v5.5.0, the version kubectl 1.32 embeds, from its Go module (`go install`, about 90 s on 2
# cores) into .tools/bin, only when none of the others is there: a machine's kubectl may come from
# a package that a fresh machine does not have. `build` exits 3 when nothing can render.
set -euo pipefail
cd "$(dirname "$0")/.."
KUSTOMIZE_VERSION=v5.5.0
LOCAL=.tools/bin/kustomize

renderer() {
  if [ -n "${TIDEMARK_KUSTOMIZE:-}" ]; then
    echo "$TIDEMARK_KUSTOMIZE build"
  elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    echo "kubectl kustomize"
  elif command -v kustomize >/dev/null 2>&1; then
    echo "kustomize build"
  elif [ -x "$LOCAL" ]; then
    echo "$LOCAL build"
  else
    return 1
  fi
}

case "${1:-}" in
  which)
    renderer || { echo "kustomize.sh: no kubectl, kustomize or $LOCAL; run: bash scripts/kustomize.sh install" >&2; exit 3; }
    ;;
  build)
    [ -n "${2:-}" ] || { echo "usage: kustomize.sh build DIR" >&2; exit 2; }
    command=$(renderer) || { echo "kustomize.sh: no kubectl, kustomize or $LOCAL; run: bash scripts/kustomize.sh install" >&2; exit 3; }
    # shellcheck disable=SC2086 # the command is two words
    exec $command "$2"
    ;;
  install)
    if command=$(renderer); then
      echo "kustomize.sh: using $command (nothing to install)" >&2
      exit 0
    fi
    if ! command -v go >/dev/null 2>&1; then
      echo "kustomize.sh: no kubectl or kustomize, and no Go to build kustomize $KUSTOMIZE_VERSION" >&2
      exit 1
    fi
    echo "kustomize.sh: building kustomize $KUSTOMIZE_VERSION into .tools/bin (go install)..." >&2
    mkdir -p .tools/bin
    GOBIN="$PWD/.tools/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    "$LOCAL" version >&2
    ;;
  *)
    echo "usage: kustomize.sh build DIR | install | which" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# The CI recipe's one build command (docs/ci.md), the same on every CI system and in its test
# (tests/test_ci_recipe.py):
#   docs/ci/build.sh upload    PATTERN...   # main branch: build, and publish what ran to the remote cache
#   docs/ci/build.sh read-only PATTERN...   # pull requests: use the remote cache, write nothing to it
#   docs/ci/build.sh local     PATTERN...   # no credentials (a fork's pull request): no remote cache
# The remote cache is the workspace's [remote] table (WORKSPACE.toml). Environment, all optional:
#   MBUILD_REMOTE_CACHE  a gs:// URL that overrides [remote].url
#   MBUILD_EVENTS        the events file (JSON lines; default mbuild-events.jsonl), worth keeping as an artifact
#   MBUILD               the command (default "uv run mbuild")
set -euo pipefail
mode=${1:-}
shift || true
case "$mode" in
    upload) flags=(--remote-upload) ;;
    read-only) flags=(--no-remote-upload) ;;
    local) flags=(--no-remote) ;;
    *) echo "build.sh: the first argument must be upload, read-only or local, not '$mode'" >&2; exit 2 ;;
esac
if (($# == 0)); then
    echo "build.sh: name what to build after '$mode', e.g. //..." >&2
    exit 2
fi
if [[ -n "${MBUILD_REMOTE_CACHE:-}" && "$mode" != local ]]; then
    flags+=(--remote-cache "$MBUILD_REMOTE_CACHE")
fi
read -ra mbuild <<<"${MBUILD:-uv run mbuild}"
exec "${mbuild[@]}" build "${flags[@]}" --events "${MBUILD_EVENTS:-mbuild-events.jsonl}" "$@"

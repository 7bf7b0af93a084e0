#!/usr/bin/env bash
# In-tree consumer test: compiles consumer.cpp against the source tree's public headers
# with exactly the flags README.md documents ("-std=c++20 -I client-lib/include", run from
# the source directory), checks that every qbus header it used came from client-lib/include
# (not from an installed copy or another directory of the tree), and links it with the
# documented "-L <build>/client-lib -lqbus". Registered by tests/include/CMakeLists.txt.
#
# Usage: in_tree.sh SOURCE_DIR CXX LIBQBUS_DIR [SANITIZE]
#   SANITIZE=ON: libqbus was built with ASan/UBSan; the link then needs those runtimes too.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 SOURCE_DIR CXX LIBQBUS_DIR [SANITIZE]" >&2
  exit 2
fi
source_dir=$1 cxx=$2 libdir=$3 sanitize=${4:-OFF}
work=$(mktemp -d "${TMPDIR:-/tmp}/qbus-in-tree-XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
  echo "in-tree consumer test: FAIL: $*" >&2
  exit 1
}
cd "$source_dir"
flags=(-std=c++20 -I client-lib/include)
consumer=tests/include/consumer.cpp

"$cxx" "${flags[@]}" -c "$consumer" -o "$work/consumer.o" ||
  fail "$cxx ${flags[*]} does not compile a consumer of <qbus/client.hpp>"

# The headers it was compiled with: each qbus/ one must be the tree's public one.
"$cxx" "${flags[@]}" -M -MF "$work/deps" "$consumer"
used=$(tr -d '\\' <"$work/deps" | tr ' ' '\n' | grep '/qbus/' | sort -u || true)
[ -n "$used" ] || fail "no qbus header in the dependency list"
while read -r header; do
  case "$header" in
    client-lib/include/qbus/*) ;;
    *) fail "<qbus/...> resolved to $header, outside client-lib/include" ;;
  esac
done <<<"$used"
echo "$used"

san=()
[ "$sanitize" = ON ] && san=("-fsanitize=address,undefined")
"$cxx" "${san[@]}" "$work/consumer.o" -L "$libdir" -lqbus -o "$work/consumer" ||
  fail "cannot link the consumer with -L $libdir -lqbus"
echo "ok"

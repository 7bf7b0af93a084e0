#!/usr/bin/env bash
# Fails when a layer includes one above it: the rule of docs/architecture.md ("Layers" and
# its dependency diagram), checked over every #include line of the non-test sources.
#
#   scripts/check-layers.sh [SOURCE_DIR]     (default: the checkout this script is in)
#
# Each included file is found the way the compiler finds it (beside the including file,
# then on the include directories the CMake targets declare), and its path names its
# layer. A layer may include itself and what the table below lists; anything else is
# reported as FILE:LINE with the offending include, and the script exits 1. A quoted
# include that resolves nowhere is reported too, so a new directory cannot slip past.
# Third-party headers are checked where a layer must stay free of them (the core has no
# sockets, no JSON, no logging; libqbus and the codec depend on nothing but the C++
# library, except that libqbus may use OpenSSL's headers, which are not on the list below:
# it speaks TLS for tls: addresses itself, without Asio). <qbus/async_client.hpp> is a
# layer of its own above libqbus, libqbus-asio: a header compiled into its users' code that
# adapts the Asio-free AsyncEngine to Asio, the one place beside qbusd where Asio may go.
# tests/ is above every layer and is not checked; bench/ sits beside qbusctl
# and may use the test support (tests/support, tests/unit fakes) it is built with.
set -euo pipefail

root=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"}
cd "$root"

# The layer a source path belongs to. <qbus/errc.hpp> is proto's, though it lives with
# libqbus's public headers (proto/CMakeLists.txt says why). The table of limits
# (qbus_config_limits: limits.hpp, limits.def) is data only, below config and the core
# alike, so that both take the defaults from one place without the core using config.
layer_of() {
  case $1 in
    client-lib/include/qbus/errc.hpp) echo proto ;;
    config/include/qbus/config/limits.hpp | config/include/qbus/config/limits.def) echo limits ;;
    proto/*) echo proto ;;
    config/*) echo config ;;
    daemon/src/broker/*) echo broker ;;
    daemon/src/storage/*) echo storage ;;
    daemon/src/net/*) echo net ;;
    daemon/src/admin/*) echo admin ;;
    daemon/src/service/*) echo service ;;
    daemon/src/main.cpp | daemon/src/version.hpp.in) echo qbusd ;;
    client-lib/include/qbus/async_client.hpp) echo libqbus-asio ;;
    client-lib/*) echo libqbus ;;
    cli/*) echo qbusctl ;;
    bridge/*) echo bridge ;;
    bench/*) echo bench ;;
    tests/*) echo tests ;;
    *) echo unknown ;;
  esac
}

# What each layer may include besides itself: the dependency diagram of
# docs/architecture.md, closed over (a layer may use everything below it).
declare -A may_use=(
  [proto]=""
  [limits]="proto"
  [config]="limits proto"
  [broker]="limits proto"
  [storage]="broker limits proto"
  [net]="broker storage limits proto"
  [admin]="net broker storage config limits proto"
  [service]="net broker storage config limits proto"
  [qbusd]="admin service net broker storage config limits proto"
  [libqbus]="proto"
  [libqbus-asio]="libqbus proto"
  [qbusctl]="libqbus proto"
  [bridge]="libqbus config limits proto"
  [bench]="libqbus-asio libqbus broker limits proto tests"
)

# Third-party headers a layer must not include (extended regular expressions over the
# name between < and >).
third_party='^(asio|nlohmann|spdlog|fmt|CLI|systemd)[/.]'
declare -A forbidden=(
  [proto]="$third_party"
  [limits]="$third_party"
  [libqbus]="$third_party"
  [libqbus-asio]='^(nlohmann|spdlog|fmt|CLI|systemd)[/.]'
  [broker]="$third_party|^sys/socket\.h$|^netinet/|^arpa/"
  [storage]="$third_party|^sys/socket\.h$|^netinet/|^arpa/"
  [config]='^(asio|spdlog|fmt|CLI|systemd)[/.]'
)

# Where the CMake targets point the compiler (target_include_directories), in order;
# version.hpp is generated from daemon/src/version.hpp.in.
include_roots=(proto/include client-lib/include config/include daemon/src tests/support tests/unit)

# Prints the repository path of include `name` written in `file`, or nothing.
resolve() {
  local file=$1 name=$2 quoted=$3 dir candidate
  if [[ $quoted == 1 ]]; then
    dir=$(dirname "$file")
    candidate=$(realpath -m --relative-to=. "$dir/$name")
    if [[ -f $candidate ]]; then
      echo "$candidate"
      return
    fi
  fi
  for dir in "${include_roots[@]}"; do
    if [[ -f $dir/$name ]]; then
      realpath -m --relative-to=. "$dir/$name"
      return
    fi
  done
  if [[ $name == version.hpp && -f daemon/src/version.hpp.in ]]; then
    echo daemon/src/version.hpp.in
  fi
}

failures=0
report() {
  echo "$1" >&2
  failures=$((failures + 1))
}

dirs=()
for dir in proto config daemon client-lib cli bridge bench; do
  if [[ -d $dir ]]; then dirs+=("$dir"); fi
done
mapfile -t sources < <(find "${dirs[@]}" -type f \
  \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.hpp.in' \) | sort)

for file in "${sources[@]}"; do
  from=$(layer_of "$file")
  if [[ $from == unknown ]]; then
    report "$file: not in any layer: add it to scripts/check-layers.sh and docs/architecture.md"
    continue
  fi
  allowed=" $from ${may_use[$from]} "
  while IFS=: read -r line text; do
    if [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]]; then
      name=${BASH_REMATCH[1]}
      quoted=1
      spelled="\"$name\""
    elif [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\<([^\>]+)\> ]]; then
      name=${BASH_REMATCH[1]}
      quoted=0
      spelled="<$name>"
    else
      continue
    fi
    target=$(resolve "$file" "$name" "$quoted")
    if [[ -z $target ]]; then
      if [[ $quoted == 1 ]]; then
        report "$file:$line: #include $spelled resolves to no file of this tree"
      elif [[ -n ${forbidden[$from]:-} && $name =~ ${forbidden[$from]} ]]; then
        report "$file:$line: #include $spelled: layer $from must not use this library"
      fi
      continue
    fi
    to=$(layer_of "$target")
    if [[ $allowed != *" $to "* ]]; then
      report "$file:$line: #include $spelled ($target, layer $to): layer $from may use only itself and: ${may_use[$from]:-nothing}"
    fi
  done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$file" || true)
done

if ((failures > 0)); then
  echo "check-layers: $failures include(s) break the layering of docs/architecture.md" >&2
  exit 1
fi
echo "check-layers: ${#sources[@]} files, every include points down"

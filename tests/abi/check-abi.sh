#!/usr/bin/env bash
# Checks libqbus's exported ABI: check-abi.sh LIBQBUS_SO SYMBOL_LIST QBUS_H SOVERSION
#  - the SONAME is libqbus.so.SOVERSION;
#  - the C symbols it exports (qbus_*) are exactly SYMBOL_LIST's, each with its version;
#  - every function qbus.h declares is in SYMBOL_LIST (the header and the list agree);
#  - every other export is C++ in namespace qbus, under the same version node: nothing
#    else (a dependency's or an internal symbol) leaks into the ABI.
set -euo pipefail
lib=$1 list=$2 header=$3 soversion=$4
node="QBUS_${soversion}"
status=0
problem() {
  echo "check-abi: $*" >&2
  status=1
}

soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libqbus.so.${soversion}" ] || problem "SONAME is '$soname', expected libqbus.so.${soversion}"

# Defined dynamic symbols as NAME VERSION ("qbus_send@@QBUS_0" -> "qbus_send QBUS_0").
exports=$(readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && $7 != "ABS" && ($4 == "FUNC" || $4 == "OBJECT") {print $8}' |
  sed -E 's/@@?/ /' | sort -u)

expected=$(grep -v '^#' "$list" | sed '/^$/d' | sort -u)
actual=$(grep -E '^qbus_' <<<"$exports" || true)
if [ "$actual" != "$expected" ]; then
  problem "the C symbols differ from $list (< listed, > exported):"
  diff <(echo "$expected") <(echo "$actual") | grep -E '^[<>]' >&2 || true
fi

declared=$(grep -oE 'QBUS_API [^;]*\bqbus_[a-z0-9_]+\(' "$header" | grep -oE 'qbus_[a-z0-9_]+\($' |
  tr -d '(' | sort -u)
listed=$(awk '{print $1}' <<<"$expected" | sort -u)
if [ "$declared" != "$listed" ]; then
  problem "qbus.h and $list disagree (< declared, > listed):"
  diff <(echo "$declared") <(echo "$listed") | grep -E '^[<>]' >&2 || true
fi

while read -r name version; do
  [ -n "$name" ] || continue
  [ "$version" = "$node" ] || problem "$name has version '${version:-none}', expected $node"
  case $name in
    qbus_*) continue ;;
  esac
  demangled=$(c++filt "$name")
  case $demangled in
    qbus::* | "typeinfo for qbus::"* | "typeinfo name for qbus::"* | "vtable for qbus::"*) ;;
    *) problem "exports $demangled, which is neither the C API nor namespace qbus" ;;
  esac
done <<<"$exports"

count=$(wc -l <<<"$actual")
[ $status -eq 0 ] && echo "check-abi: $soname exports the $count C symbols of $list under $node"
exit $status

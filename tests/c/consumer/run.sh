#!/bin/sh
# Installs cellshm from BUILD_DIR into a scratch prefix (stripped), checks the shared
# library as a distribution would ship it (soname, symlinks, mode, exports, debug info
# split off), then builds and runs a consumer with find_package(cellshm) (shared and
# static) and with pkg-config.
#   run.sh BUILD_DIR CMAKE
set -eu
build=$1
cmake=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$cmake" --install "$build" --prefix "$work/prefix" --strip > "$work/install.log"

fail() { echo "installed library: $*"; exit 1; }
lib=$(dirname "$(find "$work/prefix" -name libcellshm.a)")
version=$(sed -n 's/^project(cellshm VERSION \([0-9.]*\).*/\1/p' "$here/../../../CMakeLists.txt")
major=${version%%.*}
so="$lib/libcellshm.so.$version"
[ -f "$so" ] && [ ! -L "$so" ] || fail "no libcellshm.so.$version"
[ "$(readlink "$lib/libcellshm.so.$major")" = "libcellshm.so.$version" ] || fail "libcellshm.so.$major is not a link to it"
[ "$(readlink "$lib/libcellshm.so")" = "libcellshm.so.$major" ] || fail "libcellshm.so is not a link to libcellshm.so.$major"
[ "$(stat -c %a "$so")" = 755 ] || fail "mode $(stat -c %a "$so"), not 755"
readelf -d "$so" | grep -q "(SONAME).*\[libcellshm.so.$major\]" || fail "soname: $(readelf -d "$so" | grep SONAME)"
others=$(nm -D --defined-only "$so" | awk '$3 !~ /^cellshm_/ {print $3}')
[ -z "$others" ] || fail "exports more than cellshm_*: $(echo $others | head -c 300)"
! readelf -S "$so" | grep -q '\.debug_info' || fail "not stripped"
readelf -S "$so" | grep -q '\.gnu_debuglink' || fail "no .gnu_debuglink"
readelf -S "$so.debug" | grep -q '\.debug_info' || fail "no debug info in libcellshm.so.$version.debug"
! readelf -S "$lib/libcellshm.a" 2>/dev/null | grep -q '\.debug_info' || fail "libcellshm.a not stripped of debug info"
others=$(nm -g --defined-only "$lib/libcellshm.a" 2>/dev/null | awk 'NF == 3 && $3 !~ /^cellshm_/ {print $3}')
[ -z "$others" ] || fail "libcellshm.a defines global symbols besides cellshm_*: $(echo $others | head -c 300)"
echo "installed: libcellshm.so.$version ($(stat -c %s "$so") bytes, soname libcellshm.so.$major, 0755, stripped; debug info in .debug); libcellshm.a ($(stat -c %s "$lib/libcellshm.a") bytes) defines only cellshm_* globally"
"$cmake" -S "$here" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
"$cmake" --build "$work/build" > "$work/build.log"
"$work/build/consumer"
"$work/build/consumer_static"

pc=$(find "$work/prefix" -name cellshm.pc)
export PKG_CONFIG_PATH="$(dirname "$pc")"
libdir=$(pkg-config --variable=libdir cellshm)
${CC:-cc} -Wall -Wextra -Werror -pedantic "$here/consumer.c" $(pkg-config --cflags --libs cellshm) \
    -Wl,-rpath,"$libdir" -o "$work/consumer_pkg_config"
${CC:-cc} -Wall -Wextra -Werror -pedantic "$here/consumer.c" $(pkg-config --cflags --libs cellshm-static) \
    -o "$work/consumer_pkg_config_static"
! readelf -d "$work/consumer_pkg_config_static" | grep -q 'NEEDED.*libcellshm' || fail "cellshm-static.pc linked libcellshm.so"
"$work/consumer_pkg_config_static"
"$work/consumer_pkg_config"
echo "out-of-tree consumers: find_package (shared, static) and pkg-config (cellshm, cellshm-static) all ran"

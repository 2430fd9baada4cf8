#!/bin/sh
# Installs cellshm from BUILD_DIR into a scratch prefix, then builds and runs a consumer
# with find_package(cellshm) (shared and static) and with pkg-config.
#   run.sh BUILD_DIR CMAKE
set -eu
build=$1
cmake=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$cmake" --install "$build" --prefix "$work/prefix" > "$work/install.log"
"$cmake" -S "$here" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
"$cmake" --build "$work/build" > "$work/build.log"
"$work/build/consumer"
"$work/build/consumer_static"

pc=$(find "$work/prefix" -name cellshm.pc)
export PKG_CONFIG_PATH="$(dirname "$pc")"
libdir=$(pkg-config --variable=libdir cellshm)
${CC:-cc} -Wall -Wextra -Werror -pedantic "$here/consumer.c" $(pkg-config --cflags --libs cellshm) \
    -Wl,-rpath,"$libdir" -o "$work/consumer_pkg_config"
"$work/consumer_pkg_config"
echo "out-of-tree consumers: find_package (shared, static) and pkg-config all ran"

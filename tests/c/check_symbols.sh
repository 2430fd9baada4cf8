#!/bin/sh
# Fails unless the cellshm_* functions exported by LIB are exactly those declared in HEADER.
set -eu
lib=$1
header=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^cellshm_/ {print $3}' | sort -u)
declared=$(grep -oE '\bcellshm_[a-z0-9_]+\(' "$header" | tr -d '(' | sort -u)
if [ "$exported" != "$declared" ]; then
    echo "exported but not declared:"; printf '%s\n' "$exported" | grep -vxF "$declared" || true
    echo "declared but not exported:"; printf '%s\n' "$declared" | grep -vxF "$exported" || true
    exit 1
fi
echo "$(printf '%s\n' "$exported" | wc -l) cellshm_* symbols, exported = declared"

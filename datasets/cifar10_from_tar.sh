#!/usr/bin/env bash
# Unpack the offline CIFAR-10 (JPEG image folders: train/<class>/*.jpg, test/<class>/*.jpg) into DEST.
#   bash datasets/cifar10_from_tar.sh [DEST] [TAR]      (TAR: the archive's path, or set CIFAR10_TAR)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/cifar10}
tar=${2:-${CIFAR10_TAR:-}}
if [ -d "$dest/train" ] && [ -d "$dest/test" ]; then echo "$dest already holds CIFAR-10"; exit 0; fi
[ -n "$tar" ] && [ -f "$tar" ] || { echo "error: no CIFAR-10 archive at '$tar' (pass the path of cifar10-jpeg.tar.gz as the second argument, or set CIFAR10_TAR)" >&2; exit 2; }
mkdir -p "$dest"
tar xzf "$tar" -C "$dest"
echo "CIFAR-10 image folders in $dest: $(find "$dest/train" -name '*.jpg' | wc -l) train, $(find "$dest/test" -name '*.jpg' | wc -l) test"

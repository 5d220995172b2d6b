#!/usr/bin/env bash
# Make sure Debian's Fashion-MNIST (dataset-fashion-mnist) is installed; install it when missing.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-data: Fashion-MNIST is missing in $dir and apt-get is not available here;" \
       "put the four IDX files in a folder and pass --data DIR to alexnet train" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-data: Fashion-MNIST is missing in $dir; install it as root:" \
       "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
  exit 1
fi
echo "ensure-data: installing Debian's dataset-fashion-mnist" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq dataset-fashion-mnist >/dev/null

#!/usr/bin/env bash
# Makes sure the Fashion-MNIST IDX files are present (the default, offline dataset).
# As root, installs Debian's dataset-fashion-mnist; otherwise says how to get the data.
set -eu
dir="${JAXROBUST_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
need="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
have() { for f in $need; do [ -s "$dir/$f" ] || return 1; done; }
have && exit 0
if [ "$(id -u)" = 0 ] && [ "$dir" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST not found in $dir: installing Debian's dataset-fashion-mnist ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  have && exit 0
fi
cat >&2 <<MSG
Fashion-MNIST was not found in $dir.
Get it with:   sudo apt-get install dataset-fashion-mnist     (Debian/Ubuntu; files go to /usr/share/datasets/fashion-mnist)
or put the four IDX files ($need)
in a directory of your choice and point at it:   export JAXROBUST_FASHION_MNIST_DIR=/path/to/dir
MSG
exit 1

#!/usr/bin/env bash
# Run here, before a GPU session's first call: puts what benchmarks/gpu_suite.sh needs on the
# device machine (whose image has JAX, Flax, Optax, Orbax and PyTorch, Python 3.12, but neither
# TensorFlow, TFDS, grain nor ml_collections, and no network) into two ignored folders that the
# device tool carries:
#   .whl/           wheels (CPython 3.12, manylinux x86-64) of the TensorFlow-free data path,
#                   the configs and the metrics writer, at the versions tested here, no deps
#                   beyond these (the image has the rest: absl, etils, protobuf, pyarrow, ...)
#   .ref/ISTA-Net/  the reference checkout (github.com/Necolizer/ISTA-Net), for the side by side
#                   runs; give its path as the first argument, or it is exported from the
#                   mirror that `fetch github:Necolizer/ISTA-Net` leaves in /work/.mirror.
# Then: device run with carry [".whl", ".ref"], command `bash benchmarks/gpu_suite.sh PART`.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl .ref
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 grain==0.2.18 array-record==0.8.6 \
  dm-tree==0.1.10 immutabledict==4.3.1 ml-collections==1.1.0 tensorboardX==2.6.5 \
  termcolor==3.3.0 toml==0.10.2 simple-parsing==0.1.9 docstring-parser==0.18.0 \
  portpicker==1.6.0 googleapis-common-protos==1.76.0 importlib-resources==6.5.2
# promise (a TFDS requirement) is published as a source archive only: build its wheel here.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
if [[ $# -ge 1 ]]; then
  rm -rf .ref/ISTA-Net && cp -r "$1" .ref/ISTA-Net
elif [[ ! -f .ref/ISTA-Net/model/ISTANet.py ]]; then
  mkdir -p .ref/ISTA-Net
  git --git-dir /work/.mirror/Necolizer+ISTA-Net/repo archive HEAD | tar -x -C .ref/ISTA-Net
fi
rm -rf .ref/ISTA-Net/.git
du -sh .whl .ref

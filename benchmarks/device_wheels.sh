#!/usr/bin/env bash
# The wheels benchmarks/device.py needs on the lent GPU machine, which reaches no registry: its
# image has Python 3.12, torch, numpy, scipy, numba, scikit-learn, matplotlib, rich, fsspec,
# tifffile, xxhash, pytest and hypothesis, but none of these. Run here, in the repository root:
#
#     bash benchmarks/device_wheels.sh            # -> .whl/ (ignored by git, about 23 MB)
#
# then one device call carrying .whl: `bash benchmarks/device_run.sh` (RESULTS.md, "GPU device
# check"). PYTHON_VERSION (3.12) and DEST (.whl) override the defaults. typer and pydantic come
# too: the image lists typer (version unknown) without pydantic, which the typer tested here needs.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${DEST:-.whl}
version=${PYTHON_VERSION:-3.12}
platforms=()
for p in manylinux1 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
    manylinux_2_31 manylinux_2_34 manylinux_2_35; do
    platforms+=(--platform "${p}_x86_64")
done
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp "${platforms[@]}" -d "$dest" \
    webdataset==1.0.2 braceexpand==0.1.7 \
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
    dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 \
    tornado==6.6.1 zict==3.0.0 \
    kornia==0.9.0 kornia-rs==0.2.0 monai==1.6.1 mrcfile==1.5.4 \
    typer==0.29.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5
du -sh "$dest"

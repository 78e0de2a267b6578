#!/usr/bin/env bash
# The one command for the lent GPU machine (the device tool's `run`, carrying .whl, made here by
# benchmarks/device_wheels.sh):
#
#     bash benchmarks/device_run.sh            # timeout_s 560: device.py's budget is 450 s
#
# Installs the carried wheels beside the image's torch, runs benchmarks/device.py, and leaves in
# $OUT what comes back (at most 8 files): device.md, device.json and every log in logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/device-out}
work=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 benchmarks/device.py --out "$work" "$@"
code=$?
mkdir -p "$out"
cp "$work"/device.md "$work"/device.json "$out"/ 2>/dev/null
tar czf "$out/logs.tgz" -C "$work" .
cat "$work/device.md"
exit $code

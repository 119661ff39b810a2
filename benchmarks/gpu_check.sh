#!/usr/bin/env bash
# Issue 11's GPU check, prepared for a session that is lent a GPU machine (see DEVELOPERS.md); it needs one to run.
#
# 1. Here, in the repository root, once (needs PyPI and the data):
#        benchmarks/gpu_check.sh prepare [DATA_DIR]
#    writes .gpu/ (ignored by git): wheels of the pure-Python packages the GPU machine's image lacks (fastai and
#    what it imports, at this repository's pinned versions, for that machine's Python 3.12), and a CIFAR-100 subset
#    in the npz-arrays format, small enough to travel (the whole set is 161 MB; one call carries at most 64 MiB).
# 2. With the device tool, one call:
#        run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=560)
#    It installs the wheels, runs `cifar-study bench --data-paths` for every model (per-image PIL path and batched
#    path, model FLOP utilisation, projected hours of plan `all`), then trains resnet_20 with the `full` profile for
#    as many epochs as its time budget fits, on the subset. Everything lands in $OUT: data_paths.json, bench.log,
#    train.log and the run folder's record.json. Each stage has its own time limit, so that the call ends in time
#    and leaves room for a second try.
# 3. Put the tables, the GPU's name, the date and this command in benchmarks/RESULTS.md; commit the record.
set -euo pipefail

TRAIN_IMAGES=${TRAIN_IMAGES:-12000}   # first images of each split: the re-split stores them class-balanced
TEST_IMAGES=${TEST_IMAGES:-4000}
BENCH_SECONDS=${BENCH_SECONDS:-300}
TRAIN_SECONDS=${TRAIN_SECONDS:-180}   # the run's whole time limit; its training budget is TRAIN_BUDGET
TRAIN_BUDGET=${TRAIN_BUDGET:-90}
# what `import cifar_study.cli, cifar_study.training, cifar_study.bench` loads that the GPU image lacks (its package
# list is in the device tool's KINDS.md), at requirements.txt's versions; fastprogress imports fasthtml.common
WHEELS="fastai==2.8.12 fastcore==2.2.41 fastprogress==1.1.6 fastdownload==0.0.8 fasttransform==0.0.5
        plum-dispatch==2.9.0 beartype==0.23.1 python-fasthtml==0.14.14 starlette==1.10.0 itsdangerous==2.2.0
        python-multipart==0.0.34 defusedxml==0.7.1"

prepare() {
    local data_dir=${1:-../shared/data/cifar100}
    mkdir -p .gpu/wheels .gpu/cifar100
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels $WHEELS
    .venv/bin/python - "$data_dir" "$TRAIN_IMAGES" "$TEST_IMAGES" <<'EOF'
import hashlib, json, sys
from pathlib import Path
import numpy as np
from cifar_study.data import find_cifar100, load_split

source, out = find_cifar100(sys.argv[1], download=False), Path('.gpu/cifar100')
counts = dict(train=int(sys.argv[2]), test=int(sys.argv[3]))
files = {}
for split, n in counts.items():
    data = load_split(source, split)
    np.savez_compressed(out/f'{split}.npz', images=data.images[:n], fine_labels=data.labels[:n].astype(np.uint8))
    files[f'{split}.npz'] = dict(count=n, sha256=hashlib.sha256((out/f'{split}.npz').read_bytes()).hexdigest())
meta = dict(name=f"{source.name}, first {counts['train']} train and {counts['test']} test images", files=files)
(out/'meta.json').write_text(json.dumps(meta, indent=1))
print(meta['name'], '->', out)
EOF
    du -sh .gpu
}

check() {
    local out=${OUT:-benchmarks/gpu}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpu/site .gpu/wheels/*.whl
    export PYTHONPATH=$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    python3 -c 'import torch, fastai; print("torch", torch.__version__, "fastai", fastai.__version__, torch.cuda.get_device_name())' \
        | tee -a "$out/gpu.txt"
    # every model, both data paths; loader workers for the per-image path, as a GPU run would use them
    timeout "$BENCH_SECONDS" python3 -m cifar_study.cli bench --data-paths --batch-size 1024 --steps 8 --warmup 3 \
        --num-workers 12 --out "$out/data_paths.json" 2>&1 | tee "$out/bench.log" || echo "bench: stopped (status $?)"
    # resnet_20 under `full` (bf16, channels-last, torch.compile, batched augmentation) for TRAIN_BUDGET seconds
    timeout "$TRAIN_SECONDS" python3 -m cifar_study.cli train resnet_20 --profile full --budget-s "$TRAIN_BUDGET" \
        --data-dir .gpu/cifar100 --out .gpu/runs --force 2>&1 | tee "$out/train.log" || echo "train: stopped (status $?)"
    # $OUT returns files at most two folders down, and not the checkpoint's size: the record alone comes back (its
    # paths relative to the repository, as a run inside it stores them)
    cp .gpu/runs/full/resnet_20*/seed0/record.json "$out/record.json" || echo "train: no record written"
}

case "${1:-check}" in
    prepare) prepare "${2:-}" ;;
    check) check ;;
    *) echo "usage: $0 [prepare [DATA_DIR] | check]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The GPU check and tables, in one command, for a CUDA machine that may have no network.
#
#   benchmarks/gpu.sh wheels      # on a machine with the network: the pure-Python wheels the run needs, in .whl/
#   benchmarks/gpu.sh run [OUT]   # on the GPU machine, from the repository root: tables and logs into OUT
#
# "run" keeps the machine's own CUDA build of torch and installs the carried wheels (gymnasium,
# stable-baselines3, minari, tyro and their missing needs) into a private folder, checks nvidia-smi and
# torch.cuda, runs the CUDA-only tests, then prints the tables of benchmarks/speed.py on the GPU: the
# rollout step per class and number of environments (eager, CUDA graph, forward pass alone), the training
# step per class and batch size, and the lvm's graph under TF32 and torch.compile. Everything is also
# written to OUT (default: gpu-out/) as it is produced, so a run cut short keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(gymnasium==1.4.0 stable-baselines3==2.9.2 minari==0.5.4 tyro==1.0.17 docstring-parser==0.18.0
    typeguard==4.6.1 farama-notifications==0.0.6)

case "${1:-run}" in
wheels)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls .whl
    ;;
run)
    OUT_DIR=${2:-${OUT:-gpu-out}}
    mkdir -p "$OUT_DIR"
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/lvm_site \
            .whl/*.whl || { echo "error: installing the carried wheels failed" >&2; exit 1; }
        export PYTHONPATH=/tmp/lvm_site
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    {
        date -u +"%Y-%m-%d %H:%M UTC"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
        python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
    } 2>&1 | tee "$OUT_DIR/gpu.txt" || exit 1
    python3 -m pytest -p no:cacheprovider -k cuda -rs tests/test_rollout_device.py 2>&1 | tee "$OUT_DIR/cuda_tests.txt"
    python3 benchmarks/speed.py --device cuda --tables rollout training variants \
        --policy lvm --policies lvm gmm autoregressive gaussian flow diffusion bet \
        --envs 1024 4096 16384 65536 262144 1048576 --other-envs 1024 65536 1048576 \
        --batch-sizes 512 2048 8192 32768 65536 --variant-envs 65536 1048576 --compile \
        2>&1 | tee "$OUT_DIR/gpu_tables.md"
    ;;
*)
    echo "error: usage: benchmarks/gpu.sh wheels | run [OUT]" >&2
    exit 2
    ;;
esac

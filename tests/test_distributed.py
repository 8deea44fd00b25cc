"""Training across processes: torchrun with 2 ranks on the CPU (gloo on loopback) ends with the weights of a
single-process run with the same global batch; rank 0 alone writes the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _train(out: Path, demos: Path, ranks: int, batch: int = 256) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    cmd = (launcher if ranks > 1 else [sys.executable]) + [str(ROOT / "scripts/train_bc.py"), "--demos", str(demos)]
    cmd += ["--policy", "gmm", "--steps", "40", "--batch-size", str(batch), "--eval-every", "0", "--out", str(out)]
    cmd += ["--final-eval-episodes", "50", "--device", "cpu", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # three trainings in subprocesses, about 25 s
def test_two_ranks_end_with_the_single_process_weights(tmp_path, small_demos):
    from safetensors.torch import load_file

    one, two = _train(tmp_path / "one", small_demos, 1), _train(tmp_path / "two", small_demos, 2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "best" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    # the comparison can fail: half the batch in one process (what each rank computes alone) ends elsewhere
    assert _train(tmp_path / "half", small_demos, 1, batch=128).returncode == 0
    c = load_file(str(tmp_path / "half" / "best" / "model.safetensors"))
    assert max(float((c[k] - a[k]).abs().max()) for k in a) > 1e-3
    assert two.stdout.count("trained in") == 1  # rank 0 alone reports
    lines = (tmp_path / "two" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "log.jsonl").read_text().splitlines())  # one writer

"""Interrupted work and numerical health, through the command lines."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lvm_policy import list_policies
from lvm_policy.data import load_demonstrations
from lvm_policy.errors import DatasetError
from lvm_policy.policies import policy_class
from tests.conftest import ROOT
from tests.test_cli import SMALL, assert_one_line_error, run


def test_killed_collection_leaves_no_dataset(tmp_path):
    out = tmp_path / "demos"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "scripts/collect_demos.py", "--episodes", "20000", "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".collect-*/**/*.hdf5")):
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(DatasetError):
        load_demonstrations(out)


@pytest.mark.slow
def test_training_across_seeds_stays_finite(small_demos):
    """Every class, 10 seeds, the training step of train.py on real demonstrations: all terms stay finite.

    The same check over full trainings on the default data is ``scripts/check_numerics.py`` (results/numerics.md).
    """
    from lvm_policy import make_policy
    from lvm_policy.train import TrainConfig, gradient_step, make_optimizer

    demos = load_demonstrations(small_demos)
    cfg = TrainConfig(steps=30, batch_size=256)
    for name in list_policies():
        for seed in range(10):
            torch.manual_seed(seed)
            policy = make_policy(name, 3, 2)
            windows = demos.windows(policy.config.obs_horizon, policy.config.action_horizon)
            policy.fit_normalizer(demos.obs, demos.act, demos.act[windows.act_index])
            opt, _ = make_optimizer(policy, cfg)
            for step in range(cfg.steps):
                policy.on_train_step(step)
                if policy.segments_per_batch() is None:
                    batch = windows.gather(demos.obs, demos.act, torch.randint(len(demos.obs), (cfg.batch_size,)))
                else:  # a class that learns from whole episodes
                    episodes = torch.randint(demos.num_episodes, (policy.segments_per_batch(),))
                    batch = windows.gather_episodes(demos.obs, demos.act, episodes)
                logs, grad_norm = gradient_step(policy, opt, *batch[:2], cfg.grad_clip, batch[2])
                logs["grad_norm"] = float(grad_norm)
                assert all(math.isfinite(v) for v in logs.values()), (name, seed, step, logs)
            assert all(bool(torch.isfinite(p).all()) for p in policy.parameters()), (name, seed)


@pytest.mark.slow  # trains every class twice through the script (about 30 s alone)
def test_check_numerics_script_reports_every_run(small_demos, tmp_path):
    r = run(
        "scripts/check_numerics.py",
        "--seeds",
        "0",
        "1",
        "--steps",
        "20",
        "--eval-episodes",
        "20",
        "--demos",
        str(small_demos),
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    import json

    records = json.loads((tmp_path / "numerics.json").read_text())
    assert sorted((x["policy"], x["seed"]) for x in records) == sorted(
        (name, seed) for name in list_policies() for seed in (0, 1)
    )
    assert all(x["healthy"] and math.isfinite(x["loss_max"]) for x in records)
    assert all(math.isfinite(x["nll"]) == policy_class(x["policy"]).has_density for x in records)
    table = (tmp_path / "numerics.md").read_text()
    assert all(f"| {name} | 2/2 |" in table for name in list_policies())


def test_divergence_stops_with_a_message_and_keeps_good_weights(small_demos, tmp_path):
    out = tmp_path / "diverge"
    r = run(
        "scripts/train_bc.py",
        "--policy",
        "gmm",
        "--demos",
        str(small_demos),
        "--out",
        str(out),
        *SMALL,
        "--lr",
        "1e12",
        "--steps",
        "200",
    )
    assert_one_line_error(r, "loss became")
    from lvm_policy import load_policy

    for folder in ("latest", "best"):
        if (out / folder).exists():  # whatever was saved is a good policy
            p = load_policy(out / folder)
            assert all(bool(torch.isfinite(v).all()) for v in p.state_dict().values() if v.is_floating_point())
    assert not (out / "metrics.json").exists()


def test_training_stops_at_a_perfect_periodic_evaluation(small_demos, tmp_path, monkeypatch):
    """A periodic evaluation with the highest score there is (every episode a success, mode TV within 0.05) ends
    training there: best/ is that checkpoint, latest/ stops at that step, the log says why and metrics.json records
    the step. With --no-stop-when-perfect the run trains all its steps."""
    import json

    from lvm_policy import train as train_module
    from lvm_policy.train import TrainConfig, train

    summarize = train_module.summarize

    def perfect_from_step_40(r, reference):  # the real summary, made perfect from the second evaluation on
        metrics = summarize(r, reference)
        if len(calls) >= 1:
            metrics.update(success_rate=1.0, mode_tv=0.01)
        calls.append(metrics["success_rate"])
        return metrics

    monkeypatch.setattr(train_module, "summarize", perfect_from_step_40)
    common = dict(demos=str(small_demos), policy="gmm", steps=100, batch_size=128, eval_every=20, eval_episodes=50,
                  final_eval_episodes=100, progress=False, device="cpu")  # fmt: skip
    calls: list[float] = []
    metrics = train(TrainConfig(out=tmp_path / "stopped", **common))
    assert metrics["stopped_at"] == 40 and len(calls) == 2
    state = json.loads((tmp_path / "stopped" / "latest" / "train_state.json").read_text())
    assert state["step"] == 40 and state["best_score"] == 1.0
    log = [json.loads(line) for line in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "stop" and log[-1]["step"] == 40
    calls.clear()
    metrics = train(TrainConfig(out=tmp_path / "full", stop_when_perfect=False, **common))
    assert metrics["stopped_at"] is None and len(calls) == 5
    assert json.loads((tmp_path / "full" / "latest" / "train_state.json").read_text())["step"] == 100

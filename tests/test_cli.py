"""The command lines end to end with small settings: outputs, resume after SIGKILL, and bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lvm_policy import load_policy
from tests.conftest import ROOT

SMALL = [
    "--steps",
    "60",
    "--batch-size",
    "128",
    "--eval-every",
    "20",
    "--eval-episodes",
    "50",
    "--final-eval-episodes",
    "100",
    "--log-every",
    "10",
    "--no-progress",
    "--device",
    "cpu",
]


def run(*args, timeout=240, env=None):
    env = env or dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def run_many(*commands: tuple) -> list[subprocess.CompletedProcess]:
    """Independent command lines (each a tuple of run's arguments), two one-thread processes at a time; results in
    order. Most of a refused command's time is Python importing torch, which two cores can do twice at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: run(*args), commands))


def assert_one_line_error(r, *words):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def trained_run(small_demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gmm"
    r = run("scripts/train_bc.py", "--policy", "gmm", "--demos", str(small_demos), "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    return out


def test_train_bc_writes_a_complete_run(trained_run):
    for name in (
        "config.json",
        "demo_stats.json",
        "metrics.json",
        "log.jsonl",
        "latest/model.safetensors",
        "latest/train_state.safetensors",
        "best/model.safetensors",
        "best/config.json",
    ):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in (
        "success_rate",
        "success_ci95",
        "mean_return",
        "collision_rate",
        "off_road_rate",
        "mean_episode_length",
        "episodes",
        "mode_shares",
        "demo_mode_shares",
        "mode_tv",
        "modes_covered",
        "mode_calibration_error",
        "switches_per_episode",
        "nll",
        "outcome_distance",
    ):
        assert key in metrics, key
    assert metrics["env_id"] == "TreeAvoid-v0" and metrics["engine"] == "torch"
    config = json.loads((trained_run / "config.json").read_text())
    assert config["environment"]["id"] == "TreeAvoid-v0" and "Box" in config["environment"]["action_space"]
    assert config["lr"] == 1e-3  # the class's own rate, resolved before it is recorded
    log = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    assert {"train", "eval"} <= {r["kind"] for r in log} <= {"train", "eval", "stop"} and "nll" in log[0]
    assert load_policy(trained_run).name == "gmm"


@pytest.mark.slow  # end to end (about 40 s / 15 s); the default suite stays under 5 minutes
def test_evaluate_json_and_gym_mode_agree(trained_run, tmp_path):
    r = run("scripts/evaluate.py", str(trained_run), "--episodes", "2000", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    batched = json.loads(r.stdout)
    r = run(
        "scripts/evaluate.py",
        str(trained_run),
        "--episodes",
        "300",
        "--json",
        "--sb3",
        "--video",
        str(tmp_path / "v.gif"),
    )
    assert r.returncode == 0, r.stderr
    gym_m = json.loads(r.stdout)
    assert (tmp_path / "v.gif").stat().st_size > 1000
    # Both are estimates of the same probabilities: they agree within sampling noise (4 standard errors).
    for key in ("success_rate", "collision_rate"):
        p = batched[key]
        se = (p * (1 - p) / 300 + p * (1 - p) / 2000) ** 0.5
        assert abs(gym_m[key] - p) <= 4 * se + 0.01, (key, gym_m[key], p)
    # episode lengths agree too (a tiny policy mostly crashes, so lengths carry more signal than sides)
    assert abs(gym_m["mean_episode_length"] - batched["mean_episode_length"]) <= 0.1 * batched["mean_episode_length"]
    p, q = batched["mode_shares"][0], gym_m["mode_shares"][0]
    crossed = 300 * (1 - gym_m["collision_rate"] - gym_m["off_road_rate"])
    if crossed >= 50 and p == p and q == q:  # both defined and enough crossings to compare
        assert abs(q - p) <= 4 * (p * (1 - p) / crossed) ** 0.5 + 0.02


@pytest.mark.slow  # end to end (about 40 s / 15 s); the default suite stays under 5 minutes
def test_resume_after_sigkill_matches_an_uninterrupted_run(small_demos, tmp_path):
    args = ["--policy", "lvm", "--demos", str(small_demos), *SMALL, "--steps", "200", "--eval-every", "40"]
    args.append("--no-stop-when-perfect")  # both runs train all 200 steps
    full = tmp_path / "full"
    assert run("scripts/train_bc.py", *args, "--out", str(full)).returncode == 0
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "scripts/train_bc.py", *args, "--out", str(killed)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = killed / "latest" / "train_state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.is_file() and json.loads(state.read_text())["step"] >= 80):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = json.loads(state.read_text())["step"]
    assert 80 <= step < 200, step  # killed mid-run
    r = run("scripts/train_bc.py", "--resume", str(killed), "--no-progress")
    assert r.returncode == 0, r.stderr
    # the trained weights, the averaged weights and the optimizer state, and the selected best/
    for file in ("latest/model.safetensors", "latest/train_state.safetensors", "best/model.safetensors"):
        a, b = load_file(str(full / file)), load_file(str(killed / file))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file

    # and the resumed run's last periodic evaluation is the uninterrupted one's (the default lvm's categorical
    # episode latent has no prior to refit: the refit is tested with the Gaussian one in test_temporal.py)
    def evals(run_dir):
        return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if '"eval"' in line]

    last_full, last_killed = evals(full)[-1], evals(killed)[-1]
    assert last_full["step"] == last_killed["step"] == 200
    assert last_full["score"] == last_killed["score"] and "refit_seconds" not in last_full


def test_bad_options_and_inputs_fail_with_one_line(small_demos, trained_run, tmp_path):
    out = str(tmp_path / "x")
    demos = ["--demos", str(small_demos), "--out", out, *SMALL]
    before = (trained_run / "best" / "model.safetensors").read_bytes()
    missing, steps, batch, ema, episodes, existing, unknown = run_many(
        ("scripts/train_bc.py", "--demos", str(tmp_path / "missing"), "--out", out, *SMALL),
        ("scripts/train_bc.py", *demos, "--steps", "0"),
        ("scripts/train_bc.py", *demos, "--batch-size", "0"),
        ("scripts/train_bc.py", *demos, "--ema-decay", "1"),
        ("scripts/evaluate.py", str(trained_run), "--episodes", "-5"),
        ("scripts/train_bc.py", "--policy", "gmm", "--demos", str(small_demos), "--out", str(trained_run), *SMALL),
        ("scripts/train_bc.py", "--policy", "nope", "--out", out),
    )
    assert_one_line_error(missing, "not found")
    assert_one_line_error(steps, "--steps")
    assert_one_line_error(batch, "--batch-size")
    assert_one_line_error(ema, "--ema-decay")
    assert_one_line_error(episodes, "--episodes")
    # an existing run is never overwritten
    assert_one_line_error(existing, "--resume")
    assert (trained_run / "best" / "model.safetensors").read_bytes() == before
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr


def test_damaged_foreign_and_pickled_checkpoints_are_refused(trained_run, tmp_path):
    import shutil

    from lvm_policy import make_policy

    truncated = tmp_path / "truncated"
    shutil.copytree(trained_run / "best", truncated)
    w = truncated / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])

    edited = tmp_path / "edited"
    shutil.copytree(trained_run / "best", edited)
    cfg = json.loads((edited / "config.json").read_text())
    cfg["config"]["hidden_dim"] = 7
    (edited / "config.json").write_text(json.dumps(cfg))

    foreign = tmp_path / "foreign"
    make_policy("gmm", 5, 2).save(foreign)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    marker = tmp_path / "pwned"
    payload = (
        f"import pickle, os\nclass P:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"
    )
    subprocess.run(
        [sys.executable, "-c", payload + f"pickle.dump(P(), open('{pickled / 'model.pt'}', 'wb'))"], check=True
    )
    shutil.copy(trained_run / "best" / "config.json", pickled / "config.json")

    evaluate = ("scripts/evaluate.py",)
    results = run_many(
        (*evaluate, str(truncated), "--episodes", "10"),
        (*evaluate, str(edited), "--episodes", "10"),
        (*evaluate, str(foreign), "--episodes", "10"),
        (*evaluate, str(foreign), "--episodes", "10", "--env", "TreeAvoid-v0"),
        (*evaluate, str(trained_run), "--episodes", "10", "--env", "not_a_package:Nope-v0"),
        (*evaluate, str(pickled), "--episodes", "10"),
    )
    truncated_r, edited_r, foreign_r, foreign_env_r, unknown_env_r, pickled_r = results
    assert_one_line_error(truncated_r, "model.safetensors")
    assert_one_line_error(edited_r, "do not match")
    assert_one_line_error(foreign_r, "no environment recorded")
    assert_one_line_error(foreign_env_r, "size 5")
    assert unknown_env_r.returncode == 2
    assert_one_line_error(unknown_env_r, "not_a_package")
    assert_one_line_error(pickled_r, "refusing")
    assert not marker.exists()


@pytest.mark.parametrize(
    "name,edit,message",
    [
        ("nan", lambda d: d.actions[2].__setitem__((3, 0), float("nan")), "NaN"),
        ("outside", lambda d: d.actions[0].__setitem__((1, 1), 3.0), "outside the action space"),
        ("shape", lambda d: d.actions.__setitem__(0, np.zeros((len(d.actions[0]), 3), np.float32)), "shape"),
        ("dtype", lambda d: d.actions.__setitem__(0, np.zeros(d.actions[0].shape, np.int64)), "dtype"),
    ],
)
def test_invalid_dataset_through_the_cli(tmp_path, name, edit, message):
    from tests.test_data import _bad

    bad = _bad(tmp_path, name, edit)
    r = run("scripts/train_bc.py", "--demos", str(bad), "--out", str(tmp_path / "r"), *SMALL)
    assert_one_line_error(r, str(bad), message)
    assert not (tmp_path / "r").exists()


def test_corrupt_dataset_through_the_cli(small_demos, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(small_demos, bad)
    f = bad / "data" / "main_data.hdf5"
    f.write_bytes(f.read_bytes()[:5000])
    r = run("scripts/train_bc.py", "--demos", str(bad), "--out", str(tmp_path / "r"), *SMALL)
    assert_one_line_error(r, str(bad), "cannot read")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # four evaluations through the script (about 10 s): the default run stays under 5 minutes
def test_sweep_sampling_table_and_bad_values(trained_run, tmp_path):
    """One trained run evaluated under two values of an acting option, another held fixed; bad values fail."""
    out = tmp_path / "sweep.md"
    args = ["scripts/sweep_sampling.py", str(trained_run), "--episodes", "20", "--device", "cpu"]
    r = run(*args, "--option", "max_std", "--values", "0.5", "2", "--fixed", "min_std=0.05", "--out", str(out))
    assert r.returncode == 0, r.stderr
    table = out.read_text()
    assert "min_std = 0.05" in table and "| 0.5 |" in table and "| 2.0 |" in table
    assert_one_line_error(run(*args, "--option", "max_std", "--values", "1", "--fixed", "bogus=1"), "--fixed")
    assert_one_line_error(run(*args, "--option", "num_components", "--values", "2.5"), "whole numbers")


def test_diagnose_slalom_choices_refuses_other_tasks(trained_run):
    """The diagnosis reads Slalom's observations: a TreeAvoid run fails with one line."""
    r = run("scripts/diagnose_slalom_choices.py", str(trained_run), "--episodes", "5")
    assert_one_line_error(r, "not a run on Slalom")


def test_chunked_policy_trains_saves_and_plays_through_both_paths(small_demos, tmp_path):
    """The temporal options through train_bc, the saved config, the batched evaluation and SB3's predict loop."""
    out = tmp_path / "chunked"
    options = ["--gmm.obs-horizon", "2", "--gmm.action-horizon", "4", "--gmm.action-steps", "2"]
    r = run("scripts/train_bc.py", "--policy", "gmm", "--demos", str(small_demos), "--out", str(out), *SMALL, *options)
    assert r.returncode == 0, r.stderr
    policy = load_policy(out)
    c = policy.config
    assert (c.obs_horizon, c.action_horizon, c.action_steps, policy.chunk_dim) == (2, 4, 2, 8)
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["nll"])
    r, r_sb3, whole, too_many = run_many(
        ("scripts/evaluate.py", str(out), "--episodes", "1000", "--json", "--device", "cpu"),
        ("scripts/evaluate.py", str(out), "--episodes", "200", "--json", "--sb3"),
        ("scripts/evaluate.py", str(out), "--episodes", "100", "--json", "--device", "cpu", "--action-steps", "4"),
        ("scripts/evaluate.py", str(out), "--episodes", "100", "--action-steps", "5"),
    )
    assert r.returncode == 0, r.stderr
    batched = json.loads(r.stdout)
    assert r_sb3.returncode == 0, r_sb3.stderr
    sb3 = json.loads(r_sb3.stdout)
    assert batched["action_steps"] == 2 and json.loads(whole.stdout)["action_steps"] == 4  # whole chunks
    assert_one_line_error(too_many, "--action-steps 5", "action_steps")
    p = batched["success_rate"]
    se = (p * (1 - p) / 200 + p * (1 - p) / 1000) ** 0.5
    assert abs(sb3["success_rate"] - p) <= 4 * se + 0.01, (sb3["success_rate"], p)
    length = batched["mean_episode_length"]
    assert abs(sb3["mean_episode_length"] - length) <= 0.1 * length


def test_diagnose_maze_decision_refuses_other_tasks(trained_run):
    """The diagnosis reads the three-route maze's observations: a TreeAvoid run fails with one line."""
    r = run("scripts/diagnose_maze_decision.py", str(trained_run), "--samples", "2")
    assert_one_line_error(r, "not a run on PointMazeThreeRoutes-v0")

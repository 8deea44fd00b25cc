import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from envs.collect import rollout_expert, write_minari
from lvm_policy.data import load_demonstrations
from lvm_policy.errors import DatasetError
from tests.conftest import ROOT


def test_collected_dataset_loads_as_tensors(small_demos):
    d = load_demonstrations(small_demos)
    assert d.num_episodes == 200
    assert d.obs.dtype == torch.float32 and d.obs.shape[1] == 3 and d.act.shape[1] == 2
    assert d.obs.shape[0] == d.act.shape[0] == d.episode.shape[0]
    assert 0.35 < d.mode_shares(2)[0] < 0.65
    assert set(d.recorded) == {"context", "mode", "outcome", "success"}
    # the recorded crossing point agrees with the recorded side, and the context is the episode's tree offset
    left = d.mode == 0
    assert bool((d.outcome[left] < d.context[left]).all()) and bool((d.outcome[~left] > d.context[~left]).all())
    torch.testing.assert_close(d.context, d.obs[torch.searchsorted(d.episode, torch.arange(200)), 2])
    assert d.env_id == "TreeAvoid-v0" and d.action_space.shape == (2,)
    train, val = d.split(0.1, seed=0)
    assert train.num_episodes == 180 and val.num_episodes == 20
    assert train.obs.shape[0] + val.obs.shape[0] == d.obs.shape[0]


def test_the_dataset_is_a_minari_dataset(small_demos):
    from minari.dataset.minari_dataset import MinariDataset

    ds = MinariDataset(small_demos / "data")
    assert ds.total_episodes == 200 and ds.spec.env_spec.id == "TreeAvoid-v0"


def _bad(tmp_path, name, edit):
    data = rollout_expert(5, seed=0)
    data = copy.deepcopy(data)
    edit(data)
    out = tmp_path / name
    write_minari(data, out, "bad", 0)
    return out


@pytest.mark.parametrize(
    "name,edit,message",
    [
        ("nan", lambda d: d.actions[2].__setitem__((3, 0), np.nan), "NaN"),
        ("inf", lambda d: d.observations[1].__setitem__((0, 1), np.inf), "NaN or infinite"),
        ("outside", lambda d: d.actions[0].__setitem__((1, 1), 3.0), "outside the action space"),
        ("shape", lambda d: d.actions.__setitem__(0, np.zeros((len(d.actions[0]), 3), np.float32)), "shape"),
        ("dtype", lambda d: d.actions.__setitem__(0, np.zeros(d.actions[0].shape, np.int64)), "dtype"),
    ],
)
def test_invalid_datasets_are_named_and_explained(tmp_path, name, edit, message):
    out = _bad(tmp_path, name, edit)
    with pytest.raises(DatasetError) as err:
        load_demonstrations(out)
    assert str(out) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_dataset_that_does_not_fit_its_environment(tmp_path):
    """A dataset whose recorded env has other sizes (TreeAvoid data relabelled as Pendulum) is refused."""
    import json

    from lvm_policy.train import choose_env

    out = _bad(tmp_path, "other", lambda d: None)
    meta_path = out / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["env_spec"] = (
        meta["env_spec"]
        .replace("TreeAvoid-v0", "Pendulum-v1")
        .replace("envs.tree_avoid:TreeAvoidEnv", "gymnasium.envs.classic_control.pendulum:PendulumEnv")
    )
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="Pendulum-v1"):
        choose_env(None, load_demonstrations(out))


def test_missing_truncated_and_empty(tmp_path, small_demos):
    with pytest.raises(DatasetError, match="not found"):
        load_demonstrations(tmp_path / "nope")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_demos, broken)
    f = broken / "data" / "main_data.hdf5"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.raises(DatasetError, match="cannot read"):
        load_demonstrations(broken)
    empty = rollout_expert(1, seed=0)
    for field in ("observations", "actions", "rewards", "terminations", "truncations", "infos"):
        getattr(empty, field).clear()
    try:
        write_minari(empty, tmp_path / "empty", "empty", 0)
    except Exception:
        (tmp_path / "empty" / "data").mkdir(parents=True)
        (tmp_path / "empty" / "data" / "metadata.json").write_text("{}")
    with pytest.raises(DatasetError):
        load_demonstrations(tmp_path / "empty")


def test_collect_demos_cli(tmp_path):
    out = tmp_path / "demos" / "d"
    r = subprocess.run(  # a relative --out, from another working directory
        [
            sys.executable,
            str(ROOT / "scripts" / "collect_demos.py"),
            "--episodes",
            "50",
            "--seed",
            "3",
            "--left-prob",
            "0.8",
            "--out",
            "demos/d",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    d = load_demonstrations(out)
    assert d.num_episodes == 50 and d.mode_shares(2)[0] > 0.6
    bad = subprocess.run(
        [sys.executable, "scripts/collect_demos.py", "--episodes", "-3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "episodes" in bad.stderr
    assert load_demonstrations(out).num_episodes == 50  # nothing lost

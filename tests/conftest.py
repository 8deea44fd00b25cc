import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import envs  # noqa: E402,F401  (registers TreeAvoid-v0)


@pytest.fixture(scope="session")
def small_demos(tmp_path_factory):
    """A 200-episode demonstration dataset written by the real collection code."""
    from envs.collect import collect

    out = tmp_path_factory.mktemp("demos") / "tree_avoid"
    collect(out, episodes=200, seed=1)
    return out

"""Gymnasium-Robotics' MuJoCo PointMaze on maps whose start and goal are joined by equally short routes.

The simulator is Gymnasium-Robotics' own ``PointMazeEnv`` (a force-driven ball, dt 0.01 s, observations a
``Dict`` of ``observation`` (x, y, vx, vy), ``achieved_goal`` and ``desired_goal``, actions a force in
[-1, 1]^2, success within 0.45 of the goal), made on our maps with ``continuing_task=False``: reaching the
goal ends the episode. :class:`RouteModes` only adds the package's mode convention: ``info["mode"]`` is the
route whose own cells the ball entered first (-1 until then), ``metadata["mode_names"]`` names the routes and
``metadata["figure"]`` draws the walls. The maze has no torch twin: it is evaluated through gymnasium's
vector env, the path every user's env takes.

gymnasium-robotics and mujoco are imported only when a maze is made, so every other task works without them.
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

MISSING_DEPENDENCY = (
    "the PointMaze tasks need gymnasium-robotics and mujoco: pip install -c constraints.txt -e '.[maze]'"
)

Cell = tuple[int, int]


@dataclass(frozen=True)
class MazeLayout:
    """A map in Gymnasium-Robotics' notation (1 wall, 0 free, "r" start cell, "g" goal cell; row 0 at the top)
    and its routes: each named by the free cells that only it passes through."""

    maze_map: tuple[tuple[int | str, ...], ...]
    route_names: tuple[str, ...]
    route_cells: tuple[frozenset[Cell], ...]
    max_episode_steps: int

    def find(self, mark: str) -> Cell:
        return next((r, c) for r, row in enumerate(self.maze_map) for c, v in enumerate(row) if v == mark)

    def free(self, cell: Cell) -> bool:
        r, c = cell
        return 0 <= r < len(self.maze_map) and 0 <= c < len(self.maze_map[0]) and self.maze_map[r][c] != 1

    def route_of_cell(self, cell: Cell) -> int:
        """The route whose own cells include ``cell``, or -1 (a shared cell, a wall, outside)."""
        for i, cells in enumerate(self.route_cells):
            if cell in cells:
                return i
        return -1

    def shortest_paths(self) -> list[list[Cell]]:
        """Every shortest 4-connected cell path from the start cell to the goal cell (breadth-first search)."""
        start, goal = self.find("r"), self.find("g")
        dist = {start: 0}
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            for nxt in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if self.free(nxt) and nxt not in dist:
                    dist[nxt] = dist[(r, c)] + 1
                    queue.append(nxt)
        paths: list[list[Cell]] = []

        def extend(path: list[Cell]) -> None:  # walk back from the goal along decreasing distance
            r, c = path[-1]
            if (r, c) == start:
                paths.append(path[::-1])
                return
            for prev in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if dist.get(prev, -2) == dist[(r, c)] - 1:
                    extend(path + [prev])

        extend([goal])
        return paths

    def route_of_path(self, path: list[Cell]) -> int:
        routes = {self.route_of_cell(cell) for cell in path} - {-1}
        if len(routes) != 1:
            raise ValueError(f"a shortest path passes the own cells of {len(routes)} routes: {path}")
        return routes.pop()

    def walls(self) -> list[list[float]]:
        """Wall cells as [x0, y0, width, height] rectangles in the simulator's coordinates (cell size 1)."""
        rows, cols = len(self.maze_map), len(self.maze_map[0])
        return [
            [c - cols / 2, rows / 2 - r - 1, 1.0, 1.0]
            for r in range(rows)
            for c in range(cols)
            if self.maze_map[r][c] == 1
        ]


def _cells(*ranges: tuple[int | range, int | range]) -> frozenset[Cell]:
    out = set()
    for rows, cols in ranges:
        for r in rows if isinstance(rows, range) else [rows]:
            for c in cols if isinstance(cols, range) else [cols]:
                out.add((r, c))
    return frozenset(out)


# Start on the left, goal on the right, a block between: over the top or under the bottom, 8 cells each.
TWO_ROUTES = MazeLayout(
    maze_map=(
        (1, 1, 1, 1, 1, 1, 1),
        (1, 0, 0, 0, 0, 0, 1),
        (1, 0, 1, 1, 1, 0, 1),
        (1, "r", 1, 1, 1, "g", 1),
        (1, 0, 1, 1, 1, 0, 1),
        (1, 0, 0, 0, 0, 0, 1),
        (1, 1, 1, 1, 1, 1, 1),
    ),
    route_names=("top", "bottom"),
    route_cells=(_cells((1, range(1, 6)), (2, 1), (2, 5)), _cells((5, range(1, 6)), (4, 1), (4, 5))),
    max_episode_steps=400,
)

# Start top left, goal bottom right, three corridors of 10 cells: along the top and down the right side,
# down the middle column, or down the left side and along the bottom. Two decisions: at the start (right or
# down) and at the middle column's top (right or down).
THREE_ROUTES = MazeLayout(
    maze_map=(
        (1, 1, 1, 1, 1, 1, 1, 1),
        (1, "r", 0, 0, 0, 0, 0, 1),
        (1, 0, 1, 0, 1, 1, 0, 1),
        (1, 0, 1, 0, 1, 1, 0, 1),
        (1, 0, 1, 0, 1, 1, 0, 1),
        (1, 0, 1, 0, 1, 1, 0, 1),
        (1, 0, 0, 0, 0, 0, "g", 1),
        (1, 1, 1, 1, 1, 1, 1, 1),
    ),
    route_names=("top", "middle", "bottom"),
    route_cells=(
        _cells((1, range(4, 7)), (range(2, 6), 6)),
        _cells((range(2, 6), 3)),
        _cells((range(2, 6), 1), (6, range(1, 3))),
    ),
    max_episode_steps=500,
)

LAYOUTS = {"PointMazeTwoRoutes-v0": TWO_ROUTES, "PointMazeThreeRoutes-v0": THREE_ROUTES}


class RouteModes(gym.Wrapper):
    """The mode convention on a PointMaze: ``info["success"]`` and ``info["mode"]`` on every step and at reset."""

    def __init__(self, env: gym.Env, layout: MazeLayout):
        super().__init__(env)
        self.layout = layout
        self.metadata = {
            **env.metadata,
            "mode_names": list(layout.route_names),
            "figure": {
                "xy": [0, 1],  # flattened Dict order: achieved_goal (x, y) first
                "rects": layout.walls(),
                "xlim": [-len(layout.maze_map[0]) / 2, len(layout.maze_map[0]) / 2],
                "ylim": [-len(layout.maze_map) / 2, len(layout.maze_map) / 2],
            },
        }
        self._mode = -1

    def _cell(self, obs: dict[str, np.ndarray]) -> Cell:
        r, c = self.env.unwrapped.maze.cell_xy_to_rowcol(np.asarray(obs["achieved_goal"]))
        return int(r), int(c)

    def _info(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, Any]:
        if self._mode < 0:
            self._mode = self.layout.route_of_cell(self._cell(obs))
        return {**info, "success": bool(info.get("success", False)), "mode": self._mode}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._mode = -1
        return obs, self._info(obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._info(obs, info)


def make_point_maze(maze: str = "PointMazeTwoRoutes-v0", render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """Gymnasium-Robotics' PointMazeEnv on one of :data:`LAYOUTS`' maps, with the route modes added."""
    try:
        # gymnasium_robotics prints a notice about its Adroit envs to stderr on import; it does not concern
        # these mazes, and it would break the command lines' one-line outputs.
        with contextlib.redirect_stderr(io.StringIO()):
            from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv
    except ImportError:
        raise ImportError(MISSING_DEPENDENCY) from None
    layout = LAYOUTS[maze]
    env = PointMazeEnv(
        maze_map=[list(row) for row in layout.maze_map],
        continuing_task=False,
        render_mode=render_mode,
        **kwargs,
    )
    return RouteModes(env, layout)


# ------------------------------------------------------------------------------------------------ the expert
@dataclass
class MazeExpertConfig:
    """A planner over cells and a PD controller that follows the planned cells' centres."""

    route_probs: tuple[float, ...] | None = None
    """probability of each route (default: equal); the route is drawn per episode, then one of its shortest
    cell paths uniformly (random tie-breaking)"""
    kp: float = 10.0
    """force per metre of distance to the waypoint"""
    kd: float = 1.0
    """force per metre per second of velocity (damping)"""
    noise: float = 0.1
    """standard deviation of the Gaussian noise added to the force"""
    switch_radius: float = 0.3
    """distance at which the controller moves on to the next waypoint"""

    def __post_init__(self) -> None:
        if self.route_probs is not None and (min(self.route_probs) < 0 or not np.isclose(sum(self.route_probs), 1)):
            raise ValueError(f"route_probs must be non-negative and sum to 1, got {self.route_probs}")
        if self.noise < 0 or self.kp <= 0 or self.kd < 0 or self.switch_radius <= 0:
            raise ValueError("noise and kd must be >= 0; kp and switch_radius > 0")


class MazeExpert:
    """Plans one of the shortest cell paths per episode (route drawn with ``route_probs``) and drives along it."""

    def __init__(self, layout: MazeLayout, config: MazeExpertConfig, seed: int = 0):
        self.layout, self.config = layout, config
        self.rng = np.random.default_rng(seed)
        paths = layout.shortest_paths()
        self.paths_by_route: list[list[list[Cell]]] = [[] for _ in layout.route_names]
        for path in paths:
            self.paths_by_route[layout.route_of_path(path)].append(path)
        if any(not p for p in self.paths_by_route):
            raise ValueError("every route must be one of the shortest paths from start to goal")
        probs = config.route_probs or tuple(1.0 / len(layout.route_names) for _ in layout.route_names)
        if len(probs) != len(layout.route_names):  # signs and sum: checked by the config
            raise ValueError(f"route_probs must be {len(layout.route_names)} non-negative numbers summing to 1")
        self.probs = np.asarray(probs, dtype=np.float64)
        self.route = -1
        self.waypoints: list[np.ndarray] = []

    def reset(self, env: gym.Env, obs: dict[str, np.ndarray]) -> None:
        self.route = int(self.rng.choice(len(self.probs), p=self.probs))
        options = self.paths_by_route[self.route]
        path = options[int(self.rng.integers(len(options)))]
        maze = env.unwrapped.maze
        self.waypoints = [maze.cell_rowcol_to_xy(np.array(cell)) for cell in path[1:-1]]
        self.waypoints.append(np.asarray(obs["desired_goal"], dtype=np.float64))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        pos, vel = obs["observation"][:2], obs["observation"][2:]
        while len(self.waypoints) > 1 and np.linalg.norm(self.waypoints[0] - pos) < self.config.switch_radius:
            self.waypoints.pop(0)
        c = self.config
        force = c.kp * (self.waypoints[0] - pos) - c.kd * vel + self.rng.normal(0.0, c.noise, 2)
        return np.clip(force, -1.0, 1.0).astype(np.float32)

"""Speed of the package's inner loops, printed as tables. A benchmark, not a test.

    python benchmarks/speed.py                       # CPU, all tables
    python benchmarks/speed.py --tables rollout --policy gmm
    benchmarks/gpu.sh run OUT                        # the GPU tables (rollout, training, variants) and CUDA tests

1. rollout: environment steps per second, policy included. On the CPU: (a) the batched torch env with the
   policy acting on tensors (``obs, *_ = env.step(policy.act(obs))``), (a*) the evaluator's rollout step, which
   also latches each episode's outcome, (b) gymnasium's SyncVectorEnv of the single env with the policy called
   through its SB3 ``predict``, and (c) the policy's forward pass alone on the same batch, which bounds (a).
   On CUDA, per class (``--policies``) and number of environments: the evaluator's step eager and replayed from
   one CUDA graph, and the forward pass alone eager and in a graph. Ratios are from the same run.
1b. classes: the evaluator's rollout step on TreeAvoid's batched twin at ``--class-envs`` environments for every
   class (and the episode-scope lvm): what acting costs per class, relative to the lvm.
1c. chunks: the same evaluation step for every class acting one step at a time (H = Ta = 1) and in chunks
   (H = 16, Ta = 8; the networks emit the whole chunk), and for the chunked policies the two ways of replanning
   the environments whose queue ran out: only those ("subset", a host sync) or all, kept by torch.where ("all",
   capturable in a CUDA graph). Chunked acting makes a network call every Ta steps per environment.
2. variants (CUDA): the lvm's graph-replayed step under float32 matmuls, TF32 matmuls and ``torch.compile``.
3. latency: one ``predict`` call at batch 1 on the CPU, median and p99 in microseconds, per class.
4. generic: environment steps per second of the path every env gets (gymnasium's vector env of the single
   env, 16 async or sync copies, one batched ``policy.act`` per vector step, each episode counted once)
   against SB3's ``evaluate_policy`` on one env (one ``predict`` per step), both on TreeAvoid-v0.
5. maze: where an evaluation step on the MuJoCo PointMaze goes (simulator, vector env, policy).
6. training: samples per second of the training step, per class and batch size (``--batch-sizes``), and the
   time to the success target (first periodic evaluation with success >= 0.99) read from
   runs/compare/tree_avoid/*/log.jsonl when present.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402,F401
from envs.tree_avoid import TreeAvoidEnv, TreeAvoidVectorEnv  # noqa: E402
from lvm_policy import list_policies, make_policy  # noqa: E402
from lvm_policy.rollout import capture_cuda_graph, make_rollout_step  # noqa: E402
from lvm_policy.train import TrainConfig, gradient_step, make_optimizer  # noqa: E402


@dataclass
class Args:
    tables: list[
        Literal[
            "rollout",
            "classes",
            "chunks",
            "variants",
            "latency",
            "generic",
            "training",
            "maze",
            "pixels",
            "episodes",
            "activation",
            "denormals",
            "codebook",
        ]
    ] = field(default_factory=lambda: ["rollout", "classes", "chunks", "latency", "generic", "training"])
    """which tables to print (variants: CUDA only; maze: needs the maze extra, not in the default list)"""
    device: Literal["cpu", "cuda"] = "cpu"
    """device of the batched rollouts and training"""
    policy: str = "lvm"
    """policy class of the rollout table (on CUDA: the class measured at every size in --envs)"""
    policies: list[str] = field(default_factory=lambda: ["lvm"])
    """CUDA rollout table: the classes measured (those other than --policy at the sizes in --other-envs)"""
    envs: list[int] = field(default_factory=lambda: [1, 64, 1024, 16384])
    """batch sizes of the rollout table"""
    class_envs: int = 1024
    """classes and chunks tables: environments of the batched rollout every class is measured on"""
    chunk: list[int] = field(default_factory=lambda: [16, 8])
    """chunks table: the chunked policies' action horizon H and action steps Ta"""
    other_envs: list[int] = field(default_factory=lambda: [1024, 65536, 1048576])
    """CUDA rollout table: the sizes at which the classes other than --policy are measured"""
    variant_envs: list[int] = field(default_factory=lambda: [65536, 1048576])
    """variants table: the sizes measured"""
    compile: bool = False
    """variants table: also measure torch.compile'd acting"""
    batch_sizes: list[int] = field(default_factory=lambda: [TrainConfig.batch_size])
    """training table: minibatch sizes"""
    repeats: int = 5
    """timed repeats per figure (the median is reported)"""
    vision_encoders: list[Literal["conv", "patch", "resnet18"]] = field(default_factory=lambda: ["conv", "patch"])
    """pixels table: the encoders every class is measured with"""
    runs: Path = Path("runs/compare/tree_avoid")
    """run folders to read the time-to-target from"""
    demos: list[Path] = field(
        default_factory=lambda: [Path("demos/slalom_pixels/coupled-v0"), Path("demos/slalom/coupled-v0")]
    )
    """episodes table: the demonstration datasets the default lvm trains on"""
    episode_steps: list[int | None] = field(default_factory=lambda: [None, 64, 32])
    """episodes table: the lvm's --lvm.episode-steps values measured (None: every step)"""
    episode_latents: list[Literal["gaussian", "categorical"]] = field(default_factory=lambda: ["categorical"])
    """episodes table: the lvm's --lvm.episode-latent values measured (categorical: the default)"""
    denormal_demos: Path = Path("demos/tree_avoid/expert-v0")
    """denormals table: the demonstrations every class trains on"""
    denormal_steps: int = 300
    """denormals table: the gradient steps timed from initialisation (denormal gradients come and go in training)"""


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, repeats: int, device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _policy_for(name: str, device: torch.device):
    return make_policy(name, 3, 2).to(device).eval()


def _steps_for(n: int) -> int:
    """Steps per timed repeat: about 400k env steps, at least 8 and at most 200."""
    return max(8, min(200, 400_000 // n))


@torch.no_grad()
def rollout_table(args: Args) -> None:
    if torch.device(args.device).type == "cuda":
        return cuda_rollout_table(args)
    device = torch.device(args.device)
    policy = _policy_for(args.policy, device)
    print(
        f"\n### Rollout throughput: {args.policy}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| envs | (a) batched env + act, steps/s | (a*) evaluation step, steps/s | (b) SyncVectorEnv + predict, steps/s "
        "| (c) forward alone, steps/s | a/c | a*/c | a/b |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.envs:
        steps = _steps_for(n)
        env = TreeAvoidVectorEnv(num_envs=n, device=device)
        obs0, _ = env.reset(seed=0)

        def run_a():  # what a user writes: act on tensors, step the batched env (auto-reset inside)
            obs = obs0
            for _ in range(steps):
                obs, *_ = env.step(policy.act(obs))

        run_a()  # warm-up
        t_a = _median_time(run_a, args.repeats, device)

        # The evaluator's step: the same plus latching each episode's outcome, on fixed buffers.
        _, info0 = env.reset(seed=0)
        step, buffers = make_rollout_step(policy, env, obs0, info0, deterministic=False, record=0)
        step()  # allocate

        def run_eval():
            for _ in range(steps):
                step()

        t_eval = _median_time(run_eval, args.repeats, device)
        obs = buffers["obs"]

        def run_c():
            for _ in range(steps):
                policy.act(obs)

        t_c = _median_time(run_c, args.repeats, device)
        a, a_eval, c = n * steps / t_a, n * steps / t_eval, n * steps / t_c
        b = float("nan")
        if n <= 1024:  # the Python loop over environments: 16,384 of them would take minutes
            cpu_policy = make_policy(args.policy, 3, 2).eval()
            venv = gym.vector.SyncVectorEnv([lambda: TreeAvoidEnv() for _ in range(n)])
            obs_np, _ = venv.reset(seed=0)
            steps_b = max(4, min(100, 20_000 // n))

            def run_b():
                nonlocal obs_np
                for _ in range(steps_b):
                    act, _ = cpu_policy.predict(obs_np)
                    obs_np, *_ = venv.step(act)

            b = n * steps_b / _median_time(run_b, max(3, args.repeats // 2), torch.device("cpu"))
        print(
            f"| {n:,} | {a:,.0f} | {a_eval:,.0f} | {b:,.0f} | {c:,.0f} | {a / c:.2f} | {a_eval / c:.2f} | {a / b:.1f} |"
        )


def _evaluation_rate(policy, n: int, steps: int, repeats: int, device: torch.device, env=None) -> float:
    """Env steps per second of the evaluator's rollout step on a batched twin (TreeAvoid's unless ``env``) with n
    environments."""
    env = env if env is not None else TreeAvoidVectorEnv(num_envs=n, device=device)
    obs0, info0 = env.reset(seed=0)
    step, _ = make_rollout_step(policy, env, obs0, info0, deterministic=False, record=0)
    step()  # allocate

    def run():
        for _ in range(steps):
            step()

    return n * steps / _median_time(run, repeats, device)


@torch.no_grad()
def pixels_table(args: Args) -> None:
    """TreeAvoidPixels-v0's twin drawing its 32 x 32 camera, alone and with every class acting on the pixels
    through each encoder of --vision-encoders (random weights), at --class-envs environments; and each encoder
    alone on that many images."""
    from envs.pixels import TreeAvoidPixelsVectorEnv
    from lvm_policy.policies import policy_class
    from lvm_policy.vision import VISION_ENCODERS, image_slots

    device, n = torch.device(args.device), args.class_envs
    steps = max(8, _steps_for(n) // 8)
    env = TreeAvoidPixelsVectorEnv(num_envs=n, device=device)
    obs, _ = env.reset(seed=0)
    slots = image_slots(env.single_observation_space)
    zeros = torch.zeros(n, 2, device=device)

    def env_only():
        for _ in range(steps):
            env.step(zeros)

    print(
        f"\n### Pixel evaluation step, TreeAvoidPixels-v0 (RGB, 3 x 32 x 32), {n:,} envs, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| what steps | encoder | env steps/s | µs per batched step |")
    print("|---|---|---|---|")
    rate = n * steps / _median_time(env_only, args.repeats, device)
    print(f"| the twin alone (drawing the camera) | | {rate:,.0f} | {n / rate * 1e6:,.0f} |")
    images = obs.float().div(255).sub(0.5)  # (N, 3, 32, 32), as the policies see them
    for encoder in args.vision_encoders:
        net = VISION_ENCODERS[encoder]((3, 32, 32), 64).to(device).eval()
        rate = n * steps / _median_time(lambda: [net(images) for _ in range(steps)], args.repeats, device)
        print(f"| the encoder alone ({n:,} images) | {encoder} | {rate:,.0f} | {n / rate * 1e6:,.0f} |")
    for encoder in args.vision_encoders:
        for name in list_policies():
            config = policy_class(name).config_class(vision_encoder=encoder)
            policy = make_policy(name, 32 * 32 * 3, 2, config, image_slots=slots).to(device).eval()
            rate = _evaluation_rate(policy, n, steps, args.repeats, device, env)
            print(f"| {name} | {encoder} | {rate:,.0f} | {n / rate * 1e6:,.0f} |")


@torch.no_grad()
def classes_table(args: Args) -> None:
    """Every registered class (and the episode-scope lvm) driving the evaluator's rollout step on TreeAvoid's
    batched twin: what acting costs per class at one batch size."""
    from lvm_policy.policies.latent import LatentConfig

    device, n = torch.device(args.device), args.class_envs
    steps = _steps_for(n)
    print(f"\n### Evaluation step per class, TreeAvoid-v0, {n:,} envs, {device}, torch {torch.__version__}")
    print("| policy | steps/s | µs per batched step | relative to lvm |")
    print("|---|---|---|---|")
    rows = [(name, _policy_for(name, device)) for name in list_policies()]
    rows.append(
        (
            "lvm (episode scope)",
            make_policy("lvm", 3, 2, LatentConfig(latent_scope="episode", action_horizon=1, action_steps=1))
            .to(device)
            .eval(),
        )
    )
    rates = {name: _evaluation_rate(policy, n, steps, args.repeats, device) for name, policy in rows}
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {1e6 * n / rate:,.0f} | {rate / rates['lvm']:.2f} |")


def _graph_of(fn):
    """``fn`` captured once in a CUDA graph (after warm-up calls); returns the graph's replay."""
    return capture_cuda_graph(fn, warmup=3).replay


@torch.no_grad()
def cuda_rollout_table(args: Args) -> None:
    """Per class and batch size: the evaluator's rollout step (policy + TreeAvoid twin + outcome latching)
    eager and replayed from one CUDA graph, and the policy's forward pass alone, eager and in a graph."""
    device = torch.device(args.device)
    print(
        f"\n### CUDA rollout throughput, TreeAvoid-v0: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
        f"float32 matmul precision {torch.get_float32_matmul_precision()}"
    )
    print(
        "| policy | envs | (a*) evaluation step eager, steps/s | (g) evaluation step in a CUDA graph, steps/s "
        "| (c) forward alone eager | (cg) forward alone in a graph | g/a* | g/cg |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.policies:
        policy = _policy_for(name, device)
        sizes = args.envs if name == args.policy else [n for n in args.envs if n in args.other_envs]
        for n in sizes:
            steps = _steps_for(n)
            env = TreeAvoidVectorEnv(num_envs=n, device=device)
            obs0, info0 = env.reset(seed=0)
            step, buffers = make_rollout_step(policy, env, obs0, info0, deterministic=False, record=0)
            obs = buffers["obs"]
            out = torch.empty(n, 2, device=device)

            def forward():
                out.copy_(policy.act(obs))

            rates = []
            try:
                for fn in (step, _graph_of(step), forward, _graph_of(forward)):

                    def run(fn=fn):
                        for _ in range(steps):
                            fn()

                    run()
                    rates.append(n * steps / _median_time(run, args.repeats, device))
            except Exception as e:  # noqa: BLE001 - one failing row is reported; the table goes on
                print(f"| {name} | {n:,} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |", flush=True)
                continue
            eager, graph, fwd, fwd_graph = rates
            print(
                f"| {name} | {n:,} | {eager:,.0f} | {graph:,.0f} | {fwd:,.0f} | {fwd_graph:,.0f} "
                f"| {graph / eager:.1f} | {graph / fwd_graph:.2f} |",
                flush=True,
            )
            del env, step, buffers
            torch.cuda.empty_cache()


@torch.no_grad()
def cuda_variants_table(args: Args) -> None:
    """The lvm rollout step in a CUDA graph under float32 matmuls, TF32 matmuls and torch.compile'd acting."""
    device = torch.device(args.device)
    print(
        f"\n### CUDA rollout variants, {args.policy}, TreeAvoid-v0: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    )
    print("| variant | envs | steps/s in a CUDA graph | ratio to float32 |")
    print("|---|---|---|---|")
    variants = [("float32 matmuls", "highest", False), ("TF32 matmuls", "high", False)]
    if args.compile:
        variants.append(("torch.compile(act), float32", "highest", True))
    before = torch.get_float32_matmul_precision()
    for n in args.variant_envs:
        base = None
        for label, precision, compiled in variants:
            torch.set_float32_matmul_precision(precision)
            policy = _policy_for(args.policy, device)
            if compiled:
                policy.act = torch.compile(policy.act, fullgraph=False, dynamic=False)
            steps = _steps_for(n)
            env = TreeAvoidVectorEnv(num_envs=n, device=device)
            obs0, info0 = env.reset(seed=0)
            step, _ = make_rollout_step(policy, env, obs0, info0, deterministic=False, record=0)
            try:
                replay = _graph_of(step)
            except Exception as e:  # noqa: BLE001 - a variant that cannot be captured is reported, not fatal
                print(f"| {label} | {n:,} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} | |", flush=True)
                continue

            def run():
                for _ in range(steps):
                    replay()

            run()
            rate = n * steps / _median_time(run, args.repeats, device)
            base = base or rate
            print(f"| {label} | {n:,} | {rate:,.0f} | {rate / base:.2f} |", flush=True)
        torch.set_float32_matmul_precision(before)


@torch.no_grad()
def latency_table(args: Args) -> None:
    print(f"\n### predict latency at batch 1, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| policy | median µs | p99 µs |")
    print("|---|---|---|")
    obs = np.zeros(3, dtype=np.float32)
    for name in list_policies():
        policy = make_policy(name, 3, 2).eval()
        for _ in range(300):
            policy.predict(obs)
        times = []
        for _ in range(3000):
            t = time.perf_counter()
            policy.predict(obs)
            times.append(time.perf_counter() - t)
        print(f"| {name} | {np.median(times) * 1e6:.0f} | {np.percentile(times, 99) * 1e6:.0f} |")


def generic_table(args: Args) -> None:
    from lvm_policy.evaluate import rollout
    from lvm_policy.gym_eval import rollout_sb3

    print(f"\n### Any env's path: gymnasium vector env vs SB3 evaluate_policy, TreeAvoid-v0, {args.policy}, CPU")
    print("| engine | episodes | env steps/s | ratio to SB3 |")
    print("|---|---|---|---|")
    policy = make_policy(args.policy, 3, 2).eval()
    rows = []
    for label, episodes, run in (
        ("SB3 evaluate_policy, 1 env", 300, lambda n: rollout_sb3(policy, "TreeAvoid-v0", n)),
        (
            "gymnasium sync, 16 envs",
            2000,
            lambda n: rollout(policy, "TreeAvoid-v0", n, engine="gym", vectorization="sync"),
        ),
        (
            "gymnasium async, 16 envs",
            2000,
            lambda n: rollout(policy, "TreeAvoid-v0", n, engine="gym", vectorization="async"),
        ),
    ):
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            r = run(episodes)
            rates.append(float(r.length.sum()) / (time.perf_counter() - t))
        rows.append((label, episodes, statistics.median(rates)))
    for label, episodes, rate in rows:
        print(f"| {label} | {episodes:,} | {rate:,.0f} | {rate / rows[0][2]:.1f} |")


def maze_table(args: Args) -> None:
    """Where an evaluation step of a MuJoCo PointMaze goes: the simulator alone, gymnasium's vector env with
    random actions, the package's evaluation (vector env + one batched ``policy.act`` per step), and the
    policy's forward pass alone at the vector env's batch."""
    from lvm_policy.evaluate import rollout

    env_id, n = "PointMazeTwoRoutes-v0", 16
    policy = make_policy(args.policy, 8, 2).eval()
    print(f"\n### MuJoCo PointMaze evaluation, {env_id}, {args.policy} (random weights), CPU, {n} envs")
    print("| what runs | env steps/s | µs per env step |")
    print("|---|---|---|")
    rows = []
    single = gym.make(env_id)
    single.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (5000, 2)).astype(np.float32)

    def run_single():
        for a in actions:
            _, _, terminated, truncated, _ = single.step(a)
            if terminated or truncated:
                single.reset()

    rows.append(("MuJoCo PointMaze alone (gym.make, 1 env, random actions)", len(actions), run_single))
    for mode in ("sync", "async"):
        venv = gym.make_vec(env_id, num_envs=n, vectorization_mode=mode)
        venv.reset(seed=0)
        batch = actions[: 300 * n].reshape(300, n, 2)

        def run_vector(venv=venv, batch=batch):
            for a in batch:
                venv.step(a)

        rows.append((f"gymnasium {mode} vector env, random actions", batch.shape[0] * n, run_vector))
    for mode in ("sync", "async"):
        counted = {}

        def run_eval(mode=mode, counted=counted):
            r = rollout(policy, env_id, 256, engine="gym", vectorization=mode, num_envs=n, max_episode_steps=200)
            counted["steps"] = int(r.length.sum())

        run_eval()
        rows.append((f"package evaluation: {mode} vector env + policy.act", counted, run_eval))
    obs = torch.randn(n, 8)
    rows.append(("policy.act alone at batch 16", 2000 * n, lambda: [policy.act(obs) for _ in range(2000)]))
    for label, steps, fn in rows:
        fn()  # warm-up (and, for the evaluation rows, the step count)
        seconds = _median_time(fn, max(3, args.repeats // 2), torch.device("cpu"))
        steps = steps["steps"] if isinstance(steps, dict) else steps
        print(f"| {label} | {steps / seconds:,.0f} | {seconds / steps * 1e6:.0f} |", flush=True)
    single.close()


def training_table(args: Args) -> None:
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n### Training (the training loop's gradient step), {where}, torch {torch.__version__}")
    sizes = args.batch_sizes
    print("| policy | " + " | ".join(f"samples/s at batch {b:,}" for b in sizes) + " | time to success >= 0.99 (s) |")
    print("|---|" + "---|" * (len(sizes) + 1))
    obs = torch.randn(200_000, 3, device=device)
    act = torch.rand(200_000, 2, device=device) * 2 - 1
    cfg = TrainConfig()
    for name in list_policies():
        rates = []
        for batch in sizes:
            policy = make_policy(name, 3, 2).to(device)
            opt, _ = make_optimizer(policy, cfg)

            def run(steps=20):
                for _ in range(steps):
                    idx = torch.randint(len(obs), (batch,), device=device)
                    gradient_step(policy, opt, obs[idx], act[idx], cfg.grad_clip)

            run(3)
            rates.append(f"{20 * batch / _median_time(run, args.repeats, device):,.0f}")
        reached = []
        for log in sorted(args.runs.glob(f"{name}-seed*/log.jsonl")):
            evals = [json.loads(line) for line in log.read_text().splitlines() if '"kind": "eval"' in line]
            hit = [e["train_seconds"] for e in evals if e["success_rate"] >= 0.99 and "train_seconds" in e]
            reached.append(f"{hit[0]:.0f}" if hit else "not reached")
        print(f"| {name} | {' | '.join(rates)} | {', '.join(reached) or 'no runs in ' + str(args.runs)} |", flush=True)


@torch.no_grad()
def chunks_table(args: Args) -> None:
    """Every class's evaluation step per step (1/1) and in chunks (H/Ta), replanning a subset or all envs."""
    from lvm_policy.policies import CONFIG_CLASSES

    device, n = torch.device(args.device), args.class_envs
    H, Ta = args.chunk
    steps = max(_steps_for(n), 2 * Ta)
    print(f"\n### Chunked acting, TreeAvoid-v0, {n:,} envs, {device}, torch {torch.__version__}")
    print(f"| policy | Ta = 1: steps/s | H = {H}, Ta = {Ta}, subset: steps/s | all: steps/s | chunked / per step |")
    print("|---|---|---|---|---|")

    def rate(policy) -> float:
        return _evaluation_rate(policy, n, steps, args.repeats, device)

    for name in list_policies():
        torch.manual_seed(0)
        per_step = rate(
            make_policy(name, 3, 2, CONFIG_CLASSES[name](action_horizon=1, action_steps=1)).to(device).eval()
        )
        chunked = make_policy(name, 3, 2, CONFIG_CLASSES[name](action_horizon=H, action_steps=Ta)).to(device).eval()
        by_replan = {}
        for replan in ("subset", "all"):
            chunked.replan = replan
            by_replan[replan] = rate(chunked)
        best = max(by_replan.values())
        print(
            f"| {name} | {per_step:,.0f} | {by_replan['subset']:,.0f} | {by_replan['all']:,.0f} | "
            f"{best / per_step:.1f}x |"
        )


def _policy_on_demos(name: str, config, demos, train_set, device, cfg: TrainConfig):
    """A fresh policy (seed 0) set up as train() sets it up on a dataset: its training windows, normalisers,
    optimizer and minibatch generator."""
    from lvm_policy.vision import image_slots

    torch.manual_seed(0)
    box = demos.action_space
    policy = make_policy(
        name,
        demos.obs.shape[1],
        demos.act.shape[1],
        config,
        box.low.tolist(),
        box.high.tolist(),
        image_slots=image_slots(demos.observation_space),
    ).to(device)
    c = policy.config
    windows = train_set.windows(c.obs_horizon, c.action_horizon)
    policy.fit_normalizer(train_set.obs, train_set.act, train_set.act[windows.act_index])
    opt, _ = make_optimizer(policy, cfg)
    return policy, windows, opt, torch.Generator(device=device).manual_seed(0)


def episodes_table(args: Args) -> None:
    """The default lvm's gradient step on whole demonstration episodes (its two-level ELBO), reading the steps its
    default reads (every step of each minibatch episode with a Gaussian episode latent; the chunk level's
    segment_steps with a categorical one) or --episode-steps random ones, on each dataset of --demos."""
    from lvm_policy.data import load_demonstrations
    from lvm_policy.policies.latent import LatentConfig

    device = torch.device(args.device)
    cfg = TrainConfig()
    print(
        f"\n### The lvm's gradient step on whole episodes, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads (batches of {LatentConfig.segment_batch} episodes)"
    )
    print(
        "| demonstrations | observation | mean episode length | episode latent | episode steps read | ms per step "
        "| vs the default |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder, latent in itertools.product(args.demos, args.episode_latents):
        demos = load_demonstrations(str(folder), device=device)
        train_set, _ = demos.split(0.1, seed=0)
        shape = "x".join(map(str, demos.observation_space.shape or ())) or "dict"
        every = None
        for k in args.episode_steps:
            config = LatentConfig(episode_steps=k, episode_latent=latent)
            policy, windows, opt, gen = _policy_on_demos("lvm", config, demos, train_set, device, cfg)
            c = policy.config

            def run(steps=5):
                for _ in range(steps):
                    idx = torch.randint(train_set.num_episodes, (c.segment_batch,), device=device, generator=gen)
                    obs, act, mask = windows.gather_episodes(train_set.obs, train_set.act, idx)
                    gradient_step(policy, opt, obs, act, cfg.grad_clip, mask)

            run(2)
            ms = _median_time(run, args.repeats, device) / 5 * 1000
            every = ms if k is None else every
            ratio = f"{every / ms:.1f}x" if every is not None else ""
            length = train_set.obs.shape[0] / train_set.num_episodes
            read = k if k is not None else f"default: {policy.steps_drawn_first() or 'every'}"
            print(f"| {folder} | {shape} | {length:.0f} | {latent} | {read} | {ms:.0f} | {ratio} |", flush=True)


def denormals_table(a: Args) -> None:
    """Every class's first --denormal-steps gradient steps from initialisation on real demonstrations (as the training
    loop draws them), with denormal floats computed as they are and flushed to zero (what train() does on the CPU):
    the same seed, so both columns train the same model."""
    from lvm_policy.data import load_demonstrations

    device = torch.device(a.device)
    cfg = TrainConfig()
    demos = load_demonstrations(str(a.denormal_demos), device=device)
    train_set, _ = demos.split(0.1, seed=0)
    print(
        f"\n### The first {a.denormal_steps} gradient steps with and without flushing denormals, {a.denormal_demos}, "
        f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| policy | ms per step, denormals kept | flushed to zero | speed-up |")
    print("|---|---|---|---|")
    for name in list_policies():
        seconds = {}
        for flush in (False, True):
            policy, windows, opt, gen = _policy_on_demos(name, None, demos, train_set, device, cfg)
            segments = policy.segments_per_batch()
            policy.train()
            torch.set_flush_denormal(flush)
            t = time.perf_counter()
            for step in range(a.denormal_steps):
                policy.on_train_step(step)
                if segments is None:
                    idx = torch.randint(train_set.obs.shape[0], (cfg.batch_size,), device=device, generator=gen)
                    batch = windows.gather(train_set.obs, train_set.act, idx)
                else:
                    idx = torch.randint(train_set.num_episodes, (segments,), device=device, generator=gen)
                    batch = windows.gather_episodes(train_set.obs, train_set.act, idx)
                gradient_step(policy, opt, *batch[:2], cfg.grad_clip, batch[2])
            _sync(device)
            seconds[flush] = (time.perf_counter() - t) / a.denormal_steps * 1000
            torch.set_flush_denormal(False)
        print(f"| {name} | {seconds[False]:.1f} | {seconds[True]:.1f} | {seconds[False] / seconds[True]:.1f}x |")


def codebook_table(a: Args) -> None:
    """The default lvm's codebook output layer for each chunk's nearest code, forward and backward as in training
    (segment_batch x segment_steps chunks, episode_codes conditions each, on --denormal-demos' chunks): one weight
    block gathered per row against the rows grouped by code (what training uses)."""
    from lvm_policy.data import load_demonstrations

    device = torch.device(a.device)
    demos = load_demonstrations(str(a.denormal_demos), device=device)
    policy, windows, _, _ = _policy_on_demos("lvm", None, demos, demos, device, TrainConfig())
    c = policy.config
    chunks = demos.act[windows.act_index]  # (N, H, A)
    n = c.segment_batch * c.segment_steps
    rows = torch.randint(chunks.shape[0], (n,), device=device)
    act_n = policy.normalize_act(chunks[rows].flatten(1))  # (n, H A)
    k = torch.cdist(act_n, policy.codebook).argmin(1)  # (n,)
    features = torch.randn(n, c.episode_codes, c.hidden_dim, device=device)

    def timed(f) -> float:
        def run():
            h = features.clone().requires_grad_(True)
            f(h).square().sum().backward()

        run()
        return _median_time(run, max(a.repeats, 20), device) * 1e3

    print(
        f"\n### The codebook output layer in training, {a.denormal_demos}, {device}, {torch.get_num_threads()} threads"
    )
    print(
        "| chunks x conditions | codes used | largest count | gathered per row, ms | grouped by code, ms | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    per_row = timed(lambda h: policy._code_rows_gathered(h, k))
    grouped = timed(lambda h: policy._code_rows_by_code(h, k))
    counts = torch.bincount(k, minlength=c.codebook_size)
    print(
        f"| {n} x {c.episode_codes} | {int((counts > 0).sum())} | {int(counts.max())} | {per_row:.1f} | "
        f"{grouped:.1f} | {per_row / grouped:.1f}x |"
    )


def activation_table(a: Args) -> None:
    """Mish as the fused kernel against the written-out x * tanh(softplus(x)) the networks use on the CPU."""
    from lvm_policy.nets import mish_written_out

    device = torch.device(a.device)
    print(
        "\n| activation input | fused F.mish fwd ms | written-out fwd ms | fused fwd+bwd ms | written-out fwd+bwd ms |"
    )
    print("|---|---|---|---|---|")
    for shape in [(2048, 128), (1024, 256), (16384, 128)]:
        x = torch.randn(*shape, device=device, requires_grad=True)
        g = torch.randn_like(x)
        row = []
        for backward in (False, True):
            for f in (torch.nn.functional.mish, mish_written_out):
                if backward:
                    run = lambda f=f: torch.autograd.grad(f(x), x, g)  # noqa: E731
                else:
                    run = lambda f=f: f(x.detach())  # noqa: E731
                run()
                row.append(_median_time(run, max(a.repeats, 20), device) * 1e3)
        print(f"| {shape} | " + " | ".join(f"{v:.2f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    a = tyro.cli(Args)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    if "variants" in a.tables and a.device != "cuda":
        sys.exit("error: the variants table measures CUDA graphs: use --device cuda")
    tables = {
        "classes": classes_table,
        "chunks": chunks_table,
        "rollout": rollout_table,
        "variants": cuda_variants_table,
        "latency": latency_table,
        "generic": generic_table,
        "training": training_table,
        "maze": maze_table,
        "pixels": pixels_table,
        "episodes": episodes_table,
        "activation": activation_table,
        "denormals": denormals_table,
        "codebook": codebook_table,
    }
    for table in a.tables:
        tables[table](a)

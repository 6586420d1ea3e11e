"""The continual-learning methods of the field, small: each task is learned by Adam on the task's cross-entropy
through its head (core/scenario.py) plus what the method adds. θ* are the weights after the previous task.

    finetune  nothing (the lower bound: it forgets)
    joint     every step also draws from the full training sets of all earlier tasks (the upper bound)
    ewc       online EWC (Schwarz et al. 2018): + λ/2 Σ F (θ − θ*)², F ← γ F + diag Fisher of the task just
              learned (squared gradients of log p(ŷ|x) at the net's own predictions, per image)
    si        Synaptic Intelligence (Zenke et al. 2017): + c Σ Ω (θ − θ*)², Ω += ω / (Δθ² + ξ) with ω the path
              integral −Σ g Δθ of the loss gradient along the task's steps
    lwf       Learning without Forgetting (Li & Hoiem 2017): + the distillation (temperature 2) of the previous
              net's outputs on the current images, through every earlier task's head
    replay    experience replay: M labelled images per earlier task; loss = (1/t) L_task + (1 − 1/t) L_memory
    agem      A-GEM (Chaudhry et al. 2019): the step's gradient g, where it opposes the memory's gradient g_m,
              is projected: g − (g·g_m / g_m·g_m) g_m
    geodesic  the walk of the paper (core/path.py): from the net after the earlier tasks along v = −∇L_task, the
              metric's probe batches drawn from M unlabelled images per earlier task, so that a step that would
              change the earlier tasks' function is expensive, plus a pull ρ|v|p̂ toward that function on the same
              images (objectives.with_pull); its cap on ε decays (cosine) over the task's CPU budget; the first task
              is learned as fine-tuning learns it (nothing to keep)

Replay and A-GEM keep labels with their memory; every method that stores images stores the same M per task.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..core.objectives import LEARN_B, PROBE, PULL_A, BatchSampler, with_pull
from ..core.objectives import learn as learn_field
from ..core.params import flatten, load_flat
from ..core.path import Evaluation, Path, PathConfig
from ..core.scenario import Head
from ..core.split import Split
from ..store.task_kinds import family
from .choices import SEQUENCE_METHODS as METHODS  # noqa: F401 (torch-free: the app shows it; make() checks it)
from .choices import memory_for


@dataclass(frozen=True)
class LearnConfig:
    """How each task is learned (the same for every method) and each method's strength."""

    lr: float = 1e-3
    batch: int = 128
    steps: int = 2000  # Adam steps per task at most (the reference code's 2,000 iterations)
    seconds: float = math.inf  # CPU seconds per task at most (equal budgets across methods)
    memory: int = 100  # images kept per earlier task (replay, A-GEM; the geodesic's unlabelled probe); config_for
    # sets each benchmark's (choices.MEMORY)
    # The strengths below are split-MNIST's; config_for sets each benchmark's (STRENGTHS). Measured on split-MNIST,
    # task scenario, mlp100, 10 CPU s a task, seed 0 (ACC): EWC λ 1e5 0.9514, 1e6 0.9865, 1e7 0.9880 (published
    # 98.64); SI c 10 0.9925, 100 0.9875, 1000 0.9704 (published 99.09)
    ewc_lambda: float = 1e6
    ewc_gamma: float = 1.0
    fisher_images: int = 1000
    si_c: float = 10.0
    si_xi: float = 0.1
    lwf_temperature: float = 2.0
    # β of the geodesic's tangent: the smaller, the more its step keeps to the memory's null space (the constraint
    # |θ|² ≤ ε sets the pace). Seed 0, 10 CPU s a task, ACC: permuted-MNIST β 1e-2 0.8710, 1e-3 0.8754, 1e-4 0.8804
    # (BWT −0.0448), 1e-5 0.8715 (BWT −0.0269, but each task learned less); split-MNIST at 1e-4 against 1e-2:
    # class 0.9091 / 0.8704, domain 0.9427 / 0.9424, task 0.9882 / 0.9843. The cap on ε decays (cosine) to eps_final
    # as the task's CPU budget is spent, so that each task's walk ends in small steps: permuted-MNIST, memory 100,
    # ACC 0.8844 (BWT −0.0427) against 0.8766 (−0.0435) at a constant cap; memory 1000, 0.9054 (−0.0193) against
    # 0.9046 (−0.0210) (seed 0, one run each, side by side)
    path: PathConfig = field(default_factory=lambda: PathConfig(beta=1e-4, eps=0.5, eps_final=0.005, probe=32,
                                                                eval_every=10**9))
    pull: float = 4.0  # ρ of the geodesic's pull toward the earlier tasks' function (split-MNIST's measured)


# Each benchmark's strengths, the best ACC of a grid on seed 0 (bench/bench_sequence_strengths.py,
# bench/results/sequence-strengths.md): the field's reference code tunes them per benchmark too, and a strength
# tuned on one benchmark can cripple a method on another (EWC λ 1e6 on permuted-MNIST: ACC 0.52 against 0.87 at 1e2).
# The geodesic's pull is the best of the grid at its current walk and memory where the grid has it: permuted-MNIST at
# β 1e-4, ε → 0.005, memory 1000, 0.5 (ACC 0.9072, BWT −0.0192; 1, 2, 4, 8 forget less, down to −0.0013 at 8, and
# learn less, ACC 0.9010 to 0.8793); split-MNIST's 4 was measured at β 1e-2 with a constant ε. A sequence of whole
# datasets (mnist,fashion-mnist) takes the walk of `geodesic merge` (experiments/merge.py; bench/results/merge.md):
# lenet60, 150 CPU s a task, seed 0, memory 100: 0.9022 / 0.8867 against 0.9365 / 0.8311 with split-MNIST's walk;
# with the whole of MNIST as its memory (merge's data): 0.9881 / 0.8773 against 0.9887 / 0.8464 at β 1e-4 (merge:
# 0.9891 / 0.8711). Keys that are PathConfig fields (beta, eps_final) set the geodesic's walk.
STRENGTHS: dict[str, dict[str, float]] = {
    "split-mnist": {},
    "permuted-mnist": {"ewc_lambda": 1e2, "si_c": 1.0, "pull": 0.5},
    "datasets": {"pull": 0.5, "beta": 1e-2, "eps_final": 2e-3},
}
WALK_KEYS = frozenset(f.name for f in fields(PathConfig))  # settings of STRENGTHS or config_for that go to the path


def config_for(tasks: str, **changes) -> LearnConfig:
    """The LearnConfig with the benchmark's memory and measured strengths (choices.MEMORY, STRENGTHS), then
    `changes` (a user's settings); those that are PathConfig fields (beta, eps_final, …) set the geodesic's walk."""
    settings = {"memory": memory_for(tasks), **STRENGTHS.get(family(tasks), {}), **changes}
    walk = {k: settings.pop(k) for k in WALK_KEYS if k in settings}
    cfg = replace(LearnConfig(), **settings)
    return replace(cfg, path=replace(cfg.path, **walk))


@dataclass
class Learned:
    """One task of the sequence: its training images (task-applied), the head it was learned through, and the head
    it is read through now (the same in the task and domain scenarios; in the class scenario every class seen so far
    competes, so images kept from it are trained through `current`)."""

    data: Split
    head: Head
    current: Head | None = None

    @property
    def now(self) -> Head:
        return self.current or self.head


@dataclass
class Memory:
    """M images per earlier task with their labels and heads (labels are used only by the methods that may)."""

    items: list[tuple[torch.Tensor, torch.Tensor, Learned]] = field(default_factory=list)

    def add(self, task: Learned, size: int, generator: torch.Generator) -> None:
        idx = torch.randperm(len(task.data), generator=generator)[:size]
        self.items.append((task.data.x[idx], task.data.y[idx], task))

    def loss(self, model: nn.Module, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Mean cross-entropy over a batch drawn evenly from the stored tasks, each through its own head."""
        per = max(1, batch // len(self.items))
        total = 0.0
        for x, y, task in self.items:
            i = torch.randint(len(y), (per,), generator=generator)
            total = total + F.cross_entropy(task.now.logits(model(x[i])), task.now.labels(y[i]))
        return total / len(self.items)


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, head: Head) -> torch.Tensor:
    return F.cross_entropy(head.logits(model(x)), head.labels(y))


class Method:
    """A finetuning learner; the others override what they add. `earlier` are the tasks learned before this one."""

    def __init__(self, cfg: LearnConfig, seed: int):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, head: Head,
             earlier: list[Learned]) -> torch.Tensor:
        return task_loss(model, x, y, head)

    def before_step(self, model: nn.Module, earlier: list[Learned]) -> None:
        """Between backward and the optimizer's step (gradients can be changed here)."""

    def after_step(self, model: nn.Module) -> None:
        pass

    def after_task(self, model: nn.Module, task: Learned) -> None:
        pass


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def anchored(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params(model)]


class Joint(Method):
    def loss(self, model, x, y, head, earlier):
        if not earlier:
            return task_loss(model, x, y, head)
        t = len(earlier) + 1
        old = torch.stack([task_loss(model, *t_.data.batch(self.cfg.batch, self.generator), t_.now)
                           for t_ in earlier]).mean()
        return task_loss(model, x, y, head) / t + old * (1 - 1 / t)


class EWC(Method):
    def __init__(self, cfg, seed):
        super().__init__(cfg, seed)
        self.fisher: list[torch.Tensor] | None = None
        self.star: list[torch.Tensor] | None = None

    def loss(self, model, x, y, head, earlier):
        base = task_loss(model, x, y, head)
        if self.fisher is None:
            return base
        penalty = sum((f * (p - s) ** 2).sum() for f, p, s in zip(self.fisher, params(model), self.star))
        return base + self.cfg.ewc_lambda / 2 * penalty

    def after_task(self, model, task):
        n = min(self.cfg.fisher_images, len(task.data))
        idx = torch.randperm(len(task.data), generator=self.generator)[:n]
        fisher = [torch.zeros_like(p) for p in params(model)]
        model.eval()
        for i in idx.tolist():
            out = task.head.logits(model(task.data.x[i:i + 1]))
            logp = F.log_softmax(out, 1)[0, out.argmax(1).item()]
            grads = torch.autograd.grad(logp, params(model))
            for f, g in zip(fisher, grads):
                f += g.detach() ** 2 / n
        model.train()
        if self.fisher is not None:
            fisher = [self.cfg.ewc_gamma * a + b for a, b in zip(self.fisher, fisher)]
        self.fisher = fisher
        self.star = anchored(model)


class SI(Method):
    def __init__(self, cfg, seed):
        super().__init__(cfg, seed)
        self.omega: list[torch.Tensor] | None = None
        self.star: list[torch.Tensor] | None = None
        self.w: list[torch.Tensor] | None = None
        self.start: list[torch.Tensor] | None = None
        self.prev: list[torch.Tensor] | None = None
        self.grads: list[torch.Tensor] | None = None

    def loss(self, model, x, y, head, earlier):
        if self.w is None:  # the first step of a task
            self.w = [torch.zeros_like(p) for p in params(model)]
            self.start = anchored(model)
        base = task_loss(model, x, y, head)
        if self.omega is None:
            return base
        drift = sum((o * (p - s) ** 2).sum() for o, p, s in zip(self.omega, params(model), self.star))
        return base + self.cfg.si_c * drift

    def before_step(self, model, earlier):
        self.grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params(model)]
        self.prev = anchored(model)

    def after_step(self, model):
        for w, g, p, q in zip(self.w, self.grads, params(model), self.prev):
            w -= g * (p.detach() - q)

    def after_task(self, model, task):
        if self.w is None:  # no step was taken: nothing learned, nothing to protect
            return
        delta = [(p.detach() - s) ** 2 for p, s in zip(params(model), self.start)]
        new = [w / (d + self.cfg.si_xi) for w, d in zip(self.w, delta)]
        self.omega = new if self.omega is None else [a + b for a, b in zip(self.omega, new)]
        self.star, self.w = anchored(model), None


class LwF(Method):
    def __init__(self, cfg, seed):
        super().__init__(cfg, seed)
        self.previous: nn.Module | None = None

    def loss(self, model, x, y, head, earlier):
        out = model(x)
        base = F.cross_entropy(head.logits(out), head.labels(y))
        if self.previous is None:
            return base
        with torch.no_grad():
            old = self.previous(x)
        T = self.cfg.lwf_temperature
        heads = {h.units: h for h in (t.head for t in earlier)}.values()
        distill = torch.stack([F.kl_div(F.log_softmax(h.logits(out) / T, 1), F.softmax(h.logits(old) / T, 1),
                                        reduction="batchmean") * T * T for h in heads]).mean()
        return base + distill

    def after_task(self, model, task):
        self.previous = copy.deepcopy(model).eval()
        for p in self.previous.parameters():
            p.requires_grad_(False)


class Replay(Method):
    def __init__(self, cfg, seed):
        super().__init__(cfg, seed)
        self.memory = Memory()

    def loss(self, model, x, y, head, earlier):
        base = task_loss(model, x, y, head)
        if not self.memory.items:
            return base
        t = len(self.memory.items) + 1
        return base / t + self.memory.loss(model, self.cfg.batch, self.generator) * (1 - 1 / t)

    def after_task(self, model, task):
        self.memory.add(task, self.cfg.memory, self.generator)


class AGEM(Replay):
    def loss(self, model, x, y, head, earlier):
        return task_loss(model, x, y, head)

    def before_step(self, model, earlier):
        if not self.memory.items:
            return
        ps = params(model)
        g = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in ps])
        ref = torch.autograd.grad(self.memory.loss(model, self.cfg.batch, self.generator), ps, allow_unused=True)
        g_ref = torch.cat([r.flatten() if r is not None else torch.zeros(p.numel()) for r, p in zip(ref, ps)])
        projected = project(g, g_ref)
        if projected is not g:
            offset = 0
            for p in ps:
                p.grad = projected[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's step: g − (g·g_ref / g_ref·g_ref) g_ref where g·g_ref < 0, else g itself. All in float64: for a
    memory fit to 1e-20, |g_ref|² underflows float32 to 0, and the ratio g·g_ref / |g_ref|² can pass float32's
    largest number (an infinite, then NaN, step); the projected step is never longer than g."""
    g64, r64 = g.double(), g_ref.double()
    dot, norm2 = torch.dot(g64, r64), torch.dot(r64, r64)
    if not (dot < 0 and norm2 > 0):
        return g
    return (g64 - (dot / norm2) * r64).to(g.dtype)


class Geodesic(Method):
    def __init__(self, cfg, seed):
        super().__init__(cfg, seed)
        self.memory: list[torch.Tensor] = []  # M images per earlier task, no labels

    def walk(self, model: nn.Module, task: Learned, seed: int) -> dict:
        """Walk from the current net along the task's loss under the memory's metric, within the task's budget
        (cfg.seconds of CPU, else cfg.steps), over which its cap on ε decays to eps_final; the steps, CPU seconds,
        the path's status and the cap of its last step."""
        cfg = self.cfg
        kept = torch.cat(self.memory)
        memory = Split(kept, torch.zeros(len(kept), dtype=torch.long), task.data.name, "memory", task.data.source)
        w0 = flatten(model)
        field = with_pull(learn_field(model, BatchSampler.of(task.data, seed + LEARN_B), cfg.batch, task.now),
                          model, w0, BatchSampler.of(memory, seed + PULL_A), cfg.pull, cfg.batch, cfg.path.phi)
        path_cfg = replace(cfg.path, max_steps=cfg.steps, seed=seed)
        ev = Evaluation(task.data.x[:1], task.data.y[:1])
        t0, steps = time.process_time(), 0
        progress = None if math.isinf(cfg.seconds) else lambda: (time.process_time() - t0) / cfg.seconds
        path = Path(model, w0, field, path_cfg, BatchSampler.of(memory, seed + PROBE), ev, [], progress=progress)
        for s in path:
            steps = s.step
        load_flat(model, path.w)
        return {"steps": steps, "seconds": time.process_time() - t0, "status": path.status.value,
                "cap": path.cap(path.at)}

    def after_task(self, model, task):
        idx = torch.randperm(len(task.data), generator=self.generator)[:self.cfg.memory]
        self.memory.append(task.data.x[idx])


CLASSES = {"finetune": Method, "joint": Joint, "ewc": EWC, "si": SI, "lwf": LwF, "replay": Replay, "agem": AGEM,
           "geodesic": Geodesic}


def make(name: str, cfg: LearnConfig, seed: int) -> Method:
    if name not in CLASSES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(CLASSES)}")
    return CLASSES[name](cfg, seed)


def learn(model: nn.Module, method: Method, task: Learned, earlier: list[Learned], seed: int) -> dict:
    """Learn one task: Adam steps on the method's loss until cfg.steps or cfg.seconds of CPU time; then the method
    takes what it keeps of the task. Returns the steps taken and the CPU seconds spent."""
    cfg = method.cfg
    if isinstance(method, Geodesic) and method.memory:
        spent = method.walk(model, task, seed)
        method.after_task(model, task)
        model.eval()
        return spent
    opt = torch.optim.Adam(params(model), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    t0, step = time.process_time(), 0
    model.train()
    while step < cfg.steps and time.process_time() - t0 < cfg.seconds:
        x, y = task.data.batch(cfg.batch, g)
        loss = method.loss(model, x, y, task.head, earlier)
        if not torch.isfinite(loss):
            raise ValueError(f"the {type(method).__name__} loss is {loss.item()} at step {step}; try a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        method.before_step(model, earlier)
        opt.step()
        method.after_step(model)
        step += 1
    method.after_task(model, task)
    model.eval()
    return {"steps": step, "seconds": time.process_time() - t0}

"""The continual-learning baselines against oracles: SI's path integral against the loss it accounts for, EWC's
Fisher against per-image gradients from torch.func, A-GEM's projection against its definition, and a sequence
where forgetting is certain (class-incremental split-MNIST) with and without replay."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from geodesic.core.scenario import head
from geodesic.core.split import Split
from geodesic.experiments import continual as C
from geodesic.experiments.sequence import SequenceConfig, run_sequence
from geodesic.store import data, zoo
from geodesic.store import tasks as T


def toy(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(2, (n,), generator=g)
    return Split(x, y, "mnist", "train", "bundled")


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


TWO = head([(0, 1)], 0, 1, "task")


def test_si_path_integral_accounts_for_the_loss_decrease():
    """ω = −Σ_steps g·Δθ, summed over weights, is the loss decrease along a path of small steps (first order: the
    gap is ½ Σ Δθᵀ H Δθ, which shrinks with the step), when the task loss is the only loss."""
    model, task = linear(), C.Learned(toy(4), TWO)
    task.data = Split(task.data.x[:1], task.data.y[:1], "mnist", "train", "bundled")  # every batch: the whole loss
    cfg = C.LearnConfig(lr=2e-5, batch=4, steps=200)
    si = C.SI(cfg, seed=0)
    x, y = task.data.x, task.data.y
    before = C.task_loss(model, x, y, TWO).item()
    C.learn(model, si, task, [], seed=0)
    after = C.task_loss(model, x, y, TWO).item()
    moved = [(p - s) ** 2 for p, s in zip(si.star, si.start)]
    omega = sum((o * (d + cfg.si_xi)).sum() for o, d in zip(si.omega, moved)).item()  # undo Ω = ω / (Δθ² + ξ)
    assert omega == pytest.approx(before - after, rel=0.02)


def test_ewc_fisher_is_the_mean_squared_per_image_gradient():
    model, task = linear(), C.Learned(toy(32), TWO)
    ewc = C.EWC(C.LearnConfig(fisher_images=32), seed=0)
    ewc.after_task(model, task)
    named = {k: v.detach() for k, v in model.named_parameters()}

    def log_p(params, x):
        out = TWO.logits(functional_call(model, params, (x[None],)))
        return torch.log_softmax(out, 1).gather(1, out.argmax(1, keepdim=True)).sum()

    per_image = vmap(grad(log_p), in_dims=(None, 0))(named, task.data.x)
    for f, (name, g) in zip(ewc.fisher, per_image.items()):
        torch.testing.assert_close(f, (g ** 2).mean(0), rtol=1e-4, atol=1e-8)
    assert all(torch.equal(s, p) for s, p in zip(ewc.star, C.params(model)))


def test_agem_projects_only_a_gradient_that_opposes_the_memory():
    model, task = linear(), C.Learned(toy(), TWO)
    agem = C.AGEM(C.LearnConfig(memory=32), seed=0)
    agem.after_task(model, task)
    other = C.Learned(Split(task.data.x, 1 - task.data.y, "mnist", "train", "bundled"), TWO)  # labels flipped
    for data_, opposed in ((task, False), (other, True)):
        model.zero_grad()
        C.task_loss(model, data_.data.x, data_.data.y, TWO).backward()
        g0 = torch.cat([p.grad.flatten() for p in C.params(model)])
        g_gen = agem.generator.get_state()
        agem.before_step(model, [task])
        g = torch.cat([p.grad.flatten() for p in C.params(model)])
        agem.generator.set_state(g_gen)
        ref = torch.autograd.grad(agem.memory.loss(model, agem.cfg.batch, agem.generator), C.params(model))
        g_ref = torch.cat([r.flatten() for r in ref])
        if opposed:
            assert torch.dot(g0, g_ref) < 0 and torch.dot(g, g_ref).abs() < 1e-4 * g_ref.norm() * g0.norm()
        else:
            assert torch.dot(g0, g_ref) >= 0 and torch.equal(g, g0)


@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e-40])
def test_agem_projection_of_a_memory_fit_almost_exactly_stays_finite(scale):
    """|g_ref| of 1e-40 (float32 subnormals): g·g_ref / |g_ref|² passes float32's range; the step must not."""
    g = torch.tensor([1.0, 2.0, -3.0])
    g_ref = torch.tensor([-1.0, 0.0, 1.0]) * scale
    out = C.project(g, g_ref)
    assert torch.isfinite(out).all() and out.norm() <= g.norm()
    torch.testing.assert_close(out, torch.tensor([-1.0, 2.0, -1.0]), rtol=1e-5, atol=1e-6)  # by hand: g − (−4 / 2) r
    assert C.project(g, -g_ref) is g  # agrees with the memory: unchanged


def test_memory_trains_old_images_through_the_head_they_are_read_through_now():
    classes = [(0, 1), (2, 3)]
    first = C.Learned(toy(), head(classes, 0, 1, "class"))
    first.current = head(classes, 0, 2, "class")
    assert first.head.units == (0, 1) and first.now.units == (0, 1, 2, 3)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'gem'; choose from finetune, joint, ewc"):
        C.make("gem", C.LearnConfig(), 0)


def learn_sequence(model, tasks, train, test, scenario, method, cfg, seed) -> dict:
    """R, b, ACC and the steps each task took, through the one sequence run."""
    config = SequenceConfig("split-mnist", scenario, method, seed, learn=cfg)
    out = run_sequence(model, train, test, config, tasks=tasks)
    return {**out.summary, "R": out.R, "b": out.b, "spent": [r for r in out.rows if r["task"] >= 0]}


def test_class_incremental_forgetting_and_replay():
    """Class-incremental split-MNIST on the bundled images: fine-tuning forgets the first pair entirely (the last
    pair's units win every image), replay of 50 images per task keeps part of it; every R entry is an accuracy."""
    train = {"mnist": data.load("mnist", "train", "bundled")}
    test = {"mnist": data.load("mnist", "test", "bundled")}
    cfg = C.LearnConfig(steps=150, memory=50)
    out = {m: learn_sequence(zoo.build("mlp", seed=0), T.split_mnist(), train, test, "class", m, cfg, 0)
           for m in ("finetune", "replay")}
    for o in out.values():
        assert o["R"].shape == (5, 5) and bool(((o["R"] >= 0) & (o["R"] <= 1)).all())
        assert [s["steps"] for s in o["spent"]] == [150] * 5
    assert out["finetune"]["R"][4, 0] < 0.05 and out["replay"]["R"][4, 0] > 0.3
    assert out["replay"]["ACC"] > out["finetune"]["ACC"] + 0.2


def test_the_geodesic_learns_the_first_task_as_finetuning_and_then_keeps_it():
    """First task: nothing to keep, so the same Adam steps as fine-tuning (equal weights). Second task (domain
    scenario: both pairs on one two-unit head): the walk under the first pair's metric keeps more of it."""
    train = {"mnist": data.load("mnist", "train", "bundled")}
    test = {"mnist": data.load("mnist", "test", "bundled")}
    cfg = C.LearnConfig(steps=100, memory=50)
    first = T.split_mnist()[:1]
    a, b = zoo.build("mlp", seed=0), zoo.build("mlp", seed=0)
    learn_sequence(a, first, train, test, "domain", "finetune", cfg, 0)
    learn_sequence(b, first, train, test, "domain", "geodesic", cfg, 0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    two = T.split_mnist()[:2]
    out = {m: learn_sequence(zoo.build("mlp", seed=0), two, train, test, "domain", m, cfg, 0)
           for m in ("finetune", "geodesic")}
    assert out["geodesic"]["spent"][1]["steps"] == 100
    assert out["geodesic"]["R"][1, 0] > out["finetune"]["R"][1, 0] + 0.05
    assert out["geodesic"]["R"][1, 1] > 0.9  # and learns the new pair


def test_the_geodesic_walks_each_task_until_its_budget_with_a_decaying_cap():
    """A task's walk ends when its CPU budget is spent (not after a step past it), and its cap on ε has decayed
    from eps to eps_final by then; under a step budget (no seconds) it decays over the steps instead."""
    train = data.load("mnist", "train", "bundled")
    first, second = (t.apply(train) for t in T.split_mnist()[:2])
    pairs = [(0, 1), (2, 3)]
    for budget in ({"seconds": 0.6, "steps": 10**6}, {"steps": 12}):
        cfg = C.LearnConfig(memory=30, **budget)
        method, model = C.make("geodesic", cfg, 0), zoo.build("mlp", seed=0)
        one = C.Learned(first, head(pairs, 0, 1, "domain"))
        method.after_task(model, one)
        spent = C.learn(model, method, C.Learned(second, head(pairs, 1, 2, "domain")), [one], 0)
        assert spent["status"] == "done" and spent["cap"] == pytest.approx(cfg.path.eps_final)
        if "seconds" in budget:
            assert budget["seconds"] <= spent["seconds"] < 2 * budget["seconds"]
        else:
            assert spent["steps"] == 12
    assert C.LearnConfig().path.eps_final < C.LearnConfig().path.eps


def test_each_benchmarks_strengths_are_the_best_of_its_measured_grid():
    """continual.STRENGTHS (and the split-MNIST defaults of LearnConfig) are the values of
    bench/results/sequence-strengths.csv with the best mean ACC over the benchmark's scenarios (the geodesic's at
    its current walk and memory, where measured)."""
    import pandas as pd

    df = pd.read_csv(Path(__file__).resolve().parent.parent / "bench" / "results" / "sequence-strengths.csv")

    def walk(tasks: str) -> str:  # the table's label of the geodesic's settings besides its pull
        c = C.config_for(tasks)
        cap = f", ε → {c.path.eps_final:g}" if c.path.eps_final else ", ε constant"
        return f"β {c.path.beta:g}{cap}, M {c.memory}"

    # the geodesic's points at its current walk where the grid has them (a point at another walk is another setting)
    geo = df["method"] == "geodesic"
    now = df["walk"] == df["tasks"].map(walk)
    remeasured = set(df.loc[geo & now, "tasks"])
    df = df[~geo | now | ~df["tasks"].isin(remeasured)]
    mean = df.groupby(["tasks", "method", "strength", "value"])["ACC"].mean().reset_index()
    best = mean.loc[mean.groupby(["tasks", "method"])["ACC"].idxmax()]
    assert len(best) >= 4
    for r in best.itertuples():
        assert getattr(C.config_for(r.tasks), r.strength) == r.value, (r.tasks, r.method)

"""Task sequences: the tasks built from MNIST, the head each scenario reads, the accuracy matrix's summaries
against hand computation, and the tasks file on disk."""

import math

import pytest
import torch

from geodesic.core.scenario import head
from geodesic.core.split import Split
from geodesic.experiments.sequence import accuracy, row
from geodesic.experiments.sequence import summary_of as summary
from geodesic.store import tasks as T

SPLIT = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def test_summary_by_hand():
    R = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.95, 0.3], [0.7, 0.85, 0.9]])
    s = summary(R, b=torch.tensor([0.1, 0.1, 0.1]))
    assert s["ACC"] == pytest.approx((0.7 + 0.85 + 0.9) / 3)
    assert s["BWT"] == pytest.approx(((0.7 - 0.9) + (0.85 - 0.95)) / 2)
    assert s["FWT"] == pytest.approx(((0.1 - 0.1) + (0.3 - 0.1)) / 2)
    assert s["forgetting"] == pytest.approx(((0.9 - 0.7) + (0.95 - 0.85)) / 2)
    assert math.isnan(summary(R)["FWT"]) and math.isnan(summary(torch.tensor([[0.5]]))["BWT"])
    with pytest.raises(ValueError, match="must be square"):
        summary(torch.zeros(2, 3))


def test_heads_of_the_three_scenarios():
    task = head(SPLIT, 2, seen=3, scenario="task")
    assert task.units == (4, 5) and task.labels(torch.tensor([4, 5])).tolist() == [0, 1]
    domain = head(SPLIT, 2, seen=3, scenario="domain")
    assert domain.units == (0, 1) and domain.labels(torch.tensor([5, 4])).tolist() == [1, 0]
    cls = head(SPLIT, 2, seen=3, scenario="class")
    assert cls.units == tuple(range(6)) and cls.labels(torch.tensor([5, 0])).tolist() == [5, 0]
    assert head(SPLIT, 4, seen=0, scenario="class").units == tuple(range(10))  # read as the next task
    assert head(SPLIT, 0, seen=5, scenario="class").units == tuple(range(10))
    with pytest.raises(ValueError, match=r"labels \[7\] are not read by the head \(4, 5\)"):
        task.labels(torch.tensor([4, 7]))
    with pytest.raises(ValueError, match="unknown scenario 'joint'"):
        head(SPLIT, 0, 1, "joint")


def test_a_head_reads_the_argmax_over_its_units_only():
    out = torch.tensor([[9.0, 0.0, 1.0, 2.0], [9.0, 0.0, 3.0, 2.0]])  # unit 0 wins overall
    two = head([(2, 3)], 0, 1, "task", n_labels=4)
    assert two.correct(out, torch.tensor([3, 2])).tolist() == [True, True]
    four = head([(0, 1, 2, 3)], 0, 1, "class", n_labels=4)
    assert four.correct(out, torch.tensor([3, 2])).tolist() == [False, False]


def labelled(n: int = 200) -> Split:
    """Images whose first pixel carries the label (y / 10), and a 'net' that reads it: an oracle for accuracy."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[:, 0, 0, 0] = y / 10
    return Split(x, y, "mnist", "test", "bundled")


def knows(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 10).round().long(), 10).float()


def prefers_low(x: torch.Tensor) -> torch.Tensor:
    """Logits falling with the unit's number: among any units, the lowest wins."""
    return -torch.arange(10.0).expand(len(x), 10)


def test_accuracy_against_an_oracle_net():
    data = labelled()
    tasks = T.split_mnist()
    tests = [t.apply(data) for t in tasks]
    assert row(knows, tasks, tests, 5, "class") == [1.0] * 5
    # the lowest unit in play wins: the even digit of the pair when the task is given (task) or its position is
    # the answer (domain); digit 0 among all seen (class), wrong on every pair but the first
    low_share = [float((t.y == t.y.min()).float().mean()) for t in tests]
    assert row(prefers_low, tasks, tests, 5, "task") == pytest.approx(low_share)
    assert row(prefers_low, tasks, tests, 5, "domain") == pytest.approx(low_share)
    assert row(prefers_low, tasks, tests, 5, "class") == pytest.approx([low_share[0], 0, 0, 0, 0])
    with pytest.raises(ValueError, match="no test images"):
        accuracy(knows, Split(data.x[:0], data.y[:0], "mnist", "test", "bundled"), head(SPLIT, 0, 1, "task"))


def test_tasks_from_mnist():
    perm = T.permuted_mnist(3, seed=0)
    assert perm[0].perm is None and [t.classes for t in perm] == [T.DIGITS] * 3
    assert not torch.equal(perm[1].perm, perm[2].perm)
    assert torch.equal(T.permuted_mnist(3, seed=0)[2].perm, perm[2].perm)
    assert not torch.equal(T.permuted_mnist(3, seed=1)[2].perm, perm[2].perm)
    data = labelled(50)
    moved = perm[1].apply(data)
    assert torch.equal(moved.x.flatten(1).sort(1).values, data.x.flatten(1).sort(1).values)
    inverse = torch.argsort(perm[1].perm)
    assert torch.equal(moved.x.flatten(1)[:, inverse].view_as(data.x), data.x)
    pair = T.split_mnist()[3].apply(data)
    assert set(pair.y.tolist()) <= {6, 7} and len(pair) == int(((data.y == 6) | (data.y == 7)).sum())
    with pytest.raises(ValueError, match="is on mnist, not fashion-mnist"):
        perm[0].apply(Split(data.x, data.y, "fashion-mnist", "test", "bundled"))


def test_parse_sequences():
    assert [t.name for t in T.parse("permuted-mnist:4")] == ["perm-0", "perm-1", "perm-2", "perm-3"]
    assert [t.classes for t in T.parse("split-mnist")] == SPLIT
    assert [t.dataset for t in T.parse("mnist, fashion-mnist")] == ["mnist", "fashion-mnist"]
    with pytest.raises(ValueError, match="give the number of tasks"):
        T.parse("permuted-mnist")
    with pytest.raises(ValueError, match="'cifar10'.*sequences are permuted-mnist:T, split-mnist, or datasets"):
        T.parse("cifar10")
    with pytest.raises(ValueError, match="at least one task"):
        T.parse("permuted-mnist:0")


def test_tasks_file_round_trip_and_damage(tmp_path):
    tasks = T.permuted_mnist(3, seed=5) + T.split_mnist()[:1]
    path = tmp_path / T.FILE
    T.write(path, tasks)
    back = T.read(path)
    assert [(t.name, t.dataset, t.classes) for t in back] == [(t.name, t.dataset, t.classes) for t in tasks]
    assert back[0].perm is None and all(torch.equal(a.perm, b.perm) for a, b in zip(back[1:3], tasks[1:3]))
    bad = list(tasks)
    bad[1] = T.Task("perm-1", "mnist", T.DIGITS, torch.zeros(T.PIXELS, dtype=torch.long))
    T.write(path, bad)
    with pytest.raises(ValueError, match=r"perm\.1 is not a permutation"):
        T.read(path)
    path.write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a task sequence file"):
        T.read(path)


def test_a_net_trained_on_all_digits_reads_every_split_task(mlp_mnist):
    """The shipped mlp (all ten digits) on the bundled test images: each pair told apart once the task is given,
    and the ten-way accuracy over the five pairs is its plain test accuracy."""
    from geodesic.store import data

    model, _ = mlp_mnist
    test = data.load("mnist", "test", "bundled")
    tasks = T.split_mnist()
    tests = [t.apply(test) for t in tasks]
    with torch.no_grad():
        task_row = row(model, tasks, tests, 5, "task")
        class_row = row(model, tasks, tests, 5, "class")
        plain = float((model(test.x).argmax(1) == test.y).float().mean())
    assert min(task_row) > 0.97
    weights = torch.tensor([len(t) for t in tests], dtype=torch.float64)
    assert float((torch.tensor(class_row, dtype=torch.float64) * weights).sum() / weights.sum()) == pytest.approx(plain)

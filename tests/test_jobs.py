"""The app's job registry and job bodies: a short mlp sparsify job completes and writes a run folder; stop,
pause, errors; damage, two-task and candidate jobs; the Playground; the engine knows nothing of the app."""

import ast
import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import jobs, playground
from geodesic.core.path import PathConfig
from geodesic.experiments import sparsify as experiments
from geodesic.experiments.damage import DamageConfig
from geodesic.experiments.merge import MergeConfig
from geodesic.experiments.recovery import RecoveryConfig
from geodesic.infra.lifecycle import Status
from geodesic.store import runs

CKPT = str(jobs.CHECKPOINTS / "mlp-mnist.safetensors")
MNIST = jobs.Source(CKPT, "mnist", eval_size=200)


def short_cfg(steps: int = 6, filters: int = 2, eps: float = 0.01) -> experiments.SparsifyConfig:
    """The literal algorithm (no pull, no relaxation) for a few steps: SparsifyConfig() is the long run."""
    return dataclasses.replace(experiments.PRESETS["literal"], filters=filters,
                               path=PathConfig(eps=eps, max_steps=steps, eval_every=3, snapshot_every=2))


def started(job: jobs.Job, rows: int) -> jobs.Job:
    while len(job.rows) < rows and job.active:
        time.sleep(0.02)
    assert job.active, job.error
    return job


def test_sparsify_job_completes_and_writes_a_run(tmp_path):
    reg = jobs.Registry()
    job = reg.start("sparsify", jobs.sparsify_job(MNIST, short_cfg(), root=tmp_path))
    jobs.wait(job, 60)
    assert job.status is Status.DONE, job.error
    df = job.frame()
    assert list(df["step"])[:2] == [0, 1] and df["step"].max() == 6
    run = runs.load_run(job.run_dir)
    assert run.meta["status"] == "missed" and run.meta["kind"] == "sparsify"  # 6 steps do not reach 2 zero filters
    assert run.meta["source"] == "app" and run.meta["eval_images"] == 200 and job.info["eval_every"] == 3
    assert len(run.metrics) == len(df) and set(df["run"]) == {run.id}  # the folder holds every row the job showed
    steps, W = run.snapshots()
    assert W.shape[0] == len(steps) >= 3
    assert reg.get(job.id) is job and reg.list("sparsify") == [job] and reg.latest("sparsify") is job


def test_stop_within_one_step(tmp_path):
    reg = jobs.Registry()
    job = started(reg.start("sparsify", jobs.sparsify_job(MNIST, short_cfg(steps=400), root=tmp_path)), 3)
    reg.stop(job.id)
    at_stop = len(job.rows)
    jobs.wait(job, 30)
    assert job.status is Status.STOPPED, job.error
    assert len(job.rows) <= at_stop + 1  # at most the step in flight finishes
    assert runs.load_run(job.run_dir).meta["status"] == "stopped"


def test_pause_blocks_and_resume_continues(tmp_path):
    reg = jobs.Registry()
    job = started(reg.start("sparsify", jobs.sparsify_job(MNIST, short_cfg(steps=400), root=tmp_path)), 2)
    job.pause()
    time.sleep(0.5)
    n = len(job.rows)
    time.sleep(0.6)
    assert job.status is Status.PAUSED and len(job.rows) == n
    job.resume()
    while len(job.rows) == n and job.active:
        time.sleep(0.02)
    assert len(job.rows) > n
    job.stop()
    assert jobs.wait(job, 30).status is Status.STOPPED


def test_paused_job_can_be_stopped(tmp_path):
    reg = jobs.Registry()
    job = started(reg.start("sparsify", jobs.sparsify_job(MNIST, short_cfg(steps=400), root=tmp_path)), 2)
    job.pause()
    job.stop()
    assert jobs.wait(job, 30).status is Status.STOPPED
    assert runs.load_run(job.run_dir).meta["status"] == "stopped"


def test_exception_is_reported_not_swallowed(tmp_path):
    reg = jobs.Registry()
    missing = jobs.Source(str(tmp_path / "missing.safetensors"), "mnist", model="mlp")
    job = jobs.wait(reg.start("sparsify", jobs.sparsify_job(missing, short_cfg(), root=tmp_path)), 10)
    assert job.status is Status.ERROR
    assert "CheckpointError" in job.error and "no such checkpoint file" in job.error

    def boom(job):
        raise RuntimeError("kaput")

    j2 = jobs.wait(reg.start("other", boom), 5)
    assert j2.status is Status.ERROR and "RuntimeError: kaput" in j2.error and "Traceback" in j2.error


def test_a_job_ends_with_the_engines_status_a_diverged_run_included():
    """A job's status is a lifecycle Status: DONE, STOPPED on a stop request, DIVERGED when the run it returns
    diverged (its summary's status, a Status or its text), ERROR when it raised; QUEUED, RUNNING, PAUSED are ACTIVE."""
    reg = jobs.Registry()
    assert set(jobs.ACTIVE) == {Status.QUEUED, Status.RUNNING, Status.PAUSED}
    ends = {"done": lambda job: {"status": Status.ARRIVED}, "diverged": lambda job: {"status": Status.DIVERGED},
            "diverged-text": lambda job: {"status": "diverged"}, "list": lambda job: [Status.DIVERGED]}
    ended = {name: jobs.wait(reg.start(name, fn), 5) for name, fn in ends.items()}
    assert {name: j.status for name, j in ended.items()} == {
        "done": Status.DONE, "diverged": Status.DIVERGED, "diverged-text": Status.DIVERGED, "list": Status.DONE}
    assert not any(j.active for j in ended.values())

    def stopped_then_diverged(job):
        job.stop()
        return {"status": Status.DIVERGED}

    assert jobs.wait(reg.start("stop", stopped_then_diverged), 5).status is Status.STOPPED  # the user's stop wins


def test_registry_is_thread_safe():
    reg = jobs.Registry()
    barrier = threading.Event()
    made = []

    def spawn():
        for _ in range(20):
            made.append(reg.start("noop", lambda job: barrier.wait(5)))

    threads = [threading.Thread(target=spawn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    barrier.set()
    assert len({j.id for j in made}) == 80 == len(reg.list("noop"))
    for j in made:
        assert jobs.wait(j, 5).status is Status.DONE


def test_candidates_job_writes_one_folder_per_candidate(tmp_path):
    job = jobs.Registry().start("candidates", jobs.candidates_job(MNIST, short_cfg(steps=3), 2, root=tmp_path))
    assert jobs.wait(job, 60).status is Status.DONE, job.error
    metas = [runs.load_run(p).meta for p in job.run_dirs]
    assert [m["candidate"] for m in metas] == [0, 1] and len({m["group"] for m in metas}) == 1
    assert [m["strategy"] for m in metas] == list(experiments.STRATEGIES[:2]) == [s["strategy"] for s in
                                                                                   (m["config"] for m in metas)]
    assert len(job.result) == 2 and set(job.frame()["run"]) == {p.name for p in job.run_dirs}


def test_damage_job_races_the_methods_at_the_same_time(tmp_path):
    damage = DamageConfig("ablate", (8,), (0,), among="alive")
    cfg = RecoveryConfig(steps=4, eval_every=2, lr=1e-3, path=PathConfig(beta=0.01, eps=0.01, probe=16, solver="gram"))
    d = jobs.wait(jobs.Registry().start("damage", jobs.damage_job(MNIST, damage, cfg, root=tmp_path)), 60)
    assert d.status is Status.DONE, d.error
    df = d.frame()
    assert set(df["method"]) == {"geodesic", "sgd"} and d.info["acc_damaged"] < d.info["acc_before"]
    assert d.info["frozen"] == d.info["damaged"] > 0  # ablation: the hit coordinates stay frozen
    for method, rows in df.groupby("method"):
        assert rows["step"].tolist() == [0, 2, 4] and rows["accuracy"].iloc[0] == d.info["acc_damaged"]
    first, last = df.groupby("method").apply(lambda r: r.index.min()), df.groupby("method").apply(lambda r: r.index.max())
    assert first.max() < last.min()  # the two methods ran at the same time: their rows interleave
    metas = sorted((runs.load_run(p).meta for p in d.run_dirs), key=lambda m: m["method"])
    assert [m["config"]["method"] for m in metas] == ["geodesic", "sgd"]
    assert [m["config"]["lr"] for m in metas] == [None, 1e-3]  # the learning rate is the baseline's
    assert all(m["damage"]["kind"] == "ablate" and m["kind"] == "recover" for m in metas)


def test_two_tasks_job_walks_and_runs_the_baselines(tmp_path):
    path = PathConfig(beta=0.01, eps=0.01, probe=16, max_steps=4, eval_every=2)
    cfg = MergeConfig(phases=("walk", "line", "finetune"), finetune_steps=4, path=path)
    body = jobs.two_tasks_job(MNIST, "fashion-mnist", cfg, checkpoint_b=CKPT.replace("mnist", "fashion-mnist"),
                              root=tmp_path)
    t = jobs.wait(jobs.Registry().start("two-tasks", body), 60)
    assert t.status is Status.DONE, t.error
    df = t.frame()
    assert set(df["phase"]) == {"walk", "line", "finetune"} and runs.load_run(t.run_dir).meta["kind"] == "merge"
    walk, line = df[df["phase"] == "walk"].dropna(subset=["accuracy"]), df[df["phase"] == "line"]
    assert walk["step"].tolist() == [0, 2, 4] and len(line) == t.info["line_points"] == 9
    assert line["t"].tolist()[::8] == [0.0, 1.0]
    assert line["accuracy_b"].iloc[-1] > line["accuracy_b"].iloc[0]  # t = 1 is the task-B net itself


def test_two_tasks_job_refuses_the_line_without_the_task_b_net(tmp_path):
    cfg = MergeConfig(phases=("walk", "line"), path=PathConfig(max_steps=2))
    t = jobs.wait(jobs.Registry().start("two-tasks", jobs.two_tasks_job(MNIST, "fashion-mnist", cfg, root=tmp_path)), 30)
    assert t.status is Status.ERROR and "need the task-B net" in t.error and not t.run_dirs


def test_every_job_body_takes_ones_own_architecture(own_arch, tmp_path):
    """Source(arch=…): sparsify (through candidates), the damage race and the two-task walk with its straight line
    to a second net of the same architecture; each run folder records the architecture."""
    spec, a, b = own_arch
    source = jobs.Source(str(a), "mnist", eval_size=100, arch=spec)
    path = PathConfig(beta=0.01, eps=0.01, probe=8, max_steps=2, eval_every=2)
    bodies = {
        "candidates": jobs.candidates_job(source, short_cfg(steps=2), 2, root=tmp_path),
        "damage": jobs.damage_job(source, DamageConfig("ablate", (3,), (0,)),
                                  RecoveryConfig(steps=2, eval_every=2, path=dataclasses.replace(path, solver="gram")),
                                  root=tmp_path),
        "two-tasks": jobs.two_tasks_job(source, "fashion-mnist", MergeConfig(phases=("walk", "line", "finetune"),
                                        finetune_steps=2, points=2, eval_size=100, path=path),
                                        checkpoint_b=str(b), root=tmp_path),
    }
    for kind, body in bodies.items():
        job = jobs.wait(jobs.Registry().start(kind, body), 60)
        assert job.status is Status.DONE, (kind, job.error)
        assert job.run_dirs and all(runs.load_run(d).meta["arch"] == spec for d in job.run_dirs), kind
    assert job.frame()["accuracy_b"].notna().any()  # the two-task walk scored task B


def test_two_tasks_job_refuses_a_task_b_net_of_another_architecture(own_arch, tmp_path):
    spec, a, _ = own_arch
    cfg = MergeConfig(phases=("walk", "line"), path=PathConfig(max_steps=2))
    body = jobs.two_tasks_job(jobs.Source(str(a), "mnist", arch=spec), "fashion-mnist", cfg,
                              checkpoint_b=str(jobs.CHECKPOINTS / "mlp-fashion-mnist.safetensors"), root=tmp_path)
    t = jobs.wait(jobs.Registry().start("two-tasks", body), 30)
    assert t.status is Status.ERROR and "do not match" in t.error and not t.run_dirs


def test_playground_reaches_the_sparse_axis():
    out = playground.landscape((1.5, 1.2), beta=0.5, eps=0.0025, grid=11, ellipse_grid=4)
    path = out["path"]
    assert out["status"]["status"][0] == "arrived"
    assert path["w2"].iloc[-1] == 0.0 and abs(path["w2"].iloc[0] - 1.2) < 1e-6
    steps = (path[["w1", "w2"]].diff().dropna() ** 2).sum(axis=1) ** 0.5
    assert (steps[:-1] <= 0.05 + 1e-5).all()  # every tangent step within the trust region |θ| ≤ √ε
    assert len(out["contours"]) == 121 and (out["ellipses"][["lam1", "lam2"]] >= 0).all().all()
    assert len(out["ellipses"]) == 4  # the inner 2 × 2 points of a 4 × 4 grid


def test_app_modules_import_without_torch():
    code = ("import sys; import app.jobs; a = sorted({'torch', 'pandas'} & set(sys.modules)); "
            "import app.playground; print(a, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=jobs.REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"  # app.jobs: neither torch nor pandas; app.playground: no torch


@pytest.mark.parametrize("env", [None, "elsewhere/runs"])
def test_runs_root_is_the_engines(monkeypatch, tmp_path, env):
    if env is None:
        monkeypatch.delenv("GEODESIC_RUNS", raising=False)
    else:
        monkeypatch.setenv("GEODESIC_RUNS", str(tmp_path / env))
    assert jobs.runs_root() == runs.default_root()


def test_engine_imports_nothing_of_the_app():
    engine = Path(jobs.REPO / "geodesic")
    for file in engine.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not [n for n in names if n == "app" or n.startswith("app.")], f"{file.name} imports the app"
    assert not (engine / "jobs.py").exists()

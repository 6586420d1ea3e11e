"""The job registry: a short mlp sparsify job completes and writes a run folder; stop, pause, errors."""

import threading
import time

from geodesic import jobs, runs
from geodesic.experiments import SparsifyConfig
from geodesic.path import PathConfig

CKPT = str(jobs.CHECKPOINTS / "mlp-mnist.safetensors")


def short_cfg(steps: int = 6, filters: int = 2, eps: float = 0.01) -> SparsifyConfig:
    return SparsifyConfig(filters=filters, path=PathConfig(eps=eps, max_steps=steps, eval_every=3, snapshot_every=2))


def test_sparsify_job_completes_and_writes_a_run(tmp_path):
    reg = jobs.Registry()
    job = reg.start("sparsify", jobs.sparsify_job(CKPT, short_cfg(), "mnist", eval_size=200, root=tmp_path))
    jobs.wait(job, 60)
    assert job.status == "done", job.error
    df = job.frame()
    assert list(df["step"])[:2] == [0, 1] and df["step"].max() == 6
    run = runs.load_run(job.run_dir)
    assert run.meta["status"] == "max steps" and run.meta["kind"] == "sparsify"
    assert len(run.metrics) == len(df)  # the run folder holds every row the job showed
    steps, W = run.snapshots()
    assert W.shape[0] == len(steps) >= 3
    assert reg.get(job.id) is job and reg.list("sparsify") == [job] and reg.latest("sparsify") is job


def test_stop_within_one_step(tmp_path):
    reg = jobs.Registry()
    job = reg.start("sparsify", jobs.sparsify_job(CKPT, short_cfg(steps=400), "mnist", eval_size=200, root=tmp_path))
    while len(job.rows) < 3 and job.active:
        time.sleep(0.02)
    reg.stop(job.id)
    at_stop = len(job.rows)
    jobs.wait(job, 30)
    assert job.status == "stopped", job.error
    assert len(job.rows) <= at_stop + 1  # at most the step in flight finishes
    assert runs.load_run(job.run_dir).meta["status"] == "stopped"


def test_pause_blocks_and_resume_continues(tmp_path):
    reg = jobs.Registry()
    job = reg.start("sparsify", jobs.sparsify_job(CKPT, short_cfg(steps=400), "mnist", eval_size=200, root=tmp_path))
    while len(job.rows) < 2 and job.active:
        time.sleep(0.02)
    job.pause()
    time.sleep(0.5)
    n = len(job.rows)
    time.sleep(0.6)
    assert job.status == "paused" and len(job.rows) == n
    job.resume()
    while len(job.rows) == n and job.active:
        time.sleep(0.02)
    assert len(job.rows) > n
    job.stop()
    assert jobs.wait(job, 30).status == "stopped"


def test_paused_job_can_be_stopped(tmp_path):
    reg = jobs.Registry()
    job = reg.start("sparsify", jobs.sparsify_job(CKPT, short_cfg(steps=400), "mnist", eval_size=200, root=tmp_path))
    while len(job.rows) < 2 and job.active:
        time.sleep(0.02)
    job.pause()
    job.stop()
    assert jobs.wait(job, 30).status == "stopped"


def test_exception_is_reported_not_swallowed(tmp_path):
    reg = jobs.Registry()
    job = reg.start("sparsify", jobs.sparsify_job(str(tmp_path / "missing.safetensors"), short_cfg(), "mnist",
                                                  model_name="mlp", root=tmp_path))
    jobs.wait(job, 10)
    assert job.status == "error"
    assert "CheckpointError" in job.error and "no such checkpoint file" in job.error

    def boom(job):
        raise RuntimeError("kaput")

    j2 = jobs.wait(reg.start("other", boom), 5)
    assert j2.status == "error" and "RuntimeError: kaput" in j2.error and "Traceback" in j2.error


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
        assert jobs.wait(j, 5).status == "done"


def test_damage_and_two_tasks_jobs_run(tmp_path):
    reg = jobs.Registry()
    d = reg.start("damage", jobs.damage_job(CKPT, "mnist", "ablate", 8, 0, steps=4, beta=0.01, eps=0.01, probe=16,
                                            lr=1e-3, eval_every=2, eval_size=200, root=tmp_path))
    jobs.wait(d, 60)
    assert d.status == "done", d.error
    df = d.frame()
    assert set(df["method"]) == {"geodesic", "sgd"} and d.info["acc_damaged"] < d.info["acc_before"]
    for method, rows in df.groupby("method"):
        assert rows["step"].tolist() == [0, 2, 4] and rows["accuracy"].iloc[0] == d.info["acc_damaged"]
    first, last = df.groupby("method").apply(lambda r: r.index.min()), df.groupby("method").apply(lambda r: r.index.max())
    assert first.max() < last.min()  # the two methods ran at the same time: their rows interleave
    assert sorted(runs.load_run(p).meta["config"]["method"] for p in d.run_dirs) == ["geodesic", "sgd"]
    t = reg.start("two-tasks", jobs.two_tasks_job(CKPT, "mnist", "fashion-mnist", steps=4, beta=0.01, eps=0.01,
                                                  probe=16, seed=0, phases=("walk", "line", "finetune"),
                                                  checkpoint_b=str(CKPT).replace("mnist", "fashion-mnist"),
                                                  eval_every=2, eval_size=200, root=tmp_path))
    jobs.wait(t, 60)
    assert t.status == "done", t.error
    df = t.frame()
    assert set(df["phase"]) == {"walk", "line", "finetune"} and runs.load_run(t.run_dir).meta["kind"] == "merge"
    walk, line = df[df["phase"] == "walk"].dropna(subset=["accuracy"]), df[df["phase"] == "line"]
    assert walk["step"].tolist() == [0, 2, 4] and len(line) == 9 and line["t"].tolist()[::8] == [0.0, 1.0]
    assert line["accuracy_b"].iloc[-1] > line["accuracy_b"].iloc[0]  # t = 1 is the task-B net itself


def test_playground_reaches_the_sparse_axis():
    out = jobs.playground((1.5, 1.2), beta=0.5, eps=0.0025, grid=11, ellipse_grid=4)
    path = out["path"]
    assert out["status"]["status"][0] == "arrived"
    assert path["w2"].iloc[-1] == 0.0 and abs(path["w2"].iloc[0] - 1.2) < 1e-6
    steps = (path[["w1", "w2"]].diff().dropna() ** 2).sum(axis=1) ** 0.5
    assert (steps[:-1] <= 0.05 + 1e-5).all()  # every tangent step within the trust region |θ| ≤ √ε
    assert len(out["contours"]) == 121 and (out["ellipses"][["lam1", "lam2"]] >= 0).all().all()

"""Trajectory embeddings against independent computations (numpy SVD), and the run-folder cache."""

from pathlib import Path

import numpy as np
import pytest
import torch

from geodesic.core.path import Evaluation, PathConfig
from geodesic.experiments import embed
from geodesic.experiments.sparsify import SparsifyConfig, run_sparsify
from geodesic.store.inputs import open_checkpoint, splits
from geodesic.store.runs import RunWriter


def clouds(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(7, 40)) + np.linspace(0, 3, 40)
    b = rng.normal(size=(5, 40))
    return {"a": (torch.arange(0, 35, 5), torch.tensor(a)), "b": (torch.arange(5), torch.tensor(b))}


def test_pca_matches_numpy_svd_up_to_sign():
    data = clouds()
    out = embed.embed(data, "pca")
    X = np.concatenate([data["a"][1].numpy(), data["b"][1].numpy()])
    Xc = X - X.mean(0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    ref = U[:, :2] * S[:2]
    for j, col in enumerate(("x", "y")):
        got = out[col].to_numpy()
        sign = np.sign(got @ ref[:, j])
        np.testing.assert_allclose(got, sign * ref[:, j], rtol=1e-9, atol=1e-9)
    assert list(out["run"]) == ["a"] * 7 + ["b"] * 5 and list(out["step"][:3]) == [0, 5, 10]
    # joint fit: embedding one run alone gives different coordinates than the joint picture
    alone = embed.embed({"a": data["a"]}, "pca")
    assert not np.allclose(alone["x"], out["x"][:7])


def test_pca_keeps_distances_when_the_cloud_is_planar():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(30, 2)))[0]
    pts = rng.normal(size=(9, 2)) * [3, 1]
    W = pts @ basis.T + 5.0
    out = embed.embed({"r": (torch.arange(9), torch.tensor(W))}, "pca")
    d_emb = np.linalg.norm(out[["x", "y"]].to_numpy()[:, None] - out[["x", "y"]].to_numpy()[None], axis=-1)
    d_w = np.linalg.norm(W[:, None] - W[None], axis=-1)
    np.testing.assert_allclose(d_emb, d_w, atol=1e-9)


def test_umap_gives_finite_coordinates_for_every_snapshot():
    out = embed.embed(clouds(), "umap", seed=0)
    assert out.shape == (12, 4) and np.isfinite(out[["x", "y"]].to_numpy()).all()
    assert list(out.columns) == ["run", "step", "x", "y"]


def test_errors():
    with pytest.raises(ValueError, match="method"):
        embed.embed(clouds(), "tsne")
    with pytest.raises(ValueError, match="no snapshots"):
        embed.embed({"a": (torch.zeros(0), torch.zeros(0, 0))})
    bad = {"a": (torch.arange(2), torch.zeros(2, 3)), "b": (torch.arange(2), torch.zeros(2, 4))}
    with pytest.raises(ValueError, match="architecture"):
        embed.embed(bad)


def test_embed_runs_merges_metrics_and_caches(tmp_path):
    cfg = SparsifyConfig(filters=2, relax_steps=0, path=PathConfig(max_steps=6, eval_every=3, snapshot_every=2))
    train, test = splits("mnist", "bundled", 100)
    dirs = []
    for _ in range(2):
        ckpt = open_checkpoint(Path(__file__).resolve().parent.parent / "assets" / "checkpoints" / "mlp-mnist.safetensors")
        writer = RunWriter({"kind": "sparsify", **ckpt.meta(), "dataset": "mnist"}, root=tmp_path)
        run_sparsify(ckpt.model, ckpt.w, ckpt.groups, cfg, train, Evaluation(test.x, test.y), writer=writer)
        dirs.append(writer.dir)
    out = embed.embed_runs(dirs, "pca")
    assert set(out["run"]) == {d.name for d in dirs} and out["accuracy"].notna().all()
    assert {"length", "distance"} <= set(out.columns)
    again = embed.embed_runs(list(reversed(dirs)), "pca")
    np.testing.assert_array_equal(out["x"].to_numpy(), again["x"].to_numpy())  # cache hit, same rows
    assert len(embed._CACHE) >= 1

"""Regenerate assets/gallery: real run folders shipped with the app, shown read-only beside the user's runs.

    .venv/bin/python tools/make_gallery.py            # all runs, then swap the new gallery in (≈ 15-25 min)
    .venv/bin/python tools/make_gallery.py --work W   # keep the raw runs in W; a rerun reuses the finished ones

Every run is made by the CLI (`python -m geodesic …`, one torch thread) on the full datasets:

  sparsify-{mnist,fashion-mnist}-{literal,recommended}
        lenet60, 50 of 60 filters to exact zero: `--preset literal` (the paper's algorithm) and the default
        recommended preset (balanced filters, pull, relaxation)
  candidates-mlp-mnist-{0..3}-<strategy>
        `sparsify --paths 4 --preset literal --filters 8` on the mlp (cheap in time and in bytes): the strategies
        norm, importance, balanced, random in turn. The mlp has one prunable layer, so "balanced" picks the same
        neurons as "norm" and their two paths coincide. One set: meta "group" = "candidates-mlp-mnist"
        (the CLI writes only "candidate": i; the Candidate paths page groups by "group")
  recover-mnist-zero-{geodesic,sgd}
        lenet60 MNIST, 30 % of the weights zeroed (seed 0, frozen at zero), 200 steps of each method from the same
        damage; both get meta "group" = "recover-lenet60-mnist-zero-0.3" (their "damage" fields are equal too)
  merge-mnist-fashion-mnist
        the mean-network walk from the MNIST net learning Fashion-MNIST, with its baselines:
        `--phases walk,relax,line,finetune`. Joint training ("joint") is left out: it trains a net from scratch
        on both sets for minutes, longer than everything else here together.

Post-processing, so that the gallery stays small (≤ 15 MB) and never reads as someone's live run:
  - snapshots thinned to at most 8 per run (as many as the size budget allows, evenly spaced over the kept
    steps, always the first and the last), stored as float16; state.safetensors and the runs' own float
    tensors (damage.safetensors' w_ref, paths.safetensors) as float16 too (geodesic.store.runs reads them back as
    float32). final.safetensors stays float32: it is the usable net, its card's sha256 still matches.
  - meta.json: "example": true, a one-line "title", a short readable id (= the folder name), no pid/host;
    final.json names the new id.

The new gallery is written beside the old one and swapped in at the end; the script fails (and changes
nothing) when a run fails or the gallery exceeds 15 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from geodesic.experiments.sequence import ACCURACY_FILE  # noqa: E402
from geodesic.infra.files import follow_umask  # noqa: E402
from geodesic.store import runs  # noqa: E402

GALLERY = runs.gallery_root()
LIMIT_BYTES = 16_000_000  # the gallery in all, checked at the end (tests/test_gallery.py checks it too)
TARGET_BYTES = 15_000_000  # what the snapshot thinning aims for, leaving room for run-to-run variation
MAX_SNAPSHOTS = 8
MIN_SNAPSHOTS = 3
CKPT = "assets/checkpoints"
CANDIDATE_GROUP = "candidates-mlp-mnist"
RACE_GROUP = "recover-lenet60-mnist-zero-0.3"


@dataclass
class Spec:
    """One CLI invocation: its arguments (without --out/--threads) and the gallery folders it yields."""

    name: str  # the raw run's folder under the work dir
    argv: list[str]
    outputs: dict[str, str]  # raw folder (relative to the raw run) -> gallery name; "" = the run folder itself
    titles: dict[str, str]
    meta: dict = field(default_factory=dict)  # extra meta fields for every output
    threads: bool = True  # the command takes --threads (a sequence runs each cell on one thread by itself)


def specs() -> list[Spec]:
    out = []
    for ds, label in (("mnist", "MNIST"), ("fashion-mnist", "Fashion-MNIST")):
        ckpt = f"{CKPT}/lenet60-{ds}.safetensors"
        out.append(Spec(f"sparsify-{ds}-literal", ["sparsify", "--checkpoint", ckpt, "--preset", "literal"],
                        {"": f"sparsify-{ds}-literal"},
                        {"": f"lenet60 on {label}: 50 filters to zero, the paper's algorithm as written"}))
        out.append(Spec(f"sparsify-{ds}-recommended", ["sparsify", "--checkpoint", ckpt],
                        {"": f"sparsify-{ds}-recommended"},
                        {"": f"lenet60 on {label}: 50 filters to zero, the recommended setting (pull + relaxation)"}))
    strategies = ("norm", "importance", "balanced", "random")  # experiments.candidate_configs with 4 paths
    out.append(Spec("candidates-mlp-mnist",
                    ["sparsify", "--checkpoint", f"{CKPT}/mlp-mnist.safetensors", "--preset", "literal",
                     "--filters", "8", "--paths", "4"],
                    {f"path{i}-{s}-seed0": f"{CANDIDATE_GROUP}-{i}-{s}" for i, s in enumerate(strategies)},
                    {f"path{i}-{s}-seed0": f"mlp on MNIST: candidate path {i + 1} of 4 to 8 zero neurons ({s})"
                     for i, s in enumerate(strategies)},
                    {"group": CANDIDATE_GROUP}))
    for method in ("geodesic", "sgd"):
        out.append(Spec(f"recover-mnist-zero-{method}",
                        ["recover", "--checkpoint", f"{CKPT}/lenet60-mnist.safetensors", "--kind", "zero",
                         "--level", "0.3", "--seed", "0", "--steps", "200", "--method", method],
                        {"": f"recover-mnist-zero-{method}"},
                        {"": f"lenet60 on MNIST, 30 % of the weights zeroed: recovery by {method}, 200 steps"},
                        {"group": RACE_GROUP}))
    out.append(Spec("merge-mnist-fashion-mnist",
                    ["merge", "--a", f"{CKPT}/lenet60-mnist.safetensors", "--b", f"{CKPT}/lenet60-fashion-mnist.safetensors",
                     "--phases", "walk,relax,line,finetune"],
                    {"": "merge-mnist-fashion-mnist"},
                    {"": "lenet60: from the MNIST net toward Fashion-MNIST (mean network), with the relaxed path, "
                         "the straight line and fine-tuning"}))
    methods = ("finetune", "replay", "geodesic")
    out.append(Spec("sequence-split-mnist-domain",
                    ["sequence", "--tasks", "split-mnist", "--scenario", "domain", "--model", "mlp", "--methods",
                     ",".join(methods), "--seconds", "5", "--steps", "500", "--memory", "100", "--backend", "loop"],
                    {f"cells/{m}-s0": f"sequence-split-mnist-domain-{m}" for m in methods},
                    {f"cells/{m}-s0": f"mlp on split-MNIST, domain scenario: {m}, 5 CPU s a task, memory 100"
                     for m in methods},
                    {"group": "sequence-split-mnist-domain"}, threads=False))
    return out


# --- making the raw runs ---------------------------------------------------------------------------------


def finished(folder: Path) -> bool:
    try:
        s = runs.load_run(folder).status
    except (OSError, ValueError):
        return False
    return s.ended and not s.failed


def make_raw(spec: Spec, work: Path, log) -> float:
    """Run the CLI for one spec into work/<name> (reused when its outputs already finished); seconds taken."""
    dest = work / spec.name
    if dest.exists() and all(finished(dest / k if k else dest) for k in spec.outputs):
        print(f"  {spec.name}: reusing the finished run in {dest}", flush=True)
        return 0.0
    if dest.exists():
        shutil.rmtree(dest)
    cmd = [sys.executable, "-m", "geodesic", *spec.argv, *(["--threads", "1"] if spec.threads else []),
           "--out", str(dest)]
    print(f"  {spec.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"error: {spec.name} failed (exit {rc}); see {log}")
    for k in spec.outputs:
        if not finished(dest / k if k else dest):
            raise SystemExit(f"error: {spec.name}/{k} did not finish; see {log}")
    print(f"  {spec.name}: done in {seconds:.0f} s", flush=True)
    return seconds


# --- turning a raw run into a gallery folder -------------------------------------------------------------


def half(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Rewrite a .safetensors file with its floating tensors as float16 (names in `keep` untouched)."""
    t = load_file(str(path))
    out = {k: (v.to(torch.float16) if v.is_floating_point() and k not in keep else v).contiguous() for k, v in t.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(out, str(tmp))
    follow_umask(tmp)  # save_file creates it 0600
    os.replace(tmp, path)


def evenly(n: int, k: int) -> list[int]:
    """k indices of 0 … n−1, evenly spaced, the first and the last included (all when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def adopt(src: Path, dest: Path, name: str, title: str, extra: dict) -> None:
    """Copy a finished raw run to dest as a gallery run (every snapshot kept for now, thinned later)."""
    shutil.copytree(src, dest)
    for p in sorted((dest / runs.SNAPSHOTS).glob("*.safetensors")):
        half(p)
    for p in dest.glob("*.safetensors"):
        if p.name not in (runs.FINAL, ACCURACY_FILE):  # the net and a sequence's accuracy matrix stay exact
            half(p)
    meta = json.loads((dest / "meta.json").read_text())
    for k in ("pid", "host"):
        meta.pop(k, None)
    meta.update(id=name, example=True, title=title, **extra)
    runs.write_json(dest / "meta.json", meta)
    card = dest / "final.json"
    if card.is_file():
        c = json.loads(card.read_text())
        c["run"] = name
        runs.write_json(card, c)
    text = "".join(p.read_text() for p in (dest / "meta.json", card) if p.is_file())
    if str(src.parent) in text or tempfile.gettempdir() + "/" in text:
        raise SystemExit(f"error: {name}: meta.json or final.json names a temporary path")


def run_dirs(gallery: Path) -> list[Path]:
    """The run folders of a gallery (not its other folders: sweeps/ holds the Sweeps page's tables)."""
    return sorted(d for d in gallery.iterdir() if (d / "meta.json").is_file())


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def thin(gallery: Path) -> int:
    """Keep k snapshots per run (k from MAX_SNAPSHOTS down to MIN_SNAPSHOTS, the largest that fits
    TARGET_BYTES); returns k."""
    snaps = {d: sorted((d / runs.SNAPSHOTS).glob("*.safetensors")) for d in run_dirs(gallery)}
    all_snap_bytes = sum(p.stat().st_size for files in snaps.values() for p in files)
    rest = size(gallery) - all_snap_bytes
    for k in range(MAX_SNAPSHOTS, MIN_SNAPSHOTS - 1, -1):
        kept = {d: [files[i] for i in evenly(len(files), k)] for d, files in snaps.items()}
        if rest + sum(p.stat().st_size for files in kept.values() for p in files) <= TARGET_BYTES or k == MIN_SNAPSHOTS:
            break
    for d, files in snaps.items():
        for p in set(files) - set(kept[d]):
            p.unlink()
    return k


# --- checks and the swap ---------------------------------------------------------------------------------


def check(gallery: Path) -> list[dict]:
    """Every gallery folder loads, has ended and not failed, and has its final weights; one line each."""
    from geodesic.store import checkpoints

    lines = []
    for d in run_dirs(gallery):
        run = runs.load_run(d, readonly=True)
        if not run.status.ended or run.status.failed:
            raise SystemExit(f"error: {d.name} has status {run.status.value}")
        run.final()
        run.snapshots()
        acc = accuracy_text(run.meta)
        if (d / runs.FINAL).is_file():
            checkpoints.load(d / runs.FINAL, run.meta.get("model"))
        lines.append({"run": d.name, "kind": run.meta.get("kind"), "status": run.status.value,
                      "accuracy": acc, "eval_images": run.meta.get("eval_images"),
                      "snapshots": len(list((d / runs.SNAPSHOTS).glob("*.safetensors"))), "bytes": size(d),
                      "title": run.meta.get("title")})
    return lines


def accuracy_text(meta: dict) -> str:
    """The run's final test accuracy as text (a merge run: its walk's end on both tasks)."""
    s = meta.get("summary") or {}
    if meta.get("kind") == "merge":
        a, b = s.get("walk_accuracy_a"), s.get("walk_accuracy_b")
        return "" if a is None or b is None else f"{meta.get('dataset')} {a:.4f}, {meta.get('task_b')} {b:.4f}"
    acc = s.get("accuracy")
    return "" if not isinstance(acc, (int, float)) else f"{acc:.4f}"


def readme(lines: list[dict], k: int, seconds: float | None) -> str:
    rows = "\n".join(f"| {r['run']} | {r['kind']} | {r['status']} | {r['accuracy']} | {r['eval_images']} | "
                     f"{r['snapshots']} | {r['bytes'] / 1e6:.2f} |" for r in lines)
    return (
        "# Example runs\n\n"
        "Real run folders shown read-only beside your own runs in the app (marked as examples), so that every page "
        "has something to show on a first visit. Made by `tools/make_gallery.py` (the CLI, one torch thread, the "
        "full datasets); rerun it to regenerate this folder.\n\n"
        "| run | kind | status | final accuracy | test images | snapshots | MB |\n|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "Final accuracy: the run's last evaluation (meta.json summary) on the first test images of its dataset; "
        "for the merge run, the walk's end on the full test sets of both tasks; for the sequence runs, ACC (the "
        "mean accuracy over every task's full test set after the last task). Snapshots thinned to at most "
        f"{k} per run, evenly spaced; snapshots and state.safetensors stored as float16 (final.safetensors, the "
        f"usable net, as float32). {sum(r['bytes'] for r in lines) / 1e6:.2f} MB in all"
        + (f"; made in {seconds / 60:.0f} min.\n" if seconds is not None else ".\n"))


def swap(new: Path) -> None:
    """Put `new` in place of the gallery (the old one removed after the rename)."""
    old = GALLERY.with_name(f".gallery-old-{uuid.uuid4().hex[:6]}")
    if GALLERY.exists():
        os.replace(GALLERY, old)
    os.replace(new, GALLERY)
    if old.exists():
        shutil.rmtree(old)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", help="folder for the raw runs, kept (default: a temporary folder, removed)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="remake only these examples (their spec names) in the gallery as it is; the others are kept")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="geodesic-gallery-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "make_gallery.log"
    new = GALLERY.with_name(f".gallery-new-{uuid.uuid4().hex[:6]}")
    chosen = [s for s in specs() if args.only is None or s.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        raise SystemExit(f"error: --only names {sorted(set(args.only) - {s.name for s in chosen})}, not among "
                         f"{[s.name for s in specs()]}")
    try:
        print(f"raw runs in {work} (log: {log})", flush=True)
        for spec in chosen:
            make_raw(spec, work, log)
        if args.only:  # the gallery as it is, the chosen examples replaced
            shutil.copytree(GALLERY, new)
            for spec in chosen:
                for name in spec.outputs.values():
                    shutil.rmtree(new / name, ignore_errors=True)
        else:  # the other folders (sweeps/, made by bench/bench_sweep.py) come along
            new.mkdir(parents=True)
            for d in (d for d in GALLERY.iterdir() if d.is_dir() and not (d / "meta.json").is_file()):
                shutil.copytree(d, new / d.name)
        for spec in chosen:
            for sub, name in spec.outputs.items():
                adopt(work / spec.name / sub if sub else work / spec.name, new / name, name, spec.titles[sub],
                      spec.meta)
        k = thin(new) if not args.only else max(
            len(list((d / runs.SNAPSHOTS).glob("*.safetensors"))) for d in run_dirs(new))
        lines = check(new)
        total = size(new)
        seconds = time.perf_counter() - t0
        (new / "README.md").write_text(readme(lines, k, None if args.only else seconds))
        total = size(new)
        for r in lines:
            print(f"{r['run']:40s} {r['kind']:9s} {r['status']:8s} accuracy {r['accuracy']} on {r['eval_images']} "
                  f"snapshots {r['snapshots']}  {r['bytes'] / 1e6:5.2f} MB")
        print(f"total {total / 1e6:.2f} MB ({total} bytes), {k} snapshots a run at most; {seconds:.0f} s")
        if total > LIMIT_BYTES:
            raise SystemExit(f"error: the gallery is {total / 1e6:.2f} MB, over {LIMIT_BYTES / 1e6:.0f} MB; "
                             f"nothing was replaced")
        swap(new)
        print(f"wrote {GALLERY}")
    finally:
        if new.exists():
            shutil.rmtree(new)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

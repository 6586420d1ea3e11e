"""Files as any other tool writes them: mode 0o666 minus the umask, so that on shared storage a colleague, or a Ray
node running as another user, can read a finished run. Some writers (safetensors' save_file) create their file
with mode 0600; every atomic write here sets the mode of its temporary file before renaming it into place."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode a new regular file gets from open(): 0o666 & ~umask."""
    return 0o666 & ~umask()


def follow_umask(path: str | os.PathLike) -> None:
    """Give the file at `path` the mode a new file gets from open() (0o666 & ~umask)."""
    os.chmod(path, default_mode())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(folder: Path, what: str, keep: bool = False) -> None:
    """ValueError ("cannot write <what>: …") unless `folder` can be created and written in; the folders made for the
    check are removed again unless `keep`. Used before long work, so that it cannot fail at its end."""
    folder, missing, anc = Path(folder), [], Path(folder)
    while not anc.exists() and anc != anc.parent:
        missing.append(anc)
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ValueError(f"cannot write {what}: {anc} is a file, not a folder")
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot write {what}: cannot create the folder {folder} ({e.strerror or e})") from None
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".geodesic-write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ValueError(f"cannot write {what}: cannot write in {folder} ({e.strerror or e})") from None
    finally:
        for d in missing if not keep else ():  # deepest first
            try:
                d.rmdir()
            except OSError:
                pass

"""Files as any other tool writes them: mode 0o666 minus the umask, so that on shared storage a colleague, or a Ray
node running as another user, can read a finished run. Some writers (safetensors' save_file) create their file
with mode 0600; every atomic write here sets the mode of its temporary file before renaming it into place."""

from __future__ import annotations

import os
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

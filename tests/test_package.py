"""The project as an installed package (`make` installs it editable into .venv) and the app's served defaults."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "geodesic"


def outside_env() -> dict:
    """The environment minus PYTHONPATH: only what is installed can be imported."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_import_outside_repository(tmp_path):
    code = ("import geodesic, importlib.metadata, pathlib; from geodesic.experiments.sparsify import recommended; "
            "print(geodesic.__version__, importlib.metadata.version('geodesic-explorer'), "
            "pathlib.Path(geodesic.__file__).resolve())")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=outside_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    version, installed, path = r.stdout.split()
    assert installed == version  # pyproject.toml reads its version from geodesic.__version__
    assert Path(path) == ROOT / "geodesic" / "__init__.py"  # editable: the repository's own files


def test_console_script(tmp_path):
    assert SCRIPT.exists(), f"{SCRIPT} missing: `make` (or `pip install -e .`) installs it"
    r = subprocess.run([str(SCRIPT), "--help"], cwd=tmp_path, env=outside_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "sparsify" in r.stdout
    # main() returns its exit code (2: a missing checkpoint, not a usage error); the script exits with it
    r = subprocess.run([str(SCRIPT), "damage", "--checkpoint", str(tmp_path / "none.safetensors"), "--kind", "ablate",
                        "--level", "1", "--out", str(tmp_path / "out")], cwd=tmp_path, env=outside_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "error:" in r.stderr and "usage:" not in r.stderr, r.stderr


def test_streamlit_config_local_by_default():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["client"]["toolbarMode"] == "viewer"  # no Deploy button
    assert cfg["browser"]["gatherUsageStats"] is False  # no requests to data.streamlit.io

"""`pip install .` into a fresh venv, once per test run: the `reactor` command as a user gets it.

The project (reactor/, pyproject.toml, requirements.in, README.md) is copied to a temporary folder
and installed from there with --no-deps; the venv sees this interpreter's site-packages through a
.pth file, so the dependencies are the pinned ones already installed and nothing else is downloaded
but setuptools for the build (from the package index pip is set up with).
"""
from __future__ import annotations

import atexit
import os
import shutil
import site
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=None)
def installed_bin() -> Path:
    """The bin folder of a venv holding `reactor`, installed by `pip install .` (once per run)."""
    home = Path(tempfile.mkdtemp(prefix="reactor-install-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    source = home / "src"
    shutil.copytree(ROOT / "reactor", source / "reactor", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    [site_dir] = (venv / "lib").glob("python3*/site-packages")
    (site_dir / "test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(source)],
                         capture_output=True, text=True, timeout=300, cwd=home)
    assert pip.returncode == 0, f"pip install . failed:\n{pip.stdout}\n{pip.stderr}"
    return venv / "bin"


def reactor_env(**extra: str | None) -> dict:
    """An environment in which `reactor` is the installed one: its venv first on PATH, no PYTHONPATH,
    no reactor settings of the caller's; `extra` adds (or, with None, removes) variables."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("ZOOM_", "REACTOR_")) and k not in ("PORT", "DATABASE_URL")}
    env["PATH"] = f"{installed_bin()}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def reactor(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60, input: str | None = None):
    """Run the installed `reactor ARGS` in `cwd` (a folder outside the repository)."""
    return subprocess.run([str(installed_bin() / "reactor"), *args], cwd=cwd, env=env or reactor_env(),
                          capture_output=True, text=True, timeout=timeout, input=input)

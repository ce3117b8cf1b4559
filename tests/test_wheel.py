"""A wheel built from the repository works on its own: installed into a fresh virtualenv, outside the checkout,
`tinyseek demo --quick` runs from it (the demo recipe is package data, not a file of the checkout).

To keep the test offline and quick, the fresh virtualenv does not reinstall torch and the other dependencies:
it is made with `python -m venv --system-site-packages --without-pip`, and a .pth file adds the site-packages
of the interpreter running the tests (where `make test` installed them) after the venv's own. The wheel
itself is built from a copy of the repository (`pip wheel --no-build-isolation --no-deps --no-index`) and
installed with `--no-deps`, so tinyseek comes only from the wheel; the test checks that it does.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*cache")


def _run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, args))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_built_wheel_runs_the_quick_demo_in_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=IGNORE)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q"]
        + ["-w", str(tmp_path / "dist"), str(src)]
    )
    (wheel,) = (tmp_path / "dist").glob("tinyseek-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("demo.toml", "r1.toml", "r1-zero.toml"):
        assert f"tinyseek/recipes/{f}" in names, f
    assert "tinyseek/serve/static/index.html" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)])

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    where = _run([py, "-c", "import tinyseek; print(tinyseek.__file__)"], cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).resolve().is_relative_to(purelib.resolve()), where  # the wheel's copy, not the checkout
    out = tmp_path / "demo"
    r = _run([venv / "bin" / "tinyseek", "demo", "--quick", "--out", str(out)], cwd=tmp_path, env=env)
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.json").is_file()
    assert "report" in r.stdout.lower()

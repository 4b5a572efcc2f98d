"""The datascience flavour, and that no image ships a shared object the loader refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubforge.imagebuild.lockfiles import parse_python_lock

pytestmark = pytest.mark.images
ROOT = Path(__file__).resolve().parents[2]

# dlopen every shared object under the venv, as an import would; a stripped auditwheel library fails here
LOAD_ALL = """
import ctypes, os, pathlib, sys
files = sorted(p for p in pathlib.Path(sys.prefix).rglob("*.so*") if p.is_file())
bad = []
for path in files:
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        bad.append(str(exc))
print(len(files), *bad, sep="\\n")
sys.stdout.flush()
os._exit(1 if bad else 0)  # no interpreter finalization with foreign libraries loaded
"""

WORK = """
import io
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt, numpy, pandas, polars, scipy.linalg, sklearn.linear_model, ipywidgets
print(numpy.__version__, pandas.__version__, polars.__version__)
print(scipy.linalg.solve([[3.0, 1.0], [1.0, 2.0]], [9.0, 8.0]).round(6).tolist())
print(round(float(sklearn.linear_model.LinearRegression().fit([[0], [1], [2]], [1, 3, 5]).coef_[0]), 6))
print(int(pandas.DataFrame({"a": [1, 2]}).a.sum()), polars.DataFrame({"a": [1, 2]})["a"].sum())
figure = io.BytesIO()
plt.plot([1, 2])
plt.savefig(figure, format="png")
print(figure.getvalue()[1:4].decode())
"""


def locked(name: str) -> str:
    return {p.name: p.version for p in parse_python_lock((ROOT / "images/lab/datascience.lock").read_text())}[name]


@pytest.mark.parametrize("target", ["hub", "lab", "lab-datascience"])
def test_every_shared_object_loads(built, datascience, tracked, target):
    image = datascience if target == "lab-datascience" else built[target]
    code, output = tracked.run(image, ["/opt/venv/bin/python", "-c", LOAD_ALL])
    lines = output.strip().splitlines()
    assert code == 0, "\n".join(lines[1:20])
    assert int(lines[0]) > 10  # the venv's extension modules were found


def test_datascience_computes_with_the_locked_versions(datascience, tracked):
    code, output = tracked.run(datascience, ["/opt/venv/bin/python", "-c", WORK])
    assert code == 0, output
    lines = output.strip().splitlines()
    assert lines[0].split() == [locked("numpy"), locked("pandas"), locked("polars")]
    assert lines[1:] == ["[2.0, 3.0]", "2.0", "3 3", "PNG"]


def test_datascience_runs_as_lab_with_jupyterlab(built, datascience, tracked):
    code, output = tracked.run(datascience, ["sh", "-c", "id -un; jupyter lab --version"])
    assert code == 0, output
    lab_version = tracked.run(built["lab"], ["jupyter", "lab", "--version"])[1].strip()
    assert output.split() == ["lab", lab_version]

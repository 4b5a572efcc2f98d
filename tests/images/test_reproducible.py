"""Same inputs, same bytes: a clean rebuild of each image gives the image `invoke build` made, to the byte (image id
and layer digests); the bootstrapped base does too; and a build that stamps the time is caught and named.

Each image here is rebuilt with no layer cache (the host's input caches are kept: they are verified by hash) and
compared with the image of its key, which `invoke test` built before: on a fresh machine, from clean as well. The
datascience flavour is left out for CI's time (`invoke build --check lab --flavor datascience` checks it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubforge.docker_io import Docker
from hubforge.imagebuild.builder import REVISION_LABEL, Builder, Settings
from hubforge.imagebuild.targets import Graph, Target

pytestmark = pytest.mark.images
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.path.expanduser("~/.cache/hubforge"))


def builder(root: Path = ROOT, graph: Graph | None = None) -> Builder:
    return Builder(Settings(root=root, cache_dir=CACHE), Docker(), graph, say=lambda message: None)


@pytest.mark.parametrize("name", ["gpu-probe", "registry", "backup", "hub", "lab"])
def test_a_clean_rebuild_is_the_same_image(name):
    made = builder()
    step = made.plan(made.graph.select(name, None))[-1]
    assert step.exists, f"{step.ref} is missing; run `invoke build`"
    result = made.check(step, lambda line: None, lambda message: None, against_existing=True)
    assert result.differences == [], f"{name}: " + "; ".join(result.differences)
    assert result.first == result.second
    layers = made.docker.inspect(step.ref)["RootFS"]["Layers"]
    assert made.docker.inspect(step.ref)["Created"].startswith(
        "2026-01-01T00:00:00"
    )  # SOURCE_DATE_EPOCH, not the clock
    assert len(layers) >= 1 and result.files > 10


def test_a_release_copy_left_under_the_key_tag_is_built_again():
    """An older `invoke release` tagged its labelled copy under the key: on a machine that kept it, `invoke build`
    took that copy for the build. It is built again instead, and the build is the image the key had before."""
    made = builder()
    step = made.plan(made.graph.select("gpu-probe", None))[-1]
    assert step.exists and step.image, f"{step.ref} is missing; run `invoke build`"
    copy = "hubforge-test/gpu-probe:released"
    made.normalize(
        step.ref,
        copy,
        {REVISION_LABEL: "a940933c8cd099e2521af9598be1452200ba7d80", "org.opencontainers.image.version": "9.8.7"},
        keep=True,
    )
    try:
        made.docker.tag(copy, step.target.repository, step.key)
        again = made.plan(made.graph.select("gpu-probe", None))[-1]
        assert not again.exists
        assert again.reasons == [f"{step.ref} is a release's copy (revision a940933c8cd0), not a build"]
        made.build_step(again, lambda line: None, lambda message: None)
        assert made.docker.image_id(step.ref) == step.image
        assert made.plan(made.graph.select("gpu-probe", None))[-1].exists
    finally:
        made.docker.remove_image(copy)


CHECK_BASE = """
import json, sys
sys.path.insert(0, {root!r})
from tests.images.test_reproducible import builder
made = builder()
step = made.plan([made.graph.targets["base"]])[0]
result = made.check(step, lambda line: None, lambda message: None)
print(json.dumps({{"same": result.same, "differences": result.differences, "ids": [result.first, result.second]}}))
"""


def test_the_bootstrapped_base_is_the_same_image_from_its_lock_alone_with_no_network():
    """Two clean bootstraps give the same image, and they need no network: the packages are the lock's .debs from the
    host cache (checked), installed from a local repository of them alone. The check runs in a network namespace of
    its own, with no interface but loopback (the Docker socket is a file, so the daemon still answers)."""
    made = builder()
    made.plan([made.graph.targets["base"]])
    if made.base_mode_used != "bootstrap":
        pytest.skip(f"the base here comes from {made.base_mode_used}: a pinned digest, the same by construction")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    run = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", CHECK_BASE.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["same"], "; ".join(result["differences"])


def test_a_build_that_stamps_the_time_is_caught_and_the_file_named(tmp_path):
    """A target of its own (FROM the current base) that writes the time into a file: the check names that file."""
    shutil.copytree(ROOT / "images" / "base", tmp_path / "images" / "base")  # the recipe, its lock and keyring
    (tmp_path / "images" / "stamp").mkdir()
    (tmp_path / "images" / "stamp" / "Dockerfile.j2").write_text(
        "FROM {{ parent }}\nRUN date +%s%N > /etc/build-stamp && echo fixed > /etc/fixed\n"
    )
    real = builder()
    graph = Graph(
        {
            "base": real.graph.targets["base"],
            "stamp": Target(
                "stamp", "hubforge-test/stamp", "images/stamp/Dockerfile.j2", description="stamps the time"
            ),
        }
    )
    made = Builder(
        Settings(root=tmp_path, cache_dir=CACHE, base_mode=real.resolve_base_mode()),
        Docker(),
        graph,
        say=lambda message: None,
    )
    base, step = made.plan(graph.closure(["stamp"]))
    assert base.exists, "the base of the current key is missing; run `invoke build`"
    try:
        result = made.check(step, lambda line: None, lambda message: None)
    finally:
        made.docker.remove_image(step.ref)
    assert not result.same
    assert result.differences == ["etc/build-stamp: contents"], result.differences  # and nothing else differs
    assert made.docker.image_id(f"hubforge-check/stamp:{step.key}-1") is None  # the compared builds are removed

"""The base image: a digest-pinned upstream pull, or a rootfs bootstrapped from a Debian mirror."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from .. import proc
from ..docker_io import Docker
from ..errors import HubforgeError
from .locks import check_package_name
from .normalize import rootfs_archive
from .targets import SOURCE_DATE_EPOCH, BaseSpec

log = logging.getLogger(__name__)


# What a `remove_after` entry may be: an absolute path whose parts are plain names or globs. It is pasted into a
# shell hook unquoted (so that its globs expand inside the new rootfs), so no quote, space, `$` or `;` may pass.
REMOVE_PATH = re.compile(r"(/[A-Za-z0-9_+.*-]+)+")


def removal(path: str) -> str:
    """A `remove_after` entry, checked before it reaches mmdebstrap's shell hook."""
    if not REMOVE_PATH.fullmatch(path) or ".." in path.split("/"):
        raise HubforgeError(f"images/base/bootstrap.json: remove_after entry {path!r} is not an absolute path of "
                            f"plain names and globs (letters, digits, '_+.-*'); fix the recipe")
    return path


def mmdebstrap_argv(spec: BaseSpec, recipe: dict, output: Path) -> list[str]:
    """The mmdebstrap command line for a recipe (images/base/bootstrap.json); pure, so it is tested. The entries
    that reach its shell hooks are checked first."""
    components = " ".join(recipe["components"])
    argv = ["mmdebstrap", f"--variant={recipe['variant']}", "--mode=root", "--format=tar", "--quiet"]
    if recipe.get("include"):
        argv.append(f"--include={','.join(recipe['include'])}")
    argv += [f"--dpkgopt=path-exclude={p}" for p in recipe.get("path_exclude", [])]
    argv += [f"--dpkgopt=path-include={p}" for p in recipe.get("path_include", [])]
    if recipe.get("purge_after"):
        purge = [check_package_name(n, "images/base/bootstrap.json purge_after") for n in recipe["purge_after"]]
        argv.append(f"--customize-hook=chroot \"$1\" dpkg --purge {' '.join(purge)}")
    if recipe.get("remove_after"):
        removals = " ".join(f'"$1"{removal(p)}' for p in recipe["remove_after"])
        argv.append(f"--customize-hook=rm -rf {removals}")
    argv += [
        spec.suite,
        str(output),
        f"deb {spec.mirror} {spec.suite} {components}",
        f"deb {spec.mirror} {spec.suite}-updates {components}",
        f"deb {spec.security_mirror} {spec.suite}-security {components}",
    ]
    return argv


def bootstrap(docker: Docker, spec: BaseSpec, recipe_path: Path, ref: str, scratch: Path, progress=None) -> str:
    """Make the rootfs with mmdebstrap (SOURCE_DATE_EPOCH set) and load it as `ref`, normalised like every built image:
    the same mirror state gives the same image id. Needs root."""
    if shutil.which("mmdebstrap") is None:
        raise HubforgeError("--base=bootstrap needs mmdebstrap: run `invoke setup` or `apt-get install mmdebstrap`")
    if os.geteuid() != 0:
        raise HubforgeError("--base=bootstrap needs root (mmdebstrap --mode=root); run as root or use --base=pull")
    recipe = json.loads(recipe_path.read_text())
    with tempfile.TemporaryDirectory(prefix="hubforge-rootfs-", dir=scratch) as tmp:
        output = Path(tmp) / "rootfs.tar"
        if progress:
            progress(f"bootstrapping Debian {spec.suite} from {spec.mirror} (mmdebstrap, ~30 s)")
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
        proc.run(mmdebstrap_argv(spec, recipe, output), env=env, what="bootstrapping the base rootfs (mmdebstrap)")
        if progress:
            progress("loading the rootfs into Docker")
        runtime = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]}
        made_by = f"hubforge: mmdebstrap --variant={recipe['variant']} {spec.suite} {spec.mirror}"
        _, layers = rootfs_archive(output, Path(tmp) / "image.tar", [ref], runtime, made_by, SOURCE_DATE_EPOCH, Path(tmp))
        output.unlink()
        return docker.load(Path(tmp) / "image.tar", ref, layers)


def pull(docker: Docker, spec: BaseSpec, repository: str, tag: str, progress=None) -> str:
    if docker.image_id(spec.upstream) is None:
        if progress:
            progress(f"pulling {spec.upstream}")
        docker.pull(spec.upstream)
    docker.tag(spec.upstream, repository, tag)
    image = docker.image_id(f"{repository}:{tag}")
    assert image is not None
    return image

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
from .verify import file_sha256
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


def pinned_keyring(root: Path, recipe: dict) -> Path:
    """The recipe's Debian archive keyring, when its bytes are the ones the recipe pins by sha256; else one line."""
    entry = recipe["keyring"]
    path = root / entry["path"]
    found = file_sha256(path) if path.is_file() else "missing"
    if found != entry["sha256"]:
        raise HubforgeError(f"{entry['path']}: sha256 {found} is not the one images/base/bootstrap.json pins "
                            f"({entry['sha256'][:16]}…); restore it (`git checkout -- {entry['path']}`), or pin a new "
                            f"keyring as the README's *The base image* says")
    return path


def trust_only(keyring: Path, copy: Path) -> None:
    """Put the checked keyring at `copy`, alone in its folder (what `keyring_options` hands to apt)."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keyring, copy)
    copy.chmod(0o644)  # apt verifies signatures as its sandbox user (_apt)
    copy.parent.chmod(0o755)


def keyring_options(keyring: Path) -> list[str]:
    """mmdebstrap options that make apt trust the keys in `keyring` (alone in its folder) and nothing else.

    apt trusts a keyring file (Dir::Etc::Trusted) and a folder of them (Dir::Etc::TrustedParts), both the host's by
    default. mmdebstrap's `--keyring` replaces one of the two, by whether it is given a file or a folder, so a file
    alone leaves every key in the host's /etc/apt/trusted.gpg.d trusted: both are replaced here.
    `--skip=check/signed-by`: otherwise mmdebstrap adds `signed-by=` the host's
    /usr/share/keyrings/debian-archive-keyring.gpg to the sources whenever that file holds keys ours does not, which
    trusts the host's file again (and writes a host-dependent line into the image's sources.list)."""
    return [f"--keyring={keyring.parent}", f"--keyring={keyring}", "--skip=check/signed-by"]


def mmdebstrap_argv(spec: BaseSpec, recipe: dict, output: Path, keyring: Path) -> list[str]:
    """The mmdebstrap command line for a recipe (images/base/bootstrap.json); pure, so it is tested. apt trusts only
    `keyring` (a copy of the pinned one, alone in its folder). The entries that reach its shell hooks are checked
    first."""
    components = " ".join(recipe["components"])
    argv = ["mmdebstrap", f"--variant={recipe['variant']}", "--mode=root", "--format=tar", "--quiet"]
    argv += keyring_options(keyring)
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


def bootstrap(docker: Docker, spec: BaseSpec, root: Path, recipe_path: Path, ref: str, scratch: Path, progress=None) -> str:
    """Make the rootfs with mmdebstrap (SOURCE_DATE_EPOCH set) and load it as `ref`, normalised like every built image:
    the same mirror state gives the same image id. Needs root."""
    if shutil.which("mmdebstrap") is None:
        raise HubforgeError("--base=bootstrap needs mmdebstrap: run `invoke setup` or `apt-get install mmdebstrap`")
    if os.geteuid() != 0:
        raise HubforgeError("--base=bootstrap needs root (mmdebstrap --mode=root); run as root or use --base=pull")
    recipe = json.loads(recipe_path.read_text())
    keyring = pinned_keyring(root, recipe)
    # the keyring's copy in a folder of the system's own: apt checks signatures as its sandbox user, who cannot read
    # a cache under a private home
    with tempfile.TemporaryDirectory(prefix="hubforge-rootfs-", dir=scratch) as tmp, \
            tempfile.TemporaryDirectory(prefix="hubforge-keyring-") as trusted:
        output = Path(tmp) / "rootfs.tar"
        trust_only(keyring, Path(trusted) / "debian-archive.gpg")
        if progress:
            progress(f"bootstrapping Debian {spec.suite} from {spec.mirror}, trusting only {recipe['keyring']['path']} "
                     "(mmdebstrap, ~30 s)")
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
        proc.run(mmdebstrap_argv(spec, recipe, output, Path(trusted) / "debian-archive.gpg"), env=env,
                 what="bootstrapping the base rootfs (mmdebstrap)")
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

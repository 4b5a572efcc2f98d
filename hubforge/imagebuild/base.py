"""The base image: a digest-pinned upstream pull, or a rootfs bootstrapped from the locked packages of a Debian
mirror."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..docker_io import Docker
from ..errors import HubforgeError
from . import debs
from .debs import DebCache
from .lockfiles import DebPin, check_package_name, parse_apt_lock
from .normalize import rootfs_archive
from .targets import SOURCE_DATE_EPOCH, BaseSpec
from .verify import file_sha256

log = logging.getLogger(__name__)

RECIPE = "images/base/bootstrap.json"


# What a `remove_after` entry may be: an absolute path whose parts are plain names or globs. It is pasted into a
# shell hook unquoted (so that its globs expand inside the new rootfs), so no quote, space, `$` or `;` may pass.
REMOVE_PATH = re.compile(r"(/[A-Za-z0-9_+.*-]+)+")


def removal(path: str) -> str:
    """A `remove_after` entry, checked before it reaches mmdebstrap's shell hook."""
    if not REMOVE_PATH.fullmatch(path) or ".." in path.split("/"):
        raise HubforgeError(
            f"images/base/bootstrap.json: remove_after entry {path!r} is not an absolute path of "
            f"plain names and globs (letters, digits, '_+.-*'); fix the recipe"
        )
    return path


@dataclass(frozen=True)
class Workspace:
    """The host files of one mmdebstrap run (see `workspace`)."""

    keyring: Path  # a copy of the checked keyring, alone in its folder: the one folder apt trusts
    repo: Path  # a build's only package source: the locked .debs, checked against the lock, and their index
    report: Path  # what the run writes out: the dpkg status before the purge (a build), or the resolution (a lock)


@contextlib.contextmanager
def workspace(scratch: Path) -> Iterator[Workspace]:
    """A Workspace in a new temporary folder under `scratch`, its keyring in one of the system's own: apt checks
    signatures as its sandbox user, who must be able to read the keyring (the cache is often under a private home)."""
    with (
        tempfile.TemporaryDirectory(prefix="hubforge-rootfs-", dir=scratch) as tmp,
        tempfile.TemporaryDirectory(prefix="hubforge-keyring-") as trusted,
    ):
        yield Workspace(Path(trusted) / "debian-archive.gpg", Path(tmp) / "repo", Path(tmp) / "report")


def pinned_keyring(root: Path, recipe: dict) -> Path:
    """The recipe's Debian archive keyring, when its bytes are the ones pinned by sha256; else one line."""
    entry = recipe["keyring"]
    path = root / entry["path"]
    found = file_sha256(path) if path.is_file() else "missing"
    if found != entry["sha256"]:
        raise HubforgeError(
            f"{entry['path']}: sha256 {found} is not the one images/base/bootstrap.json pins "
            f"({entry['sha256'][:16]}…); restore it (`git checkout -- {entry['path']}`), or pin a new "
            f"keyring as the README's *The base image* says"
        )
    return path


def trust_only(keyring: Path, copy: Path) -> None:
    """Put the checked keyring at `copy`, alone in its folder (what `keyring_options` hands to apt)."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keyring, copy)
    copy.chmod(0o644)  # apt verifies signatures as its sandbox user (_apt)
    copy.parent.chmod(0o755)


def keyring_options(keyring: Path) -> list[str]:
    """mmdebstrap options that make apt trust the keys in `keyring` (alone in its folder) and nothing else.

    apt trusts a keyring file (Dir::Etc::Trusted) and a folder of them (Dir::Etc::TrustedParts), both the host's
    by default. mmdebstrap's `--keyring` replaces one of the two, by whether it is given a file or a folder, so
    a file alone leaves every key in the host's /etc/apt/trusted.gpg.d trusted: both are replaced here.
    `--skip=check/signed-by`: otherwise mmdebstrap adds `signed-by=` the host's
    /usr/share/keyrings/debian-archive-keyring.gpg to the sources whenever that file holds keys ours does not,
    which trusts the host's file again (and writes a host-dependent line into the image's sources.list)."""
    return [f"--keyring={keyring.parent}", f"--keyring={keyring}", "--skip=check/signed-by"]


def report_hook(work: Workspace, locking: bool) -> str:
    """The first customize hook: copy out the dpkg status (a build, checked against the lock afterwards), or run
    the resolution script in the new rootfs (a lock): both before the recipe purges anything."""
    if locking:
        script = shlex.quote(installed_resolution_script())
        return f'--customize-hook=chroot "$1" sh -c {script} > {shlex.quote(str(work.report))}'
    return f'--customize-hook=cp "$1"/var/lib/dpkg/status {shlex.quote(str(work.report))}'


def installed_resolution_script() -> str:
    """Shell run inside the new rootfs while apt's lists are still there: the URL and the index stanza of every
    installed package, in the shape `debs.parse_resolution` reads."""
    return (
        "set -e; dpkg-query -W -f='${db:Status-Abbrev} ${Package}=${Version}\\n' | awk '$1 == \"ii\" {print $2}' "
        "> /tmp/installed; xargs apt-get download --print-uris < /tmp/installed; "
        f"echo {debs.SEPARATOR}; xargs apt-cache show --no-all-versions < /tmp/installed; rm /tmp/installed"
    )


def sources_list(spec: BaseSpec, components: str) -> list[str]:
    """The base's own apt sources: what `invoke lock` resolves from, and what the image keeps in sources.list."""
    return [
        f"deb {spec.mirror} {spec.suite} {components}",
        f"deb {spec.mirror} {spec.suite}-updates {components}",
        f"deb {spec.security_mirror} {spec.suite}-security {components}",
    ]


def mmdebstrap_argv(
    spec: BaseSpec, recipe: dict, output: Path, work: Workspace, locking: bool = False, packages: Sequence[str] = ()
) -> list[str]:
    """The mmdebstrap command line for a recipe (images/base/bootstrap.json); pure, so it is tested.

    A lock (`locking`) resolves the recipe from the mirror, apt trusting only the keyring `work.keyring`. A build
    installs `packages` (every package of the lock, by name) from `work.repo` alone, a local repository holding
    exactly the locked .debs: the mirror's index of the day plays no part, so a mirror that has moved on changes
    nothing, and what is installed is what the lock's hashes (taken from the signed index) name. The image keeps
    the mirror's lines as its sources.list. The entries that reach its shell hooks are checked first."""
    components = " ".join(recipe["components"])
    argv = ["mmdebstrap", f"--variant={recipe['variant']}", "--mode=root", "--format=tar", "--quiet"]
    argv += keyring_options(work.keyring)
    include = list(recipe.get("include", [])) if locking else sorted(packages)
    if include:
        names = [check_package_name(n, "images/base/bootstrap.json include") for n in include]
        argv.append(f"--include={','.join(names)}")
    argv += [f"--dpkgopt=path-exclude={p}" for p in recipe.get("path_exclude", [])]
    argv += [f"--dpkgopt=path-include={p}" for p in recipe.get("path_include", [])]
    if not locking:
        listing = " ".join(shlex.quote(line) for line in sources_list(spec, components))
        argv.append(f'--customize-hook=printf "%s\\n" {listing} > "$1"/etc/apt/sources.list')
    argv.append(report_hook(work, locking))
    if recipe.get("purge_after"):
        purge = [check_package_name(n, "images/base/bootstrap.json purge_after") for n in recipe["purge_after"]]
        argv.append(f'--customize-hook=chroot "$1" dpkg --purge {" ".join(purge)}')
    if recipe.get("remove_after"):
        removals = " ".join(f'"$1"{removal(p)}' for p in recipe["remove_after"])
        argv.append(f"--customize-hook=rm -rf {removals}")
    argv += [spec.suite, str(output)]
    argv += sources_list(spec, components) if locking else [f"deb [trusted=yes] copy://{work.repo} ./"]
    return argv


def installed_packages(status: str) -> dict[str, tuple[str, str]]:
    """package -> (version, architecture) of every package a dpkg status file says is installed."""
    installed = {}
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Status") == "install ok installed":
            installed[fields["Package"]] = (fields["Version"], fields["Architecture"])
    return installed


def lock_differences(installed: dict[str, tuple[str, str]], pins: list[DebPin]) -> list[str]:
    """How the installed set differs from the lock, one phrase per package, sorted; empty when it is the lock."""
    locked = {pin.package: (pin.version, pin.arch) for pin in pins}
    phrases = []
    for name in sorted(set(installed) | set(locked)):
        if name not in locked:
            phrases.append(f"{name} {installed[name][0]} is not in the lock")
        elif name not in installed:
            phrases.append(f"{name} {locked[name][0]} was not installed")
        elif installed[name] != locked[name]:
            phrases.append(f"{name} {'/'.join(installed[name])} installed, {'/'.join(locked[name])} locked")
    return phrases


def check_installed(status: str, pins: list[DebPin], lock: str) -> None:
    """Refuse, in one line, a rootfs whose package set is not exactly the lock's (the recipe changed since
    `invoke lock`, or the lock was edited by hand)."""
    differences = lock_differences(installed_packages(status), pins)
    if differences:
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
        raise HubforgeError(
            f"the bootstrap installed other packages than {lock} ({shown}); images/base/bootstrap.json "
            f"changed since it was locked: run `invoke lock --target base`"
        )


def check_prerequisites() -> None:
    if shutil.which("mmdebstrap") is None:
        raise HubforgeError("--base=bootstrap needs mmdebstrap: run `invoke setup` or `apt-get install mmdebstrap`")
    if os.geteuid() != 0:
        raise HubforgeError("--base=bootstrap needs root (mmdebstrap --mode=root); run as root or use --base=pull")


def run_mmdebstrap(
    spec: BaseSpec, recipe: dict, root: Path, output: Path, work: Workspace, locking: bool, packages: Sequence[str] = ()
) -> None:
    """mmdebstrap with SOURCE_DATE_EPOCH set, trusting only the pinned keyring."""
    trust_only(pinned_keyring(root, recipe), work.keyring)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    proc.run(
        mmdebstrap_argv(spec, recipe, output, work, locking, packages),
        env=env,
        what="locking the base's packages (mmdebstrap)" if locking else "bootstrapping the base rootfs (mmdebstrap)",
    )


def local_repository(pins: list[DebPin], cache: DebCache, repo: Path, suite: str, progress=None) -> None:
    """A flat apt repository at `repo` holding exactly the locked .debs (fetched when missing, each checked against
    the lock as it is staged), indexed from their own control fields with the lock's sha256. Its Release names the
    suite, which mmdebstrap selects packages by."""
    cache.fetch(pins, progress)
    repo.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for pin in sorted(pins, key=lambda p: p.package):
        staged = repo / pin.filename
        cache.verifier.stage(cache.path(pin), staged, pin.sha256)
        control = proc.run(["dpkg-deb", "--field", str(staged)], what=f"reading {pin.filename}").stdout.rstrip("\n")
        stanzas.append(f"{control}\nFilename: ./{pin.filename}\nSize: {staged.stat().st_size}\nSHA256: {pin.sha256}\n")
    index = "\n".join(stanzas).encode()
    (repo / "Packages").write_bytes(index)
    (repo / "Release").write_text(
        f"Origin: hubforge\nLabel: the base lock\nSuite: {suite}\nCodename: {suite}\n"
        f"SHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} Packages\n"
    )


def bootstrap(
    docker: Docker, spec: BaseSpec, root: Path, lock: str, ref: str, scratch: Path, cache: DebCache, progress=None
) -> str:
    """Make the rootfs with mmdebstrap from exactly the packages of the base lock, and load it as `ref`, normalised
    like every built image: the same lock gives the same image id. Needs root."""
    check_prerequisites()
    recipe = json.loads((root / RECIPE).read_text())
    with workspace(scratch) as work:
        tmp, output = work.report.parent, work.report.parent / "rootfs.tar"
        pins = parse_apt_lock((root / lock).read_text(), lock)
        local_repository(pins, cache, work.repo, spec.suite, progress)
        if progress:
            progress(
                f"bootstrapping Debian {spec.suite} from the {len(pins)} packages of {lock} alone (mmdebstrap, ~20 s)"
            )
        run_mmdebstrap(spec, recipe, root, output, work, locking=False, packages=[p.package for p in pins])
        check_installed(work.report.read_text(), pins, lock)
        if progress:
            progress("loading the rootfs into Docker")
        runtime = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]}
        made_by = f"hubforge: mmdebstrap --variant={recipe['variant']} {spec.suite} {spec.mirror}"
        _, layers = rootfs_archive(output, tmp / "image.tar", [ref], runtime, made_by, SOURCE_DATE_EPOCH, tmp)
        output.unlink()
        return docker.load(tmp / "image.tar", ref, layers)


def resolve(spec: BaseSpec, root: Path, scratch: Path) -> list[DebPin]:
    """What the recipe installs today, from the mirror, trusting only the pinned keyring: each package's URL and its
    SHA256 from the signed index (`invoke lock`). Needs root, as a bootstrap does."""
    check_prerequisites()
    recipe = json.loads((root / RECIPE).read_text())
    with workspace(scratch) as work:
        run_mmdebstrap(spec, recipe, root, work.report.parent / "rootfs.tar", work, locking=True)
        return debs.parse_resolution(work.report.read_text())


def requested(spec: BaseSpec, root: Path) -> list[str]:
    """What the base lock's `# requested:` line names: the variant and the packages the recipe adds."""
    recipe = json.loads((root / RECIPE).read_text())
    return [f"mmdebstrap --variant={recipe['variant']} {spec.suite}", *recipe.get("include", [])]


def pull(docker: Docker, spec: BaseSpec, repository: str, tag: str, progress=None) -> str:
    if docker.image_id(spec.upstream) is None:
        if progress:
            progress(f"pulling {spec.upstream}")
        docker.pull(spec.upstream)
    docker.tag(spec.upstream, repository, tag)
    image = docker.image_id(f"{repository}:{tag}")
    assert image is not None
    return image

"""Plan and build: turn targets into keys, explain what changed, and build only what is missing."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..docker_io import Docker
from ..errors import HubforgeError
from ..render import oci_labels, render
from . import labext, remote_cache
from .keys import Manifest, digest_bytes, explain
from .lockfiles import check_deb_arch, parse_apt_lock, parse_python_lock
from .normalize import differences, iso, normalize_saved, saved_entries
from .targets import HOST_BUILD_LOCK, PYTHON_VERSION, SOURCE_DATE_EPOCH, BaseSpec, Graph, Target
from .verify import Verifier

if TYPE_CHECKING:  # imported when something is built (the execute layer), so a no-op stays quick
    from . import wheels

log = logging.getLogger(__name__)

SOURCE_URL = "https://github.com/hubforge/hubforge"
LICENSE = "BSD-3-Clause"
KEY_LABEL = "io.hubforge.key"
# The normaliser's own source is an input of every built image: it decides the bytes (hubforge.imagebuild.normalize).
NORMALIZER = {"hubforge/imagebuild/normalize.py": digest_bytes((Path(__file__).parent / "normalize.py").read_bytes())}
RAW_REPOSITORY = "hubforge-build"  # the classic builder's output, before normalize() rewrites it under the key
CHECK_REPOSITORY = "hubforge-check"  # `invoke build --check`: the two builds it compares, removed after
TARGET_LABEL = "io.hubforge.target"
# Only `invoke release` writes it: an image under a key tag that carries it is a release's copy, never a build.
REVISION_LABEL = "org.opencontainers.image.revision"


def release_copy(ref: str, inspected: dict | None) -> str:
    """Why the inspected image under `ref` is not a build ("" when it is one: a build has no revision label)."""
    labels = ((inspected or {}).get("Config") or {}).get("Labels") or {}
    revision = labels.get(REVISION_LABEL, "")
    return f"{ref} is a release's copy (revision {revision[:12]}), not a build" if revision else ""


@dataclass(frozen=True)
class Settings:
    """Where things are and how to make the base; built by tasks.py from flags and invoke config."""

    root: Path
    cache_dir: Path
    base_mode: str = "auto"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    upstream: str = BaseSpec(mode="pull").upstream
    no_cache: bool = False  # rebuild every selected target without Docker's layer cache
    cache_from: str | None = None  # REGISTRY/NAMESPACE whose images, pulled by digest, stand in for builds
    cache_index: Path | None = None  # a release's cache-index-*.json: the digest of the image of each key there
    cache_key: Path | None = None  # the release's public key: the index counts only with its valid .sig beside it
    jobs: int = 0  # targets built at once; 0: default_jobs()

    def __post_init__(self) -> None:
        if self.cache_from and self.cache_index is None:
            raise HubforgeError(
                "--cache-from needs --cache-index FILE: the cache-index-VERSION.json of the release that "
                "pushed the cache (a key tag alone could be any image)"
            )
        if self.cache_key and not (self.cache_from and self.cache_index):
            raise HubforgeError(
                "--cache-key checks the signature of the --cache-index that --cache-from uses; give all three"
            )

    def spec(self, mode: str) -> BaseSpec:
        return BaseSpec(
            mode=mode,
            upstream=self.upstream,
            suite=self.suite,
            mirror=self.mirror,
            security_mirror=self.security_mirror,
        )


@dataclass(frozen=True)
class CheckResult:
    """Two clean builds of one target, compared."""

    ref: str
    first: str  # image id of each build
    second: str
    differences: list[str]  # the first files that differ, with what differs; empty when the builds are the same
    files: int

    @property
    def same(self) -> bool:
        return self.first == self.second and not self.differences


@dataclass
class Step:
    """One target in a plan: its key, its image reference, and whether and why it must be built."""

    target: Target
    manifest: Manifest
    exists: bool
    reasons: list[str] = field(default_factory=list)
    image: str | None = None  # the image id of the key when the plan was made

    @property
    def key(self) -> str:
        return self.manifest.key()

    @property
    def ref(self) -> str:
        return f"{self.target.repository}:{self.key}"

    @property
    def remote_key(self) -> str:
        """The key's tag in a registry: the full sha256 (the local tag keeps 80 bits)."""
        return self.manifest.full_key()


RACY_SECONDS = 2
# What else a render depends on: the renderer's source and Jinja's version (read from its metadata, not imported).
RENDERER = [digest_bytes((Path(__file__).parents[1] / "render.py").read_bytes()), importlib.metadata.version("jinja2")]


class PlanCache:
    """What planning computed last time, so that a no-op build neither hashes nor renders again.

    - A file's digest is kept with its size and modification time; when either differs, the file is hashed again.
      A file changed in the last RACY_SECONDS is not kept (as git does): the file system's clock is coarse, and a
      second same-size write within one tick would keep its time.
    - A rendered Dockerfile is kept under the digest of its template texts and variables (the render is pure).
    Kept in the build state folder; a damaged or missing file only means computing everything once more."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.changed = path, False
        self.data: dict[str, dict] = {"files": {}, "renders": {}}
        if path is not None:
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict) and set(loaded) == {"files", "renders"}:
                    self.data = loaded
            except (OSError, ValueError):
                pass

    def digest(self, path: Path) -> str:
        info = path.stat()
        known = self.data["files"].get(str(path))
        if known and known[0] == info.st_size and known[1] == info.st_mtime_ns:
            return known[2]
        value = digest_bytes(path.read_bytes())
        if time.time_ns() - info.st_mtime_ns > RACY_SECONDS * 1e9:
            self.data["files"][str(path)] = [info.st_size, info.st_mtime_ns, value]
            self.changed = True
        return value

    def render(self, templates: dict[str, str], entry: str, variables: dict[str, object]) -> str:
        key = digest_bytes(json.dumps([RENDERER, templates, entry, variables], sort_keys=True, default=str).encode())
        if key not in self.data["renders"]:
            self.data["renders"][key] = render(templates, entry, variables)
            self.changed = True
        return self.data["renders"][key]

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(self.data))
        staged.replace(self.path)
        self.changed = False


def input_digests(root: Path, paths: tuple[str, ...], cache: PlanCache | None = None) -> dict[str, str]:
    """sha256 of every declared input file; a declared folder contributes each source file below it
    (build outputs such as node_modules, lib and __pycache__ are not sources)."""
    cache = cache or PlanCache(None)
    digests: dict[str, str] = {}
    for rel in paths:
        path = root / rel
        if path.is_dir():
            for child in labext.source_files(path):
                digests[f"{rel}/{child}"] = cache.digest(path / child)
        elif path.is_file():
            digests[rel] = cache.digest(path)
        else:
            raise HubforgeError(
                f"declared input {rel} does not exist; fix the target in hubforge/imagebuild/targets.py or run `invoke "
                "lock`"
            )
    return digests


def planned_files(root: Path, paths: Iterable[str], planned: Mapping[str, str]) -> dict[str, bytes]:
    """The bytes of every file the key hashed under `paths` (files and declared folders), read once and checked
    against the plan's digests, so that a build stages what its key names: a `git checkout` or an edit between
    planning and staging would otherwise put new inputs into an image under the old key."""
    files: dict[str, bytes] = {}
    for rel in paths:
        path = root / rel
        found = [f"{rel}/{child}" for child in labext.source_files(path)] if path.is_dir() else [rel]
        if sorted(found) != sorted(k for k in planned if k == rel or k.startswith(f"{rel}/")):
            raise changed_since_plan(rel)
        for name in found:
            try:
                data = (root / name).read_bytes()
            except OSError:
                raise changed_since_plan(name) from None
            if digest_bytes(data) != planned[name]:
                raise changed_since_plan(name)
            files[name] = data
    return files


def changed_since_plan(rel: str) -> HubforgeError:
    return HubforgeError(
        f"{rel} changed after its image's key was computed (a checkout or an edit during the build); "
        "run `invoke build` again"
    )


def template_texts(root: Path, target: Target) -> dict[str, str]:
    """The template and every declared .j2 input, by repo-relative path (what render may include)."""
    assert target.template
    names = [target.template] + [p for p in target.inputs if p.endswith(".j2")]
    return {name: (root / name).read_text() for name in names}


def render_variables(target: Target, parent_ref: str | None) -> dict[str, object]:
    return {
        "parent": parent_ref,
        "flavor": target.flavor,
        "source_date_epoch": SOURCE_DATE_EPOCH,
        "python_version": PYTHON_VERSION,
        "labels": oci_labels(
            title=f"hubforge {target.name}",
            version=__version__,
            description=target.description,
            source=SOURCE_URL,
            licenses=LICENSE,
        ),
    }


class Builder:
    def __init__(
        self, settings: Settings, docker: Docker, graph: Graph | None = None, say: Callable[[str], None] = print
    ) -> None:
        self.settings = settings
        self.docker = docker
        self.graph = graph or Graph()
        self.say = say
        self.state_dir = settings.cache_dir / "state"
        self.base_mode_used: str | None = None
        self.base_reason = ""
        self.base_announced = False
        self.staging = threading.Lock()
        self.cache = PlanCache(self.state_dir / "plan-cache.json")
        self.verifier = Verifier()  # every cached input is checked against its lock when staged, once per file
        # Read from the user, never from the registry it vouches for; loaded now so that a bad file stops the build
        # early.
        self.remote_index = (
            remote_cache.load(settings.cache_index, settings.cache_key)
            if settings.cache_from and settings.cache_index
            else None
        )

    # -- describe ----------------------------------------------------------------------------------
    def base_manifest(self, mode: str) -> Manifest:
        target = self.graph.targets["base"]
        inputs = (
            {**input_digests(self.settings.root, target.all_inputs(), self.cache), **NORMALIZER}
            if mode == "bootstrap"
            else {}
        )
        return Manifest("base", "", inputs, self.settings.spec(mode).describe(), None)

    def resolve_base_mode(self) -> str:
        """auto -> pull when a registry answers, else bootstrap; a base already built is reused."""
        mode = self.settings.base_mode
        if mode != "auto":
            self.base_reason = f"--base={mode}"
            return mode
        base_target = self.graph.targets["base"]
        for candidate in ("pull", "bootstrap"):
            if self.docker.image_id(f"{base_target.repository}:{self.base_manifest(candidate).key()}"):
                self.base_reason = f"auto: the {candidate} base is already built"
                return candidate
        problem = self.docker.registry_problem(self.settings.upstream)
        if not problem:
            self.base_reason = "auto: a registry answers"
            return "pull"
        self.base_reason = (
            f"auto: bootstrapping from {self.settings.mirror}, because the registry of "
            f"{self.settings.upstream.split('@')[0]} {problem}; --base=pull insists on the registry"
        )
        if not self.base_announced:  # a plan may resolve the mode more than once
            self.base_announced = True
            self.say(f"base: {self.base_reason}")
        return "bootstrap"

    def manifest(self, target: Target, parent_key: str | None) -> Manifest:
        parent_ref = None
        if target.parent:
            parent_ref = f"{self.graph.targets[target.parent].repository}:{parent_key}"
        dockerfile = self.cache.render(
            template_texts(self.settings.root, target), target.template, render_variables(target, parent_ref)
        )
        return Manifest(
            target.name,
            dockerfile,
            {**input_digests(self.settings.root, target.all_inputs(), self.cache), **NORMALIZER},
            dict(target.build_args),
            parent_key,
        )

    def plan(self, targets: list[Target]) -> list[Step]:
        steps: list[Step] = []
        keys: dict[str, str] = {}
        for target in targets:
            if target.name == "base":
                mode = self.base_mode_used = self.resolve_base_mode()
                manifest = self.base_manifest(mode)
            else:
                assert target.parent
                if target.parent not in keys:  # parent not selected: still needed for the key
                    parent_steps = self.plan(self.graph.closure([target.parent]))
                    keys.update({s.target.name: s.key for s in parent_steps})
                manifest = self.manifest(target, keys[target.parent])
            keys[target.name] = manifest.key()
            ref = f"{target.repository}:{manifest.key()}"
            found = self.docker.image(ref)
            image = found["Id"] if found else None
            exists = image is not None
            reasons = [] if exists else explain(self.last_manifest(target.name), manifest)
            copy = release_copy(ref, found)
            if copy:  # left by an older `invoke release`, which tagged its labelled copy under the key
                exists, reasons = False, [copy]
            if exists and self.settings.no_cache:
                exists, reasons = False, ["--no-cache"]
            steps.append(Step(target, manifest, exists, reasons, image))
        self.cache.save()
        return steps

    # -- state: the manifest of the last build of each target, for explanations --------------------
    def last_manifest(self, name: str) -> dict | None:
        path = self.state_dir / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def remember(self, step: Step) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{step.target.name}.json").write_text(json.dumps(step.manifest.to_json(), indent=1))

    # -- execute -----------------------------------------------------------------------------------
    def ensure_friendly_tag(self, step: Step) -> None:
        target = step.target
        image = (step.image if step.exists else None) or self.docker.image_id(step.ref)
        if self.docker.image_id(target.friendly_ref) != image:
            self.docker.tag(step.ref, target.repository, target.friendly_tag)

    def pull_from_cache(self, step: Step, progress: Callable[[str], None]) -> bool:
        """Bazel-style remote cache: the image for this key, pulled instead of built, when the cache index names its
        digest and the registry has that digest. Pulled by digest only; a refused image gets one line, and the
        caller builds instead."""
        if not self.settings.cache_from or self.settings.no_cache or self.remote_index is None:
            return False
        remote = remote_cache.remote_repository(self.settings.cache_from, step.target.repository)
        entry = self.remote_index.entry(remote_cache.repository_name(step.target.repository), step.remote_key)
        if entry is None:
            progress(f"{step.ref} is not in the cache index {self.remote_index.source}")
            return False
        pinned = f"{remote}@{entry.digest}"
        progress(f"pulling {pinned}")
        if not self.docker.try_pull(pinned):
            self.refuse(step, remote_cache.tag_refusal(f"{remote}:{step.remote_key}", self.served(remote, step), entry))
            return False
        pulled = self.docker.image(pinned)
        why = remote_cache.refusal(entry, pulled, self.identity_labels(step)) or release_copy(pinned, pulled)
        if why:
            self.refuse(step, f"{pinned}: {why}")
            self.docker.remove_image(pinned)
            return False
        self.docker.tag(pinned, step.target.repository, step.key)
        self.ensure_friendly_tag(step)
        self.remember(step)
        return True

    def served(self, remote: str, step: Step) -> str | None:
        """The digest the registry serves under the key tag, or None when it has none (or does not answer)."""
        try:
            return self.docker.remote_digest(f"{remote}:{step.remote_key}")
        except HubforgeError:
            return None

    def refuse(self, step: Step, why: str) -> None:
        if why:
            self.say(f"  refused the remote cache for {step.target.name}: {why}; building {step.ref} here")

    def build_step(self, step: Step, on_line: Callable[[str], None], progress: Callable[[str], None]) -> None:
        self.make(step, step.ref, on_line, progress, nocache=self.settings.no_cache)
        self.ensure_friendly_tag(step)
        self.remember(step)

    # -- verify ------------------------------------------------------------------------------------------
    def check(
        self,
        step: Step,
        on_line: Callable[[str], None],
        progress: Callable[[str], None],
        against_existing: bool = False,
    ) -> CheckResult:
        """Build `step` twice from clean (no layer cache; the host's input caches are verified by hash) and compare
        the two: the same image id, or the first files that differ and how. The parents must exist.
        `against_existing`: build once, and compare with the image already built for this key."""
        refs, ids, files = [f"{CHECK_REPOSITORY}/{step.target.name}:{step.key}-{n}" for n in (1, 2)], [], []
        if against_existing:
            existing = self.docker.image_id(step.ref)
            if existing is None:
                raise HubforgeError(f"{step.ref} is not built, so there is nothing to compare with; run `invoke build`")
            progress(f"reading the files of {step.ref}")
            ids.append(existing)
            files.append(self.image_entries(step.ref))
            refs = refs[1:]
        try:
            for attempt, ref in enumerate(refs, 2 - len(refs) + 1):
                progress(f"clean build {attempt} of 2")
                ids.append(self.make(step, ref, on_line, progress, nocache=True))
                progress(f"reading the files of build {attempt}")
                files.append(self.image_entries(ref))
            lines = differences(files[0], files[1])
            if ids[0] != ids[1] and not lines:
                lines = ["the files are the same; the image configs differ (docker image inspect both to compare)"]
            if not lines and self.docker.image_id(step.ref) is None:
                self.docker.tag(refs[-1], step.target.repository, step.key)  # checked: it may as well be the build
                self.ensure_friendly_tag(step)
                self.remember(step)
            return CheckResult(step.ref, ids[0], ids[1], lines, len(files[0]))
        finally:
            for ref in refs:
                self.docker.remove_image(ref)

    def image_entries(self, ref: str) -> dict:
        work = Path(tempfile.mkdtemp(prefix="check-", dir=self.scratch_dir()))
        try:
            self.docker.save(ref, work / "saved.tar")
            return saved_entries(work / "saved.tar")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def make(
        self, step: Step, ref: str, on_line: Callable[[str], None], progress: Callable[[str], None], nocache: bool
    ) -> str:
        """Build `step` as `ref` (normalised); returns its image id."""
        from . import base  # the execute layer: imported when something is built, so a no-op stays quick

        target = step.target
        if target.name == "base":
            spec = self.settings.spec(self.base_mode_used or self.resolve_base_mode())
            if spec.mode == "pull":
                return base.pull(self.docker, spec, *ref.rsplit(":", 1), progress)
            return base.bootstrap(
                self.docker,
                spec,
                self.settings.root,
                target.apt_lock,
                ref,
                self.scratch_dir(),
                self.deb_cache(),
                progress,
            )
        with self.staging:  # the host's input caches are shared: one target fills them at a time
            context = self.stage_context(step, progress)
        raw = f"{RAW_REPOSITORY}/{target.name}:{step.key}"
        try:
            self.docker.build(context, raw, self.build_labels(step), on_line, nocache=nocache)
        finally:
            shutil.rmtree(context, ignore_errors=True)
        progress("normalising: layers sorted, times clamped to SOURCE_DATE_EPOCH, build residue dropped")
        return self.normalize(raw, ref)

    def normalize(self, raw: str, ref: str, labels: dict[str, str] | None = None, keep: bool = False) -> str:
        """The image `raw` (the classic builder's), rewritten in its normal form and loaded as `ref`
        (hubforge.imagebuild.normalize), with `labels` added; `raw` is removed unless `keep`. Returns the new image id,
        which depends on the image's contents (and those labels) only."""
        work = Path(tempfile.mkdtemp(prefix="normalize-", dir=self.scratch_dir()))
        try:
            self.docker.save(raw, work / "saved.tar")
            _, layers = normalize_saved(work / "saved.tar", work / "normal.tar", [ref], SOURCE_DATE_EPOCH, work, labels)
            (work / "saved.tar").unlink()
            image_id = self.docker.load(work / "normal.tar", ref, layers)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if not keep:
                self.docker.remove_image(raw)
        return image_id

    def scratch_dir(self) -> Path:
        path = self.settings.cache_dir / "scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def identity_labels(self, step: Step) -> dict[str, str]:
        """The labels that say which key and target an image was built for (the base, pulled or bootstrapped, has
        none)."""
        return {} if step.target.name == "base" else {KEY_LABEL: step.key, TARGET_LABEL: step.target.name}

    def build_labels(self, step: Step) -> dict[str, str]:
        """Labels of every built image. No revision: an image is a function of its key's inputs, and a commit that
        changes none of them must not change it (`invoke release` labels the revision it releases from)."""
        return {
            "org.opencontainers.image.created": iso(SOURCE_DATE_EPOCH),
            KEY_LABEL: step.key,
            TARGET_LABEL: step.target.name,
        }

    def stage_context(self, step: Step, progress: Callable[[str], None]) -> Path:
        """Assemble the build context: the Dockerfile, declared inputs, wheels, .debs and node_modules. Every
        declared input comes from the bytes its key hashed (planned_files), never from a second read of the tree."""
        from . import npm, wheels

        target, root, cache = step.target, self.settings.root, self.settings.cache_dir
        context = cache / "contexts" / f"{target.name}-{step.key}"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(step.manifest.dockerfile)
        rendered = {target.template} | {p for p in target.inputs if p.endswith(".j2")}  # already in the Dockerfile
        files = planned_files(root, [p for p in target.all_inputs() if p not in rendered], step.manifest.inputs)
        for rel in target.inputs:
            if rel not in rendered:
                write_planned(files[rel], root / rel, context / rel)
        cache_debs = self.deb_cache()
        for lock, folder in ((target.apt_lock, "debs"), (target.build_apt_lock, "build-debs")):
            if lock:
                pins = parse_apt_lock(files[lock].decode(), lock)
                check_deb_arch(pins, self.daemon_arch, lock)
                cache_debs.stage(pins, context / folder, progress)
        if target.python_lock or target.local_packages or target.lab_extensions:
            wheel_cache = wheels.WheelCache(
                cache / "wheels", arch=self.arch(), verifier=self.verifier, host_lock=files[HOST_BUILD_LOCK].decode()
            )
            pins = (
                parse_python_lock(files[target.python_lock].decode(), target.python_lock) if target.python_lock else []
            )
            wheel_cache.fetch(pins, progress)
            found = [wheel_cache.distribution_for(pin) for pin in pins]
            found += [
                wheels.local_wheel(root / pkg, __version__, context / "wheels", SOURCE_DATE_EPOCH, below(files, pkg))
                for pkg in target.local_packages
            ]
            found += [
                wheels.file_wheel(self.lab_extension_wheel(ext, step, wheel_cache, progress))
                for ext in target.lab_extensions
            ]
            wheels.stage(found, context / "wheels", self.verifier)
            wheels.stage(wheel_cache.sdist_backends(progress), context / "sdist-backends", self.verifier)
        if target.npm_dir:
            with tempfile.TemporaryDirectory(prefix="npm-inputs-", dir=self.scratch_dir()) as planned_dir:
                for name in ("package.json", "package-lock.json"):
                    (Path(planned_dir) / name).write_bytes(files[f"{target.npm_dir}/{name}"])
                modules = npm.install(Path(planned_dir), cache / "npm", progress)
            shutil.copytree(modules, context / "node_modules", symlinks=True)
        return context

    def lab_extension_wheel(
        self, ext: str, step: Step, wheel_cache: wheels.WheelCache, progress: Callable[[str], None]
    ) -> Path:
        """The extension's wheel, built from its folder (its node_modules live there), which must hold the planned
        bytes before and after the build: the wheel is then of the sources the key names, built with the host
        build lock's backends."""
        root = self.settings.root
        planned_files(root, [ext], step.manifest.inputs)
        wheel = labext.build_wheel(
            root / ext,
            self.settings.cache_dir / "labext",
            wheel_cache.host_environment,
            wheel_cache.host_lock_key(),
            progress,
        )
        planned_files(root, [ext], step.manifest.inputs)
        return wheel

    def deb_cache(self):
        """The host's .deb cache, checked by this build's verifier."""
        from .debs import DebCache

        return DebCache(self.settings.cache_dir / "debs", self.verifier)

    @functools.cached_property
    def daemon_arch(self) -> str:
        """The daemon's architecture, as Debian and Go name it (amd64, arm64); asked once per build."""
        return self.docker.client.version().get("Arch", "amd64")

    def arch(self) -> str:
        """The same, as wheel platform tags name it (x86_64, aarch64)."""
        machine = self.daemon_arch
        return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def write_planned(data: bytes, source: Path, dest: Path) -> None:
    """Put a checked input into the context with its source's mode and times (Docker's COPY keeps the mode)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    shutil.copystat(source, dest)


def below(files: Mapping[str, bytes], folder: str) -> dict[str, bytes]:
    """The files under `folder`, by path relative to it."""
    return {name[len(folder) + 1 :]: data for name, data in files.items() if name.startswith(f"{folder}/")}


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f}s"


def run_plan(steps: list[Step], jobs: int, run: Callable[[Step], None]) -> None:
    """Run `run` on every step, each after its parent, at most `jobs` at a time (after `base`, the other targets do
    not depend on one another). The first failure starts nothing new; what runs finishes; then it is raised.

    The workers are daemon threads: Ctrl-C ends the command at once (the daemon stops a build whose client went
    away; `invoke clean` removes what it left), instead of waiting for every build that is running."""
    names = {s.target.name for s in steps}
    done: set[str] = set()
    pending = list(steps)
    finished: queue.Queue[tuple[Step, BaseException | None]] = queue.Queue()
    running = 0
    failure: BaseException | None = None

    def work(step: Step) -> None:
        try:
            run(step)
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread, which raises it
            finished.put((step, exc))
        else:
            finished.put((step, None))

    while True:
        if failure is None:
            for step in [s for s in pending if s.target.parent not in names or s.target.parent in done]:
                if running >= max(1, jobs):
                    break
                pending.remove(step)
                threading.Thread(target=work, args=(step,), name=f"build-{step.target.name}", daemon=True).start()
                running += 1
        if not running:
            break
        step, error = finished.get()
        running -= 1
        if error is None:
            done.add(step.target.name)
        elif failure is None:
            failure = error
    if failure is not None:
        raise failure


def default_jobs(cpus: int | None = None) -> int:
    """Targets built at once when `--jobs` is 0: one per core, at most 4 (the daemon and the disk are shared)."""
    return max(1, min(4, cpus if cpus is not None else (os.cpu_count() or 1)))

"""Issue 26, part 4 (the unit-tier check): every entry of every committed lock carries a hash, and nothing built on
the host gets a build dependency that no lock pins.

Each check collects what it finds missing as (file, entry) pairs; KNOWN lists, with the reason, the pairs that are
missing today. A new gap fails the test, and so does a KNOWN pair that is no longer missing (remove it then)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from hubforge.build import wheels
from hubforge.build.locks import parse_apt_lock, parse_python_lock
from hubforge.build.targets import TARGETS
from hubforge.errors import HubforgeError

ROOT = Path(__file__).resolve().parents[2]
_RSPACK = "@rspack/binding-{}@npm:2.2.9"
YARN_LOCK = "images/lab/hubforge-notify/yarn.lock"
LABEXT_PYPROJECT = "images/lab/hubforge-notify/pyproject.toml"

KNOWN: dict[tuple[str, str], str] = {
    # rspack's native binaries are optional dependencies with os/cpu/libc conditions. Yarn 3 writes a checksum only
    # for what it fetched when it wrote the lock, and it fetched none of them, so `jlpm install` takes whichever
    # fits the host (linux-x64-gnu here: a native binary run on the host) unchecked. Fix: a lock written with
    # `supportedArchitectures` covering the build hosts, or checksums pinned beside it.
    **{(YARN_LOCK, _RSPACK.format(platform)): "optional native binary without a checksum in yarn.lock"
       for platform in ("darwin-arm64", "darwin-x64", "linux-arm64-gnu", "linux-arm64-musl", "linux-ppc64-gnu",
                        "linux-riscv64-gnu", "linux-riscv64-musl", "linux-s390x-gnu", "linux-x64-gnu",
                        "linux-x64-musl", "wasm32-wasi", "win32-arm64-msvc", "win32-ia32-msvc", "win32-x64-msvc")},
    # The lab extension's build backend: ranges, taken from the host's environment when importable
    # (labext.BUILD_REQUIRES, --no-build-isolation) and otherwise fetched by pip, unpinned and unhashed.
    (LABEXT_PYPROJECT, "hatchling>=1.24"): "build backend given as a range",
    (LABEXT_PYPROJECT, "hatch-jupyter-builder>=0.9"): "build backend given as a range",
    (LABEXT_PYPROJECT, "jupyter-builder>=1.3"): "build backend given as a range",
    # onetimepass (images/hub/requirements.lock) ships only an sdist: `pip wheel` builds it on the host with build
    # isolation, so pip fetches setuptools from the index, unpinned and unhashed.
    ("hubforge/build/wheels.py", "sdist_wheel_argv: build isolation"): "sdist build backend fetched unpinned",
}


def repo_files(pattern: str) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if "node_modules" not in p.parts)


def python_locks() -> list[str]:
    return sorted({t.python_lock for t in TARGETS if t.python_lock})


def apt_locks() -> list[str]:
    declared = {lock for t in TARGETS for lock in (t.apt_lock, t.build_apt_lock) if lock}
    assert declared == set(repo_files("images/**/*apt.lock")), "a committed apt lock is not declared by a target"
    return sorted(declared)


def unhashed_python(lock: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """parse_python_lock refuses a pin with no `==` or no --hash; a refusal is the gap."""
    try:
        parse_python_lock((root / lock).read_text(), lock)
    except HubforgeError as refused:  # its one line names the entry
        return [(lock, str(refused))]
    return []


def unhashed_apt(lock: str, root: Path = ROOT) -> list[tuple[str, str]]:
    try:
        parse_apt_lock((root / lock).read_text(), lock)
    except HubforgeError as refused:
        return [(lock, str(refused))]
    return []


def unhashed_npm(lock: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """package-lock.json v2/v3: every installed package has a sha512 integrity (npm ci checks the tarball against it)."""
    packages = json.loads((root / lock).read_text())["packages"]
    return [(lock, path) for path, entry in packages.items()
            if path and not entry.get("link") and not str(entry.get("integrity", "")).startswith("sha512-")]


def yarn_entries(text: str) -> dict[str, dict[str, str]]:
    """Yarn 2+ lock entries by resolution, with their top-level fields (a small reader for this flat YAML)."""
    entries: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^  (\w+): (.+)$", block, re.M))
        if "resolution" in fields:
            entries[fields["resolution"].strip('"')] = fields
    return entries


def unhashed_yarn(lock: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """Every package yarn fetches (linkType hard) has a checksum; the workspace itself (soft) has none to have."""
    entries = yarn_entries((root / lock).read_text())
    assert len(entries) > 100  # the reader found the entries
    return [(lock, name) for name, fields in entries.items() if fields.get("linkType") == "hard" and "checksum" not in fields]


def unpinned_build_requires(pyproject: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """A host-built package's build backend must be one exact version (that a lock can then hash)."""
    requires = tomllib.loads((root / pyproject).read_text())["build-system"]["requires"]
    return [(pyproject, r) for r in requires if [s.operator for s in Requirement(r).specifier] != ["=="]]


def isolated_sdist_build() -> list[tuple[str, str]]:
    """An sdist built with pip's build isolation gets its backend from the index: no lock covers it."""
    argv = wheels.sdist_wheel_argv(Path("x-1.0.tar.gz"), "out")
    return [] if "--no-build-isolation" in argv else [("hubforge/build/wheels.py", "sdist_wheel_argv: build isolation")]


def gaps() -> set[tuple[str, str]]:
    found = [gap for lock in python_locks() for gap in unhashed_python(lock)]
    found += [gap for lock in apt_locks() for gap in unhashed_apt(lock)]
    found += [gap for lock in repo_files("images/**/package-lock.json") for gap in unhashed_npm(lock)]
    found += [gap for lock in repo_files("images/**/yarn.lock") for gap in unhashed_yarn(lock)]
    found += [gap for ext in sorted({e for t in TARGETS for e in t.lab_extensions})
              for gap in unpinned_build_requires(f"{ext}/pyproject.toml")]
    return set(found + isolated_sdist_build())


def test_every_lock_entry_has_a_hash_and_every_build_dependency_is_pinned():
    found = gaps()
    new = sorted(found - KNOWN.keys())
    assert not new, "lock entries without a hash, or unpinned build dependencies:\n" + "\n".join(f"  {f}: {e}" for f, e in new)


def test_the_known_gaps_are_all_still_there():
    fixed = sorted(KNOWN.keys() - gaps())
    assert not fixed, "fixed, so remove from KNOWN in this file:\n" + "\n".join(f"  {f}: {e}" for f, e in fixed)


@pytest.mark.parametrize(("check", "name", "text", "gap"), [
    (unhashed_npm, "package-lock.json",
     json.dumps({"packages": {"": {}, "node_modules/a": {"integrity": "sha512-AA=="}, "node_modules/b": {"version": "1"},
                              "node_modules/c": {"integrity": "sha1-AA=="}, "node_modules/d": {"link": True}}}),
     ["node_modules/b", "node_modules/c"]),
    (unhashed_yarn, "yarn.lock",
     "\n\n".join(['"a@workspace:.":\n  resolution: "a@workspace:."\n  linkType: soft']
                  + [f'"p{n}@npm:1":\n  resolution: "p{n}@npm:1"\n  checksum: ab12\n  linkType: hard' for n in range(101)]
                  + ['"bin@npm:2":\n  resolution: "bin@npm:2"\n  conditions: os=linux\n  linkType: hard']),
     ["bin@npm:2"]),
    (unhashed_python, "requirements.lock", f"a==1 --hash=sha256:{'a' * 64}\nb==2\n", ["requirements.lock: b has no --hash; run `invoke lock`"]),
    (unhashed_apt, "apt.lock", "tini 1 nothex http://deb.debian.org/debian/pool/main/t/tini/tini_1_amd64.deb\n",
     ["apt.lock:1: expected 'package version sha256 url', got 'tini 1 nothex "
      "http://deb.debian.org/debian/pool/main/t/tini/tini_1_amd64.deb'; run `invoke lock`"]),
    (unpinned_build_requires, "pyproject.toml", '[build-system]\nrequires = ["hatchling==1.27.0", "setuptools>=61"]\n',
     ["setuptools>=61"]),
])
def test_each_check_finds_an_entry_without_a_hash(tmp_path, check, name, text, gap):
    (tmp_path / name).write_text(text)
    assert check(name, tmp_path) == [(name, g) for g in gap]

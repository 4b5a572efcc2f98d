"""Issue 26, part 4 (the unit-tier check): every entry of every committed lock carries a hash, and nothing built on
the host gets a build dependency that no lock pins.

Each check collects what it finds missing as (file, entry) pairs; KNOWN lists, with the reason, the pairs that are
missing today. A new gap fails the test, and so does a KNOWN pair that is no longer missing (remove it then)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from hubforge.errors import HubforgeError
from hubforge.imagebuild import native, wheels
from hubforge.imagebuild.lockfiles import normalize, parse_apt_lock, parse_python_lock
from hubforge.imagebuild.targets import HOST_BUILD_LOCK, TARGETS

ROOT = Path(__file__).resolve().parents[2]

VENV_STAGE = "images/_shared/venv.j2"

# Nothing is missing today. A gap that must stay for a while is listed here, (file, entry): reason.
KNOWN: dict[tuple[str, str], str] = {}


def repo_files(pattern: str) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if "node_modules" not in p.parts)


def python_locks() -> list[str]:
    return sorted({t.python_lock for t in TARGETS if t.python_lock} | {HOST_BUILD_LOCK})


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
    """package-lock.json v2/v3: every installed package has a sha512 integrity (npm ci checks the tarball against
    it)."""
    packages = json.loads((root / lock).read_text())["packages"]
    return [
        (lock, path)
        for path, entry in packages.items()
        if path and not entry.get("link") and not str(entry.get("integrity", "")).startswith("sha512-")
    ]


def unhashed_yarn(lock: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """Every package yarn fetches (linkType hard) has a checksum, or a pin in native.lock beside yarn.lock (which
    native.check_installed enforces after each install), or conditions that no build host meets (it installs there
    never; if it did, check_installed would refuse it). The workspace itself (soft) has nothing to have."""
    text = (root / lock).read_text()
    assert len(native.yarn_entries(text)) > 100  # the reader found the entries
    pins = native.parse_native_lock(native._read((root / lock).parent / native.NATIVE_LOCK))
    return [
        (lock, name)
        for name, fields in native.unchecksummed(text).items()
        if name not in pins and native.installable_on_a_build_host(fields.get("conditions"))
    ]


def scripts_enabled(yarnrc: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """Yarn runs dependencies' install scripts unless its .yarnrc.yml says `enableScripts: false`."""
    return (
        [] if re.search(r"^enableScripts: false$", (root / yarnrc).read_text(), re.M) else [(yarnrc, "enableScripts")]
    )


def unpinned_build_requires(
    pyproject: str, root: Path = ROOT, host_lock: str = HOST_BUILD_LOCK
) -> list[tuple[str, str]]:
    """A host-built package's build backend must be the exact version that the host build lock pins with hashes."""
    locked = {p.name: p.version for p in parse_python_lock((root / host_lock).read_text(), host_lock)}
    requires = tomllib.loads((root / pyproject).read_text())["build-system"]["requires"]
    return [
        (pyproject, str(r))
        for r in map(Requirement, requires)
        if [s.operator for s in r.specifier] != ["=="]
        or locked.get(normalize(r.name)) != next(iter(r.specifier)).version
    ]


def isolated_sdist_build(root: Path = ROOT, venv_stage: str = VENV_STAGE) -> list[tuple[str, str]]:
    """A locked sdist is built into its wheel by the image build's pip (no network there). Every pip install of that
    stage must use no index and the lock's hashes, the one of the lock with no build isolation (which would fetch
    a backend from an index), and the backends it uses must be pinned by the host build lock."""
    text = (root / venv_stage).read_text().replace("\\\n", " ")
    installs = [part for part in re.split(r"&&|\n", text) if re.search(r"\bpip\S*\s+install\b", part)]
    found = [
        (venv_stage, f"pip install without {flag}")
        for part in installs
        for flag in ("--no-index", "--require-hashes")
        if flag not in part.split()
    ]
    if not any("/tmp/wheels/requirements.txt" in part and "--no-build-isolation" in part.split() for part in installs):
        found.append((venv_stage, "the lock's sdists are built with build isolation"))
    locked = {p.name for p in parse_python_lock((root / HOST_BUILD_LOCK).read_text(), HOST_BUILD_LOCK)}
    found += [
        (HOST_BUILD_LOCK, f"{name} (an sdist backend) is not pinned")
        for name in wheels.SDIST_BACKENDS
        if name not in locked
    ]
    return found


def gaps() -> set[tuple[str, str]]:
    found = [gap for lock in python_locks() for gap in unhashed_python(lock)]
    found += [gap for lock in apt_locks() for gap in unhashed_apt(lock)]
    found += [gap for lock in repo_files("images/**/package-lock.json") for gap in unhashed_npm(lock)]
    found += [gap for lock in repo_files("images/**/yarn.lock") for gap in unhashed_yarn(lock)]
    extensions = sorted({e for t in TARGETS for e in t.lab_extensions})
    found += [gap for ext in extensions for gap in unpinned_build_requires(f"{ext}/pyproject.toml")]
    found += [gap for ext in extensions for gap in scripts_enabled(f"{ext}/.yarnrc.yml")]
    return set(found + isolated_sdist_build())


def test_every_lock_entry_has_a_hash_and_every_build_dependency_is_pinned():
    found = gaps()
    new = sorted(found - KNOWN.keys())
    assert not new, "lock entries without a hash, or unpinned build dependencies:\n" + "\n".join(
        f"  {f}: {e}" for f, e in new
    )


def test_the_known_gaps_are_all_still_there():
    fixed = sorted(KNOWN.keys() - gaps())
    assert not fixed, "fixed, so remove from KNOWN in this file:\n" + "\n".join(f"  {f}: {e}" for f, e in fixed)


@pytest.mark.parametrize(
    ("check", "name", "text", "gap"),
    [
        (
            unhashed_npm,
            "package-lock.json",
            json.dumps(
                {
                    "packages": {
                        "": {},
                        "node_modules/a": {"integrity": "sha512-AA=="},
                        "node_modules/b": {"version": "1"},
                        "node_modules/c": {"integrity": "sha1-AA=="},
                        "node_modules/d": {"link": True},
                    }
                }
            ),
            ["node_modules/b", "node_modules/c"],
        ),
        (
            unhashed_yarn,
            "yarn.lock",
            "\n\n".join(
                ['"a@workspace:.":\n  resolution: "a@workspace:."\n  linkType: soft']
                + [f'"p{n}@npm:1":\n  resolution: "p{n}@npm:1"\n  checksum: ab12\n  linkType: hard' for n in range(101)]
                + ['"bin@npm:2":\n  resolution: "bin@npm:2"\n  conditions: os=linux\n  linkType: hard']
            ),
            ["bin@npm:2"],
        ),
        (
            unhashed_python,
            "requirements.lock",
            f"a==1 --hash=sha256:{'a' * 64}\nb==2\n",
            ["requirements.lock: b has no --hash; run `invoke lock`"],
        ),
        (
            unhashed_apt,
            "apt.lock",
            "tini 1 nothex http://deb.debian.org/debian/pool/main/t/tini/tini_1_amd64.deb\n",
            [
                "apt.lock:1: expected 'package version sha256 url', got 'tini 1 nothex "
                "http://deb.debian.org/debian/pool/main/t/tini/tini_1_amd64.deb'; run `invoke lock`"
            ],
        ),
        (scripts_enabled, ".yarnrc.yml", "nodeLinker: node-modules\n# enableScripts: false\n", ["enableScripts"]),
    ],
)
def test_each_check_finds_an_entry_without_a_hash(tmp_path, check, name, text, gap):
    (tmp_path / name).write_text(text)
    assert check(name, tmp_path) == [(name, g) for g in gap]


def yarn_lock(*extra: str) -> str:
    return "\n\n".join(
        [f'"p{n}@npm:1":\n  resolution: "p{n}@npm:1"\n  checksum: ab12\n  linkType: hard' for n in range(101)]
        + list(extra)
    )


def test_a_native_binary_without_a_checksum_passes_only_pinned_or_never_installed_on_a_build_host(tmp_path):
    binary = '"@x/bin-{0}@npm:2":\n  resolution: "@x/bin-{0}@npm:2"\n  conditions: {1}\n  linkType: hard'
    (tmp_path / "yarn.lock").write_text(
        yarn_lock(
            binary.format("linux-x64-gnu", "os=linux & cpu=x64 & libc=glibc"),
            binary.format("darwin-arm64", "os=darwin & cpu=arm64"),
            binary.format("linux-s390x-gnu", "os=linux & cpu=s390x & libc=glibc"),
            binary.format("win32-x64-msvc", "os=win32 & cpu=x64"),
            binary.format("wasm32-wasi", "cpu=wasm32"),
        )
    )
    pin = f"@x/bin-linux-x64-gnu@npm:2 sha512-{'A' * 86}== {'b' * 64}\n"
    (tmp_path / native.NATIVE_LOCK).write_text(pin)
    assert unhashed_yarn("yarn.lock", tmp_path) == [("yarn.lock", "@x/bin-darwin-arm64@npm:2")]


def test_a_build_backend_must_be_the_version_the_host_build_lock_hashes(tmp_path):
    (tmp_path / "images/_shared").mkdir(parents=True)
    (tmp_path / HOST_BUILD_LOCK).write_text(
        f"hatchling==1.27.0 --hash=sha256:{'a' * 64}\nsetuptools==80.0 --hash=sha256:{'b' * 64}\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling==1.27.0", "setuptools>=61", "Setuptools==79.0", "wheel==1"]\n'
    )
    assert unpinned_build_requires("pyproject.toml", tmp_path) == [
        ("pyproject.toml", r) for r in ("setuptools>=61", "Setuptools==79.0", "wheel==1")
    ]


def test_the_sdist_check_finds_an_isolated_build_and_an_unpinned_backend(tmp_path):
    (tmp_path / "venv.j2").write_text(
        "RUN pip install --no-index --require-hashes \\\n  --find-links /tmp/wheels -r /tmp/wheels/requirements.txt\n"
        " && pip install --no-index -r /tmp/sdist-backends/requirements.txt\n"
    )
    (tmp_path / HOST_BUILD_LOCK).parent.mkdir(parents=True)
    (tmp_path / HOST_BUILD_LOCK).write_text(f"hatchling==1 --hash=sha256:{'a' * 64}\n")
    assert isolated_sdist_build(tmp_path, "venv.j2") == [
        ("venv.j2", "pip install without --require-hashes"),
        ("venv.j2", "the lock's sdists are built with build isolation"),
        (HOST_BUILD_LOCK, "setuptools (an sdist backend) is not pinned"),
    ]

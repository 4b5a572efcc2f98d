"""Issue 26, part 5: the bootstrapped base trusts Debian's pinned archive keyring and nothing the host adds, installs
exactly the packages of its lock, and its key covers that lock; --base=auto says why it bootstraps."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import base
from hubforge.imagebuild.lockfiles import DebPin, parse_apt_lock
from hubforge.imagebuild.targets import BaseSpec, Graph

ROOT = Path(__file__).resolve().parents[2]
RECIPE = json.loads((ROOT / base.RECIPE).read_text())
LOCK = Graph().targets["base"].apt_lock
SPEC = BaseSpec(mode="bootstrap")
BOOKWORM_KEYS = {  # what `gpg --show-keys` says images/base/debian-archive-bookworm.gpg holds
    "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8": "Debian Archive Automatic Signing Key (12/bookworm)",
    "05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0": "Debian Security Archive Automatic Signing Key (12/bookworm)",
    "4D64FEC119C2029067D6E791F8D2585B8783D481": "Debian Stable Release Key (12/bookworm)",
}
needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")


def work_in(folder: Path) -> base.Workspace:
    return base.Workspace(folder / "trusted" / "debian-archive.gpg", folder / "repo", folder / "report")


# -- the pinned keyring --------------------------------------------------------------------------------------------
def test_apt_trusts_only_the_pinned_keyring_file_and_a_folder_holding_only_it():
    work = work_in(Path("/tmp/w"))
    argv = base.mmdebstrap_argv(SPEC, RECIPE, Path("/tmp/out.tar"), work)
    # a file replaces apt's Dir::Etc::Trusted only; the folder replaces Dir::Etc::TrustedParts (the host's
    # /etc/apt/trusted.gpg.d); check/signed-by would otherwise point the sources at the host's Debian keyring
    assert [a for a in argv if a.startswith(("--keyring", "--skip=check"))] == [
        "--keyring=/tmp/w/trusted",
        "--keyring=/tmp/w/trusted/debian-archive.gpg",
        "--skip=check/signed-by",
    ]


def test_the_committed_keyring_is_the_pinned_one():
    assert base.pinned_keyring(ROOT, RECIPE) == ROOT / RECIPE["keyring"]["path"]


@needs_gpg
def test_the_committed_keyring_holds_debians_bookworm_keys_and_nothing_else(tmp_path):
    home = gnupg_home(tmp_path)
    shown = gpg(home, "--with-colons", "--show-keys", str(ROOT / RECIPE["keyring"]["path"])).stdout.decode()
    fingerprints = [line.split(":")[9] for line in shown.splitlines() if line.startswith("fpr:")]
    primaries = [fp for fp in fingerprints if fp in BOOKWORM_KEYS]
    assert sorted(primaries) == sorted(BOOKWORM_KEYS) and shown.count("\npub:") + shown.startswith("pub:") == 3


def test_a_changed_keyring_is_refused_in_one_line(tmp_path):
    keyring = tmp_path / RECIPE["keyring"]["path"]
    keyring.parent.mkdir(parents=True)
    data = bytearray((ROOT / RECIPE["keyring"]["path"]).read_bytes())
    data[100] ^= 1
    keyring.write_bytes(bytes(data))
    with pytest.raises(HubforgeError) as refused:
        base.pinned_keyring(tmp_path, RECIPE)
    message = str(refused.value)
    assert (
        message.startswith(f"{RECIPE['keyring']['path']}: sha256 ")
        and "\n" not in message
        and "git checkout" in message
    )


# -- the attack: a key the host trusts, and mmdebstrap itself ----------------------------------------------------
def gpg(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--quiet", *args], check=True, capture_output=True)


def gnupg_home(tmp: Path) -> Path:
    """A throwaway GNUPGHOME: the tests' keys never touch the user's or the host's keyrings."""
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    return home


def new_key(home: Path, email: str) -> bytes:
    gpg(home, "--passphrase", "", "--quick-gen-key", f"Test <{email}>", "ed25519", "sign", "never")
    return gpg(home, "--export", email).stdout


def signed_mirror(folder: Path, home: Path, signer: str) -> str:
    """A one-package bookworm mirror on disk whose InRelease `signer` signed; its sources.list line."""
    dist = folder / "dists" / "bookworm"
    (dist / "main" / "binary-amd64").mkdir(parents=True)
    packages = (
        b"Package: hubforge-probe\nVersion: 1\nArchitecture: all\nPriority: optional\n"
        b"Filename: pool/hubforge-probe_1_all.deb\nSize: 1\nSHA256: " + b"0" * 64 + b"\n"
    )
    (dist / "main" / "binary-amd64" / "Packages").write_bytes(packages)
    (dist / "Release").write_text(
        f"Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\nDate: {formatdate(usegmt=True)}\n"
        f"Architectures: amd64\nComponents: main\nSHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} "
        f"main/binary-amd64/Packages\n"
    )
    gpg(home, "--local-user", signer, "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release"))
    return f"deb file://{folder} bookworm main"


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder that apt's sandbox user (_apt) can read, as it must to check signatures (pytest's is private)."""
    folder = Path(tempfile.mkdtemp(prefix="hubforge-trust-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def host_that_also_trusts(world: Path, extra_key: bytes) -> dict[str, str]:
    """The environment of a host whose apt trusts Debian's keys and one more: apt-config (which mmdebstrap asks for
    its defaults) reads APT_CONFIG, so the host's real /etc/apt is never touched."""
    parts = world / "host" / "trusted.gpg.d"
    parts.mkdir(parents=True)
    (parts / "extra.gpg").write_bytes(extra_key)
    debian = Path("/usr/share/keyrings/debian-archive-keyring.gpg")  # read only, so that no signed-by is guessed
    if debian.exists():
        shutil.copyfile(debian, parts / "debian-archive-keyring.gpg")
    config = world / "host" / "apt.conf"
    config.write_text(f'Dir::Etc::Trusted "{world}/host/trusted.gpg";\nDir::Etc::TrustedParts "{parts}/";\n')
    return dict(os.environ, APT_CONFIG=str(config))


def mmdebstrap_accepts(argv: list[str], sources: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """mmdebstrap with the trust options of `argv` (the bootstrap's), up to apt's signature check of `sources`."""
    trust = [a for a in argv if a.startswith(("--keyring", "--skip", "--aptopt"))]
    return subprocess.run(
        ["mmdebstrap", "--mode=root", "--variant=extract", *trust, "bookworm", "/dev/null", sources],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@needs_gpg
@pytest.mark.skipif(shutil.which("mmdebstrap") is None or os.geteuid() != 0, reason="needs mmdebstrap, as root")
def test_a_key_the_host_adds_does_not_widen_what_the_bootstrap_accepts(world):
    home = gnupg_home(world)
    intruder = new_key(home, "intruder@example.invalid")
    pinned = new_key(home, "debian@example.invalid")  # stands in for Debian's key: the test must sign with it
    env = host_that_also_trusts(world, intruder)
    work = work_in(world / "work")
    (world / "pinned.gpg").write_bytes(pinned)
    base.trust_only(world / "pinned.gpg", work.keyring)
    argv = base.mmdebstrap_argv(SPEC, RECIPE, world / "out.tar", work)

    forged = mmdebstrap_accepts(argv, signed_mirror(world / "forged", home, "intruder@example.invalid"), env)
    assert forged.returncode != 0, (
        f"mmdebstrap accepted a Release signed by a key only the host trusts:\n{forged.stderr[-800:]}"
    )
    assert "NO_PUBKEY" in forged.stderr or "is not signed" in forged.stderr, forged.stderr[-800:]

    genuine = mmdebstrap_accepts(argv, signed_mirror(world / "genuine", home, "debian@example.invalid"), env)
    assert genuine.returncode == 0, genuine.stderr[-800:]  # the same mirror, signed by the pinned key, passes


# -- the lock: what the bootstrap installs ---------------------------------------------------------------------------
PINS = [
    DebPin(
        "libc6",
        "2.36-9+deb12u14",
        "a" * 64,
        "http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb",
    ),
    DebPin(
        "sensible-utils",
        "0.0.17+nmu1",
        "b" * 64,
        "http://deb.debian.org/debian/pool/main/s/sensible-utils/sensible-utils_0.0.17%2bnmu1_all.deb",
    ),
]


def status(*packages: tuple[str, str, str], state: str = "install ok installed") -> str:
    return (
        "\n\n".join(
            f"Package: {name}\nStatus: {state}\nPriority: required\nVersion: {version}\nArchitecture: {arch}\n"
            f"Description: x\n continued"
            for name, version, arch in packages
        )
        + "\n"
    )


def test_the_installed_set_of_the_lock_passes():
    base.check_installed(
        status(("libc6", "2.36-9+deb12u14", "amd64"), ("sensible-utils", "0.0.17+nmu1", "all")), PINS, "lock"
    )


@pytest.mark.parametrize(
    ("installed", "phrase"),
    [
        (
            (("libc6", "2.36-9+deb12u15", "amd64"), ("sensible-utils", "0.0.17+nmu1", "all")),
            "libc6 2.36-9+deb12u15/amd64 installed, 2.36-9+deb12u14/amd64 locked",
        ),
        ((("libc6", "2.36-9+deb12u14", "amd64"),), "sensible-utils 0.0.17+nmu1 was not installed"),
        (
            (("libc6", "2.36-9+deb12u14", "amd64"), ("sensible-utils", "0.0.17+nmu1", "all"), ("evil", "1", "all")),
            "evil 1 is not in the lock",
        ),
    ],
)
def test_an_installed_set_other_than_the_lock_is_refused_in_one_line(installed, phrase):
    with pytest.raises(HubforgeError) as refused:
        base.check_installed(status(*installed), PINS, "images/base/apt.lock")
    message = str(refused.value)
    assert phrase in message and "\n" not in message and "invoke lock --target base" in message


def test_packages_that_are_not_installed_do_not_count():
    assert base.installed_packages(status(("perl", "5.36", "amd64"), state="deinstall ok config-files")) == {}


def test_a_build_installs_every_locked_package_from_the_local_repository_alone():
    """The mirror of the day is no source of a build: a mirror that has moved on since the lock changes nothing."""
    work = work_in(Path("/tmp/w"))
    argv = base.mmdebstrap_argv(SPEC, RECIPE, Path("/tmp/out.tar"), work, packages=["zlib1g", "apt", "usr-is-merged"])
    assert argv[-1] == "deb [trusted=yes] copy:///tmp/w/repo ./" and argv[-3:-1] == ["bookworm", "/tmp/out.tar"]
    assert "--include=apt,usr-is-merged,zlib1g" in argv
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    # the image keeps the mirror's lines as its sources.list; the dpkg status is read before anything is purged
    assert (
        hooks[0].endswith('> "$1"/etc/apt/sources.list')
        and "'deb http://deb.debian.org/debian bookworm main'" in hooks[0]
    )
    assert hooks[1] == '--customize-hook=cp "$1"/var/lib/dpkg/status /tmp/w/report' and "dpkg --purge" in hooks[2]


def test_a_lock_resolves_the_recipe_from_the_mirror_and_reports_before_the_purge():
    work = work_in(Path("/tmp/w"))
    locking = base.mmdebstrap_argv(SPEC, RECIPE, Path("/tmp/out.tar"), work, locking=True)
    assert locking[-3:] == base.sources_list(SPEC, "main") and f"--include={','.join(RECIPE['include'])}" in locking
    assert [a for a in locking if "--customize-hook" in a][0].endswith("> /tmp/w/report")


def make_deb(folder: Path, package: str, version: str, extra: str = "") -> Path:
    """A real (tiny) .deb, made by dpkg-deb."""
    tree = folder / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        f"Maintainer: t <t@example.invalid>\n{extra}Description: test\n"
    )
    out = folder / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)], check=True, capture_output=True)
    return out


def test_the_local_repository_indexes_exactly_the_locked_debs_by_the_locks_hashes(tmp_path):
    from hubforge.imagebuild.debs import DebCache

    made = [
        make_deb(tmp_path, "alpha", "1.0", "Essential: yes\nPriority: required\n"),
        make_deb(tmp_path, "beta", "2:3-1"),
    ]
    pins = [DebPin(d.name.split("_")[0], d.name.split("_")[1], sha256_of(d), d.as_uri()) for d in made]
    cache = DebCache(tmp_path / "cache", snapshot=None)
    base.local_repository(pins, cache, tmp_path / "repo", "bookworm")

    index = (tmp_path / "repo" / "Packages").read_text()
    stanzas = [
        dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line) for stanza in index.split("\n\n")
    ]
    assert [(s["Package"], s["Version"], s["SHA256"], s["Filename"]) for s in stanzas] == [
        ("alpha", "1.0", pins[0].sha256, "./alpha_1.0_all.deb"),
        ("beta", "2:3-1", pins[1].sha256, "./beta_2:3-1_all.deb"),
    ]
    assert stanzas[0]["Essential"] == "yes"  # what mmdebstrap's essential stage selects by
    release = (tmp_path / "repo" / "Release").read_text()
    assert "Codename: bookworm" in release and hashlib.sha256(index.encode()).hexdigest() in release


def test_a_changed_cached_deb_never_reaches_the_local_repository(tmp_path):
    from hubforge.imagebuild.debs import DebCache

    deb = make_deb(tmp_path, "alpha", "1.0")
    pin = DebPin("alpha", "1.0", sha256_of(deb), deb.as_uri())
    cache = DebCache(tmp_path / "cache", snapshot=None)
    cache.fetch([pin])
    stored = cache.path(pin)
    stored.write_bytes(stored.read_bytes() + b"x")  # the shared cache changed after the download
    deb.unlink()  # and the mirror no longer has it
    with pytest.raises(HubforgeError, match="alpha_1.0_all.deb"):
        base.local_repository([pin], cache, tmp_path / "repo", "bookworm")
    assert not (tmp_path / "repo" / "alpha_1.0_all.deb").exists()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_committed_base_lock_pins_every_package_by_hash():
    pins = parse_apt_lock((ROOT / LOCK).read_text(), LOCK)
    names = {pin.package for pin in pins}
    assert {"apt", "dpkg", "libc6", "debian-archive-keyring", "usr-is-merged"} <= names
    assert set(RECIPE["purge_after"]) <= names  # installed by the bootstrap, then purged: locked too


# -- the key ---------------------------------------------------------------------------------------------------------
def keys(builder) -> dict[str, str]:
    return {step.target.name: step.key for step in builder.plan(Graph().closure(["base", "hub", "gpu-probe"]))}


@pytest.mark.parametrize("edit", [LOCK, RECIPE["keyring"]["path"]])
def test_the_bootstrapped_base_key_covers_the_lock_and_the_keyring(source_tree, make_builder, edit):
    before, pulled = keys(make_builder(source_tree)), keys(make_builder(source_tree, "pull"))
    with (source_tree / edit).open("ab") as handle:
        handle.write(b"\n")
    after = keys(make_builder(source_tree))
    assert all(before[name] != after[name] for name in before)
    assert keys(make_builder(source_tree, "pull")) == pulled  # a pulled base is pinned by digest instead


# -- --base=auto ---------------------------------------------------------------------------------------------------
def test_auto_says_in_one_line_why_it_bootstraps(source_tree, make_builder):
    builder = make_builder(source_tree, "auto")
    said: list[str] = []
    builder.say = said.append
    assert builder.resolve_base_mode() == "bootstrap" and builder.resolve_base_mode() == "bootstrap"
    assert len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith(
        "base: auto: bootstrapping from http://deb.debian.org/debian, because the registry of "
        "debian:bookworm-slim did not answer within 8 s"
    )

"""Image targets as data: what each image is built from, and the graph between them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HubforgeError

# Every image is stamped with this time (OCI `created`, file mtimes of the bootstrap rootfs), so two
# builds of the same inputs are the same bytes. Change it only to mark a new era of images.
SOURCE_DATE_EPOCH = 1767225600  # 2026-01-01T00:00:00Z

PYTHON_VERSION = "3.11"  # Debian bookworm's python3, which every image runs
NAMESPACE = "hubforge"
FRIENDLY_TAG = "dev"
BASE_MODES = ("auto", "pull", "bootstrap")
DEFAULT_FLAVOR = "default"


@dataclass(frozen=True)
class BaseSpec:
    """How the base rootfs is made. Every field here goes into the base image's key."""

    mode: str  # "pull" or "bootstrap" (auto is resolved before a BaseSpec is made)
    upstream: str = "debian:bookworm-slim@sha256:4b50eb66f977b4062683ff434ef18ac191da862dbe966961bc11990cf5791a8d"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"

    def describe(self) -> dict[str, str]:
        """The facts that define the base's content (and so its key)."""
        if self.mode == "pull":
            return {"mode": "pull", "upstream": self.upstream}
        return {
            "mode": "bootstrap",
            "suite": self.suite,
            "mirror": self.mirror,
            "security_mirror": self.security_mirror,
            # how: the lock's .debs, from a local repository of them alone (hubforge.imagebuild.base.local_repository)
            "installs": "images/base/apt.lock from a local repository",
        }


@dataclass(frozen=True)
class Target:
    """One image: its template, declared inputs, build arguments and parent."""

    name: str
    repository: str
    template: str | None  # repo-relative Jinja Dockerfile; None for the base rootfs
    inputs: tuple[str, ...] = ()  # repo-relative files or folders whose bytes go into the key
    build_args: tuple[tuple[str, str], ...] = ()
    parent: str | None = "base"
    python_lock: str | None = None  # requirements lock with hashes -> wheels in the context
    apt_lock: str | None = None  # Debian packages lock -> .debs in the context
    build_apt_lock: str | None = None  # .debs only the build stages use (context: build-debs/)
    npm_dir: str | None = None  # package.json + package-lock.json -> node_modules built on the host
    local_packages: tuple[str, ...] = ()  # source folders turned into wheels on the host
    lab_extensions: tuple[str, ...] = ()  # JupyterLab extensions (TypeScript + Python) built into wheels on the host
    flavor: str = DEFAULT_FLAVOR
    budget_mb: int | None = None
    description: str = ""

    @property
    def friendly_tag(self) -> str:
        return FRIENDLY_TAG if self.flavor == DEFAULT_FLAVOR else f"{FRIENDLY_TAG}-{self.flavor}"

    @property
    def friendly_ref(self) -> str:
        return f"{self.repository}:{self.friendly_tag}"

    def all_inputs(self) -> tuple[str, ...]:
        """Every declared path whose bytes define this image, sorted."""
        paths = set(self.inputs)
        paths.update(p for p in (self.template, self.python_lock, self.apt_lock, self.build_apt_lock) if p)
        if self.python_lock or self.lab_extensions:  # an sdist or an extension may be built on the host with it
            paths.add(HOST_BUILD_LOCK)
        if self.npm_dir:
            paths.update({f"{self.npm_dir}/package.json", f"{self.npm_dir}/package-lock.json"})
        paths.update(self.local_packages)
        paths.update(self.lab_extensions)
        return tuple(sorted(paths))


SHARED_TEMPLATES = ("images/_shared/harden.j2", "images/_shared/scrub.j2")
VENV_TEMPLATES = ("images/_shared/venv.j2",)
BUILD_APT_LOCK = "images/_shared/build-apt.lock"
# The build backends that run on the host (sdists, lab extensions), pinned with hashes: hubforge.imagebuild.wheels.
HOST_BUILD_LOCK = "images/_shared/host-build.lock"


def _lab(flavor: str, lock: str, budget: int, description: str) -> Target:
    return Target(
        name="lab" if flavor == DEFAULT_FLAVOR else f"lab-{flavor}",
        repository=f"{NAMESPACE}/lab",
        template="images/lab/Dockerfile.j2",
        inputs=SHARED_TEMPLATES
        + VENV_TEMPLATES
        + (
            "images/lab/healthcheck.sh",
            "images/lab/jupyter_server_config.py",
            "images/lab/overrides.json",
            "images/lab/site-patches.json",
            "images/lab/start-lab.sh",
            "images/_shared/patch_site.py",
        ),
        build_args=(("FLAVOR", flavor),),
        python_lock=lock,
        apt_lock="images/lab/apt.lock",
        build_apt_lock=BUILD_APT_LOCK,
        lab_extensions=("images/lab/hubforge-notify",),
        flavor=flavor,
        budget_mb=budget,
        description=description,
    )


TARGETS: tuple[Target, ...] = (
    Target(
        name="base",
        repository=f"{NAMESPACE}/base",
        template=None,
        parent=None,
        inputs=("images/base/bootstrap.json", "images/base/debian-archive-bookworm.gpg"),
        apt_lock="images/base/apt.lock",  # what a bootstrap installs (`invoke lock`); unused by a pulled base
        description="Debian bookworm rootfs: a pinned upstream slim image, or bootstrapped from a mirror",
    ),
    Target(
        name="hub",
        repository=f"{NAMESPACE}/hub",
        template="images/hub/Dockerfile.j2",
        inputs=SHARED_TEMPLATES + VENV_TEMPLATES + ("images/hub/healthcheck.py",),
        python_lock="images/hub/requirements.lock",
        apt_lock="images/hub/apt.lock",
        build_apt_lock=BUILD_APT_LOCK,
        npm_dir="images/proxy",
        local_packages=("hub_ext",),
        budget_mb=250,
        description="JupyterHub 5, NativeAuthenticator, DockerSpawner, configurable-http-proxy, hub_ext",
    ),
    Target(
        name="proxy",
        repository=f"{NAMESPACE}/proxy",
        template="images/proxy/Dockerfile.j2",
        inputs=SHARED_TEMPLATES + ("images/proxy/start.cjs",),
        apt_lock="images/proxy/apt.lock",
        npm_dir="images/proxy",
        budget_mb=180,
        description="configurable-http-proxy in its own container: hub restarts and upgrades leave labs' traffic alone",
    ),
    _lab(DEFAULT_FLAVOR, "images/lab/requirements.lock", 600, "JupyterLab 4 single-user server (lean)"),
    _lab("datascience", "images/lab/datascience.lock", 1600, "the lab plus numpy, pandas, scipy, scikit-learn, ..."),
    Target(
        name="gpu-probe",
        repository=f"{NAMESPACE}/gpu-probe",
        template="images/gpu-probe/Dockerfile.j2",
        inputs=SHARED_TEMPLATES + ("images/gpu-probe/probe.sh",),
        apt_lock="images/gpu-probe/apt.lock",
        budget_mb=40,
        description="prints the GPUs that the NVIDIA runtime gives a container, as JSON",
    ),
    Target(
        name="idp",
        repository=f"{NAMESPACE}/idp",
        template="images/idp/Dockerfile.j2",
        inputs=SHARED_TEMPLATES + ("images/idp/server.mjs",),
        apt_lock="images/idp/apt.lock",
        npm_dir="images/idp",
        budget_mb=200,
        description="an OpenID Connect provider for the tests (oidc-provider), standing in for Keycloak or Casdoor",
    ),
    Target(
        name="registry",
        repository=f"{NAMESPACE}/registry",
        template="images/registry/Dockerfile.j2",
        inputs=("images/registry/config.yml",),
        apt_lock="images/registry/apt.lock",
        budget_mb=60,
        description="the swarm engine's image registry (Distribution), so that every node gets the built images",
    ),
    Target(
        name="backup",
        repository=f"{NAMESPACE}/backup",
        template="images/backup/Dockerfile.j2",
        apt_lock="images/backup/apt.lock",
        budget_mb=50,
        description="restic (Debian's package) for `invoke backup` and `invoke restore`",
    ),
    Target(
        name="monitoring",
        repository=f"{NAMESPACE}/monitoring",
        template="images/monitoring/Dockerfile.j2",
        apt_lock="images/monitoring/apt.lock",
        budget_mb=160,
        description="Prometheus, Alertmanager and node-exporter (Debian's packages) for `invoke up --monitoring`",
    ),
)

# What `invoke build` builds with no --target: flavours other than the default, and the tests' idp, are opt-in.
DEFAULT_SET = ("base", "hub", "proxy", "lab", "gpu-probe", "registry", "backup", "monitoring")


@dataclass(frozen=True)
class Graph:
    """The targets by name, with their parents resolved."""

    targets: dict[str, Target] = field(default_factory=lambda: {t.name: t for t in TARGETS})

    def flavors(self, family: str) -> list[str]:
        return sorted({t.flavor for t in self.targets.values() if t.name.split("-")[0] == family and t.template})

    def families(self) -> list[str]:
        names = {t.name for t in self.targets.values() if t.flavor == DEFAULT_FLAVOR}
        return sorted(names)

    def select(self, target: str | None, flavor: str | None) -> list[Target]:
        """The targets to build, parents first. Raises with the valid choices on a bad name."""
        if target is None:
            if flavor not in (None, DEFAULT_FLAVOR):
                raise HubforgeError(
                    f"--flavor needs --target lab; valid flavours of lab: {', '.join(self.flavors('lab'))}"
                )
            wanted = list(DEFAULT_SET)
        else:
            families = self.families()
            if target not in families:
                raise HubforgeError(f"unknown target {target!r}; valid targets: {', '.join(families)}")
            flavor = flavor or DEFAULT_FLAVOR
            valid = [t.flavor for t in self.targets.values() if t.name == target or t.name.startswith(f"{target}-")]
            if flavor not in valid:
                raise HubforgeError(
                    f"unknown flavour {flavor!r} of {target}; valid flavours: {', '.join(sorted(valid))}"
                )
            wanted = [target if flavor == DEFAULT_FLAVOR else f"{target}-{flavor}"]
        return self.closure(wanted)

    def closure(self, names: list[str]) -> list[Target]:
        """The named targets and all their ancestors, each once, parents before children."""
        ordered: list[Target] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            target = self.targets[name]
            if target.parent:
                visit(target.parent)
            seen.add(name)
            ordered.append(target)

        for name in names:
            visit(name)
        return ordered

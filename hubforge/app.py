"""What the tasks do, with rich progress: build, plan, lock, clean and doctor."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

from . import doctor
from .docker_io import Docker, stored_credentials
from .errors import DockerUnavailable, HubforgeError
from .imagebuild.builder import CHECK_REPOSITORY, RAW_REPOSITORY, Builder, Settings, Step, default_jobs, run_plan

log = logging.getLogger(__name__)
console = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 200)


def say(message: str) -> None:
    console.print(message)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def make_builder(settings: Settings) -> Builder:
    return Builder(settings, Docker(), say=say)


def daemon(settings: Settings) -> Docker:
    """The Docker gateway; when no daemon answers, `invoke setup`'s fix where it can apply it, else one line."""
    try:
        return Docker()
    except DockerUnavailable:
        doctor.ensure(settings.cache_dir, {"docker"}, say)
        return Docker()


def print_plan(builder: Builder, steps: list[Step]) -> None:
    from rich.tree import Tree

    tree = Tree(f"[bold]targets[/] (base: {builder.base_mode_used}, {builder.base_reason})")
    nodes = {}
    for step in steps:
        parent = nodes.get(step.target.parent, tree)
        state = "[green]up to date[/]" if step.exists else "[yellow]would build[/]: " + "; ".join(step.reasons)
        nodes[step.target.name] = parent.add(f"[bold]{step.target.name}[/] {step.ref}  {state}")
    console.print(tree)


def build(settings: Settings, target: str | None, flavor: str | None, plan_only: bool, verbose: bool) -> list[Step]:
    started = time.monotonic()
    builder = Builder(settings, daemon(settings), say=say)
    steps = builder.plan(builder.graph.select(target, flavor))
    if plan_only:
        print_plan(builder, steps)
        return steps
    prepare_host(builder, steps)
    jobs = settings.jobs or default_jobs()
    with BuildBoard(console, verbose) as board:
        run_plan(steps, jobs, lambda step: run_step(builder, step, board))
    built = sum(1 for s in steps if not s.exists)
    say(
        f"[bold]done[/] in {time.monotonic() - started:.1f}s: {built} built, {len(steps) - built} up to date"
        + (f" ({jobs} at a time)" if built > 1 else "")
    )
    return steps


def prepare_host(builder: Builder, steps: list[Step]) -> None:
    settings = builder.settings
    if builder.base_mode_used == "bootstrap" and not steps[0].exists:
        doctor.ensure(settings.cache_dir, {"bootstrap", "disk"}, say)
    if any(not s.exists and s.target.name != "base" for s in steps) and not settings.cache_from:
        doctor.ensure(settings.cache_dir, {"node"}, say)  # npm ci and the lab extension run on the host


class BuildBoard:
    """What a build shows: a permanent line when a target starts and when it ends, and one live line per target
    that is building (its current step), so that targets built at once stay readable. The only printer of a build."""

    def __init__(self, console: Console, verbose: bool) -> None:
        from rich.live import Live

        self.console, self.verbose = console, verbose
        self.lines: dict[str, str] = {}
        self.lock = threading.Lock()
        self.live = Live(console=console, transient=True, refresh_per_second=6, get_renderable=self.render)

    def __enter__(self) -> BuildBoard:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def render(self):
        from rich.text import Text

        with self.lock:
            return Text(
                "\n".join(f"  … {name}: {line}" for name, line in self.lines.items()), overflow="ellipsis", no_wrap=True
            )

    def status(self, name: str, line: str) -> None:
        with self.lock:
            self.lines[name] = line

    def say(self, message: str, name: str | None = None) -> None:
        """A permanent line; `name`'s live line ends with it."""
        with self.lock:
            if name is not None:
                self.lines.pop(name, None)
        self.live.console.print(message)

    def log(self, name: str, line: str) -> None:
        if self.verbose:
            self.live.console.print(f"    {name}| {line}", markup=False, highlight=False)


def run_step(builder: Builder, step: Step, board: BuildBoard) -> None:
    name = step.target.name
    if step.exists:
        builder.ensure_friendly_tag(step)
        board.say(f"  [green]✓[/] {name:<16} {step.ref}  up to date (skipped)")
        return
    reasons = (
        step.reasons
        if len(step.reasons) <= 5
        else step.reasons[:4] + [f"and {len(step.reasons) - 4} more inputs (--plan lists them)"]
    )
    started = time.monotonic()
    board.status(name, "checking the remote cache")
    if builder.pull_from_cache(step, lambda message: board.status(name, message)):
        board.say(
            f"  [green]✓[/] {name:<16} {step.ref}  pulled from the cache {builder.settings.cache_from} in "
            f"{time.monotonic() - started:.0f}s",
            name,
        )
        return
    board.say(f"  [yellow]▶[/] {name:<16} {step.ref}  building: {'; '.join(reasons)}")

    def on_line(line: str) -> None:
        board.log(name, line)
        if line.startswith("Step "):
            board.status(name, line[:110])

    def progress(message: str) -> None:
        board.status(name, message)
        board.log(name, message)

    board.status(name, "starting")
    try:
        builder.build_step(step, on_line, progress)
    except BaseException:
        board.say(f"  [red]✗[/] {name} failed after {time.monotonic() - started:.0f}s", name)
        raise
    size = builder.docker.inspect(step.ref).get("Size", 0) / 1e6
    board.say(
        f"  [green]✓[/] {name:<16} {step.ref}  built in {time.monotonic() - started:.0f}s ({size:.0f} MB), tagged "
        f"{step.target.friendly_ref}",
        name,
    )


def check(settings: Settings, target: str, flavor: str | None, verbose: bool) -> None:
    """`invoke build --check TARGET`: its parents as usual, then the target twice from clean, compared. With
    --cache-from: the image the cache holds for the key (pulled by the digest its index names) and one clean build."""
    builder = make_builder(settings)
    steps = builder.plan(builder.graph.select(target, flavor))
    *parents, step = steps
    if parents:
        prepare_host(builder, parents)
        with BuildBoard(console, verbose) as board:
            run_plan(parents, settings.jobs or default_jobs(), lambda parent: run_step(builder, parent, board))
    prepare_host(builder, [step] if step.target.name != "base" else steps)
    started = time.monotonic()
    pulled = pulled_for_check(builder, step)
    what = f"the image from {settings.cache_from} and a build from clean" if pulled else "two builds from clean"
    say(f"  [yellow]▶[/] {step.target.name:<16} {step.ref}  checking: {what}, compared file by file")
    with BuildBoard(console, verbose) as board:

        def on_line(line: str) -> None:
            board.log(step.target.name, line)
            if line.startswith("Step "):
                board.status(step.target.name, line[:110])

        result = builder.check(
            step, on_line, lambda message: board.status(step.target.name, message), against_existing=pulled
        )
    took = time.monotonic() - started
    if result.same:
        say(
            f"  [green]✓[/] {step.target.name:<16} reproducible: both builds are {result.first} ({result.files} "
            f"files), in {took:.0f}s"
        )
        return
    say(
        f"  [red]✗[/] {step.target.name:<16} not reproducible: {result.first[:19]} and {result.second[:19]} differ; "
        "the first files that do:"
    )
    for line in result.differences:
        console.print(f"      {line}", markup=False, highlight=False)
    raise HubforgeError(
        f"{step.target.name} is not reproducible: {what} differ ({len(result.differences)} files listed above)"
    )


def pulled_for_check(builder: Builder, step: Step) -> bool:
    """With --cache-from, the cache's image of the key, pulled (by digest) to be compared with a clean build."""
    if not builder.settings.cache_from:
        return False
    if not builder.pull_from_cache(step, lambda message: None):
        raise HubforgeError(
            f"nothing was pulled for {step.target.name} from {builder.settings.cache_from}, so there is nothing "
            "to compare; drop --cache-from to compare two local builds"
        )
    return True


def lock(settings: Settings, target: str | None, only: str | None) -> None:
    from .imagebuild.locking import lock_apt, lock_base, lock_python
    from .imagebuild.native import lock_native
    from .imagebuild.targets import HOST_BUILD_LOCK

    doctor.ensure(settings.cache_dir, {"docker"}, say)
    builder = make_builder(settings)
    graph = builder.graph
    if (
        only in (None, "apt")
        and target in (None, "base")
        and (target == "base" or builder.resolve_base_mode() == "bootstrap")
    ):
        say("[bold]base[/]: the packages the bootstrap installs")  # first: the images' locks resolve against it
        doctor.ensure(settings.cache_dir, {"bootstrap"}, say)
        lock_base(settings.root, graph.targets["base"].apt_lock, settings.spec("bootstrap"), builder.scratch_dir(), say)
    selected = [t for t in ([graph.targets[target]] if target else graph.targets.values()) if t.name != "base"]
    if only in (None, "python"):
        say("[bold]host[/]: build backends")
        lock_python(settings.root, HOST_BUILD_LOCK, None, say)
        for t in selected:
            if t.python_lock:
                say(f"[bold]{t.name}[/]: Python")
                lock_python(settings.root, t.python_lock, builder.arch(), say)
    if only in (None, "native"):
        for ext in sorted({e for t in selected for e in t.lab_extensions}):
            say(f"[bold]{ext}[/]: native binaries without a checksum in yarn.lock (npm registry)")
            lock_native(settings.root / ext, say)
    if only in (None, "apt"):
        base_step = build(settings, "base", None, False, False)[-1]
        seen: set[str] = set()
        for t in selected:
            for apt_lock in (t.apt_lock, t.build_apt_lock):
                if apt_lock and apt_lock not in seen:
                    seen.add(apt_lock)
                    say(f"[bold]{t.name}[/]: Debian packages of {apt_lock} (resolved in {base_step.ref})")
                    lock_apt(settings.root, apt_lock, builder.docker, base_step.ref, say)


def clean(settings: Settings, keep: int, wheels: bool, dry_run: bool) -> None:
    """Remove hubforge images that no current key or friendly tag names, keeping the newest `keep`."""
    builder = make_builder(settings)
    graph = builder.graph
    current: set[str] = set()
    try:
        steps = builder.plan(graph.closure(list(graph.targets)))
        current = {s.ref for s in steps} | {s.target.friendly_ref for s in steps}
    except Exception as exc:  # a broken tree must not stop a clean; keep friendly tags then
        log.warning("cannot compute current keys (%s); keeping only friendly tags", exc)
    removed = 0

    def newest_first(image: dict) -> str:  # every image is `created` at SOURCE_DATE_EPOCH: when it was made here counts
        return (builder.docker.inspect(image["Id"]).get("Metadata") or {}).get("LastTagTime") or ""

    transient = [f"{RAW_REPOSITORY}/{name}" for name in graph.targets] + [
        f"{CHECK_REPOSITORY}/{name}" for name in graph.targets
    ]
    for repository in sorted({t.repository for t in graph.targets.values()}) + transient:
        images = sorted(builder.docker.images(repository), key=newest_first, reverse=True)
        if repository in transient:  # what a build or a check left when it was stopped: never kept
            stale, keep_here = images, 0
        else:
            stale, keep_here = (
                [i for i in images if not set(i.get("RepoTags") or []) & (current | {f"{repository}:dev"})],
                keep,
            )
        for image in stale[keep_here:]:
            for ref in image.get("RepoTags") or [image["Id"]]:
                say(f"  {'would remove' if dry_run else 'removing'} {ref}")
                if not dry_run and builder.docker.remove_image(ref):
                    removed += 1
    for folder in ["contexts", "scratch"] + (["wheels", "debs", "npm"] if wheels else []):
        path = settings.cache_dir / folder
        if path.exists():
            say(f"  {'would remove' if dry_run else 'removing'} {path}")
            if not dry_run:
                shutil.rmtree(path)
    say(f"clean: {removed} image tags removed")


def report_doctor(settings: Settings) -> bool:
    results = doctor.checks(
        settings.cache_dir,
        {"docker", "compose", "disk", "bootstrap", "node", "chromium", "registry", "resolver", "quotas"},
    )
    from rich.table import Table

    table = Table("check", "status", "detail", "fix")
    for check in results:
        table.add_row(
            check.name, "[green]ok[/]" if check.ok else "[red]missing[/]", check.detail, "" if check.ok else check.fix
        )
    console.print(table)
    return all(c.ok for c in results)


def run_setup(settings: Settings) -> None:
    failed = [
        c
        for c in doctor.checks(
            settings.cache_dir, {"docker", "compose", "bootstrap", "node", "chromium", "registry", "resolver"}
        )
        if not c.ok
    ]
    if not failed:
        say("setup: nothing to do")
        return
    doctor.setup(failed, say)
    report_doctor(settings)


# -- the stack -------------------------------------------------------------------------------------------
def stack_for(settings: Settings, options):
    from .deploy import open_stack
    from .docker_io import StackDocker

    return open_stack(options, StackDocker(), settings.root, say)


def checkout_images(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """What this checkout runs: the default set, built where missing, and every lab flavour already built."""
    from .imagebuild.targets import DEFAULT_SET

    steps = build(settings, None, None, False, False)
    images = {s.target.name: s.ref for s in steps if s.target.name in DEFAULT_SET}
    lab_images = {"default": images["lab"]}
    builder = make_builder(settings)
    flavor_steps = builder.plan(builder.graph.closure([n for n in builder.graph.targets if n.startswith("lab-")]))
    lab_images.update({s.target.flavor: s.ref for s in flavor_steps if s.target.name.startswith("lab-") and s.exists})
    return images, lab_images


def up(settings: Settings, options) -> dict:
    """Build what is missing, start the stack, wait for health, print the URL and the next step."""
    doctor.ensure(settings.cache_dir, {"docker", "compose"}, say)
    images, lab_images = checkout_images(settings)
    stack = stack_for(settings, options)
    with console.status("starting the stack") as status:
        state = stack.up(images, lab_images, status.update)
    gpu = state["gpu"]
    say(f"[bold green]hubforge is up[/] at [bold]{state['url']}[/] (project {state['project']}, GPU: {gpu['reason']})")
    say(f"  settings: {options.run_dir}/.env   {options.engine} file: {options.run_dir / stack.run_file}")
    if state.get("prometheus"):
        say(f"  monitoring: Prometheus' pages for hub admins at {state['prometheus']}")
    if state.get("bootstrap_secret"):
        say(
            "  admin bootstrap secret (shown once; also in the hub's data volume): "
            f"[bold]{state['bootstrap_secret']}[/]"
        )
    if state.get("oidc"):
        oidc = state["oidc"]
        say(
            f"  sign-in: OpenID Connect at {oidc['issuer']} (client {oidc['client_id']}); the hub lets in "
            f"{oidc['who_gets_in']}"
        )
        say(
            f"  register this redirect URI at the provider: [bold]{oidc['redirect_uri']}[/]"
            + (
                f", and this post-logout redirect URI: {oidc['post_logout_redirect_uri']}"
                if oidc.get("post_logout_redirect_uri")
                else ""
            )
        )
    elif state.get("admin_unclaimed"):
        say(
            f"  next: sign up as [bold]{state['admin']}[/] at {state['url']}hub/signup with the bootstrap secret, then "
            "log in"
        )
    elif state["signup"]:
        say(
            f"  next: log in at {state['url']}hub/login; users sign up at {state['url']}hub/signup and you approve "
            f"them at {state['url']}hub/authorize"
        )
    else:
        say(
            f"  next: log in as {state['admin']}; signup is off, so add users at {state['url']}hub/admin and set their "
            f"passwords at {state['url']}hub/authorize"
        )
    say("  the certificate is self-signed unless you supplied one: your browser will ask you to accept it")
    return state


def down(settings: Settings, options, volumes: bool, user_volumes: bool, yes: bool) -> None:
    stack = stack_for(settings, options)
    if volumes and not yes:
        what = "the hub's database, certificates and the shared volume" + (
            " and EVERY USER'S home, workspace and cache" if user_volumes else ""
        )
        try:
            answer = input(f"Delete {what} of project {options.project}? Type the project name to confirm: ")
        except EOFError:
            answer = ""
        if answer.strip() != options.project:
            raise HubforgeError("not confirmed; nothing was removed (use --yes to skip the question)")
    removed = stack.down(volumes, user_volumes)
    say(f"stack {options.project} is down" + (f"; removed: {', '.join(removed)}" if removed else ""))
    if not volumes:
        say(
            "  volumes kept (hub data, certificates, shared and user volumes); `invoke down --volumes` removes the "
            "stack's own"
        )


def status(settings: Settings, options, as_json: bool) -> dict:
    import json as _json

    from rich.table import Table

    state = stack_for(settings, options).status()
    if as_json:
        print(_json.dumps(state, indent=1))
        return state
    if not state["services"]:
        say(f"stack {options.project} is not running (start it with `invoke up`)")
        return state
    say(f"[bold]{state.get('url', '?')}[/] (project {state['project']}, engine {state.get('engine', 'compose')})")
    on_nodes = "nodes" in state
    table = Table("service", "container", "state", "health", *(["node"] if on_nodes else []))
    for service in state["services"]:
        table.add_row(
            service["service"],
            service["container"],
            service["state"],
            service["health"] or "-",
            *([service.get("node", "?")] if on_nodes else []),
        )
    console.print(table)
    if on_nodes:
        nodes = Table("node", "id", "role", "state", "availability", "address", "GPUs")
        for node in state["nodes"]:
            nodes.add_row(
                node["hostname"],
                node["id"][:12],
                node["role"],
                node["state"],
                node["availability"],
                node["address"],
                str(node["gpus"]),
            )
        console.print(nodes)
    if state.get("admin_unclaimed"):
        hub = next((s["container"] for s in state["services"] if s["service"] == "hub"), "<hub container>")
        say(
            f"admin {state.get('admin')!r} is [bold]unclaimed[/]: sign up with the bootstrap secret that `invoke up` "
            "printed "
            f"(to read it again: docker exec {hub} cat /srv/jupyterhub/data/admin-bootstrap-secret)"
        )
    if state.get("oidc"):
        oidc = state["oidc"]
        say(
            f"sign-in: OpenID Connect at {oidc['issuer']} (client {oidc['client_id']}, redirect URI "
            f"{oidc['redirect_uri']}); "
            f"lets in {oidc['who_gets_in']}"
        )
    origin = state.get("lab_origin")
    if origin and origin.startswith("shared"):
        say(
            "labs: [bold]share the hub's origin[/] (LAB_SUBDOMAINS=0): a lab's JavaScript runs with the hub session of "
            "whoever opens it"
        )
    elif origin:
        say(f"labs: each on its own origin, {origin}")
    if state.get("network_guard") is False:
        say(
            "network guard: [bold]off[/] (LAB_NETWORK_GUARD=0): labs can reach private and link-local addresses, cloud "
            "metadata included"
        )
    elif state.get("network_guard") and state.get("engine") == "swarm":
        say(
            "network guard: on every node (the global netguard service): every swarm task's traffic through "
            "docker_gwbridge "
            "is kept off private and link-local addresses, LAB_ALLOWED_RANGES excepted"
        )
    elif state.get("network_guard"):
        say("network guard: on (labs are kept off private and link-local addresses; see the netguard service above)")
    if state.get("backups"):
        from hub_ext.backup.status import line

        say(f"backups: {line(state['backups'])}")
    gpu = state.get("gpu") or {}
    say(f"GPU: mode {gpu.get('mode')}, {'enabled' if gpu.get('enabled') else 'disabled'}: {gpu.get('reason')}")
    if gpu.get("probe"):
        say(f"  probe: {_json.dumps(gpu['probe'])}")
    if state["labs"]:
        labs = Table("user", "container", "state", "health", "GPUs")
        for lab in state["labs"]:
            labs.add_row(
                lab["user"],
                lab["container"],
                lab["state"],
                lab["health"] or "-",
                "yes" if lab["device_requests"] else "no",
            )
        console.print(labs)
    elif not state.get("lab_placement"):
        say("no user servers are running")
    if state.get("lab_placement"):  # every node's labs, as the swarm schedules them (the table above: this node's)
        placed = Table("user", "service", "node", "state")
        for user, where in sorted(state["lab_placement"].items()):
            placed.add_row(user, where["service"], where["node"], where["state"])
        console.print(placed)
    return state


def logs(settings: Settings, options, service: str | None, follow: bool, tail: int) -> None:
    from . import proc

    stack = stack_for(settings, options)
    own = sorted({"hub", *(s["service"] for s in stack.services())})
    if service and service not in own:
        lab = stack.lab_logs_argv(service, follow, tail)  # `invoke logs alice`: alice's lab, on whichever node it runs
        if lab:
            proc.run(lab, capture=False, check=False)
            return
        running = ", ".join(stack.lab_users()) or "none"
        raise HubforgeError(
            f"no service or running lab named {service!r}; services: {', '.join(own)}; "
            f"users with a running lab: {running}"
        )
    if not (options.run_dir / stack.run_file).exists():
        raise HubforgeError(f"no stack {options.project} here: start it with `invoke up`")
    proc.run(stack.logs_argv(service, follow, tail), capture=False, check=False)


# -- group policies --------------------------------------------------------------------------------------------
def policies(settings: Settings, options, action: str, path: str | None) -> None:
    """`invoke policies export [FILE]` writes every group's policy as YAML (to FILE, or the terminal);
    `invoke policies import FILE` sets each group's policy in FILE (null removes one), through the hub's own checks."""
    import json as _json

    import yaml

    stack = stack_for(settings, options)
    hub = stack.hub_container()
    if hub is None:
        raise HubforgeError(f"stack {options.project} is not running: start it with `invoke up`")
    if action == "export":
        code, out = stack.docker.exec_output(hub["Id"], ["python3", "-m", "hub_ext.hub.admincli", "export"])
        if code != 0:
            raise HubforgeError(f"the hub could not list its policies: {out.strip().splitlines()[-1:]}")
        document = _json.loads(out.strip().splitlines()[-1])
        text = yaml.safe_dump(document, sort_keys=True, allow_unicode=True)
        if path:
            Path(path).write_text(text, encoding="utf-8")
            say(f"wrote the policies of {len(document['groups'])} groups to {path}")
        else:
            print(text, end="")
        return
    if action != "import" or not path:
        raise HubforgeError("use `invoke policies export [FILE]` or `invoke policies import FILE`")
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise HubforgeError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise HubforgeError(f"{path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict) or not isinstance(document.get("groups"), dict):
        raise HubforgeError(
            f"{path} must hold `groups:` mapping each group to its policy (as `invoke policies export` writes)"
        )
    code, out = stack.docker.exec_output(
        hub["Id"], ["python3", "-m", "hub_ext.hub.admincli", "import", _json.dumps(document)]
    )
    try:
        results = _json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise HubforgeError(f"the hub could not import the policies: {out.strip()[-300:]}") from None
    for result in results:
        if result["result"] == "refused":
            say(f"[red]✗[/] {result['group']}: {result['reason']}")
        else:
            running = result.get("restart_to_apply") or []
            then = f"; running labs told to restart: {', '.join(running)}" if running else ""
            say(f"[green]✓[/] {result['group']}: {result['result']}{then}")
    refused = [r["group"] for r in results if r["result"] == "refused"]
    if refused:
        raise HubforgeError(
            f"{len(refused)} of {len(results)} groups refused ({', '.join(refused)}); the others are set"
        )


# -- releases --------------------------------------------------------------------------------------------
def release(
    settings: Settings,
    version_text: str,
    registry: str,
    namespace: str,
    push: bool,
    flavors: list[str],
    allow_dirty: bool,
    credentials: tuple[str, str] | None,
    signing: tuple[Path, str | None] | None = None,
) -> list:
    """Dry run: print every tag and the image behind it. --push: label, push, verify digests, SBOM, provenance,
    attached to each image in the registry and signed with the `signing` key (path, password)."""
    from .release import pipeline
    from .release.plan import check_tree, git, parse_version
    from .release.sign import load_private_key

    request = pipeline.Request(parse_version(version_text), registry, namespace, tuple(flavors))
    key = load_private_key(*signing) if signing else None  # a bad key fails before anything is built
    doctor.ensure(settings.cache_dir, {"docker"}, say)
    git_sha = (
        check_tree(settings.root, request.version, allow_dirty) if push else git(settings.root, "rev-parse", "HEAD")
    )
    builder = make_builder(settings)
    steps = pipeline.release_steps(builder, request.flavors)
    with BuildBoard(console, False) as board:
        run_plan(steps, settings.jobs or default_jobs(), lambda step: run_step(builder, step, board))
    pushes = pipeline.pushes_for(request, steps, git_sha)
    from rich.table import Table

    table = Table("image", "tag", "from", title=f"release {request.version} ({'push' if push else 'dry run'})")
    for item in pushes:
        for tag in item.tags:
            table.add_row(item.repository, tag, item.source)
    console.print(table)
    if not push:
        say("dry run: nothing pushed (add --push)")
        return pushes
    pipeline.publish(builder, settings.root, request, steps, pushes, git_sha, credentials, say, key)
    return pushes


def verify(image: str, key_path: Path, credentials: tuple[str, str] | None) -> None:
    """Fetch the attestations attached to a released image and check their signatures and subject digest."""
    from .release import attest, oci
    from .release.sign import PREDICATE_PROVENANCE, load_public_key

    key = load_public_key(key_path)
    host = oci.split_reference(image)[0]
    verified = attest.verify_image(oci.Registry(host, credentials or stored_credentials(host)), image, key)
    provenance = verified.predicates[PREDICATE_PROVENANCE]
    say(
        f"{image}: {verified.digest}, its SBOM and provenance signed by {key_path.name}; built from git "
        f"{provenance.get('git', {}).get('sha', '?')}, key {provenance.get('key', '?')}"
    )


def sbom(settings: Settings, image: str, output: Path | None) -> Path:
    """A CycloneDX SBOM of any local image."""
    from .release.pipeline import image_sbom

    path, python, debian = image_sbom(Docker(), image, settings.root / "dist", output)
    say(f"{path}: {python} Python and {debian} Debian packages")
    return path


# -- backups ---------------------------------------------------------------------------------------------------
def backups_for(settings: Settings, options, passed: dict[str, str]):
    """The project's backups: its stack, the built backup image, and the repository its .env names."""
    from hub_ext.settings.hub import ConfigError, from_environ

    from .backup import plan
    from .backup.runner import Backups
    from .deploy.settings import read_env_file

    doctor.ensure(settings.cache_dir, {"docker"}, say)
    stack = stack_for(settings, options)
    env_path = options.run_dir / ".env"
    try:
        hub = from_environ(read_env_file(env_path))
    except ConfigError as exc:
        raise HubforgeError(f"{env_path}: {exc}") from None
    builder = make_builder(settings)
    step = builder.plan(builder.graph.select("backup", None))[-1]
    if not step.exists:
        raise HubforgeError(f"the backup image {step.ref} is not built: run `invoke build`, then try again")
    repo = plan.repository(hub.backup_repository, hub.backup_password_file, options.project, options.run_dir)
    cache = settings.cache_dir / "restic" / options.project
    if options.engine == "swarm":
        from .backup.swarm import SwarmBackups

        return SwarmBackups(stack, step.ref, repo, cache, passed, say)
    return Backups(stack, step.ref, repo, cache, passed, say)


def source_commit(root: Path) -> str:
    """The checkout's commit, recorded in each snapshot's tags; empty outside a git checkout."""
    from .release.plan import git

    try:
        return git(root, "rev-parse", "HEAD")
    except HubforgeError:
        return ""


def backup(settings: Settings, options, list_only: bool, passed: dict[str, str]) -> dict | None:
    """`invoke backup`: one snapshot of the whole stack while it runs, with progress; `--list`: the snapshots."""
    import tempfile

    from rich.table import Table

    from . import __version__
    from .backup.plan import group_runs, human_bytes, summary_line
    from .backup.runner import run_rows
    from .backup.swarm import NodeResult

    backups = backups_for(settings, options, passed)
    if list_only:
        snapshots = backups.snapshots()
        if not snapshots:
            say(f"no snapshots of project {options.project} in {backups.repo.shown}; make one with `invoke backup`")
            return None
        columns = ["snapshot", "time (UTC)", "hubforge", "engine"] + (["nodes"] if options.engine == "swarm" else [])
        table = Table(*columns, title=f"{options.project}: {backups.repo.shown}")
        for row in run_rows(group_runs(snapshots)):
            table.add_row(*row[: len(columns)])
        console.print(table)
        return None
    started, commit = time.monotonic(), source_commit(settings.root)
    with tempfile.TemporaryDirectory(prefix="hubforge-backup-") as staging, console.status("backing up") as status:
        if options.engine == "swarm":
            run, results = backups.backup_run(__version__, commit, Path(staging), status.update)
        else:
            run, results = "", [NodeResult("", backups.backup(__version__, commit, Path(staging), status.update))]
    summary = results[0].summary
    say(f"[bold green]backed up[/] {options.project} to {backups.repo.shown}: {summary_line(summary)}")
    say(
        f"  {summary['volumes']} volumes, the hub's database and the settings"
        + (" (the manager's)" if run else "")
        + f"; {human_bytes(summary.get('total_bytes_processed', 0))} read"
    )
    for result in results[1:]:
        if result.summary is None:
            say(f"  node {result.name}: no volumes of this project, no snapshot")
        else:
            say(f"  node {result.name}: {result.summary['volumes']} volumes; {summary_line(result.summary)}")
    which = run or summary.get("snapshot_id", "?")[:8]
    say(f"  in {time.monotonic() - started:.1f}s. `invoke restore {which}` brings it back")
    return summary


def restore(
    settings: Settings,
    options,
    snapshot: str,
    user: str | None,
    volume: str | None,
    force: bool,
    passed: dict[str, str],
) -> None:
    """`invoke restore SNAPSHOT`: the whole stack (then `invoke up`); with --user, one user's volumes only."""
    if volume is not None and user is None:
        raise HubforgeError("--volume only goes with --user NAME")
    backups = backups_for(settings, options, passed)
    started = time.monotonic()
    if user is not None:
        with console.status("restoring") as status:
            chosen, volumes = backups.restore_user(snapshot, user, volume, status.update)
        say(
            f"[bold green]restored[/] {', '.join(v.name for v in volumes)} of {user} from snapshot {chosen.short_id} "
            f"({chosen.time[:19]}) in {time.monotonic() - started:.1f}s; their next start has the files"
        )
        return
    with console.status("restoring") as status:
        chosen, count = backups.restore_stack(snapshot, force, status.update)
    say(
        f"[bold green]restored[/] project {options.project} from snapshot {chosen.short_id} ({chosen.time[:19]}): "
        f"{count} volumes and the settings in {options.run_dir}, in {time.monotonic() - started:.1f}s"
    )
    say("  next: `invoke up` starts it (and builds the images first on a new machine)")


# -- upgrades --------------------------------------------------------------------------------------------------
def recorded_options(options):
    """The stack's options as its last `up` recorded them (ports, address, volume prefix): an upgrade keeps them,
    whatever flags or invoke config say now. Also returns that record (stack.json)."""
    import dataclasses
    import json as _json

    path = options.run_dir / "stack.json"
    if not path.exists():
        raise HubforgeError(f"no stack {options.project} here ({options.run_dir}): start it with `invoke up` first")
    state = _json.loads(path.read_text())
    return (
        dataclasses.replace(
            options,
            https_port=state.get("https_port", options.https_port),
            http_port=state.get("http_port", options.http_port),
            bind=state.get("bind", options.bind),
            volume_prefix=state.get("volume_prefix", options.volume_prefix),
            registry_port=state.get("registry_port", options.registry_port),
            routing_mesh=state.get("routing_mesh", options.routing_mesh),
        ),
        state,
    )


def upgrader(settings: Settings, options, passed: dict[str, str]):
    from hub_ext.settings.hub import from_environ

    from .deploy.settings import read_env_file
    from .upgrade.runner import Upgrade

    backups = backups_for(settings, options, passed)
    token = from_environ(read_env_file(options.run_dir / ".env")).metrics_token
    return Upgrade(backups.stack, backups, say, token)


def release_target(current, to: str, registry: str, namespace: str, key_path: Path | None, upgrade, status):
    """The images of release `to`, pulled by digest (and their signed attestations checked with `key_path`)."""
    from .release import oci
    from .release.plan import parse_version
    from .release.sign import load_public_key
    from .upgrade.plan import Release

    release = Release(registry, namespace, parse_version(to))
    key = client = None
    if key_path is not None:
        key = load_public_key(key_path)
        host = oci.split_reference(release.reference("hub"))[0]
        client = oci.Registry(host, stored_credentials(host))
    else:
        say(
            "[yellow]note[/]: no --key: the images are pinned by the digests their tags name now, but no signature "
            "says who released them"
        )
    return upgrade.fetch(release, current, key, client, status)


def upgrade(
    settings: Settings,
    options,
    to: str | None,
    registry: str,
    namespace: str,
    key_path: Path | None,
    passed: dict[str, str],
) -> None:
    """`invoke upgrade [--to X.Y.Z]`: the stack moved to a release or to what this checkout builds, with a backup
    first, a health gate after, and a rollback by itself when the gate fails."""
    from . import __version__
    from .upgrade import plan
    from .upgrade.runner import upgrade_summary

    doctor.ensure(settings.cache_dir, {"docker", "compose"}, say)
    options, state = recorded_options(options)
    upgrade = upgrader(settings, options, passed)
    upgrade.running_hub()
    current = plan.running_set(state, plan.raw_record(options.run_dir))
    started = time.monotonic()
    if to:
        with console.status("getting the release") as status:
            target = release_target(current, to, registry, namespace, key_path, upgrade, status.update)
    else:
        images, lab_images = checkout_images(settings)
        commit = source_commit(settings.root)
        target = plan.ImageSet(images, lab_images, f"{__version__} (checkout {commit[:12] or 'outside git'})")
    changes = current.changes(target)
    if not changes:
        say(f"stack {options.project} already runs these images ({target.version}): nothing to upgrade")
        return
    say(f"[bold]upgrading[/] {options.project} to {target.version}:")
    for line in changes:
        say(f"  {line}")
    with console.status("upgrading") as status:
        record, timings = upgrade.upgrade(current, target, status.update)
    say(f"[bold green]upgraded[/] in {time.monotonic() - started:.0f}s: {upgrade_summary(record, timings)}")
    labs = upgrade.stack.lab_users()
    if labs:
        say(
            f"  {len(labs)} running labs keep their image until their next start ({', '.join(labs[:8])}"
            + (", ..." if len(labs) > 8 else "")
            + "); their home page says so. New starts get the new lab image"
        )
    say("  `invoke rollback` goes back to the previous images and this snapshot's database")


def rollback(settings: Settings, options, passed: dict[str, str]) -> None:
    """`invoke rollback`: undo the last upgrade (its images, and the hub's database of the snapshot taken before it)."""
    from .upgrade import plan

    options, state = recorded_options(options)
    record = plan.load_record(options.run_dir)
    if record is None:
        raise HubforgeError(
            f"stack {options.project} has no upgrade to roll back ({options.run_dir / plan.RECORD_FILE} is missing)"
        )
    if record.state == "rolled back":
        raise HubforgeError(
            f"the last upgrade of {options.project} (to {record.after.version}) was already rolled back"
            + (f": {record.reason}" if record.reason else "")
        )
    running = (state.get("images") or {}).get("hub")
    if record.state == "done" and running != record.after.images.get("hub"):
        raise HubforgeError(
            f"stack {options.project} no longer runs what its last upgrade installed ({record.after.version}: its hub "
            f"is {running}); a rollback would skip what came since: use `invoke restore` for an older state"
        )
    upgrade = upgrader(settings, options, passed)
    started = time.monotonic()
    say(
        f"[bold]rolling back[/] {options.project} from {record.after.version} to {record.before.version}, with the "
        f"hub's database of snapshot {record.snapshot[:8]} (what changed in the hub since the upgrade is lost)"
    )
    with console.status("rolling back") as status:
        upgrade.rollback(record, "rolled back by hand (invoke rollback)", status.update)
    say(f"[bold green]rolled back[/] to {record.before.version} in {time.monotonic() - started:.0f}s; labs ran on")

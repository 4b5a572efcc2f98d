"""`invoke backup` and `invoke restore` on a live compose stack (issue 30): two users with files, a backup while their
labs run, a second one that reads only what changed, one user's restore while the other's lab keeps running, and the
whole stack back after `invoke down --volumes --user-volumes` on an empty run folder, as on a new machine: both users
log in with their old passwords and read their files, with their owners and modes."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from ..support.hubclient import HubAPI, HubSession, KernelClient
from ..support.livestack import PASSWORD, ROOT, approved_user, claim_admin, start_stack, stop_stack
from ..support.livestack import run_invoke as invoke

pytestmark = pytest.mark.integration
NOTES = "/home/lab/workspace/notes.txt"
RESTIC_CACHE = Path(os.path.expanduser("~/.cache/hubforge/restic"))
SECRET = "/home/lab/private.txt"


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    """A stack with the volume prefix `invoke up` gives its project (the whole restore ends with the real `up`), its
    repository and password file outside the run folder, which the new-machine restore empties."""
    keep = tmp_path_factory.mktemp("kept")
    env = {"BACKUP_REPOSITORY": str(keep / "repository"), "BACKUP_PASSWORD_FILE": str(keep / "password")}
    (keep / "password").write_text("a-backup-password-for-the-tests\n")
    (keep / "password").chmod(0o600)
    stack = start_stack(tmp_path_factory.mktemp("stack"), env, volume_prefix="")
    stack.backup_env = env
    yield stack
    if getattr(request.session, "stack_failed", False):
        stack.dump_logs(ROOT / "test-results" / "logs" / stack.project)
    stop_stack(stack)
    shutil.rmtree(RESTIC_CACHE / stack.project, ignore_errors=True)  # restic's cache of this project's repository


def lab_sh(live, user: str, script: str) -> str:
    result = live.lab(user).exec_run(["sh", "-c", script], user="lab")
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


@pytest.fixture(scope="module")
def users(live):
    """ann (in group readers) and bob, both approved, with files written in their running labs."""
    admin = claim_admin(live)
    _, ann = approved_user(live, admin, "ann")
    _, bob = approved_user(live, admin, "bob")
    admin_api = HubAPI(live.url, admin.new_token("admin"))
    assert admin_api.request("POST", "hub/api/groups/readers", json={"users": ["ann"]}).status_code == 201
    for name, api in (("ann", ann), ("bob", bob)):
        api.start(name)
        lab_sh(live, name, f"echo 'notes of {name}' > {NOTES} && echo 'only {name}' > {SECRET} && chmod 600 {SECRET}")
    return {"ann": ann, "bob": bob}


def test_a_backup_while_the_labs_run_then_a_second_that_reads_only_the_change(live, users):
    labs = {name: live.lab(name).id for name in ("ann", "bob")}
    first = invoke(live, "backup")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"backed up .* snapshot [0-9a-f]{8}", first.stdout), first.stdout
    assert {name: live.lab(name).id for name in labs} == labs  # the labs kept running, the same containers
    assert all(live.lab(name).status == "running" for name in labs)
    lab_sh(live, "ann", "echo 'a small change' > /home/lab/workspace/change.txt")
    second = invoke(live, "backup")
    assert second.returncode == 0, second.stdout + second.stderr
    # restic read again only what changed: the new file, the database copy, the folders and files whose times moved
    new, changed, unchanged = map(int, re.search(r"(\d+) new, (\d+) changed, (\d+) unchanged", second.stdout).groups())
    assert 1 <= new <= 5 and changed <= 10 and unchanged > new + changed, second.stdout
    listed = invoke(live, "backup", "--list")
    assert listed.returncode == 0 and len(re.findall(r"[0-9a-f]{8}\W+20\d\d-", listed.stdout)) == 2, listed.stdout


def test_a_restore_refuses_a_running_stack_and_an_unknown_snapshot_or_user(live, users):
    running = invoke(live, "restore", "latest")
    assert running.returncode == 1 and "is running" in running.stderr and "--force" in running.stderr
    assert len(running.stderr.strip().splitlines()) == 1
    unknown = invoke(live, "restore", "deadbeef", "--user", "bob")
    assert unknown.returncode == 1 and "no snapshot 'deadbeef'" in unknown.stderr
    nobody = invoke(live, "restore", "latest", "--user", "cy")
    assert nobody.returncode == 1 and "holds no volumes of user 'cy'; its users: ann, bob" in nobody.stderr
    assert lab_sh(live, "bob", f"cat {NOTES}") == "notes of bob"  # nothing was touched


def test_one_users_restore_while_the_others_lab_keeps_running(live, users):
    ann_lab = live.lab("ann").id
    kernel = KernelClient(users["ann"], "ann")  # ann works on while bob's files come back
    kernel.execute("answer = 6 * 7")
    lab_sh(live, "bob", f"rm {NOTES} {SECRET} && echo 'a mistake' > /home/lab/workspace/mistake.txt")
    done = invoke(live, "restore", "latest", "--user", "bob")
    assert done.returncode == 0, done.stdout + done.stderr
    assert live.lab("ann").id == ann_lab and live.lab("ann").status == "running"
    assert kernel.execute("print(answer)").strip() == "42"  # her kernel kept its state
    assert not users["bob"].user("bob")["servers"]  # the hub stopped bob's lab for the restore, and knows it
    users["bob"].start("bob")
    assert lab_sh(live, "bob", f"cat {NOTES}") == "notes of bob"
    assert lab_sh(live, "bob", f"stat -c '%U %a' {SECRET}") == "lab 600"
    assert lab_sh(live, "bob", "ls /home/lab/workspace") == "notes.txt"  # the workspace as it was in the snapshot


def test_the_whole_stack_comes_back_on_an_empty_run_folder(live, users):
    run_dir = live.stack.options.run_dir
    env_before = (run_dir / ".env").read_text()
    down = invoke(live, "down", "--volumes", "--user-volumes", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    shutil.rmtree(run_dir)  # a new machine: only the repository's two settings, as the how-to says
    run_dir.mkdir()
    (run_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in live.backup_env.items()))
    done = invoke(live, "restore", "latest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run_dir / ".env").read_text() == env_before
    options = live.stack.options
    up = invoke(
        live, "up", "--port", str(options.https_port), "--http-port", str(options.http_port), "--bind", options.bind
    )
    assert up.returncode == 0, up.stdout + up.stderr
    for name in ("ann", "bob"):
        session = HubSession(live.url)
        assert session.login(name, PASSWORD).status_code == 302, f"{name} cannot log in with the old password"
        api = HubAPI(live.url, session.new_token(name))
        api.start(name)
        assert api.request("GET", f"user/{name}/api/contents/notes.txt?content=1").json()["content"] == (
            f"notes of {name}\n"
        )
        assert lab_sh(live, name, f"stat -c '%U %a' {SECRET} && cat {SECRET}") == f"lab 600\nonly {name}"
    admin = HubSession(live.url)
    assert admin.login("admin", PASSWORD).status_code == 302  # the admin too: no new bootstrap
    assert HubAPI(live.url, admin.new_token("admin")).request("GET", "hub/api/groups/readers").json()["users"] == [
        "ann"
    ]


def test_the_repository_needs_its_password(live, users, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    env_file = live.stack.options.run_dir / ".env"
    kept = env_file.read_text()
    try:
        env_file.write_text(kept.replace(live.backup_env["BACKUP_PASSWORD_FILE"], str(wrong)))
        listed = invoke(live, "backup", "--list")
        assert listed.returncode == 1 and "does not open the repository" in listed.stderr
    finally:
        env_file.write_text(kept)
    assert Path(live.backup_env["BACKUP_REPOSITORY"], "config").is_file()

"""Backups (hubforge.backup): what a snapshot holds, restic's command lines and answers, and every refusal, with a
daemon that stands in for Docker (the restic runs it answers are canned); the live path is tests/integration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_ext.settings.hub import from_environ, parse_backup_repository
from hub_ext.settings.parse import ConfigError
from hubforge.backup import plan
from hubforge.backup.plan import Progress, Repository, Snapshot
from hubforge.backup.runner import Backups, run_rows
from hubforge.deploy.settings import StackOptions
from hubforge.errors import HubforgeError

P = "proj"


def vol(name: str, kind: str, user: str | None = None, quota: bool = False, **extra) -> dict:
    labels = {"hubforge.project": P, "hubforge.volume": kind, **extra}
    if user:
        labels["hubforge.user"] = user
    if quota:
        labels["hubforge.quota"] = "50331648"
    options = {"type": "ext4", "device": f"/q/{P}/{name}.dev"} if quota else None
    return {"Name": name, "Driver": "local", "Labels": labels, "Options": options}


LISTED = [
    vol(f"{P}_hub-data", "hub-data", **{"com.docker.compose.project": P}),
    vol(f"{P}_certs", "certs"),
    vol(f"{P}_shared", "shared"),
    vol(f"{P}-jupyterlab-ann_home", "home", "ann", **{"hubforge.account": "20260101T000000000000Z"}),
    vol(f"{P}-jupyterlab-ann_workspace", "workspace", "ann", quota=True),
    vol(f"{P}-jupyterlab-bob_home", "home", "bob"),
    {"Name": "unlabelled", "Driver": "local", "Labels": {"hubforge.project": P}},
    {"Name": "plain", "Driver": "local", "Labels": None},
]


# -- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("", ""),
        ("/srv/backups/", "/srv/backups"),
        ("s3:s3.example.org/bucket/hub", "s3:s3.example.org/bucket/hub"),
        ("rest:https://backup.example.org:8000/hub", "rest:https://backup.example.org:8000/hub"),
    ],
)
def test_backup_repository_takes_a_folder_or_a_remote_url(raw, value):
    assert parse_backup_repository(raw) == value
    assert from_environ({"BACKUP_REPOSITORY": raw}).backup_repository == value


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("sftp:me@host:/backups", "sftp repositories are not supported yet"),
        ("backups", "use an absolute host path, s3:... or rest:..."),
        ("/srv/../etc", "is not an absolute host path"),
        ("b2:bucket", "use an absolute host path"),
    ],
)
def test_a_bad_backup_repository_is_one_line(raw, says):
    with pytest.raises(ConfigError, match="BACKUP_REPOSITORY") as caught:
        from_environ({"BACKUP_REPOSITORY": raw})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_relative_password_file_is_refused():
    with pytest.raises(ConfigError, match="BACKUP_PASSWORD_FILE='secret' is not an absolute host path"):
        from_environ({"BACKUP_PASSWORD_FILE": "secret"})


def test_the_repository_and_password_default_per_project(tmp_path):
    default = plan.repository("", "", P, tmp_path)
    assert default == Repository(f"/var/lib/hubforge/backups/{P}", tmp_path / "backup-password", True)
    assert default.local and default.restic_location == "/repo"
    given = plan.repository("s3:host/bucket", "/etc/hubforge/pw", P, tmp_path)
    assert not given.local and given.restic_location == "s3:host/bucket" and not given.password_is_default


# -- what a snapshot holds ---------------------------------------------------------------------------------------
def test_every_labelled_volume_is_backed_up_and_nothing_else():
    names = [v.name for v in plan.stack_volumes(LISTED)]
    assert names == sorted(names) and "unlabelled" not in names and "plain" not in names
    assert len(names) == 6


def test_a_quota_d_volume_comes_back_plain_with_its_other_labels():
    volumes = {v.name: v for v in plan.stack_volumes(LISTED)}
    quotad = volumes[f"{P}-jupyterlab-ann_workspace"]
    assert quotad.quota and quotad.user == "ann" and quotad.kind == "workspace"
    again = quotad.recreated()
    assert again.options == {} and "hubforge.quota" not in again.labels and again.labels["hubforge.user"] == "ann"
    plain = volumes[f"{P}-jupyterlab-ann_home"]
    assert plain.recreated() is plain and plain.labels["hubforge.account"] == "20260101T000000000000Z"


def test_the_manifest_round_trips_with_compose_s_labels():
    volumes = plan.stack_volumes(LISTED)
    document = plan.parse_manifest(plan.manifest(P, "compose", "0.1.0", "abc", volumes, "online copy"))
    assert document["volumes"] == volumes and document["project"] == P and document["database"] == "online copy"
    hub_data = next(v for v in document["volumes"] if v.kind == "hub-data")
    assert hub_data.labels["com.docker.compose.project"] == P  # so `up` takes the restored volume as its own


@pytest.mark.parametrize("text", ["not json", json.dumps({"format": 99}), "[]"])
def test_a_manifest_of_another_kind_is_refused(text):
    with pytest.raises(HubforgeError, match="manifest"):
        plan.parse_manifest(text)


# -- restic's command lines ----------------------------------------------------------------------------------------
def test_a_backup_is_one_path_and_one_host_per_project_so_the_last_snapshot_is_the_parent():
    volumes = plan.stack_volumes(LISTED)
    argv = plan.backup_argv(P, plan.tags(P, "compose", "0.1.0", "0123456789abcdef"), ["/backup/x"])
    assert argv[:5] == ["backup", "/backup", "--json", "--host", P]
    assert argv[5:] == [
        "--tag",
        "hubforge",
        "--tag",
        f"project={P}",
        "--tag",
        "engine=compose",
        "--tag",
        "version=0.1.0",
        "--tag",
        "commit=0123456789ab",
        "--exclude",
        "/backup/x",
    ]
    assert plan.tags(P, "compose", "0.1.0", "")[-1] == "version=0.1.0"  # no commit outside a checkout
    online = plan.backup_excludes(volumes, True)
    at_rest = plan.backup_excludes(volumes, False)
    live = [
        f"/backup/volumes/{P}_hub-data/jupyterhub.sqlite-wal",
        f"/backup/volumes/{P}_hub-data/jupyterhub.sqlite-shm",
    ]
    assert set(live) <= set(online) and not set(live) & set(at_rest)
    assert f"/backup/volumes/{P}_hub-data/.hubforge-backup-*.sqlite" in at_rest
    assert {"/backup/settings/compose.yml", "/backup/settings/backup-password"} <= set(at_rest)
    assert "/backup/settings/.env" not in at_rest


def test_restore_argv_puts_back_everything_but_the_manifest_or_only_what_is_named():
    assert plan.restore_argv("abc", None) == ["restore", "abc", "--target", "/", "--exclude", "/backup/manifest"]
    assert plan.restore_argv("abc", ["/backup/volumes/a", "/backup/volumes/b"]) == [
        "restore",
        "abc",
        "--target",
        "/",
        "--include",
        "/backup/volumes/a",
        "--include",
        "/backup/volumes/b",
    ]
    assert plan.dump_argv("abc") == ["dump", "abc", "/backup/manifest/stack.json"]
    assert plan.list_argv(P) == ["snapshots", "--json", "--tag", f"project={P}"]


def test_remote_credentials_go_only_to_a_remote_repository_and_only_restic_s_own():
    passed = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key", "HOME": "/root", "AWS_DEFAULT_REGION": ""}
    local = plan.environment(Repository("/srv/b", Path("/pw"), False), passed)
    assert local == {
        "RESTIC_REPOSITORY": "/repo",
        "RESTIC_PASSWORD_FILE": "/run/secrets/restic-password",
        "RESTIC_CACHE_DIR": "/cache",
        "RESTIC_PROGRESS_FPS": "2",
    }
    remote = plan.environment(Repository("s3:h/b", Path("/pw"), False), passed)
    assert remote["RESTIC_REPOSITORY"] == "s3:h/b"
    assert remote["AWS_ACCESS_KEY_ID"] == "id" and "HOME" not in remote and "AWS_DEFAULT_REGION" not in remote


# -- what restic answers -------------------------------------------------------------------------------------------
STATUS = (
    '{"message_type":"status","seconds_elapsed":3,"percent_done":0.25,"total_files":40,"files_done":10,'
    '"total_bytes":4000000,"bytes_done":1000000}'
)
SUMMARY = (
    '{"message_type":"summary","files_new":2,"files_changed":1,"files_unmodified":37,"data_added":1500,'
    '"total_duration":1.25,"snapshot_id":"0123456789abcdef"}'
)


def test_restic_s_progress_and_summary_are_read_and_shown():
    progress = plan.parse_backup_line(STATUS)
    assert progress == Progress(0.25, 10, 40, 1_000_000, 4_000_000, 3.0)
    assert plan.progress_line(progress) == "backing up: 25% (1.0 MB of 4.0 MB, 10 of 40 files, 3s)"
    summary = plan.parse_backup_line(SUMMARY)
    assert plan.summary_line(summary) == (
        "snapshot 01234567: 2 new, 1 changed, 37 unchanged files; 1.5 KB added to the repository in 1.2s"
    )
    for other in ("", "not json", "[1]", '{"message_type":"verbose_status"}', "Fatal: oops"):
        assert plan.parse_backup_line(other) is None
    assert plan.backup_summary(f"{STATUS}\n{SUMMARY}\n{STATUS}\n") == summary
    assert plan.backup_summary(f"{STATUS}\n") is None


SNAPSHOTS = json.dumps(
    [
        {"id": "bbbb2222" + "0" * 56, "short_id": "bbbb2222", "time": "2026-12-07T00:20:00.1Z", "tags": ["version=2"]},
        {
            "id": "aaaa1111" + "0" * 56,
            "short_id": "aaaa1111",
            "time": "2026-12-07T00:10:00.1Z",
            "tags": ["hubforge", f"project={P}", "engine=compose", "version=1"],
        },
        {"id": "aaab3333" + "0" * 56, "short_id": "aaab3333", "time": "2026-12-07T00:30:00.1Z", "tags": None},
    ]
)


def test_snapshots_are_listed_oldest_first_and_picked_by_id_prefix_or_latest():
    snapshots = plan.parse_snapshots(SNAPSHOTS)
    assert [s.short_id for s in snapshots] == ["aaaa1111", "bbbb2222", "aaab3333"]
    assert snapshots[0].tag("engine") == "compose" and snapshots[2].tag("version") == ""
    assert plan.pick_snapshot(snapshots, "latest", P).short_id == "aaab3333"
    assert plan.pick_snapshot(snapshots, "bbbb", P).short_id == "bbbb2222"
    assert plan.pick_snapshot(snapshots, snapshots[0].id, P).short_id == "aaaa1111"
    assert run_rows(plan.group_runs(snapshots))[-1] == ("aaaa1111", "2026-12-07 00:10:00", "1", "compose", "manager")
    assert plan.parse_snapshots("null") == [] and plan.parse_snapshots("") == []


@pytest.mark.parametrize(
    ("snapshots", "wanted", "says"),
    [
        ([], "latest", f"the repository has no snapshot of project {P}: make one with `invoke backup`"),
        (None, "aaa", "snapshot 'aaa' is ambiguous; give more of its id"),
        (None, "cccc", f"no snapshot 'cccc' of project {P}; the latest are aaaa1111, bbbb2222, aaab3333"),
        (None, "", "no snapshot ''"),
    ],
)
def test_an_unknown_or_ambiguous_snapshot_is_one_line(snapshots, wanted, says):
    listed = plan.parse_snapshots(SNAPSHOTS) if snapshots is None else snapshots
    with pytest.raises(HubforgeError) as caught:
        plan.pick_snapshot(listed, wanted, P)
    assert says in str(caught.value)


REPO = Repository("/srv/backups/proj", Path("/etc/pw"), False)


@pytest.mark.parametrize(
    ("stderr", "says"),
    [
        ("Fatal: wrong password or no key found\n", "the password in /etc/pw does not open the repository"),
        (
            "Fatal: unable to open config file: stat /repo/config: no such file or directory\n"
            "Is there a repository at the following location?\n/repo\n",
            "there is no backup repository at /srv/backups/proj (BACKUP_REPOSITORY)",
        ),
        ("Fatal: unable to create lock in backend: repository is already locked", "locked by another restic"),
        ("some\nFatal: disk full\n\n", "restic failed: Fatal: disk full"),
        ("", "restic failed: (no output)"),
    ],
)
def test_restic_s_failures_become_one_line_that_says_what_to_do(stderr, says):
    problem = plan.restic_problem(stderr, REPO)
    assert says in problem and "\n" not in problem


def test_a_missing_repository_or_password_file_is_named_before_restic_runs(tmp_path):
    repo = Repository(str(tmp_path / "repo"), tmp_path / "pw", False)
    assert "there is no backup repository at" in plan.missing_repository(repo)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").write_text("x")
    assert "no password file at" in plan.missing_repository(repo)
    (tmp_path / "pw").write_text("secret")
    assert plan.missing_repository(repo) is None


def test_one_user_s_volumes_are_chosen_or_the_choices_named():
    volumes = plan.stack_volumes(LISTED)
    assert [v.kind for v in plan.user_volumes(volumes, "ann", None)] == ["home", "workspace"]
    assert [v.name for v in plan.user_volumes(volumes, "bob", "home")] == [f"{P}-jupyterlab-bob_home"]
    with pytest.raises(HubforgeError, match="holds no volumes of user 'cy'; its users: ann, bob"):
        plan.user_volumes(volumes, "cy", None)
    with pytest.raises(HubforgeError, match="holds no cache volume of 'ann'; it has: home, workspace"):
        plan.user_volumes(volumes, "ann", "cache")
    with pytest.raises(HubforgeError, match="--volume='tmp' is not a user volume; use one of: home, workspace, cache"):
        plan.user_volumes(volumes, "ann", "tmp")


# -- the runner's refusals, with a daemon that stands in for Docker --------------------------------------------------
class StandInDaemon:
    """Answers restic runs by their subcommand with canned output; records what is removed and made."""

    def __init__(self, answers: dict[str, tuple[int, str, str]], volumes: list[dict]) -> None:
        self.answers, self.listed = answers, volumes
        self.runs: list[tuple[list[str], dict]] = []
        self.removed: list[str] = []
        self.created: list[str] = []
        self.users: dict[str, list[str]] = {}  # volume -> the containers that mount it

    def run_streamed(self, image, command, host, labels, environment, user=None, on_line=lambda line: None, files=None):
        self.runs.append((command, host))
        self.files = dict(files or {})
        code, out, err = self.answers.get(command[0], (0, "", ""))
        for line in out.splitlines():
            on_line(line)
        return code, out, err

    def volumes(self, labels):
        return self.listed

    def volume(self, name):
        return next((v for v in self.listed if v["Name"] == name), None)

    def volume_users(self, name):
        return self.users.get(name, [])

    def remove_volume(self, name):
        self.removed.append(name)
        return True

    def create_volume(self, name, driver, options, labels):
        self.created.append(name)


class StandInStack:
    def __init__(self, docker, options, hub_state=None, labs=()):
        self.docker, self.options, self.hub_state, self.labs = docker, options, hub_state, list(labs)
        self.downs = 0

    def hub_container(self):
        return {"Id": "hub", "State": self.hub_state} if self.hub_state else None

    def lab_users(self):
        return self.labs

    def lab_containers(self):
        return []

    def down(self, volumes, user_volumes):
        self.downs += 1

    def remove_quota_files(self, devices):
        pass


def backups_of(tmp_path, answers, engine="compose", hub_state=None, labs=()) -> tuple[Backups, StandInDaemon]:
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "config").write_text("x")
    (tmp_path / "pw").write_text("secret\n")
    daemon = StandInDaemon(answers, LISTED)
    options = StackOptions(project=P, run_dir=tmp_path / "run", engine=engine)
    stack = StandInStack(daemon, options, hub_state, labs)
    repo = Repository(str(tmp_path / "repo"), tmp_path / "pw", False)
    return Backups(stack, "hubforge/backup:k", repo, tmp_path / "cache", {}, lambda message: None), daemon


def canned(tmp_path) -> dict:
    volumes = plan.stack_volumes(LISTED)
    return {
        "snapshots": (0, SNAPSHOTS.replace("bbbb2222", "ffff9999"), ""),
        "dump": (0, plan.manifest(P, "compose", "0.1.0", "", volumes, "online copy"), ""),
    }


def test_a_running_stack_is_not_overwritten_unless_forced(tmp_path):
    backups, daemon = backups_of(tmp_path, canned(tmp_path), hub_state="running", labs=["ann"])
    with pytest.raises(HubforgeError) as caught:
        backups.restore_stack("latest", False, lambda message: None)
    assert str(caught.value) == (
        f"stack {P} is running (hub, the lab of ann): a restore replaces its data; stop it with `invoke down`, or pass "
        "--force to have the restore stop it"
    )
    assert daemon.removed == [] and daemon.created == [] and backups.stack.downs == 0  # nothing touched
    snapshot, count = backups.restore_stack("latest", True, lambda message: None)
    assert backups.stack.downs == 1 and count == 6 and snapshot.short_id == "aaab3333"
    assert sorted(daemon.created) == sorted(v.name for v in plan.stack_volumes(LISTED))
    command, host = daemon.runs[-1]
    assert command == ["restore", snapshot.id, "--target", "/", "--exclude", "/backup/manifest"]
    assert f"{tmp_path / 'run'}:/backup/settings:rw" in host["binds"] and not host["read_only"]
    assert set(host["cap_add"]) == {"CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID"} and host["cap_drop"] == ["ALL"]


def test_a_volume_in_use_stops_the_restore_before_any_volume_is_replaced(tmp_path):
    backups, daemon = backups_of(tmp_path, canned(tmp_path))
    daemon.users = {f"{P}-jupyterlab-bob_home": ["stray"], f"{P}_shared": ["other"]}
    with pytest.raises(HubforgeError) as caught:
        backups.restore_stack("latest", False, lambda message: None)
    assert str(caught.value) == (
        f"volume {P}-jupyterlab-bob_home is in use by stray (and 1 more volumes): stop what uses it, then restore "
        "again (nothing was restored)"
    )
    assert daemon.removed == daemon.created == [] and [run[0][0] for run in daemon.runs] == ["snapshots", "dump"]


def test_a_user_restore_touches_only_that_user_s_volumes(tmp_path):
    backups, daemon = backups_of(tmp_path, canned(tmp_path), hub_state=None)
    snapshot, volumes = backups.restore_user("aaab", "ann", "home", lambda message: None)
    assert [v.name for v in volumes] == daemon.removed == daemon.created == [f"{P}-jupyterlab-ann_home"]
    command, host = daemon.runs[-1]
    assert command[-2:] == ["--include", f"/backup/volumes/{P}-jupyterlab-ann_home"]
    assert host["binds"][0] == f"{P}-jupyterlab-ann_home:/backup/volumes/{P}-jupyterlab-ann_home:rw"
    assert not any(":/backup/settings" in bind for bind in host["binds"])


@pytest.mark.parametrize(
    ("answers", "says"),
    [
        ({"snapshots": (1, "", "Fatal: wrong password or no key found")}, "does not open the repository"),
        ({"dump": (0, plan.manifest("other", "compose", "1", "", [], "x"), "")}, "restore it with --project other"),
    ],
)
def test_a_wrong_password_or_another_project_s_snapshot_restores_nothing(tmp_path, answers, says):
    backups, daemon = backups_of(tmp_path, {**canned(tmp_path), **answers})
    with pytest.raises(HubforgeError, match=says):
        backups.restore_stack("latest", True, lambda message: None)
    assert daemon.removed == daemon.created == []


def test_a_missing_repository_is_named_and_restic_never_runs(tmp_path):
    backups, daemon = backups_of(tmp_path, canned(tmp_path))
    (tmp_path / "repo" / "config").unlink()
    with pytest.raises(HubforgeError, match="there is no backup repository at"):
        backups.snapshots()
    assert daemon.runs == []


def test_a_backup_reads_every_volume_read_only_without_network_and_reports_progress(tmp_path):
    answers = {"backup": (0, STATUS + "\n" + SUMMARY + "\n", "")}
    backups, daemon = backups_of(tmp_path, answers)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".env").write_text("")
    shown: list[str] = []
    summary = backups.backup("0.1.0", "", tmp_path / "staging", shown.append)
    assert summary["snapshot_id"] == "0123456789abcdef" and summary["volumes"] == 6
    assert "backing up: 25% (1.0 MB of 4.0 MB, 10 of 40 files, 3s)" in shown
    command, host = daemon.runs[-1]
    assert command[:2] == ["backup", "/backup"]
    volume_binds = [b for b in host["binds"] if ":/backup/volumes/" in b]
    assert len(volume_binds) == 6 and all(b.endswith(":ro") for b in volume_binds)
    assert host["read_only"] and host["network_mode"] == "none" and host["cap_add"] == ["DAC_READ_SEARCH"]
    manifest = json.loads((tmp_path / "staging" / "stack.json").read_text())
    assert manifest["database"] == "files at rest"  # no hub running: its files are at rest


def test_the_first_backup_makes_a_private_password_file_only_at_its_default_place(tmp_path):
    backups, _ = backups_of(tmp_path, {})
    backups.repo = Repository(str(tmp_path / "new-repo"), tmp_path / "run" / "backup-password", True)
    backups.ensure_repository()
    made = tmp_path / "run" / "backup-password"
    assert made.stat().st_mode & 0o777 == 0o600 and len(made.read_text().strip()) >= 40
    backups.repo = Repository(str(tmp_path / "new-repo"), tmp_path / "elsewhere", False)
    with pytest.raises(HubforgeError, match="no password file at .*elsewhere \\(BACKUP_PASSWORD_FILE\\)"):
        backups.ensure_repository()


def test_snapshot_is_a_plain_record():
    snapshot = Snapshot("id", "short", "2026-12-07T00:00:00Z", ("project=p",))
    assert snapshot.tag("project") == "p" and snapshot.tag("engine") == ""

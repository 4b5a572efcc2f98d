"""The pure parts of swarm backups: snapshots grouped into runs and picked, what `--list` shows, the refusal of a local
repository, the node helper's argv and secret, the helper service's spec, and files put into a container."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from docker.types import DriverConfig

from hub_ext.backup import node
from hub_ext.backup import plan as shared
from hub_ext.backup.gateway import files_archive, folders_of
from hub_ext.helpers import onnode
from hubforge.backup import plan
from hubforge.backup.plan import Repository
from hubforge.backup.runner import run_rows
from hubforge.errors import HubforgeError

P = "proj"


def snapshot(short: str, time: str, host: str, *tags: str) -> dict:
    return {"id": short + "0" * 56, "short_id": short, "time": time, "hostname": host, "tags": ["version=1", *tags]}


SNAPSHOTS = json.dumps(
    [
        snapshot("c0c0c0c0", "2026-12-07T00:00:00Z", P),  # a compose-era snapshot: a run of its own
        snapshot("a1a1a1a1", "2026-12-07T01:00:01Z", f"{P}@w1", "run=0feed001", "node=w1", "node-id=n1n1n1n1n1n1"),
        snapshot(
            "b2b2b2b2", "2026-12-07T01:00:00Z", P, "run=0feed001", "node=m", "node-id=m0m0m0m0m0m0", "engine=swarm"
        ),
        snapshot("d3d3d3d3", "2026-12-07T02:00:00Z", P, "run=0beef002", "node=m", "node-id=m0m0m0m0m0m0"),
    ]
)


def test_snapshots_of_one_backup_are_one_run_the_managers_first():
    runs = plan.group_runs(plan.parse_snapshots(SNAPSHOTS))
    assert [r.id for r in runs] == ["c0c0c0c0", "0feed001", "0beef002"]
    run = runs[1]
    assert [s.short_id for s in run.snapshots] == ["b2b2b2b2", "a1a1a1a1"]
    assert run.manager.short_id == "b2b2b2b2" and [s.short_id for s in run.workers] == ["a1a1a1a1"]
    assert run.time == "2026-12-07T01:00:00Z" and run.tag("engine") == "swarm"
    assert run.nodes() == ["manager", "w1 (n1n1n1)"]
    assert runs[0].nodes() == ["manager"] and runs[0].manager.short_id == "c0c0c0c0"


def test_list_shows_one_row_per_run_newest_first():
    rows = run_rows(plan.group_runs(plan.parse_snapshots(SNAPSHOTS)))
    assert [r[0] for r in rows] == ["0beef002", "0feed001", "c0c0c0c0"]
    assert rows[1] == ("0feed001", "2026-12-07 01:00:00", "1", "swarm", "manager, w1 (n1n1n1)")


@pytest.mark.parametrize(
    ("wanted", "run"),
    [("latest", "0beef002"), ("0feed", "0feed001"), ("a1a1", "0feed001"), ("b2b2b2b2" + "0" * 56, "0feed001")],
)
def test_a_run_is_picked_by_its_id_or_any_of_its_snapshots(wanted, run):
    assert plan.pick_run(plan.group_runs(plan.parse_snapshots(SNAPSHOTS)), wanted, P).id == run


@pytest.mark.parametrize(
    ("wanted", "says"),
    [("0", "snapshot '0' is ambiguous"), ("ffff", f"no snapshot 'ffff' of project {P}; the latest are c0c0c0c0")],
)
def test_an_unknown_or_ambiguous_run_is_one_line(wanted, says):
    with pytest.raises(HubforgeError, match=says):
        plan.pick_run(plan.group_runs(plan.parse_snapshots(SNAPSHOTS)), wanted, P)


def test_a_run_without_the_managers_snapshot_is_refused_for_a_whole_restore():
    only_worker = [s for s in plan.parse_snapshots(SNAPSHOTS) if s.short_id == "a1a1a1a1"]
    with pytest.raises(HubforgeError, match=r"backup 0feed001 holds no snapshot of the manager \(its nodes: w1"):
        plan.pick_snapshot(only_worker, "latest", P)


LOCAL = Repository("/srv/backups/proj", Path("/etc/pw"), False)
REMOTE = Repository("rest:http://10.0.0.1:8000/", Path("/etc/pw"), False)


@pytest.mark.parametrize(
    ("repo", "holders", "refused"),
    [(LOCAL, {"w1 (n1)": 3, "w2 (n2)": 1}, True), (LOCAL, {}, False), (REMOTE, {"w1 (n1)": 3}, False)],
)
def test_a_local_repository_is_refused_only_when_other_nodes_hold_volumes(repo, holders, refused):
    said = plan.local_repository_refusal(repo, holders)
    assert (said is not None) == refused
    if refused:
        assert "w1 (n1) (3), w2 (n2) (1)" in said and "rest: or s3:" in said and "\n" not in said


def test_a_workers_snapshots_have_their_own_host_and_the_runs_tags():
    argv = shared.backup_argv(P, ["hubforge", *shared.run_tags("0feed001", "n1", "w1")], [], shared.node_host(P, "w1"))
    assert argv[argv.index("--host") + 1] == "proj@w1"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--tag"] == [
        "hubforge",
        "run=0feed001",
        "node=w1",
        "node-id=n1",
    ]
    assert shared.backup_argv(P, [], [])[4] == P  # the manager's (and compose's) host stays the project's
    document = json.loads(shared.manifest(P, "swarm", "1", "", [], "files at rest", {"id": "n1", "hostname": "w1"}))
    assert document["node"] == {"id": "n1", "hostname": "w1"}
    assert "node" not in json.loads(shared.manifest(P, "compose", "1", "", [], "files at rest"))


def test_the_node_helper_gets_its_secrets_in_a_document_never_on_its_command_line():
    document = json.loads(
        node.secret_document(
            "rest:http://u:p@h/",
            "pw",
            {"RESTIC_REST_PASSWORD": "x", "HOME": "/root", "AWS_SESSION_TOKEN": ""},
            {
                "username": "hubforge",
                "password": "r",
                "serveraddress": "ignored",
            },
        )
    )
    assert document == {
        "repository": "rest:http://u:p@h/",
        "password": "pw",
        "environment": {"RESTIC_REST_PASSWORD": "x"},
        "registry": {"username": "hubforge", "password": "r"},
    }
    argv = node.backup_command(P, "127.0.0.1:5000/hubforge/backup@sha256:ab", "0feed001", "1.0", "c0ffee")
    assert argv[:4] == ["python3", "-m", "hub_ext.backup.node", "backup"] and "pw" not in argv
    assert node.restore_command(P, "img", "s1", ["v1", "v2"])[-4:] == ["--snapshot", "s1", "v1", "v2"]


def test_the_helper_service_runs_once_on_its_node_with_the_nodes_socket():
    template = onnode.helper_template(
        "img", ["python3", "-m", "x"], P, "n1", DriverConfig("json-file", {}), secrets=["s"], environment={"A": "1"}
    )
    spec = template["ContainerSpec"]
    assert template["Placement"]["Constraints"] == ["node.id == n1"]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert spec["Mounts"][0]["Source"] == spec["Mounts"][0]["Target"] == "/var/run/docker.sock"
    assert spec["User"] == "0:0" and spec["ReadOnly"] and spec["Secrets"] == ["s"]
    assert spec["Env"] == ["PYTHONDONTWRITEBYTECODE=1", "A=1"]
    assert spec["Labels"] == {"hubforge.project": P, "hubforge.role": "helper"}
    assert onnode.helper_name(P) != onnode.helper_name(P)


def test_a_helper_without_an_answer_says_what_its_task_said():
    tasks = [{"Status": {"State": "failed", "Err": "no such image"}}]
    with pytest.raises(RuntimeError, match=r"the helper on node n1 gave no answer \(failed: no such image\)"):
        onnode.helper_answer("Traceback ...\n", "n1", tasks)
    assert onnode.helper_answer('x hubforge-volumes: [{"result": "empty"}]\n', "n1", tasks) == [{"result": "empty"}]


def test_files_go_into_a_container_by_folder_readable_by_root_only():
    folders = folders_of({"/backup/manifest/stack.json": b"{}", "/run/secrets/restic-password": b"pw"})
    assert folders == {"/backup/manifest": {"stack.json": b"{}"}, "/run/secrets": {"restic-password": b"pw"}}
    with tarfile.open(fileobj=io.BytesIO(files_archive(folders["/run/secrets"]))) as archive:
        entry = archive.getmember("restic-password")
        assert (entry.mode, entry.uid, archive.extractfile(entry).read()) == (0o400, 0, b"pw")
    with pytest.raises(ValueError, match="absolute path"):
        folders_of({"relative/file": b""})


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("rest:http://user:secret@10.0.0.1:8000/", "rest:http://user:***@10.0.0.1:8000/"),
        ("rest:https://10.0.0.1:8000/repo", "rest:https://10.0.0.1:8000/repo"),
        ("s3:s3.amazonaws.com/bucket", "s3:s3.amazonaws.com/bucket"),
        ("/srv/backups/proj", "/srv/backups/proj"),
    ],
)
def test_a_password_in_the_repositorys_url_is_never_printed(location, shown):
    repo = Repository(location, Path("/etc/pw"), False)
    assert repo.shown == shown
    assert "secret" not in shared.restic_problem("Fatal: unable to open config file", repo)

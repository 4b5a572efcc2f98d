"""Group policies on a live stack (issue 28): each group's members get its memory, image and folder at their start;
nobody else sees a group's folder; a bad policy is refused in one line by both APIs; a change reaches the members'
running labs as "restart to apply" and applies at their next start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import yaml

from ..support.livestack import ROOT, approved_user, current_images

pytestmark = pytest.mark.integration

# the data-science choice, as a built flavour adds it (the lab image under another name: one image to build)
SCIENCE = "hubforge/lab:policy-test"
EXTRA_LAB_IMAGES = {"datascience": SCIENCE}
MIB = 2**20
MEMORY_LIMIT = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"  # v2 | v1


@pytest.fixture(scope="module", autouse=True)
def science_image():
    client = docker.from_env()
    client.images.get(current_images()[0]["lab"]).tag(SCIENCE)
    yield SCIENCE
    client.images.remove(SCIENCE, noprune=True)


def put_policy(admin_api, group: str, policy):
    return admin_api.request("PUT", f"hub/api/hubforge/policies/{group}", json=policy)


def lab_run(live, name: str, script: str) -> tuple[int, str]:
    result = live.lab(name).exec_run(["sh", "-c", script], user="lab")
    return result.exit_code, result.output.decode(errors="replace")


@pytest.fixture(scope="module")
def members(live, admin, admin_api):
    """rita in research (768 MiB, the data-science image, a read-write folder), sam in students (320 MiB, the default
    image), both started."""
    _, rita = approved_user(live, admin, "rita")
    _, sam = approved_user(live, admin, "sam")
    research = {"mem_limit": "768M", "images": ["datascience"], "folder": "rw", "environment": {"TEAM": "research"}}
    assert put_policy(admin_api, "research", research).status_code == 201
    assert put_policy(admin_api, "students", {"mem_limit": "320M", "default_image": "default"}).status_code == 201
    for group, user in (("research", "rita"), ("students", "sam")):
        added = admin_api.request("POST", f"hub/api/groups/{group}/users", json={"users": [user]})
        assert added.status_code == 200, added.text
    rita.start("rita")
    sam.start("sam")
    return rita, sam


def test_each_member_gets_their_groups_memory_image_and_folder(live, members):
    rita, sam = live.lab("rita"), live.lab("sam")
    assert rita.attrs["HostConfig"]["Memory"] == 768 * MIB and sam.attrs["HostConfig"]["Memory"] == 320 * MIB
    assert rita.attrs["Config"]["Image"] == SCIENCE and sam.attrs["Config"]["Image"] != SCIENCE
    # read from inside the lab, as its user sees it
    assert lab_run(live, "rita", MEMORY_LIMIT)[1].strip() == str(768 * MIB)
    assert lab_run(live, "rita", "echo $TEAM")[1].strip() == "research"
    code, out = lab_run(
        live, "rita", "echo notes > /mnt/groups/research/notes.txt && cat /mnt/groups/research/notes.txt"
    )
    assert code == 0 and out.strip() == "notes", out


def test_a_non_member_cannot_see_the_groups_folder(live, members):
    script = "cat /mnt/groups/research/notes.txt; find / -name notes.txt 2>/dev/null; echo TEAM=$TEAM"
    _, out = lab_run(live, "sam", script)
    # not there, found nowhere, and none of the group's environment
    assert out.splitlines() == ["cat: /mnt/groups/research/notes.txt: No such file or directory", "TEAM="], out
    assert not any(m["Destination"].startswith("/mnt/groups") for m in live.lab("sam").attrs["Mounts"])


def test_a_bad_policy_is_refused_in_one_line_by_both_apis(admin_api):
    refused = put_policy(admin_api, "research", {"mem_limit": "lots"})
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "policy of group 'research': mem_limit='lots' is not a size; use e.g. 512M, 4G or a byte count"
    )
    through_jupyterhub = admin_api.request("PUT", "hub/api/groups/research/properties", json={"hubforge": {"gpus": -1}})
    assert through_jupyterhub.status_code == 400
    assert "policy of group 'research': gpus=-1 is not a whole number >= 0" in through_jupyterhub.json()["message"]
    unknown = put_policy(admin_api, "research", {"images": ["nope"]})
    assert unknown.status_code == 400 and "image 'nope' is not a lab image of this stack" in unknown.json()["message"]
    typo = put_policy(admin_api, "research", {"mem_limt": "1G"})
    assert typo.status_code == 400 and "'mem_limt' is not a policy field" in typo.json()["message"]
    kept = admin_api.request("GET", "hub/api/groups/research").json()["properties"]["hubforge"]
    assert kept["mem_limit"] == "768M"  # nothing of the refused writes was kept
    # JupyterHub's own API still reads and writes the policy
    assert admin_api.request("GET", "hub/api/hubforge/policies/students").json()["policy"] == {
        "mem_limit": "320M",
        "default_image": "default",
    }


def test_a_change_tells_running_members_to_restart_and_applies_at_their_next_start(live, admin_api, members):
    _, sam = members
    changed = put_policy(admin_api, "students", {"mem_limit": "384M"})
    assert changed.status_code == 200 and changed.json()["restart_to_apply"] == ["sam"]
    assert live.lab("sam").attrs["HostConfig"]["Memory"] == 320 * MIB  # running labs are left alone
    sam.stop("sam")
    sam.start("sam")
    assert lab_run(live, "sam", MEMORY_LIMIT)[1].strip() == str(384 * MIB)


def test_the_policies_page_lists_groups_members_and_running_labs(admin, members):
    page = admin.http.get(admin.url("hub/policies"), timeout=30)  # the short address leads there
    assert page.status_code == 200 and page.url.endswith("/hub/hubforge/policies")
    assert 'data-group="research"' in page.text and "rita" in page.text and '<code>mem_limit="768M"</code>' in page.text


def invoke_policies(live, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "policies", *args, "--project", live.project],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "INVOKE_HUBFORGE_STACK_DIR": str(live.stack.options.run_dir.parent)},
    )


def test_policies_export_and_import_as_yaml(live, admin_api, members, tmp_path):
    exported = tmp_path / "policies.yaml"
    done = invoke_policies(live, "export", str(exported))
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(exported.read_text())
    assert document["groups"]["research"]["mem_limit"] == "768M" and "students" in document["groups"]
    document["groups"]["research"]["mem_limit"] = "1G"
    document["groups"]["newcomers"] = {"mem_limit": "256M"}
    document["groups"]["broken"] = {"cpu_limit": "many"}
    exported.write_text(yaml.safe_dump(document))
    done = invoke_policies(live, "import", str(exported))
    assert done.returncode == 1  # one group refused, the others set
    assert "broken: policy of group 'broken': cpu_limit='many' is not a number of CPUs" in done.stdout + done.stderr
    assert "rita" in done.stdout  # research's running lab was told to restart
    groups = {g["name"]: g for g in admin_api.request("GET", "hub/api/hubforge/policies").json()["groups"]}
    assert groups["research"]["policy"]["mem_limit"] == "1G" and groups["newcomers"]["policy"] == {"mem_limit": "256M"}
    assert "broken" not in groups
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [research]\n")
    done = invoke_policies(live, "import", str(bad))
    assert done.returncode != 0 and "must hold `groups:` mapping each group to its policy" in done.stdout + done.stderr


# -- storage quotas ------------------------------------------------------------------------------------------
WRITE = "dd if=/dev/zero of={path} bs=1M count={mib} conv=fsync 2>&1; echo exit=$?"


@pytest.fixture(scope="module")
def quota_member(live, admin, admin_api, tmp_path_factory):
    """quentin in "quota" (workspace 48M), started; his neighbour is sam (no quota)."""
    _, quentin = approved_user(live, admin, "quentin")
    assert put_policy(admin_api, "quota", {"workspace_quota": "48M"}).status_code == 201
    added = admin_api.request("POST", "hub/api/groups/quota/users", json={"users": ["quentin"]})
    assert added.status_code == 200, added.text
    quentin.start("quentin")
    return quentin


def test_writing_past_the_quota_fails_while_the_neighbour_writes_fine(live, members, quota_member):
    code, out = lab_run(live, "quentin", "df -m /home/lab/workspace | tail -1")
    assert code == 0 and 36 <= int(out.split()[1]) <= 48, out  # the filesystem's size (less its journal), as seen
    _, out = lab_run(live, "quentin", WRITE.format(path="/home/lab/workspace/big.bin", mib=80))
    assert "No space left on device" in out and "exit=1" in out, out
    _, out = lab_run(live, "sam", WRITE.format(path="/home/lab/workspace/big.bin", mib=80))
    assert "exit=0" in out, out  # the neighbour's workspace is not held to anyone's quota
    lab_run(live, "sam", "rm -f /home/lab/workspace/big.bin")


def test_raising_the_quota_keeps_the_files_and_lowering_it_below_use_is_refused(live, admin_api, quota_member):
    lab_run(live, "quentin", "rm -f /home/lab/workspace/big.bin")
    code, out = lab_run(
        live,
        "quentin",
        WRITE.format(path="/home/lab/workspace/keep.bin", mib=30) + "; sha256sum /home/lab/workspace/keep.bin",
    )
    assert "exit=0" in out, out
    digest = out.split()[-2]
    lowered = put_policy(admin_api, "quota", {"workspace_quota": "20M"})
    assert lowered.status_code == 400
    assert lowered.json()["message"].startswith(
        "policy of group 'quota': workspace_quota='20M' would be quentin's, below what their workspace holds ("
    )
    # a larger quota from another of his groups holds: lowering this group's takes nothing from him
    assert put_policy(admin_api, "roomy", {"workspace_quota": "200M"}).status_code == 201
    assert admin_api.request("POST", "hub/api/groups/roomy/users", json={"users": ["quentin"]}).status_code == 200
    assert put_policy(admin_api, "quota", {"workspace_quota": "20M"}).status_code == 200
    assert admin_api.request("DELETE", "hub/api/groups/roomy/users", json={"users": ["quentin"]}).status_code == 200
    assert put_policy(admin_api, "quota", {"workspace_quota": "96M"}).status_code == 200
    quota_member.stop("quentin")
    quota_member.start("quentin")
    _, out = lab_run(live, "quentin", "sha256sum /home/lab/workspace/keep.bin; df -m /home/lab/workspace | tail -1")
    assert out.split()[0] == digest and 80 <= int(out.split()[-5]) <= 96, out
    _, out = lab_run(live, "quentin", WRITE.format(path="/home/lab/workspace/more.bin", mib=40))
    assert "exit=0" in out, out  # room for more now
    volumes = {
        v["kind"]: v for v in quota_member.request("GET", "hub/api/hubforge/users/quentin/volumes").json()["volumes"]
    }
    workspace = volumes["workspace"]  # the user's own volume manager says it: used of the quota
    assert workspace["held"] and workspace["quota_bytes"] == 96 * MIB and workspace["used_bytes"] >= 70 * MIB
    assert volumes["home"]["quota_bytes"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="reads the host's quota folder and loop devices")
def test_down_with_user_volumes_removes_the_quota_files_and_their_loop_devices(live, quota_member):
    """Last in this module: it takes the stack down."""
    folder = Path("/var/lib/hubforge/quotas") / live.project
    image = folder / f"{live.project}-lab-quentin_workspace.img"
    assert image.exists() and (folder / f"{image.stem}.dev").is_symlink()
    attached = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
    assert attached.startswith("/dev/loop"), attached
    live.stack.down(volumes=True, user_volumes=True)
    assert not image.exists() and not (folder / f"{image.stem}.dev").exists()
    assert not folder.exists()  # the project's emptied quota folder goes too
    assert subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout == ""

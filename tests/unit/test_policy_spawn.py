"""Group policies applied at spawn (issue 28): what a member's lab gets from the Docker daemon, on a real in-memory
hub database, with the daemon's calls recorded (tests/support/fakedaemon.py). The GPU tests fake the gpu-probe's
result: this machine has no GPU."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from jupyterhub import orm
from tornado import web

from hub_ext.labs.gpu import NoFreeGpu, allocate, decide
from hub_ext.labs.policy import PROPERTY

from ..support.fakedaemon import FakeDaemon, make_spawner

IMAGES = {"default": "hubforge/lab:1", "datascience": "hubforge/lab-datascience:1"}
DESCRIPTION = "org.opencontainers.image.description"
TWO_GPUS = {"gpus": [{"index": 0, "name": "A100", "uuid": "GPU-a"}, {"index": 1, "name": "A100", "uuid": "GPU-b"}]}


def group(db, name: str, policy: dict | None, *members) -> orm.Group:
    found = orm.Group.find(db, name) or orm.Group(name=name)
    found.properties = {PROPERTY: policy} if policy is not None else {}
    db.add(found)
    for member in members:
        member.groups.append(found)
    db.commit()
    return found


def spawner_of(db, name: str, daemon: FakeDaemon | None = None):
    spawner, user = make_spawner(db, name)
    spawner.lab_images = IMAGES
    spawner.mem_limit, spawner.cpu_limit, spawner.pids_limit = "4G", 2.0, 1024  # the stack's settings
    if daemon is not None:
        spawner.docker = daemon
    return spawner, user


def test_each_group_gets_its_own_limits_image_and_folder(db):
    daemon = FakeDaemon()
    rita, research_member = spawner_of(db, "rita", daemon)
    sam, student = spawner_of(db, "sam", daemon)
    nora, _ = spawner_of(db, "nora", daemon)  # in no group: the stack's settings
    group(
        db,
        "research",
        {"mem_limit": "16G", "cpu_limit": 4, "images": ["datascience"], "folder": "rw", "environment": {"TEAM": "r"}},
        research_member,
    )
    group(db, "students", {"mem_limit": "2G", "pids_limit": 256, "default_image": "default"}, student)
    for spawner in (rita, sam, nora):
        asyncio.run(spawner.apply_runtime())

    assert rita.mem_limit == 16 * 2**30 and rita.cpu_limit == 4.0 and rita.image == IMAGES["datascience"]
    assert rita.allowed_images == {"datascience": IMAGES["datascience"]}  # only its own image to pick
    assert rita.volumes["jupyterlab_group_research"] == {"bind": "/mnt/groups/research", "mode": "rw"}
    assert rita.environment["TEAM"] == "r"
    assert sam.mem_limit == 2 * 2**30 and sam.cpu_limit == 2.0 and sam.image == IMAGES["default"]
    assert sam.extra_host_config["pids_limit"] == 256 and "TEAM" not in sam.environment
    assert not any(bind["bind"].startswith("/mnt/groups") for bind in sam.volumes.values())  # no one else's folder
    assert nora.mem_limit == 4 * 2**30 and nora.extra_host_config["pids_limit"] == 1024
    assert set(nora.allowed_images) == set(IMAGES)
    daemon.images[IMAGES["default"]] = {"Config": {"Labels": {DESCRIPTION: "JupyterLab (lean)"}}, "Size": 478_651_979}
    form = asyncio.run(nora.image_form())  # the datascience image is not on this daemon: its name alone
    assert '<option value="default" selected>default: JupyterLab (lean), 479 MB</option>' in form
    assert '<option value="datascience">datascience</option>' in form

    # the folder was made once, labelled with its group, and handed to the lab's user by a one-shot root helper
    assert daemon.volumes["jupyterlab_group_research"] == {
        "hubforge.project": "p",
        "hubforge.volume": "group",
        "hubforge.group": "research",
    }
    (helper,) = daemon.helpers
    assert helper["User"] == "0:0" and helper["HostConfig"]["NetworkMode"] == "none"
    assert helper["HostConfig"]["Binds"] == ["jupyterlab_group_research:/folder:rw"]
    assert helper["Cmd"] == ["python3", "-m", "hub_ext.helpers.volumes", "own", "--uid", "1000", "/folder"]
    asyncio.run(rita.apply_runtime())  # the next start finds it made
    assert len(daemon.helpers) == 1


def test_a_policy_change_applies_at_the_next_start_and_leaving_takes_it_away(db):
    spawner, user = spawner_of(db, "ada")
    research = group(db, "research", {"mem_limit": "16G", "folder": "ro"}, user)
    asyncio.run(spawner.apply_runtime())
    assert spawner.mem_limit == 16 * 2**30
    assert spawner.volumes["jupyterlab_group_research"]["mode"] == "ro"
    research.properties = {PROPERTY: {"mem_limit": "8G"}}
    db.commit()
    asyncio.run(spawner.apply_runtime())
    assert spawner.mem_limit == 8 * 2**30 and "jupyterlab_group_research" not in spawner.volumes
    user.groups.clear()
    db.commit()
    asyncio.run(spawner.apply_runtime())
    assert spawner.mem_limit == 4 * 2**30  # back to the stack's setting, not the last policy's


def test_the_most_generous_value_of_each_group_wins(db):
    spawner, user = spawner_of(db, "bea")
    group(db, "a", {"mem_limit": "2G", "cpu_limit": 8}, user)
    group(db, "b", {"mem_limit": "16G", "cpu_limit": 1}, user)
    asyncio.run(spawner.apply_runtime())
    assert spawner.mem_limit == 16 * 2**30 and spawner.cpu_limit == 8.0


def test_an_image_the_policy_does_not_allow_is_refused_in_one_line(db):
    spawner, user = spawner_of(db, "cy")
    spawner.user_options = {"image": "datascience"}
    group(db, "students", {"images": ["default"]}, user)
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawner.apply_runtime())
    assert refused.value.status_code == 400
    assert refused.value.log_message == (
        "Image datascience not in allowed list: default (by the policies of your groups)"
    )
    spawner.user_options = {}
    asyncio.run(spawner.apply_runtime())
    assert spawner.image == IMAGES["default"] and asyncio.run(spawner.image_form()) == ""  # one image: no picker


def test_a_bad_policy_written_around_the_api_stops_the_start_with_its_line(db):
    spawner, user = spawner_of(db, "dan")
    group(db, "broken", {"mem_limit": "lots"}, user)
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawner.apply_runtime())
    assert "policy of group 'broken': mem_limit='lots' is not a size" in refused.value.log_message


def test_the_builtin_groups_keep_their_docker_rights_as_policies(db):
    spawner, user = spawner_of(db, "eve")
    user.groups.append(orm.Group.find(db, "docker-sock") or group(db, "docker-sock", None))
    db.commit()
    asyncio.run(spawner.apply_runtime())
    assert spawner.volumes["/var/run/docker.sock"]["bind"] == "/var/run/docker.sock"
    group(db, "docker-sock", {"docker_sock": False})  # an admin's own policy for it replaces the built-in meaning
    asyncio.run(spawner.apply_runtime())
    assert "/var/run/docker.sock" not in spawner.volumes


# -- GPUs handed out, with the probe's result faked (no GPU here) ------------------------------------------
def test_faked_two_gpu_probe_two_labs_get_different_gpus_and_a_third_is_refused(db):
    daemon = FakeDaemon()
    labs = {}
    for name in ("g1", "g2", "g3"):
        labs[name], user = spawner_of(db, name, daemon)
        labs[name].gpu_mode, labs[name].gpu_probe = "auto", TWO_GPUS
        group(db, "gpu", {"gpus": 1}, user)
    asyncio.run(labs["g1"].apply_runtime())
    asyncio.run(labs["g2"].apply_runtime())
    first = labs["g1"].extra_host_config["device_requests"][0]["DeviceIDs"]
    second = labs["g2"].extra_host_config["device_requests"][0]["DeviceIDs"]
    assert first == ["0"] and second == ["1"]
    assert labs["g1"].environment["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert labs["g2"].extra_create_kwargs["labels"]["hubforge.gpus"] == "1"
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(labs["g3"].apply_runtime())
    assert refused.value.status_code == 503
    assert "no GPU is free: your lab needs 1, 0 of the host's 2 are free" in refused.value.log_message
    assert "ask an admin to stop a lab" in refused.value.log_message
    labs["g1"].release_gpus()  # g1's lab stopped
    asyncio.run(labs["g3"].apply_runtime())
    assert labs["g3"].extra_host_config["device_requests"][0]["DeviceIDs"] == ["0"]
    for spawner in labs.values():
        spawner.release_gpus()


def test_faked_probe_gpus_held_by_running_labs_count_after_a_hub_restart(db):
    """The hand-outs of this hub's process are gone after a restart; the running labs' labels still say."""
    daemon = FakeDaemon()
    daemon.containers["old"] = {"Labels": {"hubforge.project": "p", "hubforge.user": "zoe", "hubforge.gpus": "0"}}
    spawner, user = spawner_of(db, "yan", daemon)
    spawner.gpu_mode, spawner.gpu_probe = "auto", TWO_GPUS
    group(db, "gpu", {"gpus": 1}, user)
    asyncio.run(spawner.apply_runtime())
    assert spawner.extra_host_config["device_requests"][0]["DeviceIDs"] == ["1"]
    spawner.release_gpus()


def test_faked_probe_the_default_and_all_share_every_gpu_as_before(db):
    spawner, _ = spawner_of(db, "abe")
    spawner.gpu_mode, spawner.gpu_probe = "auto", TWO_GPUS
    asyncio.run(spawner.apply_runtime())
    assert spawner.extra_host_config["device_requests"][0]["Count"] == -1
    assert spawner.environment["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_gpu_allocation_rules():
    on = decide("auto", TWO_GPUS)
    assert allocate(0, on, []) is None and allocate(None, on, []) is None and allocate("all", on, ["0"]) == "all"
    assert allocate(2, on, []) == ["0", "1"] and allocate(1, on, ["0"]) == ["1"]
    with pytest.raises(NoFreeGpu):
        allocate(2, on, ["1"])
    assert allocate(1, decide("off", TWO_GPUS), []) is None  # GPU support off: none, whatever the policy
    assert allocate(1, decide("on", None), []) == "all"  # forced on with no probe: no devices to hand out one by one


# -- storage quotas: the fake daemon runs the real quota helper on this machine's files ------------------------
@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="e2fsprogs is not installed")
def test_a_quota_makes_a_loop_volume_of_its_size_grows_it_and_its_file_goes_with_it(db, tmp_path):
    daemon = FakeDaemon()
    spawner, user = spawner_of(db, "quinn", daemon)
    spawner.quota_dir = str(tmp_path)
    students = group(db, "students", {"home_quota": "64M"}, user)
    asyncio.run(spawner.apply_runtime())
    home = "jupyterlab-quinn_home"
    device = str(tmp_path / "p" / f"{home}.img")
    assert daemon.options[home] == {"type": "ext4", "device": device.replace(".img", ".dev")}
    assert daemon.volumes[home]["hubforge.quota"] == str(64 * 2**20) and os.path.getsize(device) == 64 * 2**20
    assert daemon.options["jupyterlab-quinn_workspace"] == {}  # no workspace quota: a plain volume
    helpers = len(daemon.helpers)
    asyncio.run(spawner.apply_runtime())
    assert len(daemon.helpers) == helpers  # the size is known: no helper at the next start

    students.properties = {PROPERTY: {"home_quota": "96M"}}
    db.commit()
    asyncio.run(spawner.apply_runtime())
    assert os.path.getsize(device) == 96 * 2**20
    (helper,) = [h for h in daemon.helpers if "quota" in " ".join(h["Cmd"])][-1:]
    assert helper["HostConfig"]["Binds"] == [f"{tmp_path}/p:{tmp_path}/p:rw", "/dev:/dev"]
    assert helper["HostConfig"]["CapAdd"] == ["SYS_ADMIN"] and helper["HostConfig"]["NetworkMode"] == "none"
    assert helper["HostConfig"]["DeviceCgroupRules"] == ["b 7:* rmw", "c 10:237 rwm"]  # loop devices only

    results = asyncio.run(spawner.remove_volumes([home]))  # a reset, or the user deleted
    assert results == [{"volume": home, "result": "removed"}] and not os.path.exists(device)


def test_a_volume_made_before_its_quota_keeps_working_unheld(db, tmp_path):
    daemon = FakeDaemon()
    spawner, user = spawner_of(db, "olga", daemon)
    spawner.quota_dir = str(tmp_path)
    asyncio.run(spawner.apply_runtime())  # no quota yet: plain volumes
    group(db, "students", {"home_quota": "64M"}, user)
    asyncio.run(spawner.apply_runtime())
    assert daemon.options["jupyterlab-olga_home"] == {} and not list(tmp_path.rglob("*.img"))


def test_the_helpers_own_command_hands_the_folder_to_the_lab_user(tmp_path, capsys):
    from hub_ext.helpers import volumes

    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    assert volumes.main(["own", "--uid", "1000", str(folder)]) == 0
    assert volumes.parse_answer(capsys.readouterr().out) == [{"result": "owned"}]
    status = folder.stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o7777) == (1000, 1000, 0o2775)

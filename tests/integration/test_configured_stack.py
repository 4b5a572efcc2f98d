"""A stack with non-default settings: base URL, signup off, idle culler, custom logo, a second lab image in
the picker; bad settings refused."""

from __future__ import annotations

import base64
import re

import docker
import pytest

from ..support.hubclient import HubAPI, HubSession, plain_get
from ..support.livestack import ADMIN, ROOT, current_images

pytestmark = pytest.mark.integration

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
STACK_ENV = {
    "JUPYTERHUB_BASE_URL": "/jupyterhub",
    "ENABLE_SIGNUP": "0",
    "JUPYTERHUB_ADMIN_PASSWORD": "Initial-admin-pw-1",
    "IDLE_CULLER_ENABLED": "1",
    "IDLE_CULLER_TIMEOUT": "600",
    "ENABLE_GPU_SUPPORT": "0",
    "JUPYTERHUB_LOGO_URI": "data:image/png;base64," + base64.b64encode(PNG).decode(),
}
# a second choice for the image picker, as a built flavour would add (the lab image under another name)
PICKED = "hubforge/lab:picker-test"
EXTRA_LAB_IMAGES = {"second": PICKED}
ADMIN_PASSWORD = STACK_ENV["JUPYTERHUB_ADMIN_PASSWORD"]


def test_base_url_prefixes_every_path(live):
    assert plain_get(live.url + "jupyterhub/hub/health").status_code == 200
    assert plain_get(live.url + "hub/health").status_code == 404


def test_signup_is_off_and_the_admin_has_its_initial_password(live):
    assert plain_get(live.url + "jupyterhub/hub/signup").status_code == 404
    assert live.bootstrap_secret() is None
    assert HubSession(live.url + "jupyterhub/").login(ADMIN, ADMIN_PASSWORD).status_code == 302


def test_custom_logo_is_served(live):
    logo = plain_get(live.url + "jupyterhub/hub/logo")
    assert logo.status_code == 200 and logo.content == PNG


def test_idle_culler_runs_as_a_hub_service(live):
    state = live.stack.status()
    assert state["gpu"]["mode"] == "off" and state["gpu"]["probe"] is None
    logs = live.stack.docker.logs(next(c["container"] for c in state["services"] if c["service"] == "hub"), tail=400)
    assert "idle-culler" in logs


@pytest.fixture
def picked_image():
    client = docker.from_env()
    client.images.get(current_images()[0]["lab"]).tag(PICKED)
    yield PICKED
    client.images.remove(PICKED, noprune=True)


def test_the_image_picker_offers_each_lab_image_and_the_choice_is_spawned(live, picked_image):
    session = HubSession(live.url + "jupyterhub/")
    assert session.login(ADMIN, ADMIN_PASSWORD).status_code == 302
    form = session.http.get(session.url("hub/spawn"), timeout=30).text
    assert set(re.findall(r'<option value="([^"]+)"', form)) == {"default", "second"}
    # the lean default preselected, each with what it is and its size (issue 29, part 4)
    assert re.search(
        r'<option value="default" selected>default: JupyterLab 4 single-user server \(lean\), \d+ MB<', form
    )
    api = HubAPI(live.url + "jupyterhub/", session.new_token(ADMIN))
    refused = api.request("POST", f"hub/api/users/{ADMIN}/server", json={"image": "hubforge/hub:dev"})
    assert refused.status_code == 400 and "not in allowed list" in refused.json()["message"]
    api.start(ADMIN, options={"image": "second"})
    assert live.lab(ADMIN).attrs["Config"]["Image"] == picked_image
    api.stop(ADMIN)


def test_hub_refuses_bad_settings_in_one_line(tmp_path):
    """The hub image with the stack's config and ENABLE_GPU_SUPPORT=7 stops with one line naming it."""
    images, _ = current_images()
    client = docker.from_env()
    container = client.containers.create(
        images["hub"],
        environment={"ENABLE_GPU_SUPPORT": "7"},
        labels={"hubforge.test": "integration"},
        volumes={
            str(ROOT / "stack" / "jupyterhub_config.py"): {"bind": "/srv/jupyterhub/jupyterhub_config.py", "mode": "ro"}
        },
    )
    try:
        container.start()
        code = container.wait(timeout=60)["StatusCode"]
        errors = [line for line in container.logs().decode().splitlines() if "hubforge" in line or "Traceback" in line]
    finally:
        container.remove(force=True)
    assert code != 0
    assert errors == [
        "hubforge: configuration error: ENABLE_GPU_SUPPORT='7' is not valid; use 2 (auto), 1 (on) or 0 (off)"
    ]

"""Hub settings from the environment: every variable, good and bad values, one-line errors."""

from __future__ import annotations

import pytest

from hub_ext.settings.hub import ConfigError, HubConfig, from_environ


def test_defaults_need_no_variables():
    assert from_environ({}) == HubConfig()


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"JUPYTERHUB_ADMIN": "Alice"}, "admin", "alice"),
        ({"ENABLE_SIGNUP": "0"}, "enable_signup", False),
        ({"ENABLE_SIGNUP": "yes"}, "enable_signup", True),
        ({"JUPYTERHUB_BASE_URL": "/jupyterhub"}, "base_url", "/jupyterhub/"),
        ({"JUPYTERHUB_BASE_URL": "/a/b/"}, "base_url", "/a/b/"),
        ({"ENABLE_GPU_SUPPORT": "2"}, "gpu_mode", "auto"),
        ({"ENABLE_GPU_SUPPORT": "1"}, "gpu_mode", "on"),
        ({"ENABLE_GPU_SUPPORT": "off"}, "gpu_mode", "off"),
        ({"PASSWORD_MIN_LENGTH": "12"}, "password_min_length", 12),
        ({"LOGIN_MAX_FAILURES": "3"}, "login_max_failures", 3),
        ({"LOGIN_LOCKOUT_SECONDS": "60"}, "login_lockout_seconds", 60),
        ({"LOGIN_ADDRESS_LIMIT": "100"}, "login_address_limit", 100),
        ({"JUPYTERHUB_ADMIN_PASSWORD": "a-Long-passw0rd!"}, "admin_password", "a-Long-passw0rd!"),
        ({"LAB_MEM_LIMIT": "512m"}, "lab_mem_limit", "512M"),
        ({"LAB_MEM_LIMIT": "1.5GB"}, "lab_mem_limit", "1.5G"),
        ({"LAB_CPU_LIMIT": "0.5"}, "lab_cpu_limit", 0.5),
        ({"LAB_PIDS_LIMIT": "256"}, "lab_pids_limit", 256),
        ({"IDLE_CULLER_ENABLED": "1", "IDLE_CULLER_TIMEOUT": "600"}, "idle_culler_timeout", 600),
        ({"JUPYTERHUB_LOGO_URI": " file:///x.png "}, "logo_uri", "file:///x.png"),
        ({"ENABLE_SERVICE_CODE_SERVER": "1"}, "lab_services", {"ENABLE_SERVICE_CODE_SERVER": "1"}),
        ({"LAB_CPU_SHARES": "256"}, "lab_cpu_shares", 256),
        ({"LAB_READ_ONLY_ROOT": "0"}, "lab_read_only_root", False),
        ({"HUB_MEM_LIMIT": "1g"}, "hub_mem_limit", "1G"),
        ({"HUB_CPU_LIMIT": "1.5"}, "hub_cpu_limit", 1.5),
        ({"HUB_PIDS_LIMIT": "512"}, "hub_pids_limit", 512),
        ({"ACTIVE_SERVER_LIMIT": "40"}, "active_server_limit", 40),
        ({"CONCURRENT_SPAWN_LIMIT": "0"}, "concurrent_spawn_limit", 0),
        ({"LAB_START_CONCURRENCY": "4"}, "lab_start_concurrency", 4),
        ({"LAB_START_TIMEOUT": "900"}, "lab_start_timeout", 900),
        ({"LAB_SERVER_PROXY": "1"}, "lab_server_proxy", True),
        ({}, "lab_cpu_shares", 128),
    ],
)
def test_good_values(env, field, expected):
    assert getattr(from_environ(env), field) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENABLE_GPU_SUPPORT": "7"}, "ENABLE_GPU_SUPPORT='7' is not valid; use 2 (auto), 1 (on) or 0 (off)"),
        ({"JUPYTERHUB_BASE_URL": "jupyterhub"}, "JUPYTERHUB_BASE_URL='jupyterhub' is not a URL prefix"),
        ({"JUPYTERHUB_BASE_URL": "/a b/"}, "JUPYTERHUB_BASE_URL='/a b/' is not a URL prefix"),
        ({"JUPYTERHUB_BASE_URL": "http://x/"}, "is not a URL prefix"),
        ({"LAB_MEM_LIMIT": "-1G"}, "LAB_MEM_LIMIT='-1G' is not a memory size"),
        ({"LAB_MEM_LIMIT": "lots"}, "LAB_MEM_LIMIT='lots' is not a memory size"),
        ({"LAB_CPU_LIMIT": "-2"}, "LAB_CPU_LIMIT='-2' must be greater than 0"),
        ({"LAB_PIDS_LIMIT": "ten"}, "LAB_PIDS_LIMIT='ten' is not a whole number"),
        ({"LAB_PIDS_LIMIT": "-5"}, "LAB_PIDS_LIMIT='-5' is too small"),
        ({"PASSWORD_MIN_LENGTH": "0"}, "PASSWORD_MIN_LENGTH='0' is too small"),
        ({"ENABLE_SIGNUP": "maybe"}, "ENABLE_SIGNUP='maybe' is not valid; use 1 or 0"),
        ({"IDLE_CULLER_TIMEOUT": "5"}, "IDLE_CULLER_TIMEOUT='5' is too small"),
        ({"JUPYTERHUB_ADMIN": "a b"}, "JUPYTERHUB_ADMIN='a b' is not a valid username"),
        ({"ENABLE_SERVICE_X": "perhaps"}, "ENABLE_SERVICE_X='perhaps' is not valid"),
        ({"LOGIN_ADDRESS_LIMIT": "0"}, "LOGIN_ADDRESS_LIMIT='0' is too small"),
        ({"LAB_CPU_SHARES": "1"}, "LAB_CPU_SHARES='1' is too small"),
        ({"HUB_MEM_LIMIT": "big"}, "HUB_MEM_LIMIT='big' is not a memory size"),
        ({"HUB_CPU_LIMIT": "0"}, "HUB_CPU_LIMIT='0' must be greater than 0"),
        ({"HUB_PIDS_LIMIT": "10"}, "HUB_PIDS_LIMIT='10' is too small"),
        ({"ACTIVE_SERVER_LIMIT": "-1"}, "ACTIVE_SERVER_LIMIT='-1' is too small"),
        ({"LAB_START_CONCURRENCY": "two"}, "LAB_START_CONCURRENCY='two' is not a whole number"),
        ({"LAB_START_TIMEOUT": "10"}, "LAB_START_TIMEOUT='10' is too small; use an integer >= 30"),
        ({"LAB_SERVER_PROXY": "yes please"}, "LAB_SERVER_PROXY='yes please' is not valid; use 1 or 0"),
        # the admin's initial password skipped the rules every signup obeys
        ({"JUPYTERHUB_ADMIN_PASSWORD": "short"}, "JUPYTERHUB_ADMIN_PASSWORD is too short (5 characters)"),
        ({"JUPYTERHUB_ADMIN_PASSWORD": "password123"}, "JUPYTERHUB_ADMIN_PASSWORD is on the list of common passwords"),
        (
            {"JUPYTERHUB_ADMIN_PASSWORD": "a-Long-pw", "PASSWORD_MIN_LENGTH": "12"},
            "use at least PASSWORD_MIN_LENGTH=12",
        ),
    ],
)
def test_bad_values_name_variable_and_valid_values(env, message):
    with pytest.raises(ConfigError) as caught:
        from_environ(env)
    assert message in str(caught.value) and "\n" not in str(caught.value)

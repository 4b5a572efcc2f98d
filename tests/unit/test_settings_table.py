"""Each hub setting is declared once, in hub_ext.settings.hub.SETTINGS, with its default, its check and its help:
HubConfig, the .env template, the docs' settings reference and the traits' defaults agree with that table."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from hub_ext.settings.hub import BY_NAME, SETTINGS, HubConfig, env_template, from_environ
from hub_ext.settings.parse import ConfigError

from ..support.helpers import docs_extension

ROOT = Path(__file__).resolve().parents[2]
CLASSES = {
    "HubforgeSpawner": "hub_ext.spawn.spawner",
    "HubforgeSwarmSpawner": "hub_ext.spawn.swarm",
    "HubforgeAuthenticator": "hub_ext.authenticators.native",
    "HubforgeAuthMixin": "hub_ext.authenticators.native",
}


def test_hub_config_has_one_field_per_setting_and_the_families():
    fields = {f.name: f for f in dataclasses.fields(HubConfig)}
    assert set(fields) == {s.field for s in SETTINGS} | {"lab_services", "oidc"}
    assert len({s.name for s in SETTINGS}) == len(SETTINGS) == len({s.field for s in SETTINGS})


def test_every_default_is_what_an_empty_environment_gives():
    unset = from_environ({})
    for setting in SETTINGS:
        assert getattr(unset, setting.field) == setting.default, setting.name
        # and what .env's commented line says is the same value
        shown = setting.shown_default()
        if setting.shown is None:
            assert getattr(from_environ({setting.name: shown}), setting.field) == setting.default, setting.name


def test_the_env_template_lists_every_setting_with_its_default():
    template = env_template("t0ken")
    for setting in SETTINGS:
        line = f"{setting.name}=t0ken" if setting.name == "JUPYTERHUB_METRICS_TOKEN" else f"# {setting.name}="
        assert line in template, setting.name
    assert template.count("\n# ") + 1 >= len(SETTINGS)


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.trait], ids=lambda s: s.name)
def test_a_traits_default_is_the_tables(setting):
    section, trait = setting.trait.split(".")
    cls = getattr(importlib.import_module(CLASSES[section]), section)
    assert cls.class_traits()[trait].default() == setting.default


def test_the_hub_config_sets_every_trait_from_the_table_and_reads_no_setting_itself():
    config = (ROOT / "stack/jupyterhub_config.py").read_text()
    assert "for setting in SETTINGS:" in config and "setting.trait" in config
    read_directly = {name for name in re.findall(r'env(?:\.get\(|\[)"([A-Z_]+)"', config) if name in BY_NAME}
    assert read_directly == set(), "read from the environment beside the table"
    for setting in SETTINGS:
        if setting.trait:
            section, trait = setting.trait.split(".")
            assert f"c.{section}.{trait} =" not in config, f"{setting.trait} is assigned beside the table"


def test_the_docs_reference_is_the_table():
    page = (ROOT / "docs/reference/settings.md").read_text()
    assert docs_extension().settings_table() in page, "docs/reference/settings.md is stale: run `invoke docs`"
    for setting in SETTINGS:
        assert f"| `{setting.name}` |" in page


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("LAB_PIDS_LIMIT", "8", "LAB_PIDS_LIMIT='8' is too small; use an integer >= 16"),
        ("AUTHENTICATOR", "ldap", "AUTHENTICATOR='ldap' is not valid; use native"),
        ("LAB_SUBDOMAINS", "maybe", "LAB_SUBDOMAINS"),
        ("LAB_VOLUME_DRIVER_OPTS", "type=nfs", "LAB_VOLUME_DRIVER_OPTS is set but LAB_VOLUME_DRIVER is empty"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(name, raw, message):
    with pytest.raises(ConfigError) as refused:
        from_environ({name: raw})
    assert message in str(refused.value) and "\n" not in str(refused.value)

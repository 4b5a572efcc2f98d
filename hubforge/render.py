"""Rendering Jinja Dockerfiles: a pure function of template texts and variables."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import HubforgeError


def render(templates: Mapping[str, str], entry: str, variables: Mapping[str, object]) -> str:
    """Render `entry` from the given template texts (path -> text) with StrictUndefined.

    Templates reach each other by their repo-relative path (`{% include "images/_shared/harden.j2" %}`),
    so the only files a render can see are the ones the target declared.
    """
    import jinja2  # only when something is rendered: a no-op build takes its Dockerfiles from the render cache

    env = jinja2.Environment(
        loader=jinja2.DictLoader(dict(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    try:
        return env.get_template(entry).render(**variables)
    except jinja2.UndefinedError as exc:
        raise HubforgeError(f"template {entry}: variable missing: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise HubforgeError(
            f"template {entry} includes {exc.name}, which its target does not declare as an input"
        ) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise HubforgeError(f"template {exc.name or entry}:{exc.lineno}: {exc.message}") from exc


def oci_labels(title: str, version: str, description: str, source: str, licenses: str) -> dict[str, str]:
    """The static OCI labels written into a Dockerfile (revision and created are added at build time)."""
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.licenses": licenses,
    }

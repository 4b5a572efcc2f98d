"""Releasing: versions and tags (plan.py), SBOMs (sbom.py) and the push pipeline (pipeline.py)."""

"""hubforge: describe, render and build the hub, lab and gpu-probe images, and run the stack."""

from __future__ import annotations

__version__ = "0.1.0"

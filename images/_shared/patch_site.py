"""Apply hubforge's source patches to installed packages at image build time.

Usage: python3 patch_site.py PATCHES.json [SITE_PACKAGES]   (default: the running Python's site-packages)

PATCHES.json is a list of {"file": <path under site-packages>, "why": <reason>, "replace": [[old, new], ...]}.
Each `old` must occur exactly once in its file, so a package upgrade that moves the code stops the build
with the file and the text instead of shipping an unpatched or half-patched package. The changed file's
bytecode is compiled again, so a read-only image never recompiles it at run time.
"""

from __future__ import annotations

import json
import py_compile
import sys
import sysconfig
from pathlib import Path


class PatchError(Exception):
    pass


def apply(patches: list[dict], site: Path) -> list[str]:
    """Patch every file in `site`; returns the files changed. Nothing is written unless every patch fits."""
    changed: dict[Path, str] = {}
    for patch in patches:
        path = site / patch["file"]
        if not path.is_file():
            raise PatchError(f"{patch['file']}: no such file under {site} (was the package removed or renamed?)")
        text = changed.get(path, path.read_text(encoding="utf-8"))
        for old, new in patch["replace"]:
            found = text.count(old)
            if found != 1:
                raise PatchError(
                    f"{patch['file']}: expected this text once, found it {found} times: {old[:80]!r} "
                    "(was the package upgraded? update the patch)"
                )
            text = text.replace(old, new)
        changed[path] = text
    for path, text in changed.items():
        path.write_text(text, encoding="utf-8")
        py_compile.compile(str(path), doraise=True)
    return sorted(str(path.relative_to(site)) for path in changed)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    site = Path(argv[1] if len(argv) == 2 else sysconfig.get_paths()["purelib"])
    try:
        done = apply(json.loads(Path(argv[0]).read_text()), site)
    except PatchError as exc:
        print(f"patch_site: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    for name in done:
        print(f"patched {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

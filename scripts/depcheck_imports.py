"""Import every module of a package (``make depcheck`` runs it in a venv holding that package alone).

``python scripts/depcheck_imports.py turnout.gpu_agent`` imports ``turnout.gpu_agent`` and every
module below it, so a module that imports something its package does not declare fails here.
``--without-extras`` (for ``turnout.common`` installed without extras) expects the modules that
need an extra (``EXTRA_MODULES``) to fail and every other one to import: a base module that
starts to need an extra, or an extra module that no longer does, shows.
Alembic's migration scripts run on import, so ``*.migrations.*`` is skipped.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

EXTRA_MODULES = (
    "turnout.common.db",
    "turnout.common.catalog",
    "turnout.common.arq",
    "turnout.common.arq_running",
    "turnout.common.retrying",
)
"""Modules of turnout-common that need its ``db``, ``queue`` or ``retry`` extra."""


def _needs_extra(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in EXTRA_MODULES)


def main(argv: list[str]) -> int:
    package, without_extras = argv[0], "--without-extras" in argv
    root = importlib.import_module(package)
    found = [(package, True)] + [
        (m.name, m.ispkg)
        for m in pkgutil.walk_packages(root.__path__, package + ".")
        if ".migrations." not in m.name + "."
    ]
    names = [name for name, _ in found]
    failed: list[str] = []
    for name, ispkg in found:
        gated = without_extras and _needs_extra(name)
        if gated and ispkg:  # a package's __init__ may import nothing; its modules are checked
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if not gated:
                failed.append(f"{name}: {exc}")
            continue
        if gated:
            failed.append(f"{name}: imports without its extra (drop it from EXTRA_MODULES?)")
    for line in failed:
        print("  FAIL", line, file=sys.stderr)
    print(f"{'ok  ' if not failed else 'FAIL'} {package}: {len(names)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

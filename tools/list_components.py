#!/usr/bin/env python3
"""Print every registry, its members and the module that defines each.

python tools/list_components.py
python tools/list_components.py --import projects.light_head
python tools/list_components.py --config-file configs/my_plugin.yaml   # uses its IMPORTS
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.config import get_cfg  # noqa: E402
from detkit.modeling import ALL_REGISTRIES  # noqa: E402
from detkit.utils.cli import add_debug_argument, run_cli  # noqa: E402
from detkit.utils.imports import import_plugins  # noqa: E402


def catalog() -> list[tuple[str, str, str]]:
    """(registry, member, defining module) for every registered component."""
    rows = []
    for reg_name, registry in ALL_REGISTRIES.items():
        for name in registry.names():
            obj = registry.get(name)
            where = inspect.getsourcefile(obj) or obj.__module__
            rows.append((reg_name, name, f"{obj.__module__} ({os.path.relpath(where)})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="plugin module to import first (repeatable), e.g. projects.light_head",
    )
    parser.add_argument("--config-file", default="", help="also import the config's IMPORTS")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.config_file:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)  # imports cfg.IMPORTS while merging
    import_plugins(args.imports, source="--import")
    rows = catalog()
    for reg_name in ALL_REGISTRIES:
        members = [r for r in rows if r[0] == reg_name]
        print(f"{reg_name}_REGISTRY ({len(members)})")
        if not members:
            print("    (none registered)")
        width = max((len(m[1]) for m in members), default=0)
        for _, name, where in members:
            print(f"    {name:<{width}}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

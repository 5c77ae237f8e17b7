"""Write ``ratelab/quick_walls.json`` (each experiment's quick wall time) from a results folder of a cold
``ratelab verify --quick``: the order ``verify --jobs`` uses on a fresh clone, before any result of its own exists.

    RATELAB_CACHE_DIR=$(mktemp -d) ratelab verify --quick --out /tmp/res && python benchmarks/quick_walls.py /tmp/res
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ratelab.harness import TYPICAL_WALLS  # noqa: E402
from ratelab.io import atomic_write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a results folder (one result.json per experiment)")
    args = ap.parse_args()
    walls = {f.parent.name: max(0.01, round(float(json.loads(f.read_text())["timings"]["wall_s"]), 2))
             for f in sorted(args.results.glob("*/result.json"))}
    if not walls:
        raise SystemExit(f"no */result.json under {args.results}")
    atomic_write_json(TYPICAL_WALLS, dict(sorted(walls.items())))
    print(f"{TYPICAL_WALLS}: {len(walls)} experiments, {sum(walls.values()):.0f} s in all")


if __name__ == "__main__":
    main()

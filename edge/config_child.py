"""``python -m edge.config_child PATH``: load devices.yaml for the agent (edge.config_file).

Runs in a child of ``edge run`` (and of a reload), so the agent's own process never imports
ruamel or pydantic (docs/decisions.md D86). Writes the digest of the config's layout, a newline
and the validated ``LoadedConfig`` pickled without its YAML tree, and exits 0; or the problems
as a JSON list, and exits 78 (EX_CONFIG).
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

from edge.config_file import EX_CONFIG, shapes_digest
from edge.config_loader import load_config
from edge.errors import ConfigError


def main(argv: list[str]) -> int:
    """Load ``argv[0]``; write the pickled LoadedConfig (exit 0) or the problems (exit 78)."""
    try:
        loaded = load_config(Path(argv[0]))
    except ConfigError as exc:
        sys.stdout.buffer.write(json.dumps(exc.problems, ensure_ascii=False).encode())
        return EX_CONFIG
    # the layout digest first: the agent refuses a config pickled by other code (config_file)
    sys.stdout.buffer.write(shapes_digest().encode() + b"\n")
    sys.stdout.buffer.write(pickle.dumps(replace(loaded, tree=None, lines=None)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

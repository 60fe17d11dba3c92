"""JSON files of the package (dataset manifests, model configs, training state): atomic writes and
reads whose failures are one-line errors naming the file. Torch-free, so dataset commands stay light."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from face4d.errors import Face4DError
from meshops.atomic import atomic_file


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically, replacing an older version."""
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def read_json(path: Path, what: str = "JSON") -> dict[str, Any]:
    """A JSON object from ``path``; a missing or unparsable file is a one-line error calling it ``what``."""
    if not path.is_file():
        raise Face4DError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Face4DError(f"{path}: corrupt {what} ({exc})") from None
    if not isinstance(data, dict):
        raise Face4DError(f"{path}: expected a JSON object")
    return data

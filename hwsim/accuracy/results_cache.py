"""Results on disk, keyed by model, configuration and evaluation settings, so a sweep scores each point once.

Each result is one JSON file named by the SHA-256 of its key, under
`<cache dir>/accuracy/`. The cache directory is the `cache_dir` argument,
else $HWSIM_CACHE_DIR, else ~/.cache/hwsim. The key includes the hwsim
version, so results of an older hwsim are not reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from hwsim import __version__

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("HWSIM_CACHE_DIR") or Path.home() / ".cache" / "hwsim")


class ResultCache:
    """JSON results under `directory`/accuracy; a disabled cache stores and finds nothing."""

    def __init__(self, directory: str | Path | None = None, enabled: bool = True):
        self.directory = (Path(directory) if directory is not None else default_cache_dir()) / "accuracy"
        self.enabled = enabled

    def path(self, key: dict) -> Path:
        payload = json.dumps({**key, "hwsim": __version__}, sort_keys=True, default=str)
        digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        return self.directory / f"{key.get('kind', 'result')}-{digest[:40]}.json"

    def get(self, key: dict) -> dict | None:
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as error:
            log.warning("ignoring unreadable cached result %s: %s", path, error)
            return None
        log.info("using cached result %s", path)
        return stored.get("result")

    def put(self, key: dict, result: dict) -> None:
        if not self.enabled:
            return
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"key": key, "hwsim": __version__, "result": result}, indent=1, sort_keys=True, default=str), encoding="utf-8")
        os.replace(temporary, path)

"""A directory laid out as the kubelet mounts a ConfigMap, updated as the kubelet updates it."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_versions = itertools.count()


class ConfigMapDir:
    """``<dir>/<name>`` -> ``..data/<name>``, ``..data`` -> ``..<version>/``: an update writes a new
    version directory and swaps the ``..data`` symlink in one rename, then removes the old one."""

    def __init__(self, directory: Path, files: dict[str, str]) -> None:
        self.directory = directory
        self._current: Path | None = None
        self.update(files)
        for name in files:
            (directory / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        version = self.directory / f"..2026_12_03_{next(_versions)}"
        version.mkdir()
        for name, text in files.items():
            (version / name).write_text(text)
        swap = self.directory / "..data_tmp"
        swap.symlink_to(version.name)
        os.rename(swap, self.directory / "..data")
        if self._current is not None:
            shutil.rmtree(self._current)
        self._current = version

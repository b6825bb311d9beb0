"""The bytes a deployment's hub download has written so far, for its ``progress``.

``huggingface_hub.snapshot_download`` reports a repository's download through the tqdm class it
is given: one bar of bytes for every file together (and, for Xet storage, one of bytes
transferred), besides a bar of files. ``Download.bars`` is such a class that draws nothing and
keeps its bars, so another thread reads how far the download is.
"""

from __future__ import annotations

import threading
from typing import Any

from tqdm import tqdm


class _Nowhere:
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass


class Download:
    def __init__(self) -> None:
        self._bars: list[tqdm] = []
        self._lock = threading.Lock()
        download = self

        class Bars(tqdm):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)  # (huggingface_hub's own bar class takes a name; tqdm does not)
                super().__init__(*args, **{**kwargs, "file": _Nowhere(), "disable": False, "mininterval": 3600})
                with download._lock:
                    download._bars.append(self)

        Bars.monitor_interval = 0  # (no tqdm monitor thread)
        self.bars = Bars

    def bytes(self) -> tuple[int, int] | None:
        """(written, total) over the files downloaded; None before the download knows its files
        (or when every file was already in the cache)."""
        with self._lock:
            bars = [bar for bar in self._bars if bar.unit == "B" and bar.total]
        if not bars:
            return None
        return max(int(bar.n) for bar in bars), max(int(bar.total) for bar in bars)

"""Download: the byte bars huggingface_hub reports a repository's download to, read from another thread."""

from __future__ import annotations

from inferd.deployments.download import Download


def test_the_byte_bars_say_how_far_the_download_is_and_draw_nothing(capsys):
    download = Download()
    assert download.bytes() is None  # before any file starts
    files = download.bars(total=3, desc="Fetching 3 files")  # a bar of files: not bytes
    data = download.bars(total=0, unit="B", name="huggingface_hub.snapshot_download")  # (hub's own bars' name)
    assert download.bytes() is None  # no file started yet
    data.total += 1000  # a file starts (huggingface_hub adds its size)
    data.update(400)
    transfer = download.bars(total=1000, unit="B")  # Xet's transfer bar: behind the bytes written
    transfer.update(100)
    files.update(1)
    assert download.bytes() == (400, 1000)
    data.update(600)
    assert download.bytes() == (1000, 1000)
    for bar in (files, data, transfer):
        bar.close()
    assert capsys.readouterr() == ("", "")

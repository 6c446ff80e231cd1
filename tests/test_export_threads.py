"""An export shuts its worker threads (and its output files' I/O threads) down: a long-lived process that
exports keeps no idle export threads."""

from __future__ import annotations

import threading


def _export_threads() -> list[str]:
    families = ("grokweights-export_", "grokweights-export-io")  # workers, output I/O
    return [t.name for t in threading.enumerate() if t.name.startswith(families)]


def test_an_export_leaves_no_worker_thread(tiny_checkpoint, tmp_path):
    from grokweights.engines import export

    assert not _export_threads()
    report = export(tiny_checkpoint, tmp_path / "tiny.gguf", format="gguf", dtype="q8_0")
    assert report.files and not _export_threads()

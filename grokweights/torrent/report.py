"""What a fetch did: :class:`FetchReport`, with the typed :class:`FetchVerification` of its result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["FetchReport", "FetchVerification"]


@dataclass(frozen=True)
class FetchVerification:
    """What was checked after a fetch: sizes of every selected file, then the manifest's checks of the shards.

    Attributes:
        checked: selected files whose size was checked.
        problems: files missing or of the wrong size (``path``, ``status``, ``expected``, ``actual``).
        report: the manifest verification of the shards (None without a manifest or without shards).
    """

    checked: int
    problems: tuple[dict[str, Any], ...] = ()
    report: Any = None  # grokweights.checkpoint.verify.VerifyReport

    @property
    def ok(self) -> bool:
        return not self.problems and (self.report is None or self.report.ok)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checked": self.checked, "problems": list(self.problems), "ok": self.ok}
        if self.report is not None:
            out["manifest"] = self.report.to_dict()
            # shards whose sha256 was compared with the manifest's (a shard proven by pieces alone is not counted)
            out["sha256_checked"] = sum(1 for r in self.report.results
                                        if r.status == "ok" and "sha256" in (r.method or ""))
        return out


@dataclass(frozen=True)
class FetchReport:
    """What a fetch did. ``ok`` is True only when every selected file passed verification."""

    source: str
    name: str
    infohash: str
    dest: str
    torrent: str
    checkpoint: str | None
    manifest: str | None
    files: tuple[dict[str, Any], ...]
    total_files: int
    selected_bytes: int
    needed_bytes: int
    free_bytes: int
    resumed_bytes: int = 0
    downloaded_bytes: int = 0
    uploaded_bytes: int = 0
    hash_failures: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    verification: FetchVerification | None = None
    ok: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, verification=None))
        out["verification"] = self.verification.to_dict() if self.verification is not None else None
        return out

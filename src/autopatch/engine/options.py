"""A run's options as the engine steps and both drivers read them, and the live-event callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from autopatch.domain.patching import RebootPolicy
from autopatch.domain.polling import PollPolicy

EventCallback = Callable[[str, str, str, str], None]  # (instance_id, kb, state, detail)


def no_events(instance_id: str, kb: str, state: str, detail: str) -> None:
    """The callback of a driver nobody watches (a Lambda task)."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    concurrency: int = 10
    max_errors: int | None = None
    reboot: RebootPolicy = RebootPolicy.IF_REQUIRED
    install_timeout: float = 7200.0  # a Server 2016 cumulative update can take over an hour
    reboot_timeout: float = 1800.0
    transient_retries: int = 3
    poll: PollPolicy = field(default_factory=lambda: PollPolicy(first_delay=1.0, max_delay=30.0))
    # Rollout (domain/rings.py): a rate's text when it was a percentage ("10%"; the number above is
    # resolved against the run's servers), the rings, the gate's health-check script and soak time.
    concurrency_text: str | None = None
    max_errors_text: str | None = None
    rings: str | None = None
    health_script: str | None = None
    soak_seconds: int = 0
    # EBS snapshots of each server before its first KB (engine/snapshots.py), and how long they may take to start.
    snapshot: bool = False
    snapshot_timeout: float = 900.0

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> RunOptions:
        return cls(
            concurrency=int(values.get("concurrency", 10)),  # type: ignore[call-overload]
            max_errors=None if values.get("max_errors") is None else int(values["max_errors"]),  # type: ignore[call-overload]
            reboot=RebootPolicy(str(values.get("reboot", RebootPolicy.IF_REQUIRED))),
            **{key: str(values[key]) for key in _ROLLOUT_TEXTS if values.get(key) is not None},  # type: ignore[arg-type]
            soak_seconds=int(values.get("soak_seconds") or 0),  # type: ignore[call-overload]
            snapshot=values.get("snapshot") is True,
        )

    def as_dict(self) -> dict[str, object]:
        """The stored options; rollout keys only when set, so a run without them keeps the older shape."""
        rollout = {key: getattr(self, key) for key in _ROLLOUT_TEXTS if getattr(self, key) is not None}
        soak = {"soak_seconds": self.soak_seconds} if self.soak_seconds else {}
        return (
            {"concurrency": self.concurrency, "max_errors": self.max_errors, "reboot": str(self.reboot)}
            | rollout
            | soak
            | ({"snapshot": True} if self.snapshot else {})
        )


_ROLLOUT_TEXTS = ("concurrency_text", "max_errors_text", "rings", "health_script")

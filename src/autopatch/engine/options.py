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

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> RunOptions:
        return cls(
            concurrency=int(values.get("concurrency", 10)),  # type: ignore[call-overload]
            max_errors=None if values.get("max_errors") is None else int(values["max_errors"]),  # type: ignore[call-overload]
            reboot=RebootPolicy(str(values.get("reboot", RebootPolicy.IF_REQUIRED))),
        )

    def as_dict(self) -> dict[str, object]:
        return {"concurrency": self.concurrency, "max_errors": self.max_errors, "reboot": str(self.reboot)}

"""How long and how often to wait for an asynchronous command (scan, install, reboot).

The original waited a fixed 120 s for a scan and polled every 30 s (defect 6). A poll policy
backs off exponentially from a short first delay, so fast commands finish fast and slow ones
cost few API calls; a deadline bounds every wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PollPolicy:
    first_delay: float = 1.0
    factor: float = 1.6
    max_delay: float = 30.0
    timeout: float = 1800.0

    def delays(self) -> Iterator[float]:
        """Successive sleeps whose sum stays within ``timeout``."""
        delay, waited = self.first_delay, 0.0
        while waited < self.timeout:
            step = min(delay, self.max_delay, self.timeout - waited)
            yield step
            waited += step
            delay *= self.factor

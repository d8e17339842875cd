"""The Lambda functions' adapters, built once per container and replaceable by tests.

A Lambda container serves one invocation at a time and lives for many: the store, the fleet and
the clients built by the first invocation are reused by the next ones (connection reuse is most of
what makes a warm start fast). Nothing is built at import time, so importing a handler module never
needs AWS — Powertools' idempotency layer built at module scope would call real AWS even under a
test's mock. Tests put a ``Runtime`` of their own in place with ``use_runtime``.

The store is DynamoDB on ``Settings.catalog_table`` and ``Settings.state_table``
(``AUTOPATCH_CATALOG_TABLE``, ``AUTOPATCH_STATE_TABLE``), whatever ``AUTOPATCH_STORE`` says; the
fleet is SSM, whatever ``AUTOPATCH_FLEET`` says. Two more variables, read here only:

| variable                           | default         | meaning                                             |
|------------------------------------|-----------------|-----------------------------------------------------|
| AUTOPATCH_IDEMPOTENCY_TABLE        | the state table | Powertools idempotency records (keys ``pk``/``sk``) |
| AUTOPATCH_COMMAND_SILENCE_SECONDS  | ``1800``        | HeartbeatSeconds of a command wait (see ``Timing``) |
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from autopatch.admin_settings import effective_settings
from autopatch.domain.polling import PollPolicy
from autopatch.engine.options import RunOptions
from autopatch.fleet.base import FleetAdapter
from autopatch.notify.base import Notifier
from autopatch.notify.factory import notifiers_from_settings
from autopatch.settings import Settings
from autopatch.store.base import Store
from autopatch.store.dynamodb import DEFAULT_STATE_TABLE

_DEFAULTS = RunOptions()
# Looks at a rebooting server whose adapter cannot say when it will be back (SSM): a Windows
# restart with updates takes minutes, so the first look waits a while and later ones longer.
ONLINE_POLL = PollPolicy(first_delay=30.0, factor=2.0, max_delay=120.0, timeout=_DEFAULTS.reboot_timeout)
# The final scan before a run turns terminal (``record_exposure_after``), polled inside FinishRun.
FINAL_SCAN_POLL = PollPolicy(first_delay=1.0, factor=1.6, max_delay=10.0, timeout=600.0)
# Looks at a server's EBS snapshots until EC2 lists them started (``--snapshot``): usually seconds,
# a minute at most between looks (``snapshot_tasks.look_again_after``).
SNAPSHOT_POLL = PollPolicy(first_delay=5.0, factor=2.0, max_delay=60.0, timeout=_DEFAULTS.snapshot_timeout)


class AwsSettings(BaseSettings):
    """What only the Lambda functions read from their environment (set by the SAM template)."""

    model_config = SettingsConfigDict(env_prefix="AUTOPATCH_", extra="ignore")

    idempotency_table: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    command_silence_seconds: int = Field(default=1800, ge=1, le=86_400)


@dataclass(frozen=True, slots=True)
class Timing:
    """How long the workflow waits, and how patiently: the local engine's limits, with a wait-specific one.

    ``silence_seconds`` is a command wait's HeartbeatSeconds. Nobody sends heartbeats (the
    EventBridge rule matches terminal statuses only), so it is the longest the workflow trusts the
    event to come: past it, RecordCommand reads the command once and, if it still runs, waits
    again. A lost event costs that long, not the run; an install shorter than it costs no poll at
    all. ``wait_timeout_seconds`` (TimeoutSeconds) bounds one wait; it must exceed the heartbeat.
    """

    install_timeout: float = _DEFAULTS.install_timeout
    reboot_timeout: float = _DEFAULTS.reboot_timeout
    transient_retries: int = _DEFAULTS.transient_retries
    retry_backoff: PollPolicy = _DEFAULTS.poll  # first_delay * 2**n, capped: as the local engine backs off
    silence_seconds: int = 1800
    wait_timeout_seconds: int = int(_DEFAULTS.install_timeout)
    online_poll: PollPolicy = ONLINE_POLL
    scan_poll: PollPolicy = FINAL_SCAN_POLL
    snapshot_poll: PollPolicy = SNAPSHOT_POLL
    lookups: int = 3  # a send of unknown fate is looked for this many times (as ``Engine._install``)...
    lookup_delay: float = 2.0  # ...this far apart: ListCommands shows a new command only after a moment

    def __post_init__(self) -> None:
        if not 1 <= self.silence_seconds < self.wait_timeout_seconds:
            raise ValueError("HeartbeatSeconds must be at least 1 and smaller than TimeoutSeconds")


@dataclass
class Runtime:
    """What a handler works with: the store, the fleet, the Step Functions client, the settings and limits.

    ``notifiers`` None means "from the settings at each notification": an admin may change where
    summaries go while a run is under way (``admin_settings``), and the next summary follows it.
    ``idempotency_client`` is the DynamoDB client of Powertools' persistence layers (built lazily,
    one per idempotent function, since a layer keeps the name of the function it guards).
    """

    store: Store
    fleet: FleetAdapter
    states: Any
    settings: Settings = field(default_factory=Settings)
    timing: Timing = field(default_factory=Timing)
    notifiers: list[Notifier] | None = None
    idempotency_table: str = DEFAULT_STATE_TABLE
    idempotency_client: Any = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    _layers: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def current_notifiers(self) -> list[Notifier]:
        if self.notifiers is not None:
            return self.notifiers
        return notifiers_from_settings(effective_settings(self.settings, self.store).notify)

    def persistence_layer(self, name: str) -> Any:
        """Powertools' DynamoDB persistence layer for one idempotent function, built on first use."""
        with self._lock:
            if name not in self._layers:
                from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

                from autopatch.store.dynamodb_io import PK, SK

                self._layers[name] = DynamoDBPersistenceLayer(
                    table_name=self.idempotency_table,
                    key_attr=PK,
                    sort_key_attr=SK,
                    static_pk_value=f"IDEMPOTENCY#{name}",  # apart from every store item (RUN#, WAITER#…)
                    boto3_client=self.idempotency_client or _client("dynamodb", self.settings.aws_region),
                )
            return self._layers[name]


def _client(service: str, region: str | None) -> Any:
    import boto3  # type: ignore[import-untyped, unused-ignore]  # late: importing a handler needs no AWS

    return boto3.client(service, region_name=region)


def build_runtime() -> Runtime:
    """The deployed wiring: DynamoDB store, SSM fleet, Step Functions client, from the environment."""
    from autopatch.fleet.ssm import SsmFleet
    from autopatch.store.dynamodb import DynamoStore

    settings = Settings()
    aws = AwsSettings()
    return Runtime(
        store=DynamoStore(settings.catalog_table, settings.state_table, region=settings.aws_region),
        fleet=SsmFleet(
            region=settings.aws_region,
            output_s3_bucket=settings.ssm_output_bucket,
            cloudwatch_output=settings.ssm_cloudwatch_output,
        ),
        states=_client("stepfunctions", settings.aws_region),
        settings=settings,
        timing=Timing(silence_seconds=aws.command_silence_seconds),
        idempotency_table=aws.idempotency_table or settings.state_table,
    )


_current: Runtime | None = None
_current_lock = threading.Lock()


def runtime() -> Runtime:
    """This container's runtime, built by the first invocation that needs it."""
    global _current
    with _current_lock:
        if _current is None:
            _current = build_runtime()
        return _current


@contextmanager
def use_runtime(replacement: Runtime) -> Iterator[Runtime]:
    """Run handlers against ``replacement`` (tests: moto clients, the simulator), then put back what was there."""
    global _current
    with _current_lock:
        previous, _current = _current, replacement
    try:
        yield replacement
    finally:
        with _current_lock:
            _current = previous

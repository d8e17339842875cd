"""The fleet simulator's model: configuration, servers built from the real catalog, pure transitions.

Everything here is deterministic and does no I/O beyond reading the catalog: the same catalog and
seed give the same fleet, so a demo, a capacity plan and a test all see the same servers. The
adapter (``simulator.py``) adds time, commands and persistence on top.

Servers sit on real build ladders: every build is the fixed build of a real cumulative update
("Security Update" subtype) from ``product_updates``, and the scan/install JSON is exactly the
output contract of ``fleet/base.py``, so the engine cannot tell the simulator from SSM.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autopatch.catalog.queries import EMPTY_CATALOG, ProductUpdate, product_updates, resolve_products
from autopatch.domain.catalog import collapse_spaces, format_kb
from autopatch.domain.fleet import CommandInvocation, CommandStatus, Instance, OfferedUpdate
from autopatch.domain.identifiers import parse_build
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.errors import NotFoundError, ValidationError
from autopatch.fleet.reports import WU_E_NOT_APPLICABLE, UpdateResultCode, install_json, scan_json
from autopatch.store.base import CatalogStore

CORE_SUFFIX = " (Server Core installation)"
LCU_SUBTYPE = "Security Update"  # the monthly cumulative update; hotpatches and standalones are other subtypes
DEFAULT_PRODUCTS = (
    "Windows Server 2016",
    "Windows Server 2019",
    "Windows Server 2022",
    "Windows Server 2022, 23H2 Edition (Server Core installation)",
    "Windows Server 2025",
)
FULLY_PATCHED_SHARE = 0.2  # on top of the uniform draw, which can also land on the newest rung
PRODUCTION_SHARE = 0.7

# Windows Update names releases after build 20348 by servicing version, not by marketing year.
_UPDATE_LABELS = {
    20348: "Microsoft server operating system version 21H2",
    25398: "Microsoft server operating system, version 23H2",
    26100: "Microsoft server operating system version 24H2",
}
_RELEASE = re.compile(r"Windows Server ([0-9]{4}(?: R2)?)(?:, (\w+) Edition)?", re.ASCII)


def signed_hresult(value: int) -> int:
    """An HRESULT as the signed 32-bit int PowerShell prints (``0x80070643`` → -2147023293)."""
    if not -(2**31) <= value < 2**32:
        raise ValidationError("hresult", value, "an HRESULT is a 32-bit value, e.g. 0x80070643 or -2147023293")
    return value - 2**32 if value >= 2**31 else value


S_OK = 0
# What failed LCU installs really return: generic installer failure, CBS installers failed (a
# full System Reserved/WinRE partition), a corrupt component store, missing payload source.
INSTALL_FAILURE_HRESULTS = tuple(signed_hresult(code) for code in (0x80070643, 0x800F0922, 0x80073712, 0x800F081F))


class SimulatorConfig(BaseModel):
    """How big the simulated fleet is, how it is spread, and how fast and reliably it patches.

    Durations are simulated seconds; ``time_scale`` says how many simulated seconds pass per real
    second (600 turns a 600 s install into one real second).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: int = Field(default=24, ge=1, le=100_000)
    seed: int = 7
    offline_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    core_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    install_seconds_mean: float = Field(default=600.0, ge=0.0)
    install_seconds_jitter: float = Field(default=0.3, ge=0.0, le=1.0)
    reboot_seconds: float = Field(default=120.0, ge=0.0)
    # After a restart is asked for, Windows takes a while to shut down (services stop, updates finish)
    # and SSM's heartbeat keeps saying Online a while longer: the trap a reboot check must not fall in.
    shutdown_seconds: float = Field(default=30.0, ge=0.0)
    heartbeat_lag_seconds: float = Field(default=60.0, ge=0.0)
    # SSM's TimeoutSeconds (how long a command waits for an absent agent) and executionTimeout.
    delivery_timeout_seconds: float = Field(default=600.0, ge=0.0)
    execution_timeout_seconds: float = Field(default=7200.0, gt=0.0)
    scan_seconds: float = Field(default=30.0, ge=0.0)
    failure_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    time_scale: float = Field(default=1.0, gt=0.0)
    products: list[str] = Field(default_factory=lambda: list(DEFAULT_PRODUCTS), min_length=1)
    # EBS snapshots: EC2 lists a new snapshot only after a moment (it is eventually consistent), then
    # copies it (pending) until it is completed. A failing server's snapshots end in state error.
    snapshot_start_seconds: float = Field(default=15.0, ge=0.0)
    snapshot_seconds: float = Field(default=900.0, ge=0.0)
    snapshot_failing_servers: list[str] = Field(default_factory=list, max_length=100_000)
    # Ring health gates: the health-check script exits 1 on these servers (0 elsewhere), after scan_seconds.
    health_check_failing_servers: list[str] = Field(default_factory=list, max_length=100_000)

    @field_validator("products")
    @classmethod
    def _distinct_product_names(cls, products: list[str]) -> list[str]:
        names = [collapse_spaces(name) for name in products]
        if not all(names):
            raise ValueError("a product is an MSRC product name, e.g. 'Windows Server 2022'")
        return list(dict.fromkeys(names))

    @field_validator("snapshot_failing_servers")
    @classmethod
    def _instance_ids(cls, instance_ids: list[str]) -> list[str]:
        try:
            return [parse_instance_id(value, "snapshot_failing_servers") for value in instance_ids]
        except ValidationError as exc:
            raise ValueError(exc.rule) from None

    @field_validator("health_check_failing_servers")
    @classmethod
    def _health_check_instance_ids(cls, instance_ids: list[str]) -> list[str]:
        try:
            return [parse_instance_id(value, "health_check_failing_servers") for value in instance_ids]
        except ValidationError as exc:
            raise ValueError(exc.rule) from None

    def fleet_shape(self) -> dict[str, object]:
        """The settings that decide which servers exist; a persisted fleet must be reopened with these."""
        return self.model_dump(include={"servers", "seed", "offline_fraction", "core_fraction", "products"})


@dataclass(frozen=True, slots=True)
class ProductLadder:
    """One product's updates with a Windows build, oldest first, and its cumulative-update rungs."""

    product: str
    updates: dict[int, ProductUpdate]
    lcus: tuple[ProductUpdate, ...]

    @property
    def newest_lcu(self) -> ProductUpdate | None:
        return self.lcus[-1] if self.lcus else None


def load_ladders(store: CatalogStore, products: list[str]) -> dict[str, ProductLadder]:
    """Ladders for the configured products and their Core variants; products with no LCU are left out."""
    if not store.list_documents():
        raise NotFoundError(f"simulator: its servers are built from the catalog's updates, and {EMPTY_CATALOG}")
    ladders: dict[str, ProductLadder] = {}
    for family in products:
        for name in (family, family + CORE_SUFFIX) if not family.endswith(CORE_SUFFIX) else (family,):
            try:
                matches = [p for p in resolve_products(store, name) if p.name.casefold() == name.casefold()]
            except NotFoundError:
                continue
            if not matches:
                continue
            updates = product_updates(store, matches[0].product_id)
            lcus = tuple(update for update in updates if update.subtype == LCU_SUBTYPE)
            # MSRC data slips: KB5060842 is listed for Windows Server 2025 at 10.0.26200.4349.
            # Servers sit on the product's own branch only.
            branches = Counter(parse_build(update.fixed_build)[:3] for update in lcus)
            if branches:
                branch = branches.most_common(1)[0][0]
                lcus = tuple(update for update in lcus if parse_build(update.fixed_build)[:3] == branch)
            if lcus:
                ladders[name] = ProductLadder(name, {update.kb: update for update in updates}, lcus)
    return ladders


def update_title(update: ProductUpdate, product: str) -> str:
    """The title Windows Update shows, e.g. ``2024-02 Cumulative Update for ... (KB5034770)``."""
    build = parse_build(update.fixed_build)[2]
    label = _UPDATE_LABELS.get(build, product.removesuffix(CORE_SUFFIX))
    kind = "Cumulative Update" if update.subtype == LCU_SUBTYPE else (update.subtype or "Update")
    return f"{update.month} {kind} for {label} for x64-based Systems ({format_kb(update.kb)})"


def _release(product: str) -> tuple[str, str | None]:
    """("2022", None) for Windows Server 2022, ("2022", "23H2") for the 23H2 Edition."""
    match = _RELEASE.match(product)
    return (match.group(1), match.group(2)) if match else (product.removeprefix("Windows Server ").strip(), None)


@dataclass(frozen=True, slots=True)
class SimulatedServer:
    """One simulated Windows server: identity as discovery sees it, and the state a scan reports."""

    instance_id: str
    name: str
    computer_name: str
    product: str  # the MSRC product name, Core variants included
    edition: str  # "Datacenter" or "Standard"
    environment: str  # "prod" or "test"
    ip_address: str
    ami_id: str
    ami_name: str
    build: str  # full four-part build, e.g. "10.0.20348.2227"
    installed_kbs: tuple[str, ...]
    pending_reboot: bool = False
    online: bool = True  # administratively reachable (set_online); a reboot also takes it away
    rebooting_until: float | None = None  # simulated time; math.inf when the reboot never returns
    reboot_never_returns: bool = False
    install_seconds: float | None = None  # overrides the configured install duration
    reboot_at: float | None = None  # when an asked-for restart takes Windows down (it answers until then)
    booted_at: float = 0.0  # simulated time of the last boot: the scan's last_boot_time

    @property
    def boot_time(self) -> datetime:
        return SIMULATED_EPOCH + timedelta(seconds=self.booted_at)

    @property
    def is_core(self) -> bool:
        return self.product.endswith(CORE_SUFFIX)

    @property
    def installation_type(self) -> str:
        return "Server Core" if self.is_core else "Server"

    @property
    def platform_name(self) -> str:
        year, version = _release(self.product)
        if version:  # Annual Channel releases drop the year from their caption
            return f"Microsoft Windows Server {self.edition}"
        return f"Microsoft Windows Server {year} {self.edition}"

    @property
    def platform_version(self) -> str:
        major, minor, build, _ = parse_build(self.build)
        return f"{major}.{minor}.{build}"

    @property
    def tags(self) -> dict[str, str]:
        return {"Name": self.name, "Environment": self.environment, "OS": self.product}

    def reachable(self, now: float) -> bool:
        """Its agent answers: administratively online, and not between shutdown and boot."""
        return self.online and not self.restarting(now)

    def restarting(self, now: float) -> bool:
        down_from = self.reboot_at if self.reboot_at is not None else self.rebooting_until
        return self.rebooting_until is not None and down_from is not None and down_from <= now < self.rebooting_until

    def instance(self, now: float) -> Instance:
        return Instance(
            instance_id=self.instance_id,
            name=self.name,
            platform_name=self.platform_name,
            platform_version=self.platform_version,
            online=self.reachable(now),
            ip_address=self.ip_address,
            ami_id=self.ami_id,
            ami_name=self.ami_name,
            tags=self.tags,
        )


def build_fleet(store: CatalogStore, config: SimulatorConfig) -> list[SimulatedServer]:
    """The fleet the config describes, on the catalog's real build ladders (same seed, same fleet)."""
    return generate_fleet(load_ladders(store, config.products), config)


def generate_fleet(ladders: dict[str, ProductLadder], config: SimulatorConfig) -> list[SimulatedServer]:
    """Deterministic from ``config.seed``: products, Core variants, builds, ids, names, offline set."""
    families = [name for name in config.products if name in ladders]
    if not families:
        raise ValidationError("products", config.products, "none has cumulative updates in the catalog")
    rng = random.Random(config.seed)
    width = max(3, len(str(config.servers)))
    offline = set(rng.sample(range(config.servers), round(config.servers * config.offline_fraction)))
    seen_ids: set[str] = set()
    ami_ids: dict[str, str] = {}
    servers = []
    for index in range(config.servers):
        product = rng.choice(families)
        core = product + CORE_SUFFIX
        if not product.endswith(CORE_SUFFIX) and core in ladders and rng.random() < config.core_fraction:
            product = core
        ladder = ladders[product]
        lcu = ladder.lcus[-1] if rng.random() < FULLY_PATCHED_SHARE else rng.choice(ladder.lcus)
        instance_id = f"i-{rng.getrandbits(68):017x}"
        while instance_id in seen_ids:  # 68 random bits: a clash is astronomically rare, but ids must be unique
            instance_id = f"i-{rng.getrandbits(68):017x}"
        seen_ids.add(instance_id)
        year, version = _release(product)
        short = "ws" + (version or year).replace(" ", "").lower()
        ami_name = _ami_name(version or year, product.endswith(CORE_SUFFIX), lcu.month)
        if ami_name not in ami_ids:  # one image per (release, kind, month), as on AWS
            ami_ids[ami_name] = "ami-" + hashlib.sha256(f"{config.seed}/{ami_name}".encode()).hexdigest()[:17]
        servers.append(
            SimulatedServer(
                instance_id=instance_id,
                name=f"sim-{short}-{index + 1:0{width}d}",
                computer_name="EC2AMAZ-" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=7)),
                product=product,
                edition="Datacenter" if rng.random() < 0.5 else "Standard",
                environment="prod" if rng.random() < PRODUCTION_SHARE else "test",
                ip_address=f"10.{(index + 10) >> 16 & 255}.{(index + 10) >> 8 & 255}.{(index + 10) & 255}",
                ami_id=ami_ids[ami_name],
                ami_name=ami_name,
                build=lcu.fixed_build,
                # Get-HotFix lists only the newest cumulative update: each one replaces the last.
                installed_kbs=(format_kb(lcu.kb),),
                online=index not in offline,
            )
        )
    return servers


@functools.cache
def _ami_name(release: str, core: bool, month: str) -> str:
    """Amazon's naming, dated the day after Patch Tuesday of the month the build shipped."""
    year, number = (int(part) for part in month.split("-")) if month else (2024, 1)
    first_weekday = calendar.weekday(year, number, 1)
    patch_tuesday = 1 + (calendar.TUESDAY - first_weekday) % 7 + 7
    kind = "Core" if core else "Full"
    return f"Windows_Server-{release.replace(' ', '_')}-English-{kind}-Base-{year}.{number:02d}.{patch_tuesday + 1:02d}"


def scan_output(server: SimulatedServer, ladder: ProductLadder | None) -> str:
    """The scan JSON of ``fleet/base.py``; Windows Update offers only the newest LCU, when it is newer."""
    newest = ladder.newest_lcu if ladder else None
    offered = []
    if newest is not None and parse_build(newest.fixed_build) > parse_build(server.build):
        offered.append(OfferedUpdate(format_kb(newest.kb), update_title(newest, server.product)))
    return scan_json(
        computer_name=server.computer_name,
        os_caption=server.platform_name,
        build=server.build,
        installation_type=server.installation_type,
        installed_kbs=sorted(server.installed_kbs),
        offered_updates=offered,
        pending_reboot=server.pending_reboot,
        last_boot_time=server.boot_time,
    )


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    """What the install script reports for one KB (the install JSON of ``fleet/base.py``)."""

    kb: str
    result_code: UpdateResultCode
    hresult: int
    reboot_required: bool
    message: str
    status: str | None = None  # the install contract's status (already-installed, not-applicable…)

    @property
    def exit_code(self) -> int:
        return 0 if self.result_code in (UpdateResultCode.SUCCEEDED, UpdateResultCode.SUCCEEDED_WITH_ERRORS) else 1

    def output(self) -> str:
        return install_json(
            kb=self.kb,
            result_code=self.result_code,
            hresult=self.hresult,
            reboot_required=self.reboot_required,
            message=self.message,
            status=self.status,
        )


def install_update(
    server: SimulatedServer,
    ladder: ProductLadder | None,
    kb: str,
    injected_hresult: int | None = None,
    random_hresult: int | None = None,
) -> tuple[SimulatedServer, InstallOutcome]:
    """Install one KB as Windows Update would; returns the server afterwards and the report.

    An injected fault wins over everything (the scenario asked for it); an installed KB succeeds
    without a reboot; a KB that the catalog does not list for the product, or whose build is not
    newer than the server's, is WU_E_NOT_APPLICABLE; then the seeded random failure applies.
    The build moves at install time, not at the reboot as the real UBR does, so that the engine's
    "fixed build reached" check can be exercised without modelling staged servicing.
    """
    if injected_hresult is not None:
        return server, _failed(kb, injected_hresult, f"Installation of {kb} failed (injected fault)")
    if kb in server.installed_kbs:  # a retry after a finished install: Windows Update finds it installed
        message = f"{kb} is already installed"
        outcome = InstallOutcome(
            kb, UpdateResultCode.SUCCEEDED, S_OK, server.pending_reboot, message, "already-installed"
        )
        return server, outcome
    update = ladder.updates.get(int(kb[2:])) if ladder else None
    if update is None or parse_build(update.fixed_build) <= parse_build(server.build):
        message = f"{kb} is not applicable to this computer (WU_E_NOT_APPLICABLE)"
        return server, replace(_failed(kb, WU_E_NOT_APPLICABLE, message), status="not-applicable")
    if random_hresult is not None:
        return server, _failed(kb, random_hresult, f"Installation of {kb} failed")
    installed = server.installed_kbs
    if ladder is not None and update.subtype == LCU_SUBTYPE:
        older = {format_kb(lcu.kb) for lcu in ladder.lcus if lcu.kb != update.kb}
        installed = tuple(name for name in installed if name not in older)
    reboot = update.restart_required in ("Yes", "Maybe")
    after = replace(
        server,
        build=update.fixed_build,
        installed_kbs=(*installed, kb),
        pending_reboot=server.pending_reboot or reboot,
    )
    return after, InstallOutcome(
        kb, UpdateResultCode.SUCCEEDED, S_OK, reboot, f"Installed {update_title(update, server.product)}", "installed"
    )


def _failed(kb: str, hresult: int, message: str) -> InstallOutcome:
    text = f"{message}: 0x{hresult & 0xFFFFFFFF:08X}"
    return InstallOutcome(kb, UpdateResultCode.FAILED, hresult, False, text, "failed")


# Simulated seconds count from here: a server built at time 0 booted at this instant.
SIMULATED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class CommandKind(StrEnum):
    SCAN = "scan"
    INSTALL = "install"
    HEALTH = "health"  # a ring gate's health-check script; ``injected_hresult`` holds its exit code


@dataclass(frozen=True, slots=True)
class SimulatedCommand:
    """One command as the simulator keeps it: when it started, how long it runs, how it ended."""

    command_id: str
    instance_id: str
    kind: CommandKind
    kb: str | None
    started_at: float  # simulated seconds
    duration: float  # simulated seconds
    status: CommandStatus
    injected_hresult: int | None = None  # decided when sent, so a restart cannot change the outcome
    random_hresult: int | None = None
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    token: str | None = None  # the engine's tag (SSM: the command's Comment), for find_command
    # How long it runs once delivered; ``duration`` is until its next change of state: delivery
    # deadline while Pending, completion (or the execution timeout's kill) while InProgress.
    run_seconds: float | None = None

    @property
    def due_at(self) -> float:
        return self.started_at + self.duration

    def invocation(self) -> CommandInvocation:
        return CommandInvocation(
            command_id=self.command_id,
            instance_id=self.instance_id,
            status=self.status,
            exit_code=self.exit_code,
            output=self.output,
            error=self.error,
        )


@dataclass(frozen=True, slots=True)
class SimulatedSnapshot:
    """One volume's EBS snapshot as the simulator keeps it; its state follows from the time it was taken."""

    snapshot_id: str
    instance_id: str
    volume_id: str
    device: str
    root: bool
    created_at: float  # simulated seconds
    fails: bool  # decided when taken (the server was configured to fail), so a reopening cannot change it
    tags: dict[str, str]
    request: int  # the CreateSnapshots call it came from (one per server and ask)

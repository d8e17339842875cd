"""The fleet port: how AutoPatch reaches Windows servers, whatever carries the commands.

Commands are asynchronous, as with SSM Run Command: ``send_*`` returns a command id at once and
``get_command`` reads its status later. The engine records the command id BEFORE it waits, so a
restarted orchestrator re-polls a command instead of sending it twice.

Output contract (both adapters print exactly this; ``autopatch.fleet.reports`` parses it):

scan — one JSON object::

    {"schema": 1, "computer_name": "WIN-01", "os_caption": "Microsoft Windows Server 2022 Datacenter",
     "os_version": "10.0.20348", "current_build": "20348", "ubr": 2227,
     "installation_type": "Server" | "Server Core",
     "installed_kbs": ["KB5034129", ...],
     "offered_updates": [{"kb": "KB5034770", "title": "2024-02 Cumulative Update ..."}],
     "pending_reboot": false,
     "last_boot_time": "2024-02-14T03:12:45Z",     (optional: UTC, LastBootUpTime)
     "error": null}                                 (optional: why part of the scan failed)

install — one JSON object::

    {"schema": 1, "kb": "KB5034770", "result_code": 2, "hresult": 0, "reboot_required": true,
     "message": "...", "status": "installed"}      (status optional, see InstallReport.status)

``result_code`` is the Windows Update Agent OperationResultCode (2 Succeeded, 3 Succeeded with
errors, 4 Failed, 5 Aborted); ``hresult`` is a signed 32-bit HRESULT (0 = S_OK; -2145124329 =
0x80240017 WU_E_NOT_APPLICABLE when Windows Update does not offer the KB).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Protocol

from autopatch.domain.fleet import CommandInvocation, Instance
from autopatch.domain.snapshots import SnapshotInventory, SnapshotState, VolumeSnapshot


class FleetAdapter(Protocol):
    def list_instances(self) -> list[Instance]:
        """Every managed Windows server, online or not."""

    def send_scan(self, instance_id: str) -> str:
        """Start a scan; return the command id."""

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        """Start installing one validated KB (``KB`` + digits); return the command id.

        ``token`` tags the command (SSM: its Comment) so that ``find_command`` can tell, after a
        crash between sending and recording, whether the command exists. Raise
        ``TransientError`` for throttling or a briefly unreachable service (the command was not
        created), ``DeliveryUncertainError`` when it may have been (a timeout or a 5xx after the
        request left): never retry such a send blindly.
        """

    def find_command(self, instance_id: str, token: str, since: datetime | None = None) -> str | None:
        """The id of the command sent with ``token`` (at or after ``since``, UTC), or None if none was."""

    def expected_completion(self, instance_id: str, command_id: str) -> float | None:
        """Seconds until the adapter expects the command to finish, or None when it cannot know.

        The simulator knows exactly; SSM does not, and the engine then polls with backoff.
        """

    def expected_online(self, instance_id: str) -> float | None:
        """Seconds until a rebooting server should answer again, or None when unknown (SSM)."""

    def get_command(self, instance_id: str, command_id: str) -> CommandInvocation:
        """The command's current status and, once terminal, its exit code and output."""

    def reboot(self, instance_id: str) -> str | None:
        """Ask the server to restart cleanly (returns at once); the command id when a command carries it.

        Being online again proves nothing (SSM reports a server Online for minutes after a restart
        was asked for): a reboot is proven by a scan whose ``last_boot_time`` is newer than before.
        """

    def is_online(self, instance_id: str) -> bool:
        """Whether the server answers commands right now."""

    def send_health_check(self, instance_id: str, script: str) -> str:
        """Start a ring gate's health-check PowerShell script on one server; return the command id.

        ``script`` is the operator's file, checked by ``domain.rings.check_health_script``; it is
        sent as data (SSM: the ``commands`` parameter, line by line, unchanged), never formatted
        into another script. The server passes when the command succeeds with exit code 0. Errors
        as ``send_install``'s; a health check may run again after a crash, so it must only read.
        """

    # --- EBS snapshots (``domain/snapshots.py``): taken before a server is patched ---------------

    def create_snapshots(self, instance_id: str, tags: Mapping[str, str]) -> list[VolumeSnapshot]:
        """Snapshot every volume of the server at one point in time (EC2 CreateSnapshots), tagged with ``tags``.

        Raise ``TransientError`` when surely nothing was created (throttling), ``DeliveryUncertainError``
        when it may have been (find them by their token tag with ``list_snapshots``), and
        ``ExecutionError`` when it cannot be done (an on-premises server has no EBS volume).
        """

    def snapshot_states(self, snapshot_ids: Collection[str]) -> dict[str, SnapshotState]:
        """Each listed snapshot's state; an id missing from the answer is not listed yet (or is gone)."""

    def list_snapshots(self, tags: Mapping[str, str | None]) -> SnapshotInventory:
        """Snapshots carrying every given tag (``None``: the key with any value), and the fleet's time now."""

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete one snapshot; ``NotFoundError`` when there is none with this id."""

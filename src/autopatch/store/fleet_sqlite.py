"""SQLite tables for the fleet: discovered instances and the history of their scans.

Kept beside the catalog tables in the same database file (one schema version), in a module of
its own so that the catalog adapter stays readable.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from autopatch.domain.fleet import Instance, OfferedUpdate, ScanReport

FLEET_MIGRATION = """
    CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        platform_name TEXT NOT NULL,
        platform_version TEXT NOT NULL,
        online INTEGER NOT NULL,
        ip_address TEXT,
        ami_id TEXT,
        ami_name TEXT,
        tags TEXT NOT NULL,
        discovered_at TEXT NOT NULL
    );
    CREATE TABLE scans (
        instance_id TEXT NOT NULL REFERENCES instances ON DELETE CASCADE,
        scanned_at TEXT NOT NULL,
        os_caption TEXT NOT NULL,
        build TEXT NOT NULL,
        installation_type TEXT NOT NULL,
        installed_kbs TEXT NOT NULL,
        offered TEXT NOT NULL,
        pending_reboot INTEGER NOT NULL,
        PRIMARY KEY (instance_id, scanned_at)
    ) WITHOUT ROWID;
"""
# "offline since …" needs the moment discovery first found a server offline.
OFFLINE_SINCE_MIGRATION = "ALTER TABLE instances ADD COLUMN offline_since TEXT"
# A reboot is proven by a newer boot time; a scan whose Windows Update part failed says why.
SCAN_BOOT_MIGRATION = "ALTER TABLE scans ADD COLUMN boot_time TEXT; ALTER TABLE scans ADD COLUMN error TEXT"
SCAN_COLUMNS = (
    "instance_id, scanned_at, os_caption, build, installation_type, installed_kbs, offered, pending_reboot, "
    "boot_time, error"
)
INSTANCE_COLUMNS = (
    "instance_id, name, platform_name, platform_version, online, ip_address, ami_id, ami_name, tags, "
    "discovered_at, offline_since"
)


def instance_row(instance: Instance, discovered_at: datetime) -> tuple[Any, ...]:
    return (
        instance.instance_id,
        instance.name,
        instance.platform_name,
        instance.platform_version,
        int(instance.online),
        instance.ip_address,
        instance.ami_id,
        instance.ami_name,
        json.dumps(instance.tags, sort_keys=True),
        discovered_at.isoformat(timespec="seconds"),
        None if instance.online else discovered_at.isoformat(timespec="seconds"),
    )


def instance_from_row(row: tuple[Any, ...]) -> Instance:
    instance_id, name, platform_name, platform_version, online, ip, ami_id, ami_name, tags, _, offline_since = row
    return Instance(
        instance_id=instance_id,
        name=name,
        platform_name=platform_name,
        platform_version=platform_version,
        online=bool(online),
        ip_address=ip,
        ami_id=ami_id,
        ami_name=ami_name,
        tags=json.loads(tags),
        offline_since=offline_since,
    )


def scan_from_row(row: tuple[Any, ...]) -> ScanReport:
    instance_id, scanned_at, caption, build, installation_type, installed, offered, pending, boot, error = row
    return ScanReport(
        instance_id=instance_id,
        os_caption=caption,
        build=build,
        installation_type=installation_type,
        installed_kbs=frozenset(json.loads(installed)),
        offered=tuple(OfferedUpdate(kb, title) for kb, title in json.loads(offered)),
        pending_reboot=bool(pending),
        scanned_at=datetime.fromisoformat(scanned_at),
        boot_time=datetime.fromisoformat(boot) if boot else None,
        error=error,
    )

"""Which MSRC product a Windows server is: the name that joins a server to the CVE catalog.

The original system read the product from the AMI name or a hand-written ``OS`` tag (defect 4 of
SEED_SYSTEM.md): an AMI says what a server was launched from, not what it runs after an in-place
upgrade, and a tag says what someone typed. The build number comes from the running OS itself, so
it decides whenever we have one; the platform name, the AMI name and the tag are only fallbacks,
in that order, for servers never scanned and with no usable version.

We never guess: a build that we do not know, a client edition, or sources that contradict each
other give ``product=None`` with a reason an operator can act on, because a wrong product name
silently hides every CVE of the right one. Pure: no I/O, no adapter imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CORE_SUFFIX = " (Server Core installation)"

# Build major → MSRC product name (without the Core suffix).
_SERVER_BUILDS: dict[int, str] = {
    14393: "Windows Server 2016",
    17763: "Windows Server 2019",
    20348: "Windows Server 2022",
    25398: "Windows Server 2022, 23H2 Edition",
    26100: "Windows Server 2025",
}
# Windows Server 23H2 (Annual Channel) was only released as Server Core.
_CORE_ONLY_BUILDS = frozenset({25398})
# Client editions share these builds (Windows 10 1607 / LTSB 2016, Windows 10 1809 / LTSC 2019,
# Windows 11 24H2): the build alone cannot tell a server from a desktop, so something must say Server.
_CLIENT_SHARED_BUILDS = frozenset({14393, 17763, 26100})
_YEAR_PRODUCTS: dict[str, str] = {
    "2016": "Windows Server 2016",
    "2019": "Windows Server 2019",
    "2022": "Windows Server 2022",
    "2025": "Windows Server 2025",
}

KNOWN_PRODUCTS: tuple[str, ...] = tuple(
    name
    for build, base in _SERVER_BUILDS.items()
    for name in ((base + CORE_SUFFIX,) if build in _CORE_ONLY_BUILDS else (base, base + CORE_SUFFIX))
)

_VERSION = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{3,6})(?:\.[0-9]{1,6})?")
_PLATFORM_YEAR = re.compile(r"\bWindows Server ([0-9]{4})\b", re.IGNORECASE | re.ASCII)
# Amazon's Windows AMIs: "Windows_Server-2022-English-Core-Base-2024.01.10".
_AMI_YEAR = re.compile(r"Windows_Server-([0-9]{4})-", re.IGNORECASE | re.ASCII)
_AMI_CORE = re.compile(r"(?<![A-Za-z0-9])Core(?![A-Za-z0-9])", re.IGNORECASE)
_AMI_NANO = re.compile(r"(?<![A-Za-z0-9])Nano(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OsIdentity:
    """The product name (None when unidentified), which source decided it, and why."""

    product: str | None
    source: str  # "build" | "platform" | "ami" | "tag" | "unidentified"
    reason: str

    @property
    def identified(self) -> bool:
        return self.product is not None


def identify_product(
    platform_name: str | None,
    platform_version: str | None,
    build: str | None = None,
    installation_type: str | None = None,
    ami_name: str | None = None,
    os_tag: str | None = None,
) -> OsIdentity:
    """Name the MSRC product of a server from what SSM, a scan, EC2 and tags say about it.

    ``build`` ("10.0.20348.2227", from a scan) or ``platform_version`` ("10.0.20348", from SSM)
    decides; ``platform_name`` ("Microsoft Windows Server 2022 Datacenter") confirms it, or is the
    first fallback when no version is usable; then the AMI name; then an ``OS`` tag holding an exact
    product name. ``installation_type`` ("Server" / "Server Core" from the registry) chooses the
    Core variant, the AMI name only when the type is unknown.
    """
    kind = _installation_kind(installation_type)
    if kind in ("Client", "Nano Server"):
        return _unidentified(
            f"installation type {installation_type!r} is not a Windows Server edition that MSRC lists "
            "(only Server and Server Core are)"
        )
    for label, text in (("build", build), ("platform version", platform_version)):
        version = _parse_version(text)
        if version is not None:
            return _identify_by_build(version, label, platform_name or "", kind, ami_name or "")

    if _is_client_name(platform_name or ""):
        return _unidentified(f"platform name {platform_name!r} is a Windows client edition, not a server")
    name_year = _platform_year(platform_name or "")
    if name_year is not None:
        return _identify_by_year(name_year, "platform", f"platform name {platform_name!r}", kind, ami_name or "")
    ami_match = _AMI_YEAR.match(ami_name or "")
    if ami_match is not None:
        if _AMI_NANO.search(ami_name or ""):
            return _unidentified(f"AMI {ami_name!r} is Nano Server, which MSRC does not list as a product")
        return _identify_by_year(ami_match.group(1), "ami", f"AMI name {ami_name!r}", kind, ami_name or "")
    if os_tag and os_tag.strip():
        return _identify_by_tag(os_tag, kind)
    return _unidentified(
        "no usable build or platform version, no 'Windows Server <year>' in the platform name, "
        "no Windows_Server AMI name and no OS tag"
    )


def _identify_by_build(
    version: tuple[int, int, int, str], label: str, platform_name: str, kind: str | None, ami_name: str
) -> OsIdentity:
    major, minor, build_number, text = version
    described = f"{label} {text}"
    base = _SERVER_BUILDS.get(build_number) if (major, minor) == (10, 0) else None
    if base is None:
        return _unidentified(f"{described} is not a Windows Server build AutoPatch knows (known: {_known_builds()})")
    if _is_client_name(platform_name):
        return _unidentified(f"{described} matches {base}, but platform name {platform_name!r} is a client edition")
    name_year = _platform_year(platform_name)
    if name_year is not None and name_year not in base:
        return _unidentified(f"{described} means {base}, but platform name {platform_name!r} says {name_year}")
    if build_number in _CLIENT_SHARED_BUILDS and not platform_name and kind is None:
        return _unidentified(
            f"{described} is shared by {base} and a Windows client edition; "
            "neither the platform name nor the installation type says Server"
        )
    product, core_reason = _with_installation(base, build_number in _CORE_ONLY_BUILDS, kind, ami_name)
    confirmed = f", confirmed by platform name {platform_name!r}" if name_year is not None else ""
    return OsIdentity(product, "build", f"{described} is {base}{confirmed}; {core_reason}")


def _identify_by_year(year: str, source: str, described: str, kind: str | None, ami_name: str) -> OsIdentity:
    base = _YEAR_PRODUCTS.get(year)
    if base is None:
        return _unidentified(f"{described} names Windows Server {year}, which AutoPatch does not know")
    product, core_reason = _with_installation(base, False, kind, ami_name)
    return OsIdentity(product, source, f"no usable build; {described} says {base}; {core_reason}")


def _identify_by_tag(os_tag: str, kind: str | None) -> OsIdentity:
    wanted = " ".join(os_tag.split()).lower()
    product = next((known for known in KNOWN_PRODUCTS if known.lower() == wanted), None)
    if product is None:
        return _unidentified(f"OS tag {os_tag!r} is not a product name AutoPatch knows, e.g. 'Windows Server 2022'")
    base = product.removesuffix(CORE_SUFFIX)
    core_only = base == _SERVER_BUILDS[25398]
    tag_says_core = product.endswith(CORE_SUFFIX)
    if kind is None:
        return OsIdentity(product, "tag", f"no usable build, platform name or AMI name; OS tag says {product!r}")
    observed, core_reason = _with_installation(base, core_only, kind, "")
    overridden = "" if observed.endswith(CORE_SUFFIX) == tag_says_core else " (the tag said otherwise)"
    reason = f"no usable build, platform name or AMI name; OS tag names {base}; {core_reason}{overridden}"
    return OsIdentity(observed, "tag", reason)


def _with_installation(base: str, core_only: bool, kind: str | None, ami_name: str) -> tuple[str, str]:
    """Append the Core suffix when the registry (or, lacking it, the AMI name) says Server Core."""
    if core_only:
        return base + CORE_SUFFIX, "this release exists only as Server Core"
    if kind == "Server Core":
        return base + CORE_SUFFIX, "installation type is Server Core"
    if kind == "Server":
        return base, "installation type is Server (Desktop Experience)"
    if ami_name and _AMI_CORE.search(ami_name):
        return base + CORE_SUFFIX, f"installation type unknown, AMI name {ami_name!r} says Core"
    return base, "installation type unknown and nothing says Server Core"


def _installation_kind(installation_type: str | None) -> str | None:
    """Windows' InstallationType registry value in its canonical spelling, or None when unknown."""
    if installation_type is None:
        return None
    wanted = " ".join(installation_type.split()).lower()
    return next((kind for kind in ("Server", "Server Core", "Client", "Nano Server") if kind.lower() == wanted), None)


def _parse_version(text: str | None) -> tuple[int, int, int, str] | None:
    match = _VERSION.fullmatch(text.strip()) if text else None
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(0)


def _platform_year(platform_name: str) -> str | None:
    match = _PLATFORM_YEAR.search(platform_name)
    return match.group(1) if match else None


def _is_client_name(platform_name: str) -> bool:
    lowered = platform_name.lower()
    return "windows" in lowered and "server" not in lowered


def _known_builds() -> str:
    return "; ".join(f"{build} {name}" for build, name in _SERVER_BUILDS.items())


def _unidentified(reason: str) -> OsIdentity:
    return OsIdentity(None, "unidentified", reason)

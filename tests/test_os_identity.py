"""Naming a server's MSRC product: the build decides, the rest only falls back, nothing is guessed."""

from __future__ import annotations

import pytest

from autopatch.domain.instance_ids import is_managed_instance_id, parse_instance_id
from autopatch.domain.os_identity import KNOWN_PRODUCTS, identify_product
from autopatch.errors import ValidationError

CORE = " (Server Core installation)"


@pytest.mark.parametrize(
    ("platform_name", "build", "product"),
    [
        ("Microsoft Windows Server 2016 Datacenter", "10.0.14393.6614", "Windows Server 2016"),
        ("Microsoft Windows Server 2019 Datacenter", "10.0.17763.5329", "Windows Server 2019"),
        ("Microsoft Windows Server 2022 Datacenter", "10.0.20348.2227", "Windows Server 2022"),
        ("Microsoft Windows Server 2022 Datacenter: Azure Edition", "10.0.20348.2227", "Windows Server 2022"),
        ("Microsoft Windows Server 2025 Datacenter", "10.0.26100.1742", "Windows Server 2025"),
    ],
)
def test_each_server_build_names_its_product_confirmed_by_the_platform_name(
    platform_name: str, build: str, product: str
) -> None:
    identity = identify_product(platform_name, "10.0.0", build=build, installation_type="Server")
    assert (identity.product, identity.source) == (product, "build")
    assert build in identity.reason and "confirmed by platform name" in identity.reason


@pytest.mark.parametrize(
    ("platform_version", "product"),
    [
        ("10.0.14393", "Windows Server 2016"),
        ("10.0.17763", "Windows Server 2019"),
        ("10.0.20348", "Windows Server 2022"),
        ("10.0.26100", "Windows Server 2025"),
    ],
)
def test_without_a_scan_the_ssm_platform_version_gives_the_build(platform_version: str, product: str) -> None:
    year = product[-4:]
    identity = identify_product(f"Microsoft Windows Server {year} Standard", platform_version)
    assert (identity.product, identity.source) == (product, "build")


@pytest.mark.parametrize("build", ["10.0.14393.6614", "10.0.17763.5329", "10.0.20348.2227", "10.0.26100.1742"])
def test_a_server_core_installation_gets_the_core_product_name(build: str) -> None:
    identity = identify_product("Microsoft Windows Server Datacenter", "", build=build, installation_type="Server Core")
    assert identity.product is not None and identity.product.endswith(CORE)
    assert "installation type is Server Core" in identity.reason


def test_windows_server_23h2_is_always_core() -> None:
    identity = identify_product("Microsoft Windows Server Datacenter", "10.0.25398", installation_type="Server")
    assert identity.product == "Windows Server 2022, 23H2 Edition (Server Core installation)"
    assert identity.source == "build" and "only as Server Core" in identity.reason


def test_the_ami_name_says_core_only_when_the_installation_type_is_unknown() -> None:
    core_ami = "Windows_Server-2022-English-Core-Base-2024.01.10"
    by_ami = identify_product("Microsoft Windows Server 2022 Datacenter", "10.0.20348", ami_name=core_ami)
    assert by_ami.product == "Windows Server 2022" + CORE and by_ami.source == "build"
    by_registry = identify_product(
        "Microsoft Windows Server 2022 Datacenter", "10.0.20348", installation_type="Server", ami_name=core_ami
    )
    assert by_registry.product == "Windows Server 2022"  # the registry describes the running OS


def test_the_scanned_build_wins_over_an_older_ssm_platform_version() -> None:
    # An in-place upgrade from 2019 to 2022: SSM's inventory may still say 17763 for a while.
    identity = identify_product("", "10.0.17763", build="10.0.20348.2227", installation_type="Server")
    assert identity.product == "Windows Server 2022"


@pytest.mark.parametrize(
    ("platform_name", "installation_type", "ami_name", "product"),
    [
        ("Microsoft Windows Server 2019 Datacenter", None, None, "Windows Server 2019"),
        ("Microsoft Windows Server 2019 Datacenter", "Server Core", None, "Windows Server 2019" + CORE),
        (
            "Microsoft Windows Server 2016 Datacenter",
            None,
            "Windows_Server-2016-English-Core-Base-2024.01.10",
            "Windows Server 2016" + CORE,
        ),
    ],
)
def test_without_a_usable_version_the_platform_name_is_the_first_fallback(
    platform_name: str, installation_type: str | None, ami_name: str | None, product: str
) -> None:
    identity = identify_product(platform_name, "unknown", installation_type=installation_type, ami_name=ami_name)
    assert (identity.product, identity.source) == (product, "platform")
    assert "no usable build" in identity.reason


@pytest.mark.parametrize(
    ("ami_name", "product"),
    [
        ("Windows_Server-2022-English-Core-Base-2024.01.10", "Windows Server 2022" + CORE),
        ("Windows_Server-2019-English-Full-Base-2024.01.10", "Windows Server 2019"),
        ("Windows_Server-2016-English-Full-SQL_2016_SP1_Standard-2017.10.13", "Windows Server 2016"),
        ("Windows_Server-2025-English-Full-Base-2024.11.13", "Windows Server 2025"),
    ],
)
def test_the_ami_name_is_the_next_fallback(ami_name: str, product: str) -> None:
    identity = identify_product("", "", ami_name=ami_name, os_tag="Windows Server 2012 R2")
    assert (identity.product, identity.source) == (product, "ami")


@pytest.mark.parametrize(
    ("os_tag", "installation_type", "product"),
    [
        ("Windows Server 2022", None, "Windows Server 2022"),
        ("windows server 2019  (server core installation)", None, "Windows Server 2019" + CORE),
        ("Windows Server 2022", "Server Core", "Windows Server 2022" + CORE),
        ("Windows Server 2022, 23H2 Edition (Server Core installation)", None, KNOWN_PRODUCTS[6]),
    ],
)
def test_an_os_tag_is_the_last_fallback_and_must_be_an_exact_product_name(
    os_tag: str, installation_type: str | None, product: str
) -> None:
    identity = identify_product(
        "", "", installation_type=installation_type, ami_name="my-golden-image-7", os_tag=os_tag
    )
    assert (identity.product, identity.source) == (product, "tag")


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"platform_name": "Microsoft Windows 10 Enterprise", "platform_version": "10.0.19045"}, "19045"),
        ({"platform_name": "Microsoft Windows 11 Pro", "platform_version": "10.0.22631"}, "22631"),
        (
            {"platform_name": "Microsoft Windows Server 2012 R2 Datacenter", "platform_version": "6.3.9600"},
            "6.3.9600",
        ),
        ({"platform_name": "Microsoft Windows 11 Enterprise", "platform_version": "10.0.26100"}, "client edition"),
        (
            {"platform_name": "Microsoft Windows 10 Enterprise LTSC 2019", "platform_version": "10.0.17763"},
            "client edition",
        ),
        ({"platform_name": "", "platform_version": "10.0.17763"}, "shared by Windows Server 2019 and a Windows client"),
        (
            {"platform_name": "Microsoft Windows Server 2019 Datacenter", "platform_version": "10.0.20348"},
            "says 2019",
        ),
        (
            {"platform_name": "", "platform_version": "10.0.14393", "installation_type": "Client"},
            "installation type 'Client'",
        ),
        ({"platform_name": "", "platform_version": "10.0.14393", "installation_type": "Nano Server"}, "Nano Server"),
        (
            {
                "platform_name": "",
                "platform_version": "",
                "ami_name": "Windows_Server-2016-English-Nano-Base-2017.10.13",
            },
            "Nano",
        ),
        (
            {"platform_name": "", "platform_version": "", "ami_name": "Windows_Server-2012-R2_RTM-English-64Bit-Base"},
            "2012",
        ),
        ({"platform_name": "Microsoft Windows 10 Pro", "platform_version": "garbage"}, "client edition"),
        ({"platform_name": "", "platform_version": "", "os_tag": "Win2022"}, "OS tag 'Win2022'"),
        ({"platform_name": "garbage", "platform_version": "garbage", "build": "garbage"}, "no usable build"),
        ({"platform_name": None, "platform_version": None}, "no usable build"),
    ],
)
def test_unknown_or_contradictory_servers_stay_unidentified_with_a_reason(
    arguments: dict[str, str], reason: str
) -> None:
    identity = identify_product(**arguments)
    assert (identity.product, identity.source, identity.identified) == (None, "unidentified", False)
    assert reason in identity.reason


def test_every_known_product_is_an_msrc_product_name() -> None:
    assert KNOWN_PRODUCTS == (
        "Windows Server 2016",
        "Windows Server 2016" + CORE,
        "Windows Server 2019",
        "Windows Server 2019" + CORE,
        "Windows Server 2022",
        "Windows Server 2022" + CORE,
        "Windows Server 2022, 23H2 Edition" + CORE,
        "Windows Server 2025",
        "Windows Server 2025" + CORE,
    )


@pytest.mark.parametrize("raw", ["i-0123abcd", "i-0123456789abcdef0", " mi-0123456789abcdef0 "])
def test_ec2_and_managed_instance_ids_are_accepted(raw: str) -> None:
    assert parse_instance_id(raw) == raw.strip()


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "i-",
        "i-0123abc",
        "i-0123456789ABCDEF0",
        "i-0123456789abcdef",
        "mi-0123abcd",
        "x-0123456789abcdef0",
        "i-0123456789abcdef0; whoami",
        "i-0123456789abcdeg0",
    ],
)
def test_malformed_instance_ids_are_rejected_naming_the_field_and_the_rule(raw: str) -> None:
    with pytest.raises(ValidationError) as error:
        parse_instance_id(raw, field="target")
    assert str(error.value).startswith("target: ") and "8 or 17 lowercase hex digits" in str(error.value)


def test_only_mi_ids_are_managed_instances() -> None:
    assert is_managed_instance_id("mi-0123456789abcdef0") and not is_managed_instance_id("i-0123456789abcdef0")

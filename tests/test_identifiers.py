from __future__ import annotations

from collections.abc import Callable

import pytest

from autopatch.domain.identifiers import Month, is_cve_id, parse_build, parse_cve, parse_kb, parse_month
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.errors import ValidationError


@pytest.mark.parametrize("raw", ["KB5034129", "kb5034129", "5034129", " KB5034129 "])
def test_kb_ids_are_canonicalised_with_the_kb_prefix(raw: str) -> None:
    assert parse_kb(raw) == "KB5034129"


@pytest.mark.parametrize("raw", ["KB12x", "KB12345", "KB123456789", "5034129; Remove-Item C:\\", ""])
def test_malformed_kb_ids_are_rejected_naming_the_rule(raw: str) -> None:
    with pytest.raises(ValidationError) as error:
        parse_kb(raw)
    assert "kb:" in str(error.value) and "6 or 7 digits" in str(error.value)


def test_junk_cve_ids_from_real_documents_are_not_cve_ids() -> None:
    assert is_cve_id("CVE-2024-20674") and is_cve_id("ADV990001")
    for junk in ("CVE-2022-2601-M", "CVE-2023-32002 - M", "CVE-2023-38039 mariner - do not use this one"):
        assert not is_cve_id(junk)
    assert parse_cve("cve-2024-20674") == "CVE-2024-20674"


def test_months_parse_in_both_our_form_and_microsofts() -> None:
    assert parse_month("2024-01") == Month(2024, 1) == parse_month("2024-Jan")
    assert Month(2024, 1).document_id == "2024-Jan"
    assert Month(2024, 12).next() == Month(2025, 1) and Month(2025, 1).previous() == Month(2024, 12)
    with pytest.raises(ValidationError, match="month: '2024-13'"):
        parse_month("2024-13")


def test_builds_compare_numerically_not_as_text() -> None:
    assert parse_build("10.0.20348.2227") > parse_build("10.0.20348.999")
    with pytest.raises(ValidationError, match="four dot-separated numbers"):
        parse_build("5.15.111.1-1")


# Full-width and Arabic-Indic digits are digits to Python's \d and int(): they were stored, sent to
# SSM and made it raise UnicodeEncodeError out of the engine.
@pytest.mark.parametrize(
    ("parse", "raw"),
    [
        (parse_kb, "KB５０３４１２９"),
        (parse_kb, "KB٥٠٣٤١٢٩"),
        (parse_kb, "\u212a\u0392503412"),  # Kelvin sign and Greek Beta look like "KB"
        (parse_cve, "CVE-２０２４-20674"),
        (parse_month, "２０２４-01"),
        (parse_build, "10.0.２０３４８.2227"),
        (parse_instance_id, "i-０１２３４５６７"),
    ],
)
def test_identifiers_are_ascii_only(parse: Callable[[str], object], raw: str) -> None:
    with pytest.raises(ValidationError):
        parse(raw)


def test_an_error_echoes_at_most_80_characters_of_the_value() -> None:
    with pytest.raises(ValidationError) as error:
        parse_kb("KB" + "1" * 10_000)
    echoed = str(error.value).split(" is invalid")[0].removeprefix("kb: ")
    assert len(echoed) <= 80 and echoed.endswith("…")

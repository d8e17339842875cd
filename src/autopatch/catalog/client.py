"""The live MSRC API adapter: the CVRF monthly index and documents, and Security Update Guide pages.

Every request goes through one retry loop because the API throttles (429 with ``Retry-After``)
and has bursts of 5xx during Patch Tuesday; a caller only ever sees AutoPatch errors:
``SourceUnavailableError`` when Microsoft cannot be reached or keeps failing, ``ValidationError``
for a month that does not exist and ``DocumentFormatError`` for a payload that is not MSRC data.

Bodies are streamed under the same caps as files (``sources.XML_SIZE_LIMIT``, ``JSON_SIZE_LIMIT``),
counted after the gzip transfer encoding is decoded: a body past its cap is refused, not retried.
A monthly document is spooled (in memory up to 16 MiB, on disk beyond) for the parser to stream.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import IO, Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from autopatch.catalog.cvrf_xml import MIB, echo
from autopatch.catalog.sources import JSON_SIZE_LIMIT, XML_SIZE_LIMIT, load_json, too_big
from autopatch.domain.identifiers import Month
from autopatch.errors import DocumentFormatError, SourceUnavailableError, ValidationError

MSRC_BASE_URL = "https://api.msrc.microsoft.com"
UPDATES_PATH = "/cvrf/v3.0/updates"
CVRF_PATH = "/cvrf/v3.0/cvrf/"
SUG_AFFECTED_PRODUCT_PATH = "/sug/v2.0/sugodata/v2.0/en-US/affectedProduct"

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 60.0  # a misbehaving proxy must not park the CLI for hours
# Index ids include odd ones ("2017-May-B", "2018-FEB"); anything else must not reach the URL path.
_DOCUMENT_ID = re.compile(r"[0-9]{4}-[A-Za-z]{3}(?:-[A-Za-z0-9]{1,8})?")
_SPOOL_IN_MEMORY = 16 * MIB
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UpdateEntry:
    """One row of ``/cvrf/v3.0/updates``: ``current_release_date`` moves when Microsoft revises a month."""

    document_id: str
    title: str
    initial_release_date: date | None
    current_release_date: date | None
    cvrf_url: str


def _validated_base_url(base_url: str) -> str:
    parts = urlsplit(base_url.strip()) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("msrc_base_url", base_url, "must be an http(s) URL, e.g. " + MSRC_BASE_URL)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _day(raw: object) -> date | None:
    try:
        return date.fromisoformat(str(raw)[:10]) if raw else None
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header; the HTTP-date form falls back to our own backoff."""
    try:
        return min(max(float(response.headers["Retry-After"]), 0.0), _MAX_RETRY_AFTER)
    except (KeyError, ValueError):
        return None


def _describe(exc: httpx.TransportError, timeout: float, service: str = "the MSRC API") -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.ProxyError):
        return f"no route to {service} (offline?): {exc or type(exc).__name__}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g}s"
    return f"connection failed ({type(exc).__name__}: {exc})"


class MsrcClient:
    """A synchronous client of ``api.msrc.microsoft.com`` (or a mirror, or a recording served locally).

    ``retries`` counts the attempts after the first one. ``transport`` and ``sleep`` are injected
    so that tests can replay responses and check the backoff without waiting.
    """

    def __init__(
        self,
        base_url: str = MSRC_BASE_URL,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValidationError("retries", retries, "must be 0 or more")
        self.base_url = _validated_base_url(base_url)
        self._timeout = timeout
        self._attempts = retries + 1
        self._backoff = backoff
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    def __enter__(self) -> MsrcClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def cvrf_url(self, document_id: str) -> str:
        if not isinstance(document_id, str) or not _DOCUMENT_ID.fullmatch(document_id):
            raise ValidationError("document_id", document_id, "an MSRC document id is YYYY-Mon, e.g. 2024-Jan")
        return f"{self.base_url}{CVRF_PATH}{document_id}"

    @property
    def sug_url(self) -> str:
        return self.base_url + SUG_AFFECTED_PRODUCT_PATH

    def list_updates(self) -> list[UpdateEntry]:
        """Every document the API publishes, with the dates that tell whether a month was revised."""
        url = self.base_url + UPDATES_PATH
        payload = self._get(url, {"Accept": "application/json"}, _json_body)
        rows = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise DocumentFormatError(f"{echo(url)}: not an OData list of updates (no 'value' array)")
        return [
            UpdateEntry(
                document_id=str(row["ID"]),
                title=str(row.get("DocumentTitle") or ""),
                initial_release_date=_day(row.get("InitialReleaseDate")),
                current_release_date=_day(row.get("CurrentReleaseDate")),
                cvrf_url=str(row.get("CvrfUrl") or ""),
            )
            for row in rows
            if isinstance(row, dict) and row.get("ID")
        ]

    def fetch_cvrf(self, document_id: str) -> IO[bytes]:
        """The CVRF XML of one document as a file at its start, for the caller to parse and close.

        A monthly one is 3 to 11 MB (gzip transfer is decoded); past ``XML_SIZE_LIMIT`` it is refused.
        """
        url = self.cvrf_url(document_id)

        def receive(response: httpx.Response) -> IO[bytes]:
            if response.status_code == 404:
                raise ValidationError("month", document_id, "no such MSRC monthly document")
            return _spooled_body(response, XML_SIZE_LIMIT, "CVRF XML")

        return self._get(url, {"Accept": "application/xml"}, receive, allow_missing=True)

    def iter_sug_records(self, since: Month, until: Month) -> Iterator[dict[str, Any]]:
        """``affectedProduct`` records released in [since, until], page after page.

        The filter is half-open on the first day of the month after ``until`` so that a record
        stamped at midnight UTC is never counted in two months.
        """
        if since > until:
            raise ValidationError("since", str(since), f"must not be after until ({until})")
        end = until.next()
        odata_filter = (
            f"releaseDate ge {since.year:04d}-{since.month:02d}-01T00:00:00Z"
            f" and releaseDate lt {end.year:04d}-{end.month:02d}-01T00:00:00Z"
        )
        url: str | None = self.sug_url
        params: dict[str, str] | None = {"$filter": odata_filter}
        seen: set[str] = set()
        while url is not None:
            page_url, page = self._get(url, {"Accept": "application/json"}, _url_and_json_body, params=params)
            records = page.get("value") if isinstance(page, dict) else None
            if not isinstance(records, list):
                raise DocumentFormatError(f"{echo(page_url)}: not an OData page (no 'value' array)")
            yield from records
            seen.add(page_url)
            next_link = page.get("@odata.nextLink")
            url, params = (self._onto_base(str(next_link), url), None) if next_link else (None, None)
            if url is not None and url in seen:
                raise DocumentFormatError(f"{echo(url)}: the SUG API paged back to a page already read")

    def fetch_bytes(self, url: str, limit: int, what: str, service: str) -> bytes:
        """GET any ``url`` (CISA's KEV feed too) with this client's timeout, retries and backoff: the body,
        refused past ``limit`` bytes. ``service`` names the source in the error when it cannot be reached."""
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("url", url, "must be an http(s) URL")

        def receive(response: httpx.Response) -> bytes:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise DocumentFormatError(f"{echo(response.request.url)}: more than {limit // MIB} MiB of {what}")
            return bytes(body)

        return self._get(url, {"Accept": "application/json"}, receive, service=service)

    def _onto_base(self, link: str, current: str) -> str:
        """Rewrite an absolute nextLink onto our base URL, so a mirror or a recording stays in use.

        Microsoft returns ``https://api.msrc.microsoft.com/...?$skip=N`` whatever host was asked.
        """
        target = urlsplit(urljoin(current, link))
        base = urlsplit(self.base_url)
        path = target.path
        if base.path and not path.startswith(base.path + "/"):
            path = base.path + path
        return urlunsplit((base.scheme, base.netloc, path, target.query, ""))

    def _get(
        self,
        url: str,
        headers: dict[str, str],
        receive: Callable[[httpx.Response], _T],
        params: dict[str, str] | None = None,
        allow_missing: bool = False,
        service: str = "the MSRC API",
    ) -> _T:
        """GET with retries; ``receive`` streams the body of the first answer worth keeping.

        A transport error while the body streams in is retried like one before the headers.
        """
        failure = "no attempt made"
        for attempt in range(self._attempts):
            delay = self._backoff * 2**attempt
            try:
                with self._http.stream("GET", url, headers=headers, params=params) as response:
                    if response.status_code not in _RETRY_STATUSES:
                        return receive(self._checked(response, allow_missing))
                    failure = f"HTTP {response.status_code} {response.reason_phrase}"
                    if (retry_after := _retry_after(response)) is not None:
                        delay = retry_after
            except httpx.TransportError as exc:
                failure = _describe(exc, self._timeout, service)
            except httpx.HTTPError as exc:  # decoding errors, redirect loops: retrying cannot help
                raise SourceUnavailableError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
            if attempt + 1 < self._attempts:
                self._sleep(delay)
        tries = f"{self._attempts} attempt" + ("s" if self._attempts > 1 else "")
        raise SourceUnavailableError(f"GET {url}: {failure} (gave up after {tries})")

    @staticmethod
    def _checked(response: httpx.Response, allow_missing: bool) -> httpx.Response:
        if response.is_success or (allow_missing and response.status_code == 404):
            return response
        raise SourceUnavailableError(
            f"GET {response.request.url}: HTTP {response.status_code} {response.reason_phrase}"
        )


def _json_body(response: httpx.Response) -> Any:
    """The decoded JSON of a body read whole, but never past ``JSON_SIZE_LIMIT``."""
    source = echo(response.request.url)
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > JSON_SIZE_LIMIT:
            raise too_big(source, JSON_SIZE_LIMIT, "JSON")
    return load_json(body, source)


def _url_and_json_body(response: httpx.Response) -> tuple[str, Any]:
    return str(response.request.url), _json_body(response)


def _spooled_body(response: httpx.Response, limit: int, what: str) -> IO[bytes]:
    """The body in a temporary file, rewound; refused once it passes ``limit`` bytes."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - returned open
    try:
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_big(echo(response.request.url), limit, what)
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool

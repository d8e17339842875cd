"""A real HTTP server on 127.0.0.1 that replays recorded MSRC API responses.

It serves the files in ../shared/data/msrc under the API's own paths, records every request, and
can be scripted to fail first (503 bursts, 429 with Retry-After) the way the live API does on a
Patch Tuesday. Tests talk to it over a socket, so the client's real transport code is exercised.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MSRC_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrc"
UPDATES_PATH = "/cvrf/v3.0/updates"
CVRF_PREFIX = "/cvrf/v3.0/cvrf/"
SUG_PATH = "/sug/v2.0/sugodata/v2.0/en-US/affectedProduct"
# The recorded first page says "@odata.nextLink": ".../affectedProduct?$skip=2".
SUG_FIRST_PAGE = "sug/affectedProduct_2025-Mar_cloud_nokb_page.json"
SUG_SECOND_PAGE = "sug/affectedProduct_2025-Mar_CVE-2025-24066_page.json"


@dataclass(frozen=True)
class Reply:
    """A scripted response, served instead of the recording."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class SeenRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class MsrcServer:
    """Replays the recordings; ``script`` queues failures for requests whose path starts with a prefix."""

    def __init__(self, data_dir: Path = MSRC_DATA) -> None:
        self.data_dir = data_dir
        self.requests: list[SeenRequest] = []
        self.revised: dict[str, str] = {}  # document id -> CurrentReleaseDate served by the index
        self._scripts: list[tuple[str, deque[Reply]]] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MsrcServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def script(self, path_prefix: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts.append((path_prefix, deque(replies)))

    def paths(self, prefix: str = "/") -> list[str]:
        return [request.path for request in self.requests if request.path.startswith(prefix)]

    def respond(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(SeenRequest(path, query, headers))
            for prefix, replies in self._scripts:
                if path.startswith(prefix) and replies:
                    return replies.popleft()
        return self._recorded(path, query, headers)

    def _recorded(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Reply:
        if path == UPDATES_PATH:
            index = self._load(self.data_dir / "cvrf-updates-index.json")
            for entry in index["value"]:
                entry["CurrentReleaseDate"] = self.revised.get(entry["ID"], entry["CurrentReleaseDate"])
            return _json_reply(index)
        if path.startswith(CVRF_PREFIX):
            return self._cvrf(path.removeprefix(CVRF_PREFIX), headers)
        if path == SUG_PATH:
            page = SUG_SECOND_PAGE if query.get("$skip") == ["2"] else SUG_FIRST_PAGE
            return _json_reply(self._load(self.data_dir / page))
        return _not_found(path)

    def _cvrf(self, document_id: str, headers: dict[str, str]) -> Reply:
        archive = self.data_dir / "cvrf-xml" / f"{document_id}.xml.gz"
        if "/" in document_id or not archive.is_file():
            return _not_found(document_id)
        # The files are gzip already: send them as a gzip transfer, the way the API does.
        if "gzip" in headers.get("accept-encoding", ""):
            content_headers = {"Content-Type": "application/xml", "Content-Encoding": "gzip"}
            return Reply(200, content_headers, archive.read_bytes())
        return Reply(200, {"Content-Type": "application/xml"}, gzip.decompress(archive.read_bytes()))

    @staticmethod
    def _load(path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))


def _json_reply(payload: Any) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(payload).encode("utf-8"))


def _not_found(what: str) -> Reply:
    body = json.dumps({"error": {"code": "404", "message": f"{what} not found"}}).encode("utf-8")
    return Reply(404, {"Content-Type": "application/json"}, body)


def _handler_for(server: MsrcServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = server.respond(url.path, parse_qs(url.query), headers)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request log lines on stderr."""

    return Handler

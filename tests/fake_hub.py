"""A fake Hugging Face hub on 127.0.0.1 (the real hub cannot be reached from tests).

It answers the calls huggingface_hub's ``snapshot_download`` makes, the way the hub does:
``GET /api/models/{repo}/revision/{rev}`` (model info with the commit sha),
``GET /api/models/{repo}/tree/{commit}`` (file list with sizes, and sha256 for LFS files), and
``HEAD``/``GET /{repo}/resolve/{commit}/{file}`` with ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``X-Linked-Size`` and HTTP range requests. It can cut a transfer part-way to test resuming.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".onnx", ".gguf")


@dataclass
class FakeRepo:
    """One model repository: its commit and files; ``tree_bytes`` overrides what the listing claims."""

    commit: str
    files: dict[str, bytes]
    tree_bytes: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: Path, commit: str = "a" * 40) -> FakeRepo:
        return cls(commit=commit, files={p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()})


@dataclass
class FakeHub:
    """The server's state: repos, requests seen, and transfers to cut (file -> bytes sent before closing)."""

    repos: dict[str, FakeRepo]
    cut_first_get: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _send_json(self, payload: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, code: str) -> None:
        self._send_json({"error": code}, status=404, headers={"X-Error-Code": code})

    def _repo(self, repo_id: str) -> FakeRepo | None:
        return self.hub.repos.get(repo_id)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:  # noqa: PLR0911 - one return per hub endpoint and error
        path = unquote(urlsplit(self.path).path)
        with self.hub.lock:
            self.hub.requests.append((self.command, path, self.headers.get("Range")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path):
            repo = self._repo(m[1])
            if repo is None:
                return self._not_found("RepoNotFound")
            if m[2] not in ("main", repo.commit):
                return self._not_found("RevisionNotFound")
            return self._send_json({"id": m[1], "sha": repo.commit, "siblings": [{"rfilename": f} for f in repo.files]})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
            repo = self._repo(m[1])
            if repo is None:
                return self._not_found("RepoNotFound")
            return self._send_json([self._tree_entry(repo, name) for name in repo.files])
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo = self._repo(m[1])
            if repo is None:
                return self._not_found("RepoNotFound")
            if m[3] not in repo.files:
                return self._send_json(
                    {"error": "EntryNotFound"}, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}
                )
            return self._send_file(repo, m[3])
        return self._not_found("RepoNotFound")

    def _tree_entry(self, repo: FakeRepo, name: str) -> dict[str, object]:
        data = repo.tree_bytes.get(name, repo.files[name])
        entry: dict[str, object] = {"type": "file", "oid": _git_blob_sha1(data), "size": len(data), "path": name}
        if name.endswith(_LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _send_file(self, repo: FakeRepo, name: str) -> None:
        data = repo.files[name]
        lfs = name.endswith(_LFS_SUFFIXES)
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
        start, status = 0, 200
        if (wanted := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-", wanted)):
            start, status = int(m[1]), 206
        body = data[start:]
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{etag}"')
        if lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with self.hub.lock:
            cut = self.hub.cut_first_get.pop(name, None) if status == 200 else None
        if cut is not None:
            # Promise the whole file, send part of it, drop the connection: a network failure mid-transfer.
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def serve(hub: FakeHub) -> ThreadingHTTPServer:
    """Start the fake hub on a free loopback port in a daemon thread; ``server_address`` tells the port."""
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

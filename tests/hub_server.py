"""A local Hugging Face Hub for tests: the HTTP endpoints the real huggingface_hub client uses, stdlib only.

Serves models and spaces on 127.0.0.1 (ephemeral port) with blobs under a tmp directory, so the client's own code
paths (create_repo, preupload, NDJSON commit, LFS batch + PUT, tree listing, HEAD/GET resolve, whoami) run
unmodified against HF_ENDPOINT. Knobs for tests: `tokens` {token: (user, role)}, `orgs` {org: {members}},
`upload_mode` ("regular": what Xet-era clients are told; "lfs": the LFS path, for clients with Xet disabled),
`fail_next(n, status)` to answer the next n requests with an error, and `requests` (a log without headers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

PREFIX = {"model": "", "space": "spaces/", "dataset": "datasets/"}
API_TYPES = {"models": "model", "spaces": "space", "datasets": "dataset"}


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class Repo:
    def __init__(self, rtype: str, repo_id: str, private: bool, sdk: str | None = None):
        self.type, self.id, self.private, self.sdk = rtype, repo_id, private, sdk
        self.commits: dict[str, dict] = {}  # sha -> {"files": {path: entry}, "parent": sha|None, "message": str}
        self.branches: dict[str, str] = {}

    def resolve(self, rev: str) -> str:
        rev = unquote(rev)
        if rev in self.branches:
            return self.branches[rev]
        if re.fullmatch(r"[0-9a-f]{40}", rev) and rev in self.commits:
            return rev
        raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


class HubServer:
    """In-process Hub; `url` is the endpoint. Start with `HubServer(root).start()`, stop with `.stop()`."""

    def __init__(self, root: Path, tokens: dict | None = None, orgs: dict | None = None):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens or {})
        self.orgs = {k: set(v) for k, v in (orgs or {}).items()}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.upload_mode = "regular"
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.RLock()
        self._faults: list[int] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    # control ------------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with `status` (an outage or a conflict), then behave again."""
        with self.lock:
            self._faults += [status] * n

    def add_repo(self, rtype: str, repo_id: str, files: dict[str, bytes], private: bool = False) -> Repo:
        """Create a repo owned by its namespace with one commit (e.g. someone else's existing model)."""
        repo = self.repos[(rtype, repo_id)] = Repo(rtype, repo_id, private)
        self._new_commit(repo, "main", {p: self._store(d) for p, d in files.items()}, "initial commit")
        return repo

    def files(self, rtype: str, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision, as {path: content}."""
        repo = self.repos[(rtype, repo_id)]
        entries = repo.commits[repo.resolve(rev)]["files"]
        return {p: (self.root / "blobs" / e["sha256"]).read_bytes() for p, e in entries.items()}

    # storage ------------------------------------------------------------------------------------------------
    def _store(self, data: bytes, lfs: bool = False) -> dict:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / sha256
        if not path.exists():
            path.write_bytes(data)
        return {"sha256": sha256, "sha1": git_sha1(data), "size": len(data), "lfs": lfs}

    def _new_commit(self, repo: Repo, branch: str, changes: dict, message: str, deleted=()) -> str:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent]["files"]) if parent else {}
        for p in deleted:
            files = {k: v for k, v in files.items() if k != p and not k.startswith(p.rstrip("/") + "/")}
        files.update(changes)
        sha = hashlib.sha1(f"{repo.id}{parent}{message}{time.time_ns()}{sorted(files)}".encode()).hexdigest()
        repo.commits[sha] = {"files": files, "parent": parent, "message": message}
        repo.branches[branch] = sha
        return sha

    # auth ---------------------------------------------------------------------------------------------------
    def user(self, headers) -> tuple[str, str] | None:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        found = self.tokens.get(auth[7:])
        if found is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        return found

    def can_write(self, who, namespace: str) -> bool:
        return who is not None and who[1] == "write" and (namespace == who[0] or who[0] in self.orgs.get(namespace, ()))

    def repo(self, rtype: str, repo_id: str, who, write: bool = False) -> Repo:
        repo = self.repos.get((rtype, repo_id))
        ns = repo_id.split("/")[0]
        if repo is None or (repo.private and not (who and (ns == who[0] or who[0] in self.orgs.get(ns, ())))):
            raise HttpError(404 if who else 401, "Repository not found", "RepoNotFound")
        if write and not self.can_write(who, ns):
            raise HttpError(403 if who else 401, f"You don't have the rights to write to {repo_id}")
        return repo


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # plumbing -----------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body=b"", headers: dict | None = None, head: bool = False):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        for k, v in {"Content-Type": ctype, "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _dispatch(self, method: str):
        hub, parts = self.hub, urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        body = self._body() if method in ("POST", "PUT") else b""
        status = 200
        try:
            with hub.lock:
                fault = hub._faults.pop(0) if hub._faults else None
            if fault:
                raise HttpError(fault, "injected fault")
            status, payload, headers = self._route(method, path, query, body)
            self._send(status, payload, headers, head=method == "HEAD")
        except HttpError as e:
            status = e.status
            headers = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {})}
            self._send(e.status, {"error": e.message, **e.extra}, headers, head=method == "HEAD")
        finally:
            with hub.lock:
                hub.requests.append((method, path, status))

    def _route(self, method, path, query, body):
        hub = self.hub
        who = hub.user(self.headers)
        if path == "/api/whoami-v2" and method == "GET":
            if who is None:
                raise HttpError(401, "Invalid username or password.")
            orgs = [{"name": o, "roleInOrg": "write"} for o, m in hub.orgs.items() if who[0] in m]
            return 200, {"type": "user", "name": who[0], "orgs": orgs,
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": who[1]}}}, {}
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(body))
        if path == "/api/repos/create" and method == "POST":
            return self._create(who, json.loads(body))
        if path.startswith("/lfs-upload/") and method == "PUT":
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise HttpError(400, "sha256 mismatch")
            hub._store(body, lfs=True)
            return 200, b"", {}
        m = re.fullmatch(r"/(spaces/|datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if m and method == "POST":
            return self._lfs_batch(who, {"spaces/": "space", "datasets/": "dataset"}.get(m[1], "model"), m[2],
                                   json.loads(body))
        m = re.fullmatch(r"/api/(models|spaces|datasets)/([^/]+/[^/]+)(?:/(.*))?", path)
        if m:
            return self._api(method, API_TYPES[m[1]], m[2], m[3] or "", who, query, body)
        m = re.fullmatch(r"/(spaces/|datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            return self._resolve({"spaces/": "space", "datasets/": "dataset"}.get(m[1], "model"), m[2], m[3], m[4],
                                 who)
        raise HttpError(404, f"no route for {method} {path}")

    # endpoints ----------------------------------------------------------------------------------------------
    def _validate_yaml(self, req):
        text = req.get("content", "")
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1])
                if not isinstance(meta, dict):
                    raise yaml.YAMLError("metadata must be a mapping")
            except (yaml.YAMLError, IndexError) as e:
                return 400, {"errors": [{"message": f"Invalid YAML: {e}"}]}, {}
        return 200, {"warnings": []}, {}

    def _create(self, who, req):
        hub = self.hub
        if who is None:
            raise HttpError(401, "You must be authenticated to create a repo")
        rtype = req.get("type") or "model"
        ns = req.get("organization") or who[0]
        repo_id = f"{ns}/{req['name']}"
        if not hub.can_write(who, ns):
            raise HttpError(403, f'You don\'t have the rights to create a {rtype} under the namespace "{ns}"')
        with hub.lock:
            if (rtype, repo_id) in hub.repos:
                raise HttpError(409, f"You already created this {rtype} repo",
                                url=f"{hub.url}/{PREFIX[rtype]}{repo_id}")
            private = req.get("visibility", "private" if req.get("private") else "public") == "private"
            repo = hub.repos[(rtype, repo_id)] = Repo(rtype, repo_id, private, req.get("sdk"))
            hub._new_commit(repo, "main", {".gitattributes": hub._store(b"*.safetensors filter=lfs\n")},
                            "initial commit")
        return 200, {"url": f"{hub.url}/{PREFIX[rtype]}{repo_id}", "name": repo_id, "id": repo_id}, {}

    def _api(self, method, rtype, repo_id, rest, who, query, body):
        hub = self.hub
        write = method == "POST"
        repo = hub.repo(rtype, repo_id, who, write=write)
        if method == "GET" and (rest == "" or rest.startswith("revision/")):
            sha = repo.resolve(rest[len("revision/"):] if rest else "main")
            files = repo.commits[sha]["files"]
            info = {"id": repo_id, "sha": sha, "private": repo.private, "author": repo_id.split("/")[0],
                    "siblings": [{"rfilename": p} for p in sorted(files)]}
            if rtype == "space":
                info["sdk"] = repo.sdk
            return 200, info, {}
        if method == "GET" and rest.startswith("tree/"):
            rev, _, sub = rest[5:].partition("/")
            files = repo.commits[repo.resolve(rev)]["files"]
            out, dirs = [], set()
            for p, e in sorted(files.items()):
                if sub and not p.startswith(sub.rstrip("/") + "/"):
                    continue
                for i in range(1, p.count("/") + 1):
                    dirs.add(p.rsplit("/", i)[0])
                entry = {"type": "file", "path": p, "size": e["size"], "oid": e["sha1"]}
                if e["lfs"]:
                    entry["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": 134}
                out.append(entry)
            out += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in sorted(dirs)]
            return 200, out, {}
        if write and rest.startswith("preupload/"):
            files = repo.commits[repo.resolve(rest[len("preupload/"):])]["files"]
            answer = []
            for f in json.loads(body)["files"]:
                lfs = hub.upload_mode == "lfs" and (f["size"] > 1024 or b"\0" in base64.b64decode(f["sample"]))
                old = files.get(f["path"])
                oid = None if old is None or old["lfs"] != lfs else (old["sha256"] if lfs else old["sha1"])
                answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                               "oid": oid})
            return 200, {"files": answer}, {}
        if write and rest.startswith("commit/"):
            return self._commit(repo, unquote(rest[len("commit/"):]), body)
        if write and rest.startswith("branch/"):
            branch = unquote(rest[len("branch/"):])
            if branch in repo.branches:
                raise HttpError(409, f"Reference already exists: {branch}")
            start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
            with hub.lock:
                repo.branches[branch] = repo.resolve(start)
            return 200, {}, {}
        raise HttpError(404, f"no route for {method} {rtype}s/{repo_id}/{rest}")

    def _commit(self, repo, rev, body):
        hub = self.hub
        if rev not in repo.branches:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        header, changes, deleted = {}, {}, []
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                changes[value["path"]] = hub._store(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                blob = hub.root / "blobs" / value["oid"]
                if not blob.exists():
                    raise HttpError(400, f"LFS object {value['oid']} was never uploaded")
                changes[value["path"]] = {**hub._store(blob.read_bytes()), "lfs": True}
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
        with hub.lock:
            sha = hub._new_commit(repo, rev, changes, header.get("summary", ""), deleted)
        return 200, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{PREFIX[repo.type]}{repo.id}/commit/"
                     f"{sha}", "pullRequestUrl": None}, {}

    def _lfs_batch(self, who, rtype, repo_id, req):
        hub = self.hub
        hub.repo(rtype, repo_id, who, write=True)
        objects = []
        for obj in req["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not (hub.root / "blobs" / obj["oid"]).exists():
                entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _resolve(self, rtype, repo_id, rev, filename, who):
        hub = self.hub
        repo = hub.repo(rtype, repo_id, who)
        sha = repo.resolve(rev)
        entry = repo.commits[sha]["files"].get(filename)
        if entry is None:
            raise HttpError(404, "Entry not found", "EntryNotFound")
        data = (hub.root / "blobs" / entry["sha256"]).read_bytes()
        etag = entry["sha256"] if entry["lfs"] else entry["sha1"]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if rng:
            start = int(rng[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return 206, data[start:], headers
        return 200, data, headers

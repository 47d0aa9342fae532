#!/usr/bin/env python3
"""A stand-in for Azure's token issuers, for tests on loopback.

Standard library, plus python3-cryptography for RSA (client assertions).
One process serves, on one or two ports (plain HTTP and optionally HTTPS),
with shared state:

  GET  /metadata/identity/oauth2/token   IMDS (needs "Metadata: true")
  GET  /msi/token                        App Service / Container Apps
                                         (needs "X-IDENTITY-HEADER: <secret>")
  POST /{tenant}/oauth2/v2.0/token       Entra ID, grant_type=client_credentials
                                         with client_secret or client_assertion
  GET  /control/config   POST /control/config   POST /control/fault
  GET  /control/stats    POST /control/reset
  POST /control/k8s_token                a Kubernetes service account token
  POST /control/k8s_revoke               refuse one from now on (by jti)

Client assertions are verified for real, as Entra does. An assertion whose
`iss` is the app's client id is a certificate credential: RS256, signed by
the key of a certificate registered on the app (`certificates`, PEM), found
by its `x5t#S256` (and `x5t`, when given, must match the same one); `aud`
the token endpoint URL the request came to; `iss` = `sub` = client id; a
`jti` never seen before; `nbf`/`exp` around now. Any other `iss` is a
federated credential (workload identity): a JWT the rig's own "Kubernetes"
issuer signed (RS256, key made at start), matching one of the app's
`federated_credentials` in issuer, subject and audience
(`api://AzureADTokenExchange`), not expired and not revoked.

Tokens are real HS256 JWTs signed with the key in --key-file (created if the
file does not exist). They carry `aud`, `exp`, `nbf`, `appid`, `oid`, `tid`
and `db_user` (the database role of the identity), padded with claims real
Entra tokens carry so they are 1-3 KB long like the real ones.

Responses copy the shape of Azure's, including its quirks: IMDS and App
Service give times as strings, Entra gives `expires_in` as a number, and App
Service (api-version 2019-08-01) sends no `expires_in` at all.

Run by hand:  python3 idp.py --port 8765 --key-file /tmp/idp.key
"""

import argparse
import base64
import collections
import copy
import hashlib
import hmac
import json
import os
import secrets
import select
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_PATH = "/msi/token"
ENTRA_SUFFIX = "/oauth2/v2.0/token"

IMDS_API_VERSIONS = {"2018-02-01", "2018-04-02", "2018-10-01", "2019-03-11",
                     "2019-06-01", "2019-08-01", "2019-11-01", "2020-06-01",
                     "2021-02-01", "2021-12-13"}
APP_SERVICE_API_VERSION = "2019-08-01"

ENDPOINTS = ("imds", "app_service", "entra")
FAULT_KINDS_SPECIAL = ("hang", "reset")
HANG_MAX_SECONDS = 600
RECENT_MAX = 200

# Audiences the rig's "tenant" knows; anything else is AADSTS500011 like in
# Azure. Tests can extend the list with POST /control/config {"resources": [...]}.
DEFAULT_RESOURCES = [
    "https://ossrdbms-aad.database.windows.net",
    "https://database.windows.net",
    "https://management.azure.com",
    "https://vault.azure.net",
]

DEFAULT_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"

# The rig's stand-in for an AKS cluster's service account token issuer.
K8S_ISSUER = "https://oidc.rig.test/tokenpool-rig/"
K8S_AUDIENCE = "api://AzureADTokenExchange"
K8S_SUBJECT = "system:serviceaccount:orders:orders-app"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 300        # seconds Entra tolerates on nbf/exp
DEFAULT_SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"


def default_identities():
    """The identities the rig knows unless a test configures others.

    Fixed ids so tests and docs can name them; db_user is the role the token
    logs into (the rig's PostgreSQL has a role for each of these)."""
    rg = f"/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/tokenpool-rig/providers"
    return {
        # The VM's own (system-assigned) identity: used when no selector is given.
        "system": {
            "name": "system",
            "client_id": "5e8a3b1c-7f2d-4c9e-8a6b-1d3f5e7a9c01",
            "object_id": "9a4c2e6f-1b3d-4f5a-8c7e-2d4f6a8c0e11",
            "resource_id": f"{rg}/Microsoft.Compute/virtualMachines/tokenpool-vm",
            "db_user": "orders_app",
        },
        "user_assigned": [
            {
                "name": "reports",
                "client_id": "0c2e4a6b-8d1f-4b3a-9c5e-7f1a3b5d7e21",
                "object_id": "3e5a7c9b-2d4f-4a6c-8e1b-5d7f9a1c3e31",
                "resource_id": f"{rg}/Microsoft.ManagedIdentity/userAssignedIdentities/reports-identity",
                "db_user": "reports_app",
            },
            {
                "name": "billing",
                "client_id": "4f6a8c1e-3b5d-4e7f-9a2c-6e8b1d3f5a41",
                "object_id": "7b9d1f3a-5c7e-4b9a-8d2f-1a3c5e7b9d51",
                "resource_id": f"{rg}/Microsoft.ManagedIdentity/userAssignedIdentities/billing-identity",
                "db_user": "billing_app",
            },
        ],
        # App registrations (service principals) for the Entra token endpoint.
        "apps": [
            {
                "name": "batch",
                "client_id": "8d1f3b5a-7c9e-4d1b-a3f5-9c1e3a5d7f61",
                "object_id": "2a4c6e8d-9f1b-4c3e-b5a7-3e5c7a9d1f71",
                "client_secret": "rig~batch.Secret_0123456789abcdefABCDEF",
                "db_user": "batch_app",
            },
            # Certificate credential: rig.py registers the certificate it
            # makes at start (certificates: [PEM]).
            {
                "name": "etl",
                "client_id": "b3d5f7a9-1c3e-4a5b-8d7f-9b1d3f5a7c81",
                "object_id": "6c8e1a3b-5d7f-4b9c-a1e3-7f9b1d3e5a91",
                "certificates": [],
                "db_user": "etl_app",
            },
            # Workload identity: trusts the rig's Kubernetes issuer for one
            # service account.
            {
                "name": "aks",
                "client_id": "d5f7a9b1-3e5c-4b7d-9f1a-2c4e6a8b0da1",
                "object_id": "8e1a3c5d-7f9b-4d1c-b3e5-9a1c3e5f7b02",
                "federated_credentials": [
                    {"issuer": K8S_ISSUER, "subject": K8S_SUBJECT, "audience": K8S_AUDIENCE},
                ],
                "db_user": "aks_app",
            },
            # The principal the stub `az` is logged in as (a service
            # principal login, `az login --service-principal`).
            {
                "name": "devbox",
                "client_id": "f7a9b1c3-5e7d-4f9a-b1c3-4e6a8c0d2fb1",
                "object_id": "1a3c5e7f-9b1d-4e3f-a5c7-6b8d0f2a4c12",
                "client_secret": "rig~devbox.Secret_9876543210fedcbaFEDCBA",
                "db_user": "dev_app",
            },
        ],
    }


def default_config():
    return {
        "lifetime": 3600,        # seconds from issue to exp
        "time_offset": 0,        # shifts iat/nbf/exp (clock skew, not-yet-valid tokens)
        "tenant_id": DEFAULT_TENANT,
        "groups": 16,            # filler group ids; 16 gives tokens of ~2.2 KB
        "resources": list(DEFAULT_RESOURCES),
        "identities": default_identities(),
    }


# ---------------------------------------------------------------- JWT helpers

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_key(path):
    """The HMAC key is the file's text with surrounding whitespace stripped."""
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: key too short")
    return key


def key_id(key):
    return b64url(hashlib.sha256(key).digest()[:20])


def encode_jwt(claims, key, header=None):
    """Sign claims as a compact HS256 JWT."""
    hdr = {"typ": "JWT", "alg": "HS256", "kid": key_id(key)}
    if header:
        hdr.update(header)
    signing_input = (b64url(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def decode_jwt(token, key=None):
    """Return the claims; with a key, raise ValueError unless the signature is valid."""
    head, payload, sig = token.split(".")
    if key is not None:
        want = hmac.new(key, f"{head}.{payload}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(want, b64url_decode(sig)):
            raise ValueError("bad signature")
    return json.loads(b64url_decode(payload))


def _random_b64(nbytes):
    return b64url(secrets.token_bytes(nbytes))


# ---------------------------------------------------------------- state

class HttpError(Exception):
    """An error answer: status, JSON body, extra headers."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class IdpState:
    """Config, pending faults and counters, shared by all handler threads."""

    def __init__(self, key, header_secret):
        self.key = key
        self.header_secret = header_secret
        self.lock = threading.Lock()
        # What a reset returns to: the defaults plus the start-up --config.
        self.base_config = default_config()
        # The "Kubernetes" issuer's signing key, made fresh at every start.
        self.k8s_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.k8s_kid = b64url(hashlib.sha256(self.k8s_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()[:16])
        # Set to free every hanging request (on reset, fault clear, shutdown).
        self.release_hangs = threading.Event()
        self._reset_locked()

    def _reset_locked(self):
        self.config = copy.deepcopy(self.base_config)
        self.revoked = set()        # service account token jtis refused from now on
        self.seen_jti = set()       # certificate assertion jtis (replays are refused)
        self.faults = collections.deque()
        self.stats = {
            "requests": dict.fromkeys(ENDPOINTS, 0),   # token requests received
            "issued": dict.fromkeys(ENDPOINTS, 0),     # tokens handed out
            "errors": dict.fromkeys(ENDPOINTS, 0),     # refused (not by a fault)
            "faults": {},                              # kind -> times served
            "recent": [],                              # last requests, no secrets
        }
        # Wake current hangs, then arm the event again for future ones.
        self.release_hangs.set()
        self.release_hangs = threading.Event()

    def reset(self):
        with self.lock:
            self._reset_locked()

    # -- config

    def update_config(self, patch):
        if not isinstance(patch, dict):
            raise HttpError(400, {"error": "config must be a JSON object"})
        with self.lock:
            new = copy.deepcopy(self.config)
            for k, v in patch.items():
                if k not in new:
                    raise HttpError(400, {"error": f"unknown config key {k!r}"})
                new[k] = v
            _validate_config(new)
            self.config = new
            return copy.deepcopy(new)

    def set_base(self, patch):
        """Start-up config: applied now and restored by every reset."""
        cfg = self.update_config(patch)
        with self.lock:
            self.base_config = copy.deepcopy(cfg)
        return cfg

    def snapshot(self):
        with self.lock:
            return copy.deepcopy(self.config)

    # -- faults

    def add_fault(self, spec):
        if not isinstance(spec, dict):
            raise HttpError(400, {"error": "fault must be a JSON object"})
        kind = str(spec.get("kind", ""))
        if kind in ("none", "clear"):
            with self.lock:
                self.faults.clear()
                self.release_hangs.set()
                self.release_hangs = threading.Event()
            return {"faults": []}
        if kind not in FAULT_KINDS_SPECIAL and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise HttpError(400, {"error": "kind must be hang, reset, none or an HTTP status 400-599"})
        count = spec.get("count", 1)
        if not isinstance(count, int) or (count < 1 and count != -1):
            raise HttpError(400, {"error": "count must be a positive integer, or -1 for until cleared"})
        retry_after = spec.get("retry_after")
        if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
            raise HttpError(400, {"error": "retry_after must be a non-negative integer"})
        fault = {"kind": kind, "count": count, "retry_after": retry_after}
        with self.lock:
            self.faults.append(fault)
            return {"faults": list(map(dict, self.faults))}

    def take_fault(self):
        """Consume one unit of the oldest pending fault, or return None."""
        with self.lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            if fault["count"] > 0:
                fault["count"] -= 1
                if fault["count"] == 0:
                    self.faults.popleft()
            self.stats["faults"][fault["kind"]] = self.stats["faults"].get(fault["kind"], 0) + 1
            return dict(fault), self.release_hangs

    # -- Kubernetes service account tokens and assertion bookkeeping

    def k8s_token(self, spec):
        if not isinstance(spec, dict):
            raise HttpError(400, {"error": "k8s_token needs a JSON object"})
        now = int(time.time())
        lifetime = spec.get("lifetime", 3600)
        if not isinstance(lifetime, int):
            raise HttpError(400, {"error": "lifetime must be an integer"})
        jti = str(uuid.uuid4())
        claims = {
            "aud": spec.get("audience", [K8S_AUDIENCE]),
            "iss": spec.get("issuer", K8S_ISSUER),
            "sub": spec.get("subject", K8S_SUBJECT),
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": jti,
            "kubernetes.io": {"namespace": "orders", "serviceaccount": {"name": "orders-app",
                                                                        "uid": str(uuid.uuid4())}},
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": self.k8s_kid}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.k8s_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return {"token": signing_input + "." + b64url(sig), "jti": jti, "exp": claims["exp"]}

    def k8s_revoke(self, spec):
        jti = spec.get("jti") if isinstance(spec, dict) else None
        if not isinstance(jti, str) or not jti:
            raise HttpError(400, {"error": "k8s_revoke needs {\"jti\": ...}"})
        with self.lock:
            self.revoked.add(jti)
            return {"revoked": sorted(self.revoked)}

    def is_revoked(self, jti):
        with self.lock:
            return jti in self.revoked

    def first_use(self, jti):
        """True the first time a certificate assertion's jti is seen."""
        with self.lock:
            if jti in self.seen_jti:
                return False
            self.seen_jti.add(jti)
            return True

    # -- counters

    def count(self, bucket, endpoint):
        with self.lock:
            self.stats[bucket][endpoint] += 1

    def record(self, entry):
        with self.lock:
            recent = self.stats["recent"]
            recent.append(entry)
            del recent[:-RECENT_MAX]

    def stats_snapshot(self):
        with self.lock:
            out = copy.deepcopy(self.stats)
            out["pending_faults"] = list(map(dict, self.faults))
            return out

    # -- tokens

    def issue(self, identity, resource, config, kind):
        """Mint a token for an identity (managed identity or app) and resource."""
        now = int(time.time()) + int(config["time_offset"])
        lifetime = int(config["lifetime"])
        tid = config["tenant_id"]
        issuer = f"https://sts.windows.net/{tid}/"
        claims = {
            "aud": resource,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": _random_b64(66),
            "appid": identity["client_id"],
            "appidacr": "2" if kind != "app" else "1",
            "db_user": identity["db_user"],
            "groups": [str(uuid.UUID(bytes=hashlib.sha256(
                f"{identity['object_id']}/{i}".encode()).digest()[:16], version=4))
                for i in range(int(config["groups"]))],
            "idp": issuer,
            "idtyp": "app",
            "oid": identity["object_id"],
            "rh": "0." + _random_b64(60) + ".",
            "sub": identity["object_id"],
            "tid": tid,
            "uti": _random_b64(16),
            "ver": "1.0",
            "wids": ["0997a1d0-0d1d-4acb-b408-d5ca73121e90"],
            "xms_tcdt": 1289241547,
        }
        if identity.get("resource_id"):
            claims["xms_mirid"] = identity["resource_id"]
        token = encode_jwt(claims, self.key)
        return token, claims


def _validate_config(cfg):
    def bad(msg):
        raise HttpError(400, {"error": msg})

    if not isinstance(cfg["lifetime"], int) or cfg["lifetime"] < 1:
        bad("lifetime must be a positive integer (seconds)")
    if not isinstance(cfg["time_offset"], int):
        bad("time_offset must be an integer (seconds)")
    if not isinstance(cfg["groups"], int) or not 0 <= cfg["groups"] <= 1000:
        bad("groups must be an integer 0..1000")
    if not isinstance(cfg["tenant_id"], str) or not cfg["tenant_id"]:
        bad("tenant_id must be a string")
    if not isinstance(cfg["resources"], list) or not all(isinstance(r, str) for r in cfg["resources"]):
        bad("resources must be a list of strings")
    ids = cfg["identities"]
    if not isinstance(ids, dict):
        bad("identities must be an object with system, user_assigned, apps")
    ids.setdefault("system", None)
    ids.setdefault("user_assigned", [])
    ids.setdefault("apps", [])
    need = ("client_id", "object_id", "db_user")
    entries = ([ids["system"]] if ids["system"] is not None else []) + ids["user_assigned"]
    for ident in entries:
        if not isinstance(ident, dict) or not all(isinstance(ident.get(k), str) for k in need):
            bad(f"each managed identity needs string {', '.join(need)}")
    for app in ids["apps"]:
        if not isinstance(app, dict) or not all(isinstance(app.get(k), str) for k in need):
            bad("each app needs string client_id, object_id, db_user")
        if "client_secret" in app and not isinstance(app["client_secret"], str):
            bad("an app's client_secret must be a string")
        if not isinstance(app.get("certificates", []), list) or \
                not all(isinstance(c, str) for c in app.get("certificates", [])):
            bad("an app's certificates must be a list of PEM strings")
        feds = app.get("federated_credentials", [])
        if not isinstance(feds, list) or not all(
                isinstance(f, dict) and isinstance(f.get("issuer"), str) and isinstance(f.get("subject"), str)
                for f in feds):
            bad("an app's federated_credentials must be a list of {issuer, subject, audience}")


def _normalize_resource(resource, known):
    """Match a requested resource against the known audiences the way Entra
    does (case-insensitive, trailing slash optional). Returns the audience to
    put in the token: as requested, minus any "/.default", so a client asking
    for "https://x/" gets aud "https://x/" as in Azure's v1 tokens."""
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    bare = resource.rstrip("/").lower()
    for k in known:
        if k.rstrip("/").lower() == bare:
            return resource
    return None


def _aadsts(status, error, code, description):
    """An Entra-style error body."""
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    return HttpError(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\n"
                             f"Correlation ID: {corr}\r\nTimestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    })


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, like the real endpoints
    server_version = "tokenpool-rig-idp"
    sys_version = ""

    @property
    def state(self):
        return self.server.state

    # -- plumbing

    def setup(self):
        super().setup()
        # TLS listener: the handshake runs here, in the handler's own thread,
        # so a slow or broken client cannot stall accept() for everyone.
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(10)
            self.connection.do_handshake()
            self.connection.settimeout(None)

    def log_message(self, fmt, *args):
        # Query strings carry no secrets here; bodies (client_secret) are never logged.
        sys.stderr.write("%s idp %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def _send_json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store, no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise HttpError(411, {"error": "chunked bodies are not supported by the rig"})
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise HttpError(400, {"error": "bad Content-Length"})
        if n < 0 or n > 1 << 20:
            raise HttpError(413, {"error": "body too large"})
        return self.rfile.read(n)

    def _query(self):
        """Query parameters as a dict; a repeated parameter is a 400."""
        parts = urlsplit(self.path)
        raw = parse_qs(parts.query, keep_blank_values=True)
        for k, v in raw.items():
            if len(v) > 1:
                raise HttpError(400, {"error": "invalid_request",
                                      "error_description": f"Parameter '{k}' given more than once"})
        return parts.path, {k: v[0] for k, v in raw.items()}

    # -- dispatch

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        path = urlsplit(self.path).path
        if path.startswith("/control/"):
            return self._control(method, path)
        endpoint = None
        if path == IMDS_PATH:
            endpoint = "imds"
        elif path == APP_SERVICE_PATH:
            endpoint = "app_service"
        elif path.endswith(ENTRA_SUFFIX) and path.count("/") == 4:
            endpoint = "entra"
        if endpoint is None:
            return self._send_json(404, {"error": "not_found", "error_description": f"no endpoint {path}"})
        self._token_request(method, endpoint)

    def _token_request(self, method, endpoint):
        st = self.state
        st.count("requests", endpoint)
        entry = {"t": round(time.time(), 3), "endpoint": endpoint, "method": method,
                 "path": urlsplit(self.path).path}
        if endpoint != "entra":
            # Query strings of IMDS/App Service carry no secrets.
            entry["query"] = urlsplit(self.path).query
        taken = st.take_fault()
        if taken is not None:
            fault, release = taken
            entry["fault"] = fault["kind"]
            st.record(entry)
            return self._serve_fault(fault, release)
        config = st.snapshot()
        try:
            if endpoint == "imds":
                body = self._imds(method, config, entry)
            elif endpoint == "app_service":
                body = self._app_service(method, config, entry)
            else:
                body = self._entra(method, config, entry)
        except HttpError as e:
            st.count("errors", endpoint)
            entry["status"] = e.status
            entry["error"] = e.body.get("error_description") or e.body.get("error")
            st.record(entry)
            return self._send_json(e.status, e.body, e.headers)
        st.count("issued", endpoint)
        entry["status"] = 200
        st.record(entry)
        self._send_json(200, body)

    # -- faults

    def _serve_fault(self, fault, release):
        kind = fault["kind"]
        if kind == "reset":
            self._reset_connection()
            return
        if kind == "hang":
            self._hang(release)
            return
        status = int(kind)
        headers = {}
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(fault["retry_after"])
        self._send_json(status, {"error": "rig_fault",
                                 "error_description": f"fault injected by the test rig ({status})"},
                        headers)

    def _reset_connection(self):
        """Abort the TCP connection: SO_LINGER 0 makes close() send an RST."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # detach() takes the descriptor away from the socket object, so the
        # http.server cleanup that follows cannot send a FIN (shutdown) first.
        fd = sock.detach()
        try:
            os.close(fd)
        except OSError:
            pass

    def _hang(self, release):
        """Accept the request and never answer, until the client goes away,
        the rig releases hangs, or HANG_MAX_SECONDS pass. Only this handler
        thread waits; the server goes on serving others."""
        self.close_connection = True
        sock = self.connection
        deadline = time.monotonic() + HANG_MAX_SECONDS
        while time.monotonic() < deadline and not release.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    # EOF means the client gave up; anything else is discarded.
                    if not sock.recv(65536):
                        return
            except (OSError, ValueError):
                return

    # -- IMDS

    def _imds(self, method, config, entry):
        if method != "GET":
            raise HttpError(405, {"error": "invalid_request", "error_description": "Method not allowed"})
        if self.headers.get("Metadata", "").lower() != "true":
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Required metadata header not specified"})
        if self.headers.get("X-Forwarded-For") is not None:
            # IMDS refuses requests that look proxied.
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Request contains X-Forwarded-For header"})
        _, q = self._query()
        if "api-version" not in q:
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Required query variable 'api-version' is missing"})
        if q["api-version"] not in IMDS_API_VERSIONS:
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Invalid or missing api-version"})
        identity = self._select_managed_identity(
            config, q, {"client_id": "client_id", "object_id": "object_id", "msi_res_id": "resource_id"})
        aud = self._resource(config, q)
        token, claims = self.state.issue(identity, aud, config, "msi")
        entry["client_id"] = identity["client_id"]
        entry["resource"] = aud
        now = int(time.time())
        return {
            "access_token": token,
            "refresh_token": "",
            "expires_in": str(max(claims["exp"] - now, 0)),
            "expires_on": str(claims["exp"]),
            "ext_expires_in": str(max(claims["exp"] - now, 0)),
            "not_before": str(claims["nbf"]),
            "resource": aud,
            "token_type": "Bearer",
            "client_id": identity["client_id"],
        }

    # -- App Service / Container Apps

    def _app_service(self, method, config, entry):
        if method != "GET":
            raise HttpError(405, {"error": "invalid_request", "error_description": "Method not allowed"})
        got = self.headers.get("X-IDENTITY-HEADER")
        if got is None or not hmac.compare_digest(got.encode(), self.state.header_secret.encode()):
            raise HttpError(401, {"error": "unauthorized",
                                  "error_description": "X-IDENTITY-HEADER missing or wrong"})
        _, q = self._query()
        if q.get("api-version") != APP_SERVICE_API_VERSION:
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": f"api-version must be {APP_SERVICE_API_VERSION}"})
        identity = self._select_managed_identity(
            config, q, {"client_id": "client_id", "principal_id": "object_id",
                        "object_id": "object_id", "mi_res_id": "resource_id"})
        aud = self._resource(config, q)
        token, claims = self.state.issue(identity, aud, config, "msi")
        entry["client_id"] = identity["client_id"]
        entry["resource"] = aud
        # The documented 2019-08-01 shape: no expires_in.
        return {
            "access_token": token,
            "expires_on": str(claims["exp"]),
            "resource": aud,
            "token_type": "Bearer",
            "client_id": identity["client_id"],
        }

    def _select_managed_identity(self, config, q, selectors):
        """Pick the identity named by at most one selector parameter; none
        selects the system-assigned identity as in Azure."""
        ids = config["identities"]
        given = [(p, field) for p, field in selectors.items() if p in q]
        if len(given) > 1:
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Only one of the identity selectors may be given"})
        if not given:
            if ids.get("system") is not None:
                return ids["system"]
            if len(ids["user_assigned"]) == 1:
                return ids["user_assigned"][0]
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Multiple user assigned identities exist, please "
                                                       "specify the clientId / resourceId of the identity "
                                                       "in the token request"
                                  if ids["user_assigned"] else "Identity not found"})
        param, field = given[0]
        want = q[param].lower()
        candidates = ([ids["system"]] if ids.get("system") else []) + ids["user_assigned"]
        for ident in candidates:
            if str(ident.get(field, "")).lower() == want and want:
                return ident
        raise HttpError(400, {"error": "invalid_request", "error_description": "Identity not found"})

    def _resource(self, config, q):
        res = q.get("resource")
        if not res:
            raise HttpError(400, {"error": "invalid_request",
                                  "error_description": "Required query variable 'resource' is missing"})
        aud = _normalize_resource(res, config["resources"])
        if aud is None:
            raise HttpError(400, {"error": "invalid_resource",
                                  "error_description": f"AADSTS500011: The resource principal named {res} "
                                                       f"was not found in the tenant."})
        return aud

    # -- Entra ID token endpoint

    def _entra(self, method, config, entry):
        if method != "POST":
            raise _aadsts(405, "invalid_request", 900561,
                          "The endpoint only accepts POST requests.")
        tenant = urlsplit(self.path).path.split("/")[1]
        body = self._read_body()
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise _aadsts(400, "invalid_request", 900144,
                          "The request body must contain the following parameter: 'grant_type'.")
        try:
            raw = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise _aadsts(400, "invalid_request", 900144, "The request body is not valid UTF-8.")
        form = {k: v[0] for k, v in raw.items()}
        if tenant.lower() != config["tenant_id"].lower():
            raise _aadsts(400, "invalid_request", 90002,
                          f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
        grant = form.get("grant_type")
        if not grant:
            raise _aadsts(400, "invalid_request", 900144,
                          "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            raise _aadsts(400, "unsupported_grant_type", 70003,
                          f"The app requested an unsupported grant type '{grant}'.")
        client_id = form.get("client_id", "")
        entry["client_id"] = client_id
        if not client_id:
            raise _aadsts(400, "invalid_request", 900144,
                          "The request body must contain the following parameter: 'client_id'.")
        app = next((a for a in config["identities"]["apps"]
                    if a["client_id"].lower() == client_id.lower()), None)
        if app is None:
            raise _aadsts(400, "unauthorized_client", 700016,
                          f"Application with identifier '{client_id}' was not found in the directory.")
        scope = form.get("scope", "")
        if not scope:
            raise _aadsts(400, "invalid_request", 900144,
                          "The request body must contain the following parameter: 'scope'.")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            raise _aadsts(400, "invalid_scope", 1002012,
                          f"The provided value for scope {scope} is not valid. Client credential flows "
                          f"must have a scope value with /.default suffixed to the resource identifier.")
        aud = _normalize_resource(scope, config["resources"])
        if aud is None:
            raise _aadsts(400, "invalid_resource", 500011,
                          f"The resource principal named {scope[:-len('/.default')]} was not found "
                          f"in the tenant.")
        entry["resource"] = aud
        self._verify_client_credential(app, form, entry)
        token, claims = self.state.issue(app, aud, config, "app")
        lifetime = claims["exp"] - int(time.time())
        return {"token_type": "Bearer", "expires_in": lifetime,
                "ext_expires_in": lifetime, "access_token": token}

    def _verify_client_credential(self, app, form, entry):
        """Check the credential the app presented. One verifier per credential
        kind; client assertions (certificate, workload identity) slot in here."""
        has_secret = "client_secret" in form
        has_assertion = "client_assertion" in form
        if has_secret and has_assertion:
            raise _aadsts(401, "invalid_client", 7000218,
                          "Only one of 'client_assertion' or 'client_secret' may be given.")
        if has_secret:
            entry["credential"] = "client_secret"
            return self._verify_client_secret(app, form["client_secret"])
        if has_assertion:
            return self._verify_client_assertion(app, form, entry)
        raise _aadsts(401, "invalid_client", 7000218,
                      "The request body must contain the following parameter: "
                      "'client_assertion' or 'client_secret'.")

    def _verify_client_secret(self, app, secret):
        if not app.get("client_secret") or \
                not hmac.compare_digest(secret.encode(), app["client_secret"].encode()):
            raise _aadsts(401, "invalid_client", 7000215,
                          "Invalid client secret provided. Ensure the secret being sent in the "
                          "request is the client secret value, not the client secret ID, for a "
                          f"secret added to app '{app['client_id']}'.")

    def _verify_client_assertion(self, app, form, entry):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _aadsts(400, "invalid_request", 50027,
                          f"client_assertion_type must be {ASSERTION_TYPE}.")
        try:
            head_b64, body_b64, sig_b64 = form["client_assertion"].split(".")
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(body_b64))
            sig = b64url_decode(sig_b64)
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError("not objects")
        except (ValueError, TypeError):
            raise _aadsts(400, "invalid_request", 50027,
                          "Invalid JWT token. The token is malformed.")
        entry["assertion_jti"] = claims.get("jti")
        entry["assertion_sub"] = claims.get("sub")
        if header.get("alg") != "RS256":
            raise _aadsts(401, "invalid_client", 700027,
                          f"Client assertion failed signature validation: alg "
                          f"{header.get('alg')!r} is not RS256.")
        signing_input = f"{head_b64}.{body_b64}".encode("ascii")
        # Entra tells the two kinds apart by the issuer: the app itself
        # (certificate credential) or someone it federates with.
        if claims.get("iss") == app["client_id"]:
            entry["credential"] = "certificate"
            self._verify_certificate_assertion(app, header, claims, signing_input, sig)
        else:
            entry["credential"] = "federated"
            self._verify_federated_assertion(app, header, claims, signing_input, sig)

    @staticmethod
    def _check_times(claims, what):
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, (int, float)) or (nbf is not None and not isinstance(nbf, (int, float))):
            raise _aadsts(400, "invalid_request", 50027, f"Invalid JWT token: {what} has no numeric exp.")
        if exp <= now - CLOCK_SKEW or (nbf is not None and nbf > now + CLOCK_SKEW):
            raise _aadsts(401, "invalid_client", 700024,
                          f"Client assertion is not within its valid time range ({what}).")

    def _token_endpoint_url(self):
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        return f"{scheme}://{self.headers.get('Host', '')}{urlsplit(self.path).path}"

    def _verify_certificate_assertion(self, app, header, claims, signing_input, sig):
        cid = app["client_id"]
        if claims.get("sub") != cid:
            raise _aadsts(401, "invalid_client", 700021,
                          "Client assertion application identifier doesn't match 'client_id' parameter.")
        want_aud = self._token_endpoint_url()
        aud = claims.get("aud")
        if aud != want_aud:
            raise _aadsts(401, "invalid_client", 700022,
                          f"The audience claim value is invalid '{aud}'. The audience must be "
                          f"'{want_aud}'.")
        self._check_times(claims, "certificate assertion")
        cert = self._registered_cert(app, header)
        try:
            cert.public_key().verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, TypeError, ValueError):
            raise _aadsts(401, "invalid_client", 700027,
                          "Client assertion failed signature validation.")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise _aadsts(400, "invalid_request", 50027, "Invalid JWT token: no jti.")
        if not self.state.first_use(jti):
            raise _aadsts(401, "invalid_client", 700027,
                          f"Client assertion with jti '{jti}' was used before (replay).")

    def _registered_cert(self, app, header):
        """The app's certificate the header names (x5t#S256, and x5t if given)."""
        s256, s1 = header.get("x5t#S256"), header.get("x5t")
        if not s256 and not s1:
            raise _aadsts(401, "invalid_client", 700027,
                          "Client assertion contains no x5t#S256 or x5t header.")
        for pem in app.get("certificates", []):
            cert = x509.load_pem_x509_certificate(pem.encode())
            if s256 and s256 != b64url(cert.fingerprint(hashes.SHA256())):
                continue
            if s1 and s1 != b64url(cert.fingerprint(hashes.SHA1())):
                continue
            return cert
        raise _aadsts(401, "invalid_client", 700027,
                      f"The certificate with identifier used to sign the client assertion is not "
                      f"registered on application. [Reason - The key was not found., Thumbprint of "
                      f"key used by client: '{s256 or s1}', app '{app['client_id']}']")

    def _verify_federated_assertion(self, app, header, claims, signing_input, sig):
        iss, sub, aud = claims.get("iss"), claims.get("sub"), claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        match = [f for f in app.get("federated_credentials", [])
                 if f["issuer"] == iss and f["subject"] == sub and f.get("audience", K8S_AUDIENCE) in auds]
        if not match:
            raise _aadsts(400, "invalid_request", 70021,
                          f"No matching federated identity record found for presented assertion. "
                          f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: "
                          f"'{','.join(map(str, auds))}'.")
        if iss != K8S_ISSUER or header.get("kid") != self.state.k8s_kid:
            raise _aadsts(401, "invalid_client", 700211,
                          f"No matching signing key found for the assertion issuer '{iss}'.")
        try:
            self.state.k8s_key.public_key().verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, TypeError, ValueError):
            raise _aadsts(401, "invalid_client", 700027,
                          "Client assertion failed signature validation.")
        self._check_times(claims, "federated token")
        if self.state.is_revoked(claims.get("jti")):
            raise _aadsts(401, "invalid_client", 700024,
                          "Client assertion is not within its valid time range (revoked by the test).")

    # -- control API

    def _control(self, method, path):
        st = self.state
        try:
            if method == "GET" and path == "/control/stats":
                return self._send_json(200, st.stats_snapshot())
            if method == "GET" and path == "/control/config":
                return self._send_json(200, st.snapshot())
            if method == "POST":
                raw = self._read_body()
                try:
                    arg = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    raise HttpError(400, {"error": "body is not JSON"})
                if path == "/control/config":
                    return self._send_json(200, st.update_config(arg))
                if path == "/control/fault":
                    return self._send_json(200, st.add_fault(arg))
                if path == "/control/reset":
                    st.reset()
                    return self._send_json(200, {"ok": True})
                if path == "/control/k8s_token":
                    return self._send_json(200, st.k8s_token(arg))
                if path == "/control/k8s_revoke":
                    return self._send_json(200, st.k8s_revoke(arg))
            raise HttpError(404, {"error": f"no control endpoint {method} {path}"})
        except HttpError as e:
            self._send_json(e.status, e.body, e.headers)


class IdpServer(ThreadingHTTPServer):
    daemon_threads = True          # hung handlers must not block exit
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, state, tls_context=None):
        super().__init__(addr, Handler)
        self.state = state
        self.tls_context = tls_context

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls_context is not None:
            # Handshake later, in the handler thread (see Handler.setup).
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # Clients that hang up mid-request are normal in fault tests.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


def _ensure_key(path):
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return read_key(path)


def _watch_parent(original_ppid):
    """Exit when the process that started us is gone, so a killed test run
    leaves no IdP behind."""
    while True:
        time.sleep(0.5)
        if os.getppid() != original_ppid:
            os._exit(0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--https-port", type=int, default=None,
                    help="also serve HTTPS on this port (0 = free port); needs --tls-cert/--tls-key")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--key-file", required=True, help="HMAC key for tokens (created if missing)")
    ap.add_argument("--header-secret", default=None,
                    help="App Service X-IDENTITY-HEADER value (random if not given)")
    ap.add_argument("--config", default=None, help="JSON file with initial config overrides")
    ap.add_argument("--ready-file", default=None,
                    help="written (atomically) with the bound ports once serving")
    ap.add_argument("--exit-with-parent", action="store_true")
    args = ap.parse_args(argv)

    key = _ensure_key(args.key_file)
    header_secret = args.header_secret or secrets.token_urlsafe(24)
    state = IdpState(key, header_secret)
    if args.config:
        with open(args.config) as f:
            state.set_base(json.load(f))

    servers = [IdpServer((args.host, args.port), state)]
    if args.https_port is not None:
        if not (args.tls_cert and args.tls_key):
            ap.error("--https-port needs --tls-cert and --tls-key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        servers.append(IdpServer((args.host, args.https_port), state, ctx))
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    info = {"pid": os.getpid(), "port": servers[0].server_address[1],
            "url": f"http://{args.host}:{servers[0].server_address[1]}",
            "header_secret": header_secret}
    if len(servers) > 1:
        info["https_port"] = servers[1].server_address[1]
        info["https_url"] = f"https://localhost:{servers[1].server_address[1]}"
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, args.ready_file)
    else:
        print(json.dumps(info), flush=True)
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

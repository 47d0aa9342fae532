"""Token checks of the rig's TDS server, the same ones tests/rig/pam_jwt.c
makes for PostgreSQL/MariaDB, in the same order:

  header alg HS256, signature (constant time, canonical base64url only),
  exp required, nbf if present, aud, user claim present.

A claim given twice is refused (duplicate JSON keys). Azure SQL accepts the
audience with or without the trailing slash ("https://database.windows.net"
and "https://database.windows.net/" are both what Entra issues for the
resource), so each configured audience is accepted in both spellings; any
other difference (scheme, case, host) is wrong_aud.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import time

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
MAX_TOKEN_CHARS = 65536


class TokenRejected(Exception):
    def __init__(self, reason, claims=None):
        super().__init__(reason)
        self.reason = reason
        self.claims = claims or {}


def _b64url_decode(s):
    """Strict base64url: alphabet only, no padding, canonical (the unused
    low bits of the last character must be zero)."""
    if not _B64URL.match(s) or len(s) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != s:
        raise ValueError("non-canonical base64url")
    return raw


def _no_dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise KeyError(k)
        d[k] = v
    return d


def audiences_with_slash_variants(auds):
    out = set()
    for a in auds:
        a = a.rstrip("/")
        out.add(a)
        out.add(a + "/")
    return out


def validate_token(token, key, audiences, user_claim="db_user", skew=1, now=None):
    """Return the claims, or raise TokenRejected(reason) with reasons named
    like pam_jwt's: token_too_long, malformed, bad_header, alg_not_hs256,
    bad_signature, bad_json, duplicate_claim, not_an_object, no_exp, expired,
    bad_nbf, not_yet_valid, no_aud, wrong_aud, no_user_claim."""
    if not token:
        raise TokenRejected("no_token")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected("token_too_long")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenRejected("malformed")
    head_s, body_s, sig_s = parts
    try:
        header = json.loads(_b64url_decode(head_s), object_pairs_hook=_no_dupes)
    except (ValueError, KeyError, binascii.Error, UnicodeDecodeError):
        raise TokenRejected("bad_header") from None
    if not isinstance(header, dict):
        raise TokenRejected("bad_header")
    if header.get("alg") != "HS256":
        raise TokenRejected("alg_not_hs256")
    try:
        sig = _b64url_decode(sig_s)
    except (ValueError, binascii.Error):
        raise TokenRejected("malformed") from None
    want = hmac.new(key, f"{head_s}.{body_s}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(want, sig):
        raise TokenRejected("bad_signature")
    try:
        claims = json.loads(_b64url_decode(body_s), object_pairs_hook=_no_dupes)
    except KeyError:
        raise TokenRejected("duplicate_claim") from None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise TokenRejected("bad_json") from None
    if not isinstance(claims, dict):
        raise TokenRejected("not_an_object")
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise TokenRejected("no_exp", claims)
    if now >= exp + skew:
        raise TokenRejected("expired", claims)
    if "nbf" in claims:
        nbf = claims["nbf"]
        if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
            raise TokenRejected("bad_nbf", claims)
        if now < nbf - skew:
            raise TokenRejected("not_yet_valid", claims)
    aud = claims.get("aud")
    if not isinstance(aud, str):
        raise TokenRejected("no_aud", claims)
    if aud not in audiences_with_slash_variants(audiences):
        raise TokenRejected("wrong_aud", claims)
    user = claims.get(user_claim)
    if not isinstance(user, str) or not user:
        raise TokenRejected("no_user_claim", claims)
    return claims


def read_key(path):
    """The rig's HMAC key: the key file's text, surrounding whitespace stripped
    (as idp.py and pam_jwt.c read it)."""
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: key too short")
    return key

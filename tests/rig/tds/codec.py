"""TDS wire codec for the rig's stand-in Azure SQL server.

Written from MS-TDS (and what real clients send), on purpose independent of
tokenpool's own C codec in protocols/tds: a bug shared by both sides would
pass every test. Pure functions: bytes in, values out (or the reverse); no
I/O. Every length read from the wire is bounds-checked; malformed input
raises ProtocolError.
"""

import struct

# ---------------------------------------------------------------- packets

HEADER_LEN = 8
HEADER = struct.Struct(">BBHHBB")   # type, status, length, spid, packet id, window

PT_SQLBATCH = 0x01
PT_PRE_TDS7_LOGIN = 0x02
PT_RPC = 0x03
PT_REPLY = 0x04
PT_ATTENTION = 0x06
PT_BULK = 0x07
PT_FEDAUTH_TOKEN = 0x08
PT_TRANSMGR = 0x0E
PT_LOGIN7 = 0x10
PT_SSPI = 0x11
PT_PRELOGIN = 0x12

ST_EOM = 0x01
ST_IGNORE = 0x02
ST_RESETCONNECTION = 0x08
ST_RESETCONNECTIONSKIPTRAN = 0x10

PACKET_TYPE_NAMES = {
    PT_SQLBATCH: "SQLBatch", PT_PRE_TDS7_LOGIN: "TDS5Login", PT_RPC: "RPC",
    PT_REPLY: "Reply", PT_ATTENTION: "Attention", PT_BULK: "BulkLoad",
    PT_FEDAUTH_TOKEN: "FedAuthToken", PT_TRANSMGR: "TransMgrReq",
    PT_LOGIN7: "Login7", PT_SSPI: "SSPI", PT_PRELOGIN: "PreLogin",
}


class ProtocolError(Exception):
    """The peer sent something that is not valid TDS: the server closes."""


def parse_header(b):
    """(type, status, length, spid, packet_id) of an 8-byte header."""
    if len(b) < HEADER_LEN:
        raise ProtocolError("short packet header")
    ptype, status, length, spid, pid, _window = HEADER.unpack_from(b)
    if length < HEADER_LEN:
        raise ProtocolError(f"packet length {length} < 8")
    return ptype, status, length, spid, pid


def packetize(ptype, payload, packet_size, spid=0, status=0):
    """Split a message into packets of at most packet_size bytes (header
    included); EOM on the last one, `status` bits on every one."""
    room = packet_size - HEADER_LEN
    if room <= 0:
        raise ValueError("packet size too small")
    out = bytearray()
    n = max(1, (len(payload) + room - 1) // room)
    for i in range(n):
        chunk = payload[i * room:(i + 1) * room]
        st = status | (ST_EOM if i == n - 1 else 0)
        out += HEADER.pack(ptype, st, HEADER_LEN + len(chunk), spid & 0xFFFF, (i + 1) & 0xFF, 0)
        out += chunk
    return bytes(out)


# ---------------------------------------------------------------- small readers

class Reader:
    """Bounds-checked little-endian reader over a bytes object."""

    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def left(self):
        return self.end - self.pos

    def take(self, n, what="field"):
        if n < 0 or self.pos + n > self.end:
            raise ProtocolError(f"truncated {what}: need {n} bytes, have {self.left()}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self, what="u8"):
        return self.take(1, what)[0]

    def u16(self, what="u16"):
        return struct.unpack("<H", self.take(2, what))[0]

    def u16be(self, what="u16"):
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what="u32"):
        return struct.unpack("<I", self.take(4, what))[0]

    def i32(self, what="i32"):
        return struct.unpack("<i", self.take(4, what))[0]

    def u64(self, what="u64"):
        return struct.unpack("<Q", self.take(8, what))[0]

    def utf16(self, nchars, what="string"):
        return decode_utf16(self.take(2 * nchars, what), what)

    def b_varchar(self, what="B_VARCHAR"):
        return self.utf16(self.u8(what), what)

    def us_varchar(self, what="US_VARCHAR"):
        return self.utf16(self.u16(what), what)


def decode_utf16(b, what="string"):
    if len(b) % 2:
        raise ProtocolError(f"odd byte count in UTF-16 {what}")
    try:
        return b.decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"bad UTF-16 in {what}: {e}") from None


# ---------------------------------------------------------------- PRELOGIN

PL_VERSION = 0x00
PL_ENCRYPTION = 0x01
PL_INSTOPT = 0x02
PL_THREADID = 0x03
PL_MARS = 0x04
PL_TRACEID = 0x05
PL_FEDAUTHREQUIRED = 0x06
PL_NONCEOPT = 0x07
PL_TERMINATOR = 0xFF

ENCRYPT_OFF = 0x00
ENCRYPT_ON = 0x01
ENCRYPT_NOT_SUP = 0x02
ENCRYPT_REQ = 0x03
ENCRYPT_STRICT = 0x04
ENCRYPT_NAMES = {0: "OFF", 1: "ON", 2: "NOT_SUP", 3: "REQ", 4: "STRICT"}


def parse_prelogin(payload):
    """{option token: bytes} of a PRELOGIN payload. Options must lie inside
    the payload, after the option table; a token may appear once."""
    opts = {}
    r = Reader(payload)
    table_end = None
    while True:
        tok = r.u8("PRELOGIN option token")
        if tok == PL_TERMINATOR:
            table_end = r.pos
            break
        off = r.u16be("PRELOGIN option offset")
        ln = r.u16be("PRELOGIN option length")
        if tok in opts:
            raise ProtocolError(f"PRELOGIN option {tok} twice")
        if off + ln > len(payload):
            raise ProtocolError(f"PRELOGIN option {tok} outside the payload")
        opts[tok] = (off, ln)
    out = {}
    for tok, (off, ln) in opts.items():
        if ln and off < table_end:
            raise ProtocolError(f"PRELOGIN option {tok} overlaps the option table")
        out[tok] = bytes(payload[off:off + ln])
    if PL_VERSION not in out or len(out[PL_VERSION]) < 6:
        raise ProtocolError("PRELOGIN without a VERSION option")
    if PL_ENCRYPTION in out and len(out[PL_ENCRYPTION]) != 1:
        raise ProtocolError("PRELOGIN ENCRYPTION option must be 1 byte")
    return out


def build_prelogin(options):
    """options: list of (token, bytes) in the order to send."""
    table = bytearray()
    data = bytearray()
    base = 5 * len(options) + 1
    for tok, val in options:
        table += struct.pack(">BHH", tok, base + len(data), len(val))
        data += val
    table.append(PL_TERMINATOR)
    return bytes(table + data)


# ---------------------------------------------------------------- LOGIN7

LOGIN7_FIXED = 94
TDS_VERSIONS = {          # LOGIN7 TDSVersion (read as LE u32) -> name
    0x70000000: "7.0", 0x71000000: "7.1", 0x71000001: "7.1.1",
    0x72090002: "7.2", 0x730A0003: "7.3A", 0x730B0003: "7.3B",
    0x74000004: "7.4", 0x08000000: "8.0",
}
FEATURE_SESSIONRECOVERY = 0x01
FEATURE_FEDAUTH = 0x02
FEATURE_COLUMNENCRYPTION = 0x04
FEATURE_GLOBALTRANSACTIONS = 0x05
FEATURE_AZURESQLSUPPORT = 0x08
FEATURE_DATACLASSIFICATION = 0x09
FEATURE_UTF8_SUPPORT = 0x0A
FEATURE_AZURESQLDNSCACHING = 0x0B
FEATURE_TERMINATOR = 0xFF

FEDAUTH_LIB_LIVEID = 0x00
FEDAUTH_LIB_SECURITYTOKEN = 0x01
FEDAUTH_LIB_ADAL = 0x02    # "MSAL" in newer specs: the server then sends FEDAUTHINFO


def deobfuscate_password(b):
    """LOGIN7 passwords: each byte had its nibbles swapped then XOR 0xA5."""
    out = bytearray(len(b))
    for i, c in enumerate(b):
        c ^= 0xA5
        out[i] = ((c << 4) | (c >> 4)) & 0xFF
    return bytes(out)


def obfuscate_password(b):
    out = bytearray(len(b))
    for i, c in enumerate(b):
        out[i] = ((((c << 4) | (c >> 4)) & 0xFF) ^ 0xA5)
    return bytes(out)


class Login7:
    """Fields of a LOGIN7 record the server cares about."""

    def __repr__(self):
        return f"<Login7 {self.__dict__}>"


_L7_STRINGS = (   # (field, offset of ib/cch pair)
    ("host_name", 36), ("user_name", 40), ("password", 44), ("app_name", 48),
    ("server_name", 52), ("library_name", 60), ("language", 64), ("database", 68),
    ("attach_db_file", 82), ("change_password", 86),
)


def parse_login7(payload):
    r = Reader(payload)
    if len(payload) < LOGIN7_FIXED:
        raise ProtocolError("LOGIN7 shorter than its fixed part")
    l7 = Login7()
    length = r.u32()
    if length != len(payload):
        raise ProtocolError(f"LOGIN7 length field {length} != message length {len(payload)}")
    l7.tds_version = r.u32()
    l7.packet_size = r.u32()
    l7.client_prog_ver = r.u32()
    l7.client_pid = r.u32()
    l7.connection_id = r.u32()
    l7.option_flags1 = r.u8()
    l7.option_flags2 = r.u8()
    l7.type_flags = r.u8()
    l7.option_flags3 = r.u8()
    l7.client_timezone = r.i32()
    l7.client_lcid = r.u32()

    def span(at, unit, what):
        ib, cch = struct.unpack_from("<HH", payload, at)
        n = cch * unit
        if n and (ib < LOGIN7_FIXED or ib + n > len(payload)):
            raise ProtocolError(f"LOGIN7 {what} outside the record")
        return ib, n

    for field, at in _L7_STRINGS:
        ib, n = span(at, 2, field)
        raw = payload[ib:ib + n]
        if field == "password" or field == "change_password":
            raw = deobfuscate_password(raw)
        setattr(l7, field, decode_utf16(raw, "LOGIN7 " + field))
    l7.client_id = payload[72:78]
    ib_sspi, cb_sspi = struct.unpack_from("<HH", payload, 78)
    if cb_sspi and ib_sspi + cb_sspi > len(payload):
        raise ProtocolError("LOGIN7 SSPI outside the record")
    l7.sspi = bytes(payload[ib_sspi:ib_sspi + cb_sspi])
    if len(payload) >= 94:
        l7.sspi_long = struct.unpack_from("<I", payload, 90)[0]
    # ibExtension/cbExtension: with fExtension (OptionFlags3 0x10) it points
    # at a DWORD holding the offset of the FeatureExt block.
    ib_ext, cb_ext = struct.unpack_from("<HH", payload, 56)
    l7.features = {}
    l7.feature_order = []
    if l7.option_flags3 & 0x10:
        if cb_ext < 4 or ib_ext + 4 > len(payload):
            raise ProtocolError("LOGIN7 fExtension set but no FeatureExt pointer")
        fe_off = struct.unpack_from("<I", payload, ib_ext)[0]
        if fe_off < LOGIN7_FIXED or fe_off >= len(payload):
            raise ProtocolError("LOGIN7 FeatureExt offset outside the record")
        fr = Reader(payload, fe_off)
        while True:
            fid = fr.u8("FeatureId")
            if fid == FEATURE_TERMINATOR:
                break
            flen = fr.u32("FeatureDataLen")
            data = fr.take(flen, f"feature 0x{fid:02x} data")
            if fid in l7.features:
                raise ProtocolError(f"LOGIN7 feature 0x{fid:02x} twice")
            l7.features[fid] = bytes(data)
            l7.feature_order.append(fid)
    l7.fedauth = None
    if FEATURE_FEDAUTH in l7.features:
        l7.fedauth = parse_fedauth_feature(l7.features[FEATURE_FEDAUTH])
    return l7


def parse_fedauth_feature(data):
    """FEDAUTH feature data: bOptions = (library << 1) | echo, then for
    SECURITYTOKEN a u32 byte length and the UTF-16LE token (and an optional
    32-byte nonce, which only follows when the server sent NONCEOPT)."""
    r = Reader(data)
    opt = r.u8("FEDAUTH options")
    fa = {"library": opt >> 1, "echo": opt & 1, "token": None, "nonce": None, "workflow": None}
    if fa["library"] == FEDAUTH_LIB_SECURITYTOKEN:
        n = r.u32("FEDAUTH token length")
        raw = r.take(n, "FEDAUTH token")
        fa["token_bytes"] = n
        fa["token"] = decode_utf16(raw, "FEDAUTH token")
        if r.left() == 32:
            fa["nonce"] = r.take(32)
        elif r.left():
            raise ProtocolError(f"FEDAUTH feature has {r.left()} stray bytes after the token")
    elif fa["library"] == FEDAUTH_LIB_ADAL:
        fa["workflow"] = r.u8("FEDAUTH ADAL workflow") if r.left() else None
    return fa


def build_login7(user="", password="", database="", app="", host="", server="",
                 library="rig", language="", tds_version=0x74000004, packet_size=4096,
                 fedauth_token=None, fedauth_echo=1, utf8=False, option_flags2=0x03):
    """A LOGIN7 payload (used by this package's own tests and tools)."""
    fields = [host, user, password, app, server, None, library, language, database]
    features = bytearray()
    if fedauth_token is not None:
        tok = fedauth_token.encode("utf-16-le")
        fdata = bytes([(FEDAUTH_LIB_SECURITYTOKEN << 1) | (1 if fedauth_echo else 0)]) + struct.pack("<I", len(tok)) + tok
        features += bytes([FEATURE_FEDAUTH]) + struct.pack("<I", len(fdata)) + fdata
    if utf8:
        features += bytes([FEATURE_UTF8_SUPPORT]) + struct.pack("<I", 1) + b"\x01"
    use_ext = bool(features)
    if use_ext:
        features += bytes([FEATURE_TERMINATOR])
    var = bytearray()
    offs = []
    pos = LOGIN7_FIXED
    for i, f in enumerate(fields):
        if f is None:   # extension pointer slot
            if use_ext:
                offs.append((pos + len(var), 4))
                var += b"\0\0\0\0"
            else:
                offs.append((pos + len(var), 0))
            continue
        b = f.encode("utf-16-le")
        if i == 2:
            b = obfuscate_password(b)
        offs.append((pos + len(var), len(f)))
        var += b
    ext_ptr_at = offs[5][0] - pos
    if use_ext:
        struct.pack_into("<I", var, ext_ptr_at, pos + len(var))
        var += features
    fixed = bytearray(LOGIN7_FIXED)
    total = LOGIN7_FIXED + len(var)
    struct.pack_into("<IIIIII", fixed, 0, total, tds_version, packet_size, 7, 1234, 0)
    fixed[24] = 0xE0
    fixed[25] = option_flags2
    fixed[26] = 0
    fixed[27] = 0x10 if use_ext else 0
    struct.pack_into("<iI", fixed, 28, 0, 0x409)
    at = 36
    for (ib, cch) in offs:
        struct.pack_into("<HH", fixed, at, ib, cch)
        at += 4
    # after database (68): ClientID(6) at 72, SSPI 78, AtchDBFile 82, ChangePassword 86, cbSSPILong 90
    struct.pack_into("<HH", fixed, 78, total, 0)
    struct.pack_into("<HH", fixed, 82, total, 0)
    struct.pack_into("<HH", fixed, 86, total, 0)
    struct.pack_into("<I", fixed, 90, 0)
    return bytes(fixed + var)


# ---------------------------------------------------------------- ALL_HEADERS

ALLHDR_QUERY_NOTIFICATIONS = 0x0001
ALLHDR_TRANSACTION_DESCRIPTOR = 0x0002
ALLHDR_TRACE_ACTIVITY = 0x0003


def parse_all_headers(payload):
    """(headers {type: data}, offset after ALL_HEADERS). TDS 7.2+ requests
    (SQLBatch, RPC, TransMgrReq) must start with it."""
    r = Reader(payload)
    total = r.u32("ALL_HEADERS TotalLength")
    if total < 4 or total > len(payload):
        raise ProtocolError(f"ALL_HEADERS TotalLength {total} invalid (message {len(payload)} bytes)")
    hdrs = {}
    while r.pos < total:
        hlen = r.u32("ALL_HEADERS HeaderLength")
        if hlen < 6 or r.pos - 4 + hlen > total:
            raise ProtocolError(f"ALL_HEADERS header length {hlen} invalid")
        htype = r.u16("ALL_HEADERS HeaderType")
        hdrs[htype] = bytes(r.take(hlen - 6, "ALL_HEADERS header data"))
    if ALLHDR_TRANSACTION_DESCRIPTOR in hdrs and len(hdrs[ALLHDR_TRANSACTION_DESCRIPTOR]) != 12:
        raise ProtocolError("transaction descriptor header must carry 12 bytes")
    return hdrs, total


def build_all_headers(descriptor=b"\0" * 8, outstanding=1):
    h = struct.pack("<IH", 18, ALLHDR_TRANSACTION_DESCRIPTOR) + descriptor + struct.pack("<I", outstanding)
    return struct.pack("<I", 4 + len(h)) + h


# ---------------------------------------------------------------- tokens

TOK_ALTMETADATA = 0x88
TOK_COLMETADATA = 0x81
TOK_ERROR = 0xAA
TOK_INFO = 0xAB
TOK_LOGINACK = 0xAD
TOK_FEATUREEXTACK = 0xAE
TOK_ENVCHANGE = 0xE3
TOK_ROW = 0xD1
TOK_RETURNSTATUS = 0x79
TOK_DONE = 0xFD
TOK_DONEPROC = 0xFE
TOK_DONEINPROC = 0xFF

DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_INXACT = 0x04
DONE_COUNT = 0x10
DONE_ATTN = 0x20
DONE_SRVERROR = 0x100

ENV_DATABASE = 1
ENV_LANGUAGE = 2
ENV_CHARSET = 3
ENV_PACKETSIZE = 4
ENV_COLLATION = 7
ENV_BEGINTRAN = 8
ENV_COMMITTRAN = 9
ENV_ROLLBACKTRAN = 10
ENV_DEFECTTRAN = 17
ENV_RESETACK = 18
ENV_ROUTING = 20

# SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags, sort id 52.
COLLATION = bytes.fromhex("0904d00034")


def b_varchar(s):
    b = s.encode("utf-16-le")
    if len(s) > 255:
        raise ValueError("B_VARCHAR too long")
    return bytes([len(b) // 2]) + b


def us_varchar(s):
    b = s.encode("utf-16-le")
    return struct.pack("<H", len(b) // 2) + b


def b_varbyte(b):
    return bytes([len(b)]) + b


def envchange(kind, new, old):
    """ENVCHANGE with string values (B_VARCHAR) for the string kinds and raw
    B_VARBYTE values for collation/transactions/reset."""
    if kind in (ENV_DATABASE, ENV_LANGUAGE, ENV_CHARSET, ENV_PACKETSIZE):
        body = bytes([kind]) + b_varchar(new) + b_varchar(old)
    else:
        body = bytes([kind]) + b_varbyte(new) + b_varbyte(old)
    return bytes([TOK_ENVCHANGE]) + struct.pack("<H", len(body)) + body


def envchange_routing(host, port):
    """Azure's Redirect: ENVCHANGE 20, RoutingData (u16 length, protocol 0 =
    TCP, port u16, server name US_VARCHAR), old value u16 0."""
    rd = bytes([0]) + struct.pack("<H", port) + us_varchar(host)
    body = bytes([ENV_ROUTING]) + struct.pack("<H", len(rd)) + rd + struct.pack("<H", 0)
    return bytes([TOK_ENVCHANGE]) + struct.pack("<H", len(body)) + body


def message_token(number, state, cls, text, server, proc="", line=1, info=False):
    body = (struct.pack("<iBB", number, state, cls) + us_varchar(text) +
            b_varchar(server[:128]) + b_varchar(proc) + struct.pack("<i", line))
    return bytes([TOK_INFO if info else TOK_ERROR]) + struct.pack("<H", len(body)) + body


def loginack(tds_version, prog_name="Microsoft SQL Server", version=(12, 0, 2000, 8)):
    """LOGINACK: interface 1 (SQL_TSQL), TDS version in network byte order
    (0x74000004 for 7.4), program name, version major.minor.build(u16 BE)."""
    body = (bytes([1]) + struct.pack(">I", tds_version) + b_varchar(prog_name) +
            struct.pack(">BBH", version[0], version[1], version[2]))
    return bytes([TOK_LOGINACK]) + struct.pack("<H", len(body)) + body


def featureextack(features):
    """features: list of (feature id, data bytes)."""
    out = bytearray([TOK_FEATUREEXTACK])
    for fid, data in features:
        out += bytes([fid]) + struct.pack("<I", len(data)) + data
    out.append(FEATURE_TERMINATOR)
    return bytes(out)


def done(status=DONE_FINAL, curcmd=0, rowcount=0, token=TOK_DONE):
    return struct.pack("<BHHQ", token, status, curcmd, rowcount)


def returnstatus(value):
    return struct.pack("<Bi", TOK_RETURNSTATUS, value)


# ---------------------------------------------------------------- data types (results)

TY_INT1 = 0x30
TY_BIT = 0x32
TY_INT2 = 0x34
TY_INT4 = 0x38
TY_INT8 = 0x7F
TY_FLT8 = 0x3E
TY_GUID = 0x24
TY_INTN = 0x26
TY_BITN = 0x68
TY_DECIMALN = 0x6A
TY_NUMERICN = 0x6C
TY_FLTN = 0x6D
TY_BIGVARBIN = 0xA5
TY_BIGVARCHR = 0xA7
TY_BIGBINARY = 0xAD
TY_BIGCHAR = 0xAF
TY_NVARCHAR = 0xE7
TY_NCHAR = 0xEF

PLP_NULL = 0xFFFFFFFFFFFFFFFF
PLP_UNKNOWN = 0xFFFFFFFFFFFFFFFE
PLP_CHUNK = 16384
MAX_LEN = 0xFFFF


class ColType:
    """One result column type: kind in int, bigint, float, nvarchar,
    nvarchar_max, varbinary, varbinary_max."""

    def __init__(self, kind, size=None):
        self.kind = kind
        self.size = size

    def type_info(self):
        k = self.kind
        if k == "int":
            return bytes([TY_INTN, 4])
        if k == "bigint":
            return bytes([TY_INTN, 8])
        if k == "float":
            return bytes([TY_FLTN, 8])
        if k == "nvarchar":
            return bytes([TY_NVARCHAR]) + struct.pack("<H", 2 * (self.size or 4000)) + COLLATION
        if k == "nvarchar_max":
            return bytes([TY_NVARCHAR]) + struct.pack("<H", MAX_LEN) + COLLATION
        if k == "varbinary":
            return bytes([TY_BIGVARBIN]) + struct.pack("<H", self.size or 8000)
        if k == "varbinary_max":
            return bytes([TY_BIGVARBIN]) + struct.pack("<H", MAX_LEN)
        raise ValueError(k)

    def encode(self, v):
        k = self.kind
        if k in ("int", "bigint"):
            if v is None:
                return b"\0"
            if k == "int":
                return b"\x04" + struct.pack("<i", v)
            return b"\x08" + struct.pack("<q", v)
        if k == "float":
            return b"\0" if v is None else b"\x08" + struct.pack("<d", v)
        if k == "nvarchar":
            if v is None:
                return b"\xff\xff"
            b = v.encode("utf-16-le")
            return struct.pack("<H", len(b)) + b
        if k == "varbinary":
            return b"\xff\xff" if v is None else struct.pack("<H", len(v)) + v
        if k in ("nvarchar_max", "varbinary_max"):
            if v is None:
                return struct.pack("<Q", PLP_NULL)
            b = v.encode("utf-16-le") if isinstance(v, str) else v
            out = [struct.pack("<Q", len(b))]
            for i in range(0, len(b), PLP_CHUNK):
                c = b[i:i + PLP_CHUNK]
                out.append(struct.pack("<I", len(c)))
                out.append(c)
            out.append(b"\0\0\0\0")
            return b"".join(out)
        raise ValueError(k)


def colmetadata(columns):
    """columns: list of (name, ColType). Flags: nullable."""
    out = bytearray([TOK_COLMETADATA]) + struct.pack("<H", len(columns))
    for name, ct in columns:
        out += struct.pack("<IH", 0, 0x0001) + ct.type_info() + b_varchar(name[:128])
    return bytes(out)


def row(columns, values):
    out = bytearray([TOK_ROW])
    for (_, ct), v in zip(columns, values):
        out += ct.encode(v)
    return bytes(out)


# ---------------------------------------------------------------- RPC

# Special procedure ids (NameLenProcID 0xFFFF + ProcID).
PROC_IDS = {1: "sp_cursor", 2: "sp_cursoropen", 3: "sp_cursorprepare", 4: "sp_cursorexecute",
            5: "sp_cursorprepexec", 6: "sp_cursorunprepare", 7: "sp_cursorfetch",
            8: "sp_cursoroption", 9: "sp_cursorclose", 10: "sp_executesql", 11: "sp_prepare",
            12: "sp_execute", 13: "sp_prepexec", 14: "sp_prepexecrpc", 15: "sp_unprepare"}


class UnsupportedType(Exception):
    pass


def _read_plp(r, what):
    total = r.u64(what + " PLP length")
    if total == PLP_NULL:
        return None
    chunks = []
    got = 0
    while True:
        n = r.u32(what + " PLP chunk length")
        if n == 0:
            break
        chunks.append(r.take(n, what + " PLP chunk"))
        got += n
    if total != PLP_UNKNOWN and got != total:
        raise ProtocolError(f"{what}: PLP length {total} but chunks carry {got}")
    return b"".join(chunks)


def read_type_value(r, what="parameter"):
    """Read TYPE_INFO then the value of an RPC parameter; returns (type name,
    python value). Types outside the subset raise UnsupportedType after the
    bytes are consumed is impossible, so they raise before (the RPC is then
    refused as a whole)."""
    ty = r.u8(what + " type")
    if ty in (TY_INT1, TY_INT2, TY_INT4, TY_INT8, TY_BIT):
        n = {TY_INT1: 1, TY_INT2: 2, TY_INT4: 4, TY_INT8: 8, TY_BIT: 1}[ty]
        b = r.take(n, what)
        v = int.from_bytes(b, "little", signed=ty != TY_INT1 and ty != TY_BIT)
        return ("int", v)
    if ty in (TY_INTN, TY_BITN):
        maxlen = r.u8(what + " length")
        if maxlen not in (1, 2, 4, 8):
            raise ProtocolError(f"{what}: INTN length {maxlen}")
        n = r.u8(what + " value length")
        if n == 0:
            return ("int", None)
        if n != maxlen and not (ty == TY_BITN and n == 1):
            raise ProtocolError(f"{what}: INTN value length {n} != {maxlen}")
        b = r.take(n, what)
        return ("int", int.from_bytes(b, "little", signed=(ty == TY_INTN and n > 1)))
    if ty == TY_FLTN:
        maxlen = r.u8(what + " length")
        n = r.u8(what + " value length")
        if n == 0:
            return ("float", None)
        if n not in (4, 8):
            raise ProtocolError(f"{what}: FLTN length {n}")
        return ("float", struct.unpack("<f" if n == 4 else "<d", r.take(n, what))[0])
    if ty in (TY_DECIMALN, TY_NUMERICN):
        r.u8(what + " length")
        r.u8(what + " precision")
        scale = r.u8(what + " scale")
        n = r.u8(what + " value length")
        if n == 0:
            return ("float", None)
        b = r.take(n, what)
        sign = 1 if b[0] == 1 else -1
        mag = int.from_bytes(b[1:], "little")
        return ("float", sign * mag / (10 ** scale))
    if ty in (TY_NVARCHAR, TY_NCHAR, TY_BIGVARCHR, TY_BIGCHAR):
        maxlen = r.u16(what + " max length")
        r.take(5, what + " collation")
        if maxlen == MAX_LEN:
            b = _read_plp(r, what)
        else:
            n = r.u16(what + " value length")
            b = None if n == 0xFFFF else r.take(n, what)
        if b is None:
            return ("str", None)
        if ty in (TY_NVARCHAR, TY_NCHAR):
            return ("str", decode_utf16(b, what))
        return ("str", bytes(b).decode("cp1252", errors="replace"))
    if ty in (TY_BIGVARBIN, TY_BIGBINARY):
        maxlen = r.u16(what + " max length")
        if maxlen == MAX_LEN:
            b = _read_plp(r, what)
        else:
            n = r.u16(what + " value length")
            b = None if n == 0xFFFF else r.take(n, what)
        return ("bytes", None if b is None else bytes(b))
    if ty == TY_GUID:
        r.u8(what + " length")
        n = r.u8(what + " value length")
        if n == 0:
            return ("str", None)
        if n != 16:
            raise ProtocolError(f"{what}: GUID of {n} bytes")
        import uuid
        return ("str", str(uuid.UUID(bytes_le=bytes(r.take(n, what)))).upper())
    raise UnsupportedType(f"parameter type 0x{ty:02x} is not supported by the rig")


def parse_rpc(payload, start):
    """List of calls {name, proc_id, flags, params: [(name, status, type, value)]}
    from an RPC message body (after ALL_HEADERS)."""
    r = Reader(payload, start)
    calls = []
    while True:
        namelen = r.u16("RPC NameLenProcID")
        if namelen == 0xFFFF:
            pid = r.u16("RPC ProcID")
            name = PROC_IDS.get(pid, f"#proc{pid}")
        else:
            pid = None
            name = r.utf16(namelen, "RPC procedure name")
        flags = r.u16("RPC OptionFlags")
        params = []
        while r.left():
            b = r.data[r.pos]
            if b in (0x80, 0xFF):   # BatchFlag / NoExecFlag: next call follows
                break
            pname = r.b_varchar("RPC parameter name")
            status = r.u8("RPC parameter status")
            ty, val = read_type_value(r, f"parameter {pname or len(params) + 1}")
            params.append((pname, status, ty, val))
        calls.append({"name": name, "proc_id": pid, "flags": flags, "params": params})
        if not r.left():
            break
        r.u8("RPC batch separator")
        if not r.left():
            break
    return calls


# ---------------------------------------------------------------- TransMgrReq

TM_BEGIN_XACT = 5
TM_COMMIT_XACT = 7
TM_ROLLBACK_XACT = 8
TM_SAVE_XACT = 9


def parse_transmgr(payload, start):
    r = Reader(payload, start)
    req = {"type": r.u16("TransMgr RequestType")}
    t = req["type"]
    if t == TM_BEGIN_XACT:
        req["isolation"] = r.u8("TM isolation level")
        req["name"] = r.b_varchar("TM transaction name")
    elif t in (TM_COMMIT_XACT, TM_ROLLBACK_XACT):
        req["name"] = r.b_varchar("TM transaction name")
        req["flags"] = r.u8("TM flags")
        if req["flags"] & 1:
            req["isolation"] = r.u8("TM new isolation level")
            req["new_name"] = r.b_varchar("TM new transaction name")
    elif t == TM_SAVE_XACT:
        req["name"] = r.b_varchar("TM savepoint name")
    return req


# ---------------------------------------------------------------- reply parsing (tools/tests)

def parse_tokens(data):
    """Decode a reply token stream into a list of (name, fields) — for this
    package's own tests and debugging, covering the tokens the server sends."""
    r = Reader(data)
    out = []
    cols = None
    while r.left():
        t = r.u8()
        if t in (TOK_DONE, TOK_DONEPROC, TOK_DONEINPROC):
            st, cmd, cnt = r.u16(), r.u16(), r.u64()
            out.append(({TOK_DONE: "DONE", TOK_DONEPROC: "DONEPROC", TOK_DONEINPROC: "DONEINPROC"}[t],
                        {"status": st, "curcmd": cmd, "rowcount": cnt}))
        elif t in (TOK_ERROR, TOK_INFO):
            ln = r.u16()
            rr = Reader(r.take(ln))
            num, state, cls = rr.i32(), rr.u8(), rr.u8()
            msg = rr.us_varchar()
            srv = rr.b_varchar()
            out.append(("ERROR" if t == TOK_ERROR else "INFO",
                        {"number": num, "state": state, "class": cls, "message": msg, "server": srv}))
        elif t == TOK_ENVCHANGE:
            ln = r.u16()
            body = r.take(ln)
            kind = body[0]
            f = {"type": kind}
            br = Reader(body, 1)
            if kind in (ENV_DATABASE, ENV_LANGUAGE, ENV_CHARSET, ENV_PACKETSIZE):
                f["new"] = br.b_varchar()
                f["old"] = br.b_varchar()
            elif kind == ENV_ROUTING:
                br.u16()
                f["protocol"] = br.u8()
                f["port"] = br.u16()
                f["host"] = br.us_varchar()
            else:
                n = br.u8()
                f["new"] = bytes(br.take(n))
                n = br.u8()
                f["old"] = bytes(br.take(n))
            out.append(("ENVCHANGE", f))
        elif t == TOK_LOGINACK:
            ln = r.u16()
            body = r.take(ln)
            out.append(("LOGINACK", {"interface": body[0], "tds_version": struct.unpack(">I", body[1:5])[0]}))
        elif t == TOK_FEATUREEXTACK:
            feats = {}
            while True:
                fid = r.u8()
                if fid == 0xFF:
                    break
                feats[fid] = bytes(r.take(r.u32()))
            out.append(("FEATUREEXTACK", feats))
        elif t == TOK_RETURNSTATUS:
            out.append(("RETURNSTATUS", r.i32()))
        elif t == TOK_COLMETADATA:
            n = r.u16()
            cols = []
            for _ in range(n):
                r.u32()
                r.u16()
                ty = r.u8()
                if ty == TY_INTN or ty == TY_FLTN:
                    cols.append(("intn" if ty == TY_INTN else "fltn", r.u8()))
                elif ty == TY_NVARCHAR:
                    ml = r.u16()
                    r.take(5)
                    cols.append(("nvarchar", ml))
                elif ty == TY_BIGVARBIN:
                    cols.append(("varbinary", r.u16()))
                else:
                    raise ProtocolError(f"parse_tokens: type 0x{ty:02x}")
                r.b_varchar()
            out.append(("COLMETADATA", cols))
        elif t == TOK_ROW:
            vals = []
            for kind, ml in cols:
                if kind == "intn":
                    n = r.u8()
                    vals.append(None if n == 0 else int.from_bytes(r.take(n), "little", signed=True))
                elif kind == "fltn":
                    n = r.u8()
                    vals.append(None if n == 0 else struct.unpack("<d", r.take(n))[0])
                elif ml == MAX_LEN:
                    b = _read_plp(r, "row")
                    vals.append(None if b is None else (decode_utf16(b) if kind == "nvarchar" else bytes(b)))
                else:
                    n = r.u16()
                    if n == 0xFFFF:
                        vals.append(None)
                    else:
                        b = r.take(n)
                        vals.append(decode_utf16(b) if kind == "nvarchar" else bytes(b))
            out.append(("ROW", vals))
        else:
            raise ProtocolError(f"parse_tokens: token 0x{t:02x}")
    return out

"""The small T-SQL subset the rig's TDS server understands.

A tokenizer, a recursive-descent parser for whole batches (statements may be
separated by ';', newlines or just whitespace, as T-SQL allows) and an
executor over per-session state and a few in-memory tables. What it covers
is listed in README.md; anything else is a compile error (102/156/195/208)
with SQL Server's message text, and the whole batch is refused before any
statement runs, as SQL Server does for syntax errors.
"""

import re
import struct

# ---------------------------------------------------------------- errors


class SqlError(Exception):
    """An error SQL Server would report: number, class (severity), state."""

    def __init__(self, number, message, cls=16, state=1, abort_batch=True):
        super().__init__(message)
        self.number = number
        self.message = message
        self.cls = cls
        self.state = state
        self.abort_batch = abort_batch


def syntax_error(tok):
    if tok is None:
        return SqlError(102, "Incorrect syntax near the end of the batch.", 15)
    if tok.kind == "id" and tok.upper in RESERVED:
        return SqlError(156, f"Incorrect syntax near the keyword '{tok.upper}'.", 15)
    return SqlError(102, f"Incorrect syntax near '{tok.text}'.", 15)


# ---------------------------------------------------------------- tokens

RESERVED = {
    "SELECT", "FROM", "WHERE", "SET", "BEGIN", "COMMIT", "ROLLBACK", "WAITFOR", "INSERT",
    "UPDATE", "DELETE", "CREATE", "DROP", "USE", "IF", "ELSE", "PRINT", "EXEC", "EXECUTE",
    "AS", "AND", "OR", "NOT", "NULL", "IS", "INTO", "VALUES", "ORDER", "BY", "TOP", "TRAN",
    "TRANSACTION", "DECLARE", "SAVE", "TRUNCATE", "TABLE", "UNION", "GROUP", "HAVING", "JOIN",
    "ON", "OFF", "WORK", "DELAY", "PRIMARY", "KEY", "ASC", "DESC", "END", "CASE", "WHEN",
    "THEN", "GO", "DISTINCT", "WITH", "RETURN", "WHILE", "GOTO", "KILL", "DBCC", "GRANT",
    "ALTER", "MERGE", "CURRENT_USER", "SESSION_USER", "SYSTEM_USER", "CAST", "CONVERT",
    "EXISTS", "IN", "LIKE", "BETWEEN", "OUTPUT", "DEFAULT",
}

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<lcomment>--[^\n]*)
  | (?P<bcomment>/\*.*?\*/)
  | (?P<nstr>[Nn]'(?:[^']|'')*')
  | (?P<str>'(?:[^']|'')*')
  | (?P<hex>0[xX][0-9A-Fa-f]*)
  | (?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
  | (?P<sysvar>@@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<var>@[A-Za-z_#@$][A-Za-z0-9_@#$]*)
  | (?P<qid>\[(?:[^\]]|\]\])*\])
  | (?P<dqid>"(?:[^"]|"")*")
  | (?P<id>[A-Za-z_#][A-Za-z0-9_@#$]*)
  | (?P<op><>|!=|<=|>=|[-+*/%=<>(),;.])
""", re.S | re.X)


class Tok:
    __slots__ = ("kind", "text", "val", "upper", "pos")

    def __init__(self, kind, text, val, pos):
        self.kind = kind
        self.text = text
        self.val = val
        self.upper = text.upper() if kind == "id" else None
        self.pos = pos

    def __repr__(self):
        return f"Tok({self.kind},{self.text!r})"


def tokenize(sql):
    toks = []
    pos = 0
    n = len(sql)
    while pos < n:
        m = _TOKEN_RE.match(sql, pos)
        if not m:
            if sql.startswith("/*", pos):
                raise SqlError(113, "Missing end comment mark '*/'.", 15)
            if sql[pos] in "'":
                raise SqlError(105, f"Unclosed quotation mark after the character string '{sql[pos + 1:pos + 40]}'.", 15)
            raise SqlError(102, f"Incorrect syntax near '{sql[pos:pos + 10]}'.", 15)
        kind = m.lastgroup
        text = m.group(kind)
        pos = m.end()
        if kind in ("ws", "lcomment", "bcomment"):
            continue
        if kind == "nstr":
            toks.append(Tok("str", text, text[2:-1].replace("''", "'"), m.start()))
        elif kind == "str":
            toks.append(Tok("str", text, text[1:-1].replace("''", "'"), m.start()))
        elif kind == "hex":
            h = text[2:]
            if len(h) % 2:
                h = "0" + h
            toks.append(Tok("hex", text, bytes.fromhex(h), m.start()))
        elif kind == "num":
            if re.fullmatch(r"\d+", text):
                toks.append(Tok("num", text, int(text), m.start()))
            else:
                toks.append(Tok("num", text, float(text), m.start()))
        elif kind == "qid":
            toks.append(Tok("qid", text, text[1:-1].replace("]]", "]"), m.start()))
        elif kind == "dqid":
            toks.append(Tok("qid", text, text[1:-1].replace('""', '"'), m.start()))
        else:
            toks.append(Tok(kind, text, text, m.start()))
    return toks


# ---------------------------------------------------------------- types

class SqlType:
    """kind: int, bigint, float, str, bytes; max: (n)varchar(max)/varbinary(max)."""

    __slots__ = ("kind", "size", "max")

    def __init__(self, kind, size=None, is_max=False):
        self.kind = kind
        self.size = size
        self.max = is_max

    def __repr__(self):
        return f"SqlType({self.kind},{self.size},{self.max})"


T_INT = SqlType("int")
T_BIGINT = SqlType("bigint")
T_FLOAT = SqlType("float")
T_STR = SqlType("str", 4000)
T_STR_MAX = SqlType("str", None, True)
T_BYTES = SqlType("bytes", 8000)

TYPE_NAMES = {
    "INT": "int", "INTEGER": "int", "SMALLINT": "int", "TINYINT": "int", "BIT": "int",
    "BIGINT": "bigint", "FLOAT": "float", "REAL": "float", "DECIMAL": "float", "NUMERIC": "float",
    "NVARCHAR": "str", "VARCHAR": "str", "NCHAR": "str", "CHAR": "str", "SYSNAME": "str",
    "TEXT": "str", "NTEXT": "str", "UNIQUEIDENTIFIER": "str",
    "VARBINARY": "bytes", "BINARY": "bytes", "IMAGE": "bytes",
}


def python_type(v):
    if isinstance(v, bool):
        return T_INT
    if isinstance(v, int):
        return T_INT if -2**31 <= v < 2**31 else T_BIGINT
    if isinstance(v, float):
        return T_FLOAT
    if isinstance(v, bytes):
        return T_BYTES
    if isinstance(v, str):
        return T_STR
    return T_INT   # NULL


# ---------------------------------------------------------------- parser

ISOLATION = {"READ UNCOMMITTED": 1, "READ COMMITTED": 2, "REPEATABLE READ": 3,
             "SERIALIZABLE": 4, "SNAPSHOT": 5}

ONOFF_OPTIONS = {
    "ANSI_NULLS", "ANSI_NULL_DFLT_ON", "ANSI_NULL_DFLT_OFF", "ANSI_PADDING", "ANSI_WARNINGS",
    "ARITHABORT", "ARITHIGNORE", "CONCAT_NULL_YIELDS_NULL", "CURSOR_CLOSE_ON_COMMIT",
    "IMPLICIT_TRANSACTIONS", "NOCOUNT", "NUMERIC_ROUNDABORT", "QUOTED_IDENTIFIER", "XACT_ABORT",
    "FMTONLY", "NOEXEC", "PARSEONLY", "FORCEPLAN", "ANSI_DEFAULTS", "SHOWPLAN_ALL",
    "SHOWPLAN_TEXT", "SHOWPLAN_XML", "STATISTICS", "NO_BROWSETABLE",
}
VALUE_OPTIONS = {"TEXTSIZE", "LANGUAGE", "DATEFORMAT", "DATEFIRST", "LOCK_TIMEOUT",
                 "DEADLOCK_PRIORITY", "ROWCOUNT", "QUERY_GOVERNOR_COST_LIMIT"}

# Scalar functions: name -> (min args, max args)
FUNCTIONS = {
    "SUSER_SNAME": (0, 1), "SUSER_NAME": (0, 1), "USER_NAME": (0, 1), "ORIGINAL_LOGIN": (0, 0),
    "DB_NAME": (0, 1), "DB_ID": (0, 1), "CONTEXT_INFO": (0, 0), "REPLICATE": (2, 2), "LEN": (1, 1),
    "DATALENGTH": (1, 1), "UPPER": (1, 1), "LOWER": (1, 1), "APP_NAME": (0, 0),
    "HOST_NAME": (0, 0), "SESSIONPROPERTY": (1, 1), "SERVERPROPERTY": (1, 1), "ISNULL": (2, 2),
    "COALESCE": (1, 16), "COUNT": (1, 1), "CONCAT": (2, 16), "SUBSTRING": (3, 3),
    "LEFT": (2, 2), "RIGHT": (2, 2),
}
AGGREGATES = {"COUNT"}


class Parser:
    def __init__(self, toks):
        self.toks = toks
        self.i = 0

    # -- token helpers
    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self):
        t = self.peek()
        if t is None:
            raise syntax_error(None)
        self.i += 1
        return t

    def is_kw(self, *words, k=0):
        t = self.peek(k)
        return t is not None and t.kind == "id" and t.upper in words

    def accept_kw(self, *words):
        if self.is_kw(*words):
            return self.next().upper
        return None

    def expect_kw(self, *words):
        t = self.peek()
        if t is None or t.kind != "id" or t.upper not in words:
            raise syntax_error(t)
        self.i += 1
        return t.upper

    def is_op(self, *ops, k=0):
        t = self.peek(k)
        return t is not None and t.kind == "op" and t.text in ops

    def accept_op(self, *ops):
        if self.is_op(*ops):
            return self.next().text
        return None

    def expect_op(self, op):
        t = self.peek()
        if t is None or t.kind != "op" or t.text != op:
            raise syntax_error(t)
        self.i += 1

    def ident(self):
        """An identifier (plain or [quoted]), not a reserved word."""
        t = self.peek()
        if t is None:
            raise syntax_error(None)
        if t.kind == "qid" or (t.kind == "id" and t.upper not in RESERVED):
            self.i += 1
            return t.val
        raise syntax_error(t)

    def object_name(self):
        """[server.][db.][schema.]name -> (full text, last part)."""
        parts = [self.ident()]
        while self.is_op("."):
            self.next()
            parts.append(self.ident())
        return ".".join(parts), parts

    # -- batch
    def batch(self):
        stmts = []
        while self.peek() is not None:
            if self.accept_op(";"):
                continue
            stmts.append(self.statement())
        return stmts

    def statement(self):
        t = self.peek()
        if t.kind != "id":
            raise syntax_error(t)
        kw = t.upper
        fn = getattr(self, "st_" + kw.lower(), None)
        if fn is None or kw not in STATEMENT_WORDS:
            raise syntax_error(t)
        self.next()
        st = fn()
        st["text_pos"] = t.pos
        return st

    def st_select(self):
        st = {"t": "select", "top": None, "items": [], "from": None, "where": None, "order": []}
        if self.accept_kw("TOP"):
            paren = self.accept_op("(")
            t = self.next()
            if t.kind != "num" or not isinstance(t.val, int):
                raise syntax_error(t)
            st["top"] = t.val
            if paren:
                self.expect_op(")")
        while True:
            if self.is_op("*"):
                self.next()
                st["items"].append(("*", None))
            else:
                e = self.expr()
                alias = None
                if self.accept_kw("AS"):
                    alias = self._alias()
                elif self.peek() is not None and (self.peek().kind == "qid" or self.peek().kind == "str" or
                                                  (self.peek().kind == "id" and self.peek().upper not in RESERVED)):
                    alias = self._alias()
                st["items"].append((e, alias))
            if not self.accept_op(","):
                break
        if self.accept_kw("FROM"):
            st["from"] = self.object_name()
            if self.peek() is not None and (self.peek().kind == "qid" or (
                    self.peek().kind == "id" and self.peek().upper not in RESERVED)):
                self.ident()     # table alias: accepted, columns are unqualified anyway
        if self.accept_kw("WHERE"):
            st["where"] = self.cond()
        if self.accept_kw("ORDER"):
            self.expect_kw("BY")
            while True:
                e = self.expr()
                desc = self.accept_kw("ASC", "DESC") == "DESC"
                st["order"].append((e, desc))
                if not self.accept_op(","):
                    break
        return st

    def _alias(self):
        t = self.next()
        if t.kind in ("qid", "str"):
            return t.val
        if t.kind == "id" and t.upper not in RESERVED:
            return t.text
        raise syntax_error(t)

    def st_set(self):
        if self.accept_kw("TRANSACTION"):
            self.expect_kw("ISOLATION")
            self.expect_kw("LEVEL")
            words = []
            while self.peek() is not None and self.peek().kind == "id" and len(words) < 2:
                if self.peek().upper not in ("READ", "UNCOMMITTED", "COMMITTED", "REPEATABLE", "SERIALIZABLE", "SNAPSHOT"):
                    break
                words.append(self.next().upper)
            level = ISOLATION.get(" ".join(words))
            if level is None:
                raise syntax_error(self.peek())
            return {"t": "set_iso", "level": level}
        t = self.peek()
        if t is None:
            raise syntax_error(None)
        if t.kind == "id" and t.upper == "CONTEXT_INFO":
            self.next()
            v = self.next()
            if v.kind == "hex":
                val = v.val
            elif v.kind == "num" and isinstance(v.val, int):
                val = v.val.to_bytes(4, "big", signed=True)   # an int converts as binary(4)
            elif v.kind == "var":
                val = ("var", v.text)
            else:
                raise syntax_error(v)
            return {"t": "set_ctx", "value": val}
        if t.kind == "var":
            self.next()
            self.expect_op("=")
            return {"t": "set_var", "name": t.text, "expr": self.expr()}
        if t.kind != "id":
            raise syntax_error(t)
        if t.upper in VALUE_OPTIONS:
            self.next()
            v = self.next()
            if v.kind == "op" and v.text == "-":
                v2 = self.next()
                if v2.kind != "num":
                    raise syntax_error(v2)
                return {"t": "set_val", "opt": t.upper, "value": -v2.val}
            if v.kind not in ("num", "id", "str", "qid", "var"):
                raise syntax_error(v)
            return {"t": "set_val", "opt": t.upper, "value": v.val if v.kind != "id" else v.text}
        opts = []
        while True:
            o = self.next()
            if o.kind != "id":
                raise syntax_error(o)
            if o.upper not in ONOFF_OPTIONS:
                if o.upper in RESERVED:
                    raise syntax_error(o)
                raise SqlError(195, f"'{o.text}' is not a recognized SET option.", 15)
            if o.upper == "STATISTICS":
                self.expect_kw("IO", "TIME", "PROFILE", "XML")
            opts.append(o.upper)
            if not self.accept_op(","):
                break
        on = self.expect_kw("ON", "OFF") == "ON"
        return {"t": "set_opt", "opts": opts, "on": on}

    def _tran_name(self):
        t = self.peek()
        if t is not None and (t.kind == "qid" or t.kind == "var" or (t.kind == "id" and t.upper not in RESERVED)):
            self.next()
            return t.val

    def st_begin(self):
        if self.accept_kw("TRAN", "TRANSACTION"):
            self._tran_name()
            return {"t": "begin"}
        if self.accept_kw("DISTRIBUTED"):
            raise SqlError(40511, "Distributed transactions are not supported by the rig.", 16)
        raise syntax_error(self.peek())

    def st_commit(self):
        self.accept_kw("TRAN", "TRANSACTION", "WORK")
        self._tran_name()
        return {"t": "commit"}

    def st_rollback(self):
        self.accept_kw("TRAN", "TRANSACTION", "WORK")
        name = self._tran_name()
        return {"t": "rollback", "name": name}

    def st_save(self):
        self.expect_kw("TRAN", "TRANSACTION")
        self._tran_name()
        return {"t": "save"}

    def st_waitfor(self):
        self.expect_kw("DELAY")
        t = self.next()
        if t.kind != "str":
            raise syntax_error(t)
        m = re.fullmatch(r"\s*(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,3}))?)?\s*", t.val)
        if not m:
            raise SqlError(148, f"Incorrect time syntax in time string '{t.val}' used with WAITFOR.", 15)
        h, mi, s, ms = (int(x) if x else 0 for x in m.groups())
        return {"t": "waitfor", "secs": h * 3600 + mi * 60 + s + ms / 1000.0}

    def st_insert(self):
        self.accept_kw("INTO")
        name = self.object_name()
        cols = None
        if self.accept_op("("):
            cols = [self.ident()]
            while self.accept_op(","):
                cols.append(self.ident())
            self.expect_op(")")
        self.expect_kw("VALUES")
        rows = []
        while True:
            self.expect_op("(")
            vals = [self.expr()]
            while self.accept_op(","):
                vals.append(self.expr())
            self.expect_op(")")
            rows.append(vals)
            if not self.accept_op(","):
                break
        return {"t": "insert", "table": name, "cols": cols, "rows": rows}

    def st_update(self):
        name = self.object_name()
        self.expect_kw("SET")
        sets = []
        while True:
            c = self.ident()
            self.expect_op("=")
            sets.append((c, self.expr()))
            if not self.accept_op(","):
                break
        where = self.cond() if self.accept_kw("WHERE") else None
        return {"t": "update", "table": name, "sets": sets, "where": where}

    def st_delete(self):
        self.accept_kw("FROM")
        name = self.object_name()
        where = self.cond() if self.accept_kw("WHERE") else None
        return {"t": "delete", "table": name, "where": where}

    def st_truncate(self):
        self.expect_kw("TABLE")
        return {"t": "delete", "table": self.object_name(), "where": None, "truncate": True}

    def st_create(self):
        self.expect_kw("TABLE")
        name = self.object_name()
        self.expect_op("(")
        cols = []
        pk = None
        while True:
            if self.accept_kw("PRIMARY"):
                self.expect_kw("KEY")
                self.expect_op("(")
                pk = self.ident()
                self.expect_op(")")
            else:
                cname = self.ident()
                ctype = self.type_spec()
                nullable = True
                while True:
                    if self.accept_kw("NOT"):
                        self.expect_kw("NULL")
                        nullable = False
                    elif self.accept_kw("NULL"):
                        nullable = True
                    elif self.accept_kw("PRIMARY"):
                        self.expect_kw("KEY")
                        pk = cname
                        nullable = False
                    else:
                        break
                cols.append((cname, ctype, nullable))
            if not self.accept_op(","):
                break
        self.expect_op(")")
        return {"t": "create", "table": name, "cols": cols, "pk": pk}

    def type_spec(self):
        t = self.next()
        if t.kind != "id" or t.upper not in TYPE_NAMES:
            if t.kind == "id":
                raise SqlError(2715, f"Column, parameter, or variable #1: Cannot find data type {t.text}.", 16)
            raise syntax_error(t)
        kind = TYPE_NAMES[t.upper]
        size = None
        is_max = t.upper in ("TEXT", "NTEXT", "IMAGE")
        if self.accept_op("("):
            if self.accept_kw("MAX"):
                is_max = True
            else:
                n = self.next()
                if n.kind != "num":
                    raise syntax_error(n)
                size = n.val
                if self.accept_op(","):
                    self.next()
            self.expect_op(")")
        if kind == "str":
            return SqlType("str", None if is_max else (size or 30), is_max)
        if kind == "bytes":
            return SqlType("bytes", None if is_max else (size or 30), is_max)
        return {"int": T_INT, "bigint": T_BIGINT, "float": T_FLOAT}[kind]

    def st_drop(self):
        self.expect_kw("TABLE")
        if_exists = False
        if self.accept_kw("IF"):
            self.expect_kw("EXISTS")
            if_exists = True
        return {"t": "drop", "table": self.object_name(), "if_exists": if_exists}

    def st_use(self):
        return {"t": "use", "db": self.ident()}

    def st_if(self):
        c = self.cond()
        st = self.statement()
        els = None
        if self.accept_kw("ELSE"):
            els = self.statement()
        return {"t": "if", "cond": c, "then": st, "else": els}

    def st_print(self):
        return {"t": "print", "expr": self.expr()}

    def st_exec(self):
        name, _ = self.object_name()
        # swallow arguments up to the end of the statement
        while self.peek() is not None and not self.is_op(";") and not (
                self.peek().kind == "id" and self.peek().upper in STATEMENT_WORDS):
            self.next()
        return {"t": "exec", "name": name}

    st_execute = st_exec

    def st_declare(self):
        decls = []
        while True:
            v = self.next()
            if v.kind != "var":
                raise syntax_error(v)
            self.accept_kw("AS")
            ty = self.type_spec()
            init = None
            if self.accept_op("="):
                init = self.expr()
            decls.append((v.text, ty, init))
            if not self.accept_op(","):
                break
        return {"t": "declare", "vars": decls}

    # -- conditions
    def cond(self):
        left = self.cond_and()
        while self.accept_kw("OR"):
            left = ("or", left, self.cond_and())
        return left

    def cond_and(self):
        left = self.cond_not()
        while self.accept_kw("AND"):
            left = ("and", left, self.cond_not())
        return left

    def cond_not(self):
        if self.accept_kw("NOT"):
            return ("not", self.cond_not())
        return self.predicate()

    def predicate(self):
        left = self.expr()
        if self.accept_kw("IS"):
            neg = bool(self.accept_kw("NOT"))
            self.expect_kw("NULL")
            return ("isnull", left, neg)
        op = self.accept_op("=", "<>", "!=", "<", ">", "<=", ">=")
        if op is None:
            raise syntax_error(self.peek())
        return ("cmp", op, left, self.expr())

    # -- expressions
    def expr(self):
        left = self.term()
        while True:
            op = self.accept_op("+", "-")
            if op is None:
                return left
            left = ("bin", op, left, self.term())

    def term(self):
        left = self.unary()
        while True:
            op = self.accept_op("*", "/", "%")
            if op is None:
                return left
            left = ("bin", op, left, self.unary())

    def unary(self):
        if self.accept_op("-"):
            return ("neg", self.unary())
        if self.accept_op("+"):
            return self.unary()
        return self.primary()

    def primary(self):
        t = self.next()
        k = t.kind
        if k == "num":
            return ("lit", t.val)
        if k == "str":
            return ("lit", t.val)
        if k == "hex":
            return ("lit", t.val)
        if k == "sysvar":
            return ("sysvar", t.text.upper())
        if k == "var":
            return ("var", t.text)
        if k == "op" and t.text == "(":
            e = self.expr()
            self.expect_op(")")
            return e
        if k == "qid":
            return self._column([t.val])
        if k == "id":
            u = t.upper
            if u == "NULL":
                return ("lit", None)
            if u in ("CURRENT_USER", "SESSION_USER", "SYSTEM_USER"):
                return ("func", "USER_NAME" if u != "SYSTEM_USER" else "SUSER_SNAME", [])
            if u in ("CAST", "CONVERT"):
                return self._cast(u)
            if self.is_op("("):
                self.next()
                if u not in FUNCTIONS:
                    raise SqlError(195, f"'{t.text}' is not a recognized built-in function name.", 15)
                args = []
                if u == "COUNT" and self.is_op("*"):
                    self.next()
                    args = [("star",)]
                elif not self.is_op(")"):
                    args.append(self.expr())
                    while self.accept_op(","):
                        args.append(self.expr())
                self.expect_op(")")
                lo, hi = FUNCTIONS[u]
                if not lo <= len(args) <= hi:
                    raise SqlError(174, f"The {u.lower()} function requires {lo} argument(s).", 15)
                return ("func", u, args)
            if u in RESERVED:
                raise syntax_error(t)
            return self._column([t.text])
        raise syntax_error(t)

    def _column(self, parts):
        while self.is_op("."):
            self.next()
            parts.append(self.ident())
        return ("col", parts[-1])

    def _cast(self, which):
        self.expect_op("(")
        if which == "CAST":
            e = self.expr()
            self.expect_kw("AS")
            ty = self.type_spec()
        else:
            ty = self.type_spec()
            self.expect_op(",")
            e = self.expr()
            if self.accept_op(","):
                self.expr()
        self.expect_op(")")
        return ("cast", e, ty)


STATEMENT_WORDS = {"SELECT", "SET", "BEGIN", "COMMIT", "ROLLBACK", "SAVE", "WAITFOR", "INSERT",
                   "UPDATE", "DELETE", "TRUNCATE", "CREATE", "DROP", "USE", "IF", "PRINT", "EXEC",
                   "EXECUTE", "DECLARE"}


def parse_batch(sql):
    """Statements of a batch, or SqlError for the first compile error."""
    return Parser(tokenize(sql)).batch()


def parse_param_decls(text):
    """sp_executesql @params: '@a int, @b nvarchar(50) OUTPUT' -> {name: SqlType}."""
    p = Parser(tokenize(text or ""))
    out = {}
    while p.peek() is not None:
        v = p.next()
        if v.kind != "var":
            raise syntax_error(v)
        p.accept_kw("AS")
        out[v.text.lower()] = p.type_spec()
        p.accept_kw("OUTPUT", "OUT")
        if not p.accept_op(","):
            break
    if p.peek() is not None:
        raise syntax_error(p.peek())
    return out


# ---------------------------------------------------------------- tables

class Table:
    def __init__(self, name, cols, pk=None):
        self.name = name
        self.cols = cols               # [(name, SqlType, nullable)]
        self.index = {c[0].lower(): i for i, c in enumerate(cols)}
        self.pk = None if pk is None else self.index[pk.lower()]
        self.rows = []

    def col(self, name):
        i = self.index.get(name.lower())
        if i is None:
            raise SqlError(207, f"Invalid column name '{name}'.", 16)
        return i


def kv_table():
    return Table("kv", [("k", SqlType("str", 450), False), ("v", T_STR_MAX, True)], pk="k")


# ---------------------------------------------------------------- session state

OPTION_BITS = {   # @@OPTIONS
    "IMPLICIT_TRANSACTIONS": 2, "CURSOR_CLOSE_ON_COMMIT": 4, "ANSI_WARNINGS": 8,
    "ANSI_PADDING": 16, "ANSI_NULLS": 32, "ARITHABORT": 64, "ARITHIGNORE": 128,
    "QUOTED_IDENTIFIER": 256, "NOCOUNT": 512, "ANSI_NULL_DFLT_ON": 1024,
    "ANSI_NULL_DFLT_OFF": 2048, "CONCAT_NULL_YIELDS_NULL": 4096, "NUMERIC_ROUNDABORT": 8192,
    "XACT_ABORT": 16384,
}
ODBC_ON = ("ANSI_NULLS", "ANSI_PADDING", "ANSI_WARNINGS", "CONCAT_NULL_YIELDS_NULL",
           "QUOTED_IDENTIFIER", "ANSI_NULL_DFLT_ON")


def login_options(option_flags2):
    """SET options a fresh session starts with: all off, ARITHABORT on (Azure
    SQL Database's default), the ANSI ones on when LOGIN7 says fODBC."""
    opts = {name: False for name in ONOFF_OPTIONS}
    opts["ARITHABORT"] = True
    if option_flags2 & 0x02:
        for o in ODBC_ON:
            opts[o] = True
    vals = {"TEXTSIZE": 2147483647 if option_flags2 & 0x02 else 4096, "LANGUAGE": "us_english",
            "DATEFORMAT": "mdy", "DATEFIRST": 7, "LOCK_TIMEOUT": -1, "DEADLOCK_PRIORITY": "NORMAL",
            "ROWCOUNT": 0, "QUERY_GOVERNOR_COST_LIMIT": 0}
    return opts, vals


class SessionState:
    """What a session has that RESETCONNECTION resets (and what it keeps)."""

    def __init__(self, spid, login, database, option_flags2=0):
        self.spid = spid
        self.login = login               # principal (SUSER_SNAME)
        self.user = login                # database user (USER_NAME)
        self.login_db = database
        self.database = database
        self.option_flags2 = option_flags2
        self.isolation = 2               # READ COMMITTED
        self.trancount = 0
        self.descriptor = b"\0" * 8
        self.app_name = ""
        self.host_name = ""
        self.reset()

    def reset(self, keep_tran=False):
        self.options, self.values = login_options(self.option_flags2)
        self.context_info = None
        self.temp = {}
        self.variables = {}
        self.database = self.login_db
        self.rowcount = 0
        self.error = 0

    def options_bits(self):
        return sum(bit for name, bit in OPTION_BITS.items() if self.options.get(name))


# ---------------------------------------------------------------- execution

class Result:
    """What one statement produced: rows (columns given) or a count."""

    def __init__(self):
        self.columns = None       # [(name, SqlType)]
        self.rows = []
        self.count = None         # rows for DONE COUNT
        self.curcmd = 0
        self.wait = None          # WAITFOR seconds
        self.envchanges = []      # (kind, new bytes/str, old)
        self.infos = []           # (number, message)


CUR_SELECT, CUR_INSERT, CUR_DELETE, CUR_UPDATE = 0xC1, 0xC3, 0xC4, 0xC5


def _sort_key(v):
    """NULLs first (ascending), strings case-insensitively like the collation."""
    if v is None:
        return (0, 0)
    return (1, v.rstrip(" ").lower() if isinstance(v, str) else v)


class Engine:
    """Executes parsed statements for one session against the server's
    shared state (`server`: an object with name, version, databases,
    tables {lower name: Table}, sessions() -> list of sessions with .state,
    new_descriptor())."""

    def __init__(self, server, state, params=None):
        self.srv = server
        self.s = state
        self.params = params or {}

    # -- tables
    def table(self, name_parts, for_write=False):
        full, parts = name_parts
        last = parts[-1]
        low = full.lower()
        if last.startswith("#"):
            t = self.s.temp.get(last.lower())
            if t is None:
                raise SqlError(208, f"Invalid object name '{last}'.", 16)
            return t
        if low in ("sys.dm_exec_sessions", "sys.databases"):
            if for_write:
                raise SqlError(259, "Ad hoc updates to system catalogs are not allowed.", 16)
            return self.virtual(low)
        if len(parts) >= 3 and parts[-3].lower() not in self.srv.databases:
            raise SqlError(208, f"Invalid object name '{full}'.", 16)
        if len(parts) >= 2 and parts[-2].lower() not in ("dbo",):
            raise SqlError(208, f"Invalid object name '{full}'.", 16)
        t = self.srv.tables.get(last.lower())
        if t is None:
            raise SqlError(208, f"Invalid object name '{full}'.", 16)
        return t

    def virtual(self, name):
        if name == "sys.databases":
            t = Table("sys.databases", [("name", T_STR, False), ("database_id", T_INT, False)])
            t.rows = [[d, i + 1] for i, d in enumerate(self.srv.database_list)]
            return t
        t = Table("sys.dm_exec_sessions", [
            ("session_id", T_INT, False), ("login_name", T_STR, False), ("host_name", T_STR, True),
            ("program_name", T_STR, True), ("status", T_STR, False),
            ("transaction_isolation_level", T_INT, False), ("open_transaction_count", T_INT, False),
            ("database_id", T_INT, False), ("context_info", SqlType("bytes", 128), True)])
        for st in self.srv.session_states():
            dbid = self.srv.database_list.index(st.database) + 1 if st.database in self.srv.database_list else 0
            t.rows.append([st.spid, st.login, st.host_name, st.app_name,
                           "running" if st is self.s else "sleeping", st.isolation, st.trancount,
                           dbid, st.context_info])
        return t

    # -- expressions
    def eval(self, e, row=None, table=None):
        k = e[0]
        if k == "lit":
            return e[1]
        if k == "col":
            if table is None:
                raise SqlError(207, f"Invalid column name '{e[1]}'.", 16)
            return row[table.col(e[1])]
        if k == "var":
            name = e[1].lower()
            if name in self.params:
                return self.params[name]
            if name in self.s.variables:
                return self.s.variables[name][1]
            raise SqlError(137, f'Must declare the scalar variable "{e[1]}".', 15)
        if k == "sysvar":
            return self.sysvar(e[1])
        if k == "neg":
            v = self.eval(e[1], row, table)
            return None if v is None else -v
        if k == "bin":
            a = self.eval(e[2], row, table)
            b = self.eval(e[3], row, table)
            return self.binop(e[1], a, b)
        if k == "cast":
            return self.cast(self.eval(e[1], row, table), e[2])
        if k == "func":
            return self.func(e[1], e[2], row, table)
        raise SqlError(102, "Incorrect syntax.", 15)

    def binop(self, op, a, b):
        if a is None or b is None:
            return None
        if op == "+" and (isinstance(a, str) or isinstance(b, str)):
            if isinstance(a, str) and isinstance(b, str):
                return a + b
            s, n = (a, b) if isinstance(a, str) else (b, a)
            try:
                int(s)
            except ValueError:
                raise SqlError(245, f"Conversion failed when converting the varchar value '{s}' to data type int.", 16)
            return int(a) + int(b)
        if op == "+" and isinstance(a, bytes) and isinstance(b, bytes):
            return a + b
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                if b == 0:
                    raise SqlError(8134, "Divide by zero error encountered.", 16)
                return a // b if isinstance(a, int) and isinstance(b, int) else a / b
            if op == "%":
                if b == 0:
                    raise SqlError(8134, "Divide by zero error encountered.", 16)
                return a % b
        except TypeError:
            raise SqlError(402, f"The data types are incompatible in the '{op}' operator.", 16)

    def cast(self, v, ty):
        if v is None:
            return None
        try:
            if ty.kind in ("int", "bigint"):
                return int(v) if not isinstance(v, bytes) else int.from_bytes(v[-4:], "big", signed=True)
            if ty.kind == "float":
                return float(v)
            if ty.kind == "str":
                s = v.decode("latin-1") if isinstance(v, bytes) else str(v)
                return s if ty.max or ty.size is None else s[:ty.size]
            if ty.kind == "bytes":
                b = v if isinstance(v, bytes) else (v.encode("utf-16-le") if isinstance(v, str) else struct.pack(">i", v))
                return b if ty.max or ty.size is None else b[:ty.size]
        except ValueError:
            raise SqlError(245, f"Conversion failed when converting the varchar value '{v}' to data type int.", 16)
        return v

    def sysvar(self, name):
        s = self.s
        if name == "@@SPID":
            return s.spid
        if name == "@@TRANCOUNT":
            return s.trancount
        if name == "@@SERVERNAME" or name == "@@SERVICENAME":
            return self.srv.name
        if name == "@@VERSION":
            return self.srv.version_string
        if name == "@@OPTIONS":
            return s.options_bits()
        if name == "@@TEXTSIZE":
            return s.values["TEXTSIZE"]
        if name == "@@LANGUAGE":
            return s.values["LANGUAGE"]
        if name == "@@DATEFIRST":
            return s.values["DATEFIRST"]
        if name == "@@LOCK_TIMEOUT":
            return s.values["LOCK_TIMEOUT"]
        if name == "@@ROWCOUNT":
            return s.rowcount
        if name == "@@ERROR":
            return s.error
        if name == "@@MAX_PRECISION":
            return 38
        raise SqlError(137, f'Must declare the scalar variable "{name}".', 15)

    def func(self, name, args, row, table):
        s = self.s
        if name == "COUNT":
            raise SqlError(147, "An aggregate may not appear here.", 15)
        ev = [self.eval(a, row, table) for a in args]
        if name in ("SUSER_SNAME", "SUSER_NAME", "ORIGINAL_LOGIN"):
            return s.login
        if name == "USER_NAME":
            return s.user
        if name == "DB_NAME":
            if ev and ev[0] is not None:
                i = ev[0] - 1
                return self.srv.database_list[i] if 0 <= i < len(self.srv.database_list) else None
            return s.database
        if name == "DB_ID":
            db = s.database if not ev or ev[0] is None else ev[0]
            return self.srv.database_list.index(db) + 1 if db in self.srv.database_list else None
        if name == "CONTEXT_INFO":
            return s.context_info
        if name == "APP_NAME":
            return s.app_name
        if name == "HOST_NAME":
            return s.host_name
        if name == "REPLICATE":
            text, n = ev
            if text is None or n is None:
                return None
            if not isinstance(n, int):
                raise SqlError(8116, "Argument data type is invalid for argument 2 of replicate function.", 16)
            if n < 0:
                return None
            if len(str(text)) * n > self.srv.max_replicate:
                raise SqlError(1105, f"REPLICATE result over the rig's limit of {self.srv.max_replicate} characters.", 17)
            return str(text) * n
        if name == "LEN":
            return None if ev[0] is None else len(str(ev[0]).rstrip(" "))
        if name == "DATALENGTH":
            v = ev[0]
            if v is None:
                return None
            if isinstance(v, bytes):
                return len(v)
            if isinstance(v, str):
                return 2 * len(v)
            return 4
        if name == "UPPER":
            return None if ev[0] is None else str(ev[0]).upper()
        if name == "LOWER":
            return None if ev[0] is None else str(ev[0]).lower()
        if name == "ISNULL":
            return ev[1] if ev[0] is None else ev[0]
        if name == "COALESCE":
            return next((v for v in ev if v is not None), None)
        if name == "CONCAT":
            return "".join("" if v is None else str(v) for v in ev)
        if name == "SUBSTRING":
            v, start, ln = ev
            if v is None:
                return None
            start = max(start, 1)
            return v[start - 1:start - 1 + ln]
        if name == "LEFT":
            return None if ev[0] is None else ev[0][:ev[1]]
        if name == "RIGHT":
            return None if ev[0] is None else (ev[0][-ev[1]:] if ev[1] else "")
        if name == "SESSIONPROPERTY":
            p = (ev[0] or "").upper()
            if p in OPTION_BITS:
                return 1 if s.options.get(p) else 0
            return None
        if name == "SERVERPROPERTY":
            p = (ev[0] or "").lower()
            return {"servername": self.srv.name, "engineedition": 5, "edition": "SQL Azure",
                    "productversion": "12.0.2000.8", "productlevel": "RTM", "machinename": self.srv.name,
                    "collation": "SQL_Latin1_General_CP1_CI_AS", "isintegratedsecurityonly": 0}.get(p)
        raise SqlError(195, f"'{name}' is not a recognized built-in function name.", 15)

    def type_of(self, e, table=None):
        k = e[0]
        if k == "lit":
            return python_type(e[1])
        if k == "col":
            return table.cols[table.col(e[1])][1] if table is not None else T_STR
        if k == "cast":
            return e[2]
        if k == "sysvar":
            return T_STR if e[1] in ("@@SERVERNAME", "@@SERVICENAME", "@@VERSION", "@@LANGUAGE") else T_INT
        if k == "var":
            name = e[1].lower()
            if name in self.s.variables:
                return self.s.variables[name][0]
            return python_type(self.params.get(name))
        if k == "neg":
            return self.type_of(e[1], table)
        if k == "bin":
            a, b = self.type_of(e[2], table), self.type_of(e[3], table)
            if a.kind == "str" or b.kind == "str":
                return T_STR_MAX if (a.max or b.max) else T_STR
            if "float" in (a.kind, b.kind):
                return T_FLOAT
            if "bigint" in (a.kind, b.kind):
                return T_BIGINT
            return a
        if k == "func":
            n = e[1]
            if n in ("REPLICATE",):
                return T_STR_MAX
            if n in ("CONTEXT_INFO",):
                return SqlType("bytes", 128)
            if n in ("LEN", "DATALENGTH", "COUNT", "DB_ID", "SESSIONPROPERTY"):
                return T_INT
            if n in ("ISNULL", "COALESCE"):
                return self.type_of(e[2][0], table)
            if n == "SERVERPROPERTY":
                return T_STR
            return T_STR
        return T_STR

    # -- predicates
    def test(self, c, row, table):
        k = c[0]
        if k == "and":
            return self.test(c[1], row, table) and self.test(c[2], row, table)
        if k == "or":
            return self.test(c[1], row, table) or self.test(c[2], row, table)
        if k == "not":
            return not self.test(c[1], row, table)
        if k == "isnull":
            v = self.eval(c[1], row, table)
            return (v is not None) if c[2] else (v is None)
        _, op, a, b = c
        x, y = self.eval(a, row, table), self.eval(b, row, table)
        if x is None or y is None:
            return False
        if isinstance(x, str) and isinstance(y, int) and not isinstance(y, bool):
            x = self.cast(x, T_INT)
        elif isinstance(y, str) and isinstance(x, int):
            y = self.cast(y, T_INT)
        if isinstance(x, str) and isinstance(y, str):
            # the rig's collation is case-insensitive and ignores trailing blanks
            x, y = x.rstrip(" ").lower(), y.rstrip(" ").lower()
        try:
            return {"=": x == y, "<>": x != y, "!=": x != y, "<": x < y, ">": x > y,
                    "<=": x <= y, ">=": x >= y}[op]
        except TypeError:
            raise SqlError(206, "Operand type clash.", 16)

    # -- statements
    def execute(self, st):
        r = Result()
        getattr(self, "x_" + st["t"])(st, r)
        return r

    def x_select(self, st, r):
        table = self.table(st["from"]) if st["from"] else None
        rows = table.rows if table is not None else [None]
        if st["where"] is not None:
            if table is None:
                rows = [None] if self.test(st["where"], None, None) else []
            else:
                rows = [row for row in rows if self.test(st["where"], row, table)]
        items = []
        for e, alias in st["items"]:
            if e == "*":
                if table is None:
                    raise SqlError(263, "Must specify table to select from.", 16)
                for i, (cname, ctype, _) in enumerate(table.cols):
                    items.append((("col", cname), cname, ctype))
            else:
                name = alias if alias is not None else (e[1] if e[0] == "col" else "")
                items.append((e, name, self.type_of(e, table)))
        aggregate = any(e[0] == "func" and e[1] in AGGREGATES for e, _, _ in items)
        if aggregate:
            out = []
            for e, _, _ in items:
                if e[0] == "func" and e[1] == "COUNT":
                    arg = e[2][0]
                    if arg == ("star",):
                        out.append(len(rows))
                    else:
                        out.append(sum(1 for row in rows if self.eval(arg, row, table) is not None))
                elif e[0] == "col":
                    raise SqlError(8120, f"Column '{e[1]}' is invalid in the select list because it is not "
                                         "contained in either an aggregate function or the GROUP BY clause.", 16)
                else:
                    out.append(self.eval(e, None, None))
            result = [out]
        else:
            if st["order"]:
                rows = list(rows)
                for e, desc in reversed(st["order"]):
                    rows.sort(key=lambda row, e=e: _sort_key(self.eval(e, row, table)), reverse=desc)
            if st["top"] is not None:
                rows = rows[:st["top"]]
            result = [[self.eval(e, row, table) for e, _, _ in items] for row in rows]
        cols = []
        for i, (e, name, ty) in enumerate(items):
            if ty.kind == "str" and not ty.max and any(
                    isinstance(rw[i], str) and len(rw[i]) > 4000 for rw in result):
                ty = T_STR_MAX
            if ty.kind == "bytes" and not ty.max and any(
                    isinstance(rw[i], bytes) and len(rw[i]) > 8000 for rw in result):
                ty = SqlType("bytes", None, True)
            cols.append((name, ty))
        for rw in result:
            for i, (name, ty) in enumerate(cols):
                rw[i] = self.coerce(rw[i], ty)
        r.columns = cols
        r.rows = result
        r.count = len(result)
        r.curcmd = CUR_SELECT
        self.s.rowcount = len(result)

    def coerce(self, v, ty):
        """Make a value fit its column type (what the wire encoder expects)."""
        if v is None:
            return None
        k = ty.kind
        if k in ("int", "bigint"):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return int(v)
            return self.cast(v, T_INT)
        if k == "float":
            return float(v)
        if k == "str":
            if isinstance(v, bytes):
                return "0x" + v.hex().upper()
            return str(v)
        if k == "bytes":
            return v if isinstance(v, bytes) else self.cast(v, ty)
        return v

    def x_set_opt(self, st, r):
        for o in st["opts"]:
            if o == "ANSI_DEFAULTS":
                for a in ODBC_ON + ("CURSOR_CLOSE_ON_COMMIT", "IMPLICIT_TRANSACTIONS"):
                    self.s.options[a] = st["on"]
            self.s.options[o] = st["on"]

    def x_set_val(self, st, r):
        v = st["value"]
        if isinstance(v, str) and v.startswith("@"):
            v = self.eval(("var", v))
        if st["opt"] == "LANGUAGE":
            if str(v).lower() not in ("us_english", "english"):
                raise SqlError(2732, f"Error number 15151 is invalid: language '{v}' is not supported by the rig.", 16)
            v = "us_english"
            r.envchanges.append((2, "us_english", self.s.values["LANGUAGE"]))
            r.infos.append((5703, "Changed language setting to us_english."))
        self.s.values[st["opt"]] = v

    def x_set_iso(self, st, r):
        self.s.isolation = st["level"]

    def x_set_ctx(self, st, r):
        v = st["value"]
        if isinstance(v, tuple):
            v = self.eval(v)
            if isinstance(v, int):
                v = v.to_bytes(4, "big", signed=True)
            if not isinstance(v, bytes):
                raise SqlError(257, "Implicit conversion from data type nvarchar to varbinary(128) is not allowed.", 16)
        if len(v) > 128:
            raise SqlError(8152, "String or binary data would be truncated.", 16)
        # SQL Server pads CONTEXT_INFO to 128 bytes with zeros
        self.s.context_info = v + b"\0" * (128 - len(v))

    def x_set_var(self, st, r):
        name = st["name"].lower()
        if name not in self.s.variables:
            raise SqlError(137, f'Must declare the scalar variable "{st["name"]}".', 15)
        ty = self.s.variables[name][0]
        self.s.variables[name] = (ty, self.coerce(self.eval(st["expr"]), ty))

    def x_declare(self, st, r):
        for name, ty, init in st["vars"]:
            self.s.variables[name.lower()] = (ty, None if init is None else self.coerce(self.eval(init), ty))

    def x_begin(self, st, r):
        self.s.trancount += 1
        if self.s.trancount == 1:
            self.s.descriptor = self.srv.new_descriptor()
            r.envchanges.append((8, self.s.descriptor, b""))

    def x_commit(self, st, r):
        if self.s.trancount == 0:
            raise SqlError(3902, "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.", 16,
                           abort_batch=False)
        self.s.trancount -= 1
        if self.s.trancount == 0:
            r.envchanges.append((9, b"", self.s.descriptor))
            self.s.descriptor = b"\0" * 8

    def x_rollback(self, st, r):
        if self.s.trancount == 0:
            raise SqlError(3903, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.", 16,
                           abort_batch=False)
        r.envchanges.append((10, b"", self.s.descriptor))
        self.s.trancount = 0
        self.s.descriptor = b"\0" * 8

    def x_save(self, st, r):
        if self.s.trancount == 0:
            raise SqlError(628, "Cannot issue SAVE TRANSACTION when there is no active transaction.", 16)

    def x_waitfor(self, st, r):
        r.wait = st["secs"]

    def x_use(self, st, r):
        db = st["db"]
        if db.lower() != self.s.database.lower():
            if db.lower() not in self.srv.databases:
                raise SqlError(911, f"Database '{db}' does not exist. Make sure that the name is entered correctly.", 16)
            raise SqlError(40508, "USE statement is not supported to switch between databases. "
                                  "Use a new connection to connect to a different database.", 16)

    def x_if(self, st, r):
        branch = st["then"] if self.test(st["cond"], None, None) else st["else"]
        if branch is not None:
            sub = self.execute(branch)
            r.__dict__.update(sub.__dict__)

    def x_print(self, st, r):
        v = self.eval(st["expr"])
        r.infos.append((0, "" if v is None else str(v)))

    def x_exec(self, st, r):
        raise SqlError(2812, f"Could not find stored procedure '{st['name']}'.", 16)

    def x_insert(self, st, r):
        t = self.table(st["table"], for_write=True)
        idx = [t.col(c) for c in st["cols"]] if st["cols"] is not None else list(range(len(t.cols)))
        new = []
        for vals in st["rows"]:
            if len(vals) != len(idx):
                raise SqlError(110 if len(vals) < len(idx) else 109,
                               "There are fewer columns in the INSERT statement than values specified in the VALUES clause."
                               if len(vals) > len(idx) else
                               "There are more columns in the INSERT statement than values specified in the VALUES clause.", 15)
            row = [None] * len(t.cols)
            for i, e in zip(idx, vals):
                row[i] = self.coerce(self.eval(e), t.cols[i][1])
            for i, (cname, _, nullable) in enumerate(t.cols):
                if row[i] is None and not nullable:
                    raise SqlError(515, f"Cannot insert the value NULL into column '{cname}', table '{t.name}'; "
                                        "column does not allow nulls. INSERT fails.", 16, abort_batch=False)
            new.append(row)
        if t.pk is not None:
            seen = {self._key(row[t.pk]) for row in t.rows}
            for row in new:
                k = self._key(row[t.pk])
                if k in seen:
                    raise SqlError(2627, f"Violation of PRIMARY KEY constraint 'PK_{t.name}'. Cannot insert duplicate key "
                                         f"in object 'dbo.{t.name}'. The duplicate key value is ({row[t.pk]}).", 14,
                                   abort_batch=False)
                seen.add(k)
        t.rows.extend(new)
        r.count = len(new)
        r.curcmd = CUR_INSERT
        self.s.rowcount = len(new)

    @staticmethod
    def _key(v):
        return v.rstrip(" ").lower() if isinstance(v, str) else v

    def x_update(self, st, r):
        t = self.table(st["table"], for_write=True)
        sets = [(t.col(c), e) for c, e in st["sets"]]
        n = 0
        for row in t.rows:
            if st["where"] is None or self.test(st["where"], row, t):
                newvals = [(i, self.coerce(self.eval(e, row, t), t.cols[i][1])) for i, e in sets]
                for i, v in newvals:
                    if t.pk == i and any(self._key(o[i]) == self._key(v) for o in t.rows if o is not row):
                        raise SqlError(2627, f"Violation of PRIMARY KEY constraint 'PK_{t.name}'.", 14, abort_batch=False)
                    row[i] = v
                n += 1
        r.count = n
        r.curcmd = CUR_UPDATE
        self.s.rowcount = n

    def x_delete(self, st, r):
        t = self.table(st["table"], for_write=True)
        keep = []
        n = 0
        for row in t.rows:
            if st["where"] is None or self.test(st["where"], row, t):
                n += 1
            else:
                keep.append(row)
        t.rows[:] = keep
        if not st.get("truncate"):
            r.count = n
            r.curcmd = CUR_DELETE
        self.s.rowcount = n

    def x_create(self, st, r):
        full, parts = st["table"]
        name = parts[-1]
        cols = st["cols"]
        if st["pk"] is not None and st["pk"].lower() not in {c[0].lower() for c in cols}:
            raise SqlError(1911, f"Column name '{st['pk']}' does not exist in the target table or view.", 16)
        t = Table(name, cols, pk=st["pk"])
        if name.startswith("#"):
            if name.lower() in self.s.temp:
                raise SqlError(2714, f"There is already an object named '{name}' in the database.", 16)
            self.s.temp[name.lower()] = t
        else:
            if name.lower() in self.srv.tables:
                raise SqlError(2714, f"There is already an object named '{name}' in the database.", 16)
            self.srv.tables[name.lower()] = t

    def x_drop(self, st, r):
        full, parts = st["table"]
        name = parts[-1].lower()
        where = self.s.temp if name.startswith("#") else self.srv.tables
        if name not in where:
            if st["if_exists"]:
                return
            raise SqlError(3701, f"Cannot drop the table '{parts[-1]}', because it does not exist or you do not "
                                 "have permission.", 11)
        if name == "kv" and where is self.srv.tables:
            raise SqlError(3701, "Cannot drop the table 'kv': the rig keeps it.", 11)
        del where[name]

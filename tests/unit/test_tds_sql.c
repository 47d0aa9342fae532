/*
 * test_tds_sql.c - unit tests for codec_sql.c: which requests leave state
 * on a SQL Server session, which SET statements move with a client, and
 * the merged SET list replayed on another server.
 *
 * Inputs are what real drivers send (tedious's and pymssql's login SET
 * batches, EF-style "SET NOCOUNT ON; INSERT ...", sp_executesql RPCs) and
 * the ways text hides keywords (comments, strings, quoted names).
 *
 * Not here: packets and tokens (test_tds_codec.c, test_tds_tokens.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/tds/tds.h"
#include "tests/unit/tp_test.h"

/* ASCII (or UTF-8 Latin-1 range) as UTF-16LE; returns the byte count. */
static size_t u16(const char *s, uint8_t *out, size_t cap)
{
	long n = tds_utf8_to_utf16(s, strlen(s), out, cap, NULL);

	return n < 0 ? 0 : (size_t)n;
}

typedef struct verdict {
	int rc;
	bool pins;
	char sets[TDS_SETS_MAX];
} verdict_t;

static verdict_t classify(const char *sql)
{
	static uint8_t buf[65536];
	size_t n = u16(sql, buf, sizeof(buf));
	tds_sql_verdict_t v;
	verdict_t r;

	memset(&r, 0, sizeof(r));
	r.rc = tds_sql_classify(buf, n, r.sets, sizeof(r.sets), &v);
	r.pins = v.pins;
	if (strlen(r.sets) != v.sets_len)
		r.rc = -12345;
	return r;
}

static void test_tedious_login_sets_move(void)
{
	verdict_t v =
	    classify("set textsize 2147483647\n"
		     "set quoted_identifier on\n"
		     "set arithabort off\n"
		     "set numeric_roundabort off\n"
		     "set ansi_warnings on\n"
		     "set ansi_padding on\n"
		     "set ansi_nulls on\n"
		     "set concat_null_yields_null on\n"
		     "set cursor_close_on_commit off\n"
		     "set implicit_transactions off\n"
		     "set language us_english\n"
		     "set dateformat mdy\n"
		     "set datefirst 7\n"
		     "set transaction isolation level read committed");

	CHECK_EQ_INT(v.rc, 0);
	CHECK(!v.pins);
	CHECK_EQ_STR(v.sets,
		     "set textsize 2147483647\n"
		     "set quoted_identifier on\n"
		     "set arithabort off\n"
		     "set numeric_roundabort off\n"
		     "set ansi_warnings on\n"
		     "set ansi_padding on\n"
		     "set ansi_nulls on\n"
		     "set concat_null_yields_null on\n"
		     "set cursor_close_on_commit off\n"
		     "set implicit_transactions off\n"
		     "set language us_english\n"
		     "set dateformat mdy\n"
		     "set datefirst 7\n"
		     "set transaction isolation level read committed\n");
}

static void test_set_forms(void)
{
	verdict_t v;

	v = classify("SET ARITHABORT ON;SET CONCAT_NULL_YIELDS_NULL ON;"
		     "SET ANSI_NULLS ON;SET TEXTSIZE 2147483647;");
	CHECK(!v.pins);
	CHECK_EQ_STR(v.sets,
		     "set arithabort on\nset concat_null_yields_null "
		     "on\nset ansi_nulls on\nset textsize 2147483647\n");
	v = classify("SET ANSI_NULLS , ANSI_PADDING OFF");
	CHECK_EQ_STR(v.sets, "set ansi_nulls,ansi_padding off\n");
	v = classify("set lock_timeout -1");
	CHECK_EQ_STR(v.sets, "set lock_timeout -1\n");
	v = classify("SET LANGUAGE N'us_english'");
	CHECK_EQ_STR(v.sets, "set language N'us_english'\n");
	v = classify("SET STATISTICS IO ON");
	CHECK_EQ_STR(v.sets, "set statistics io on\n");
	v = classify("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
	CHECK_EQ_STR(v.sets,
		     "set transaction isolation level repeatable read\n");
	v = classify("/* options */ SET NOCOUNT ON -- quiet\n");
	CHECK(!v.pins);
	CHECK_EQ_STR(v.sets, "set nocount on\n");
}

static void test_sets_then_statements(void)
{
	verdict_t v = classify("SET NOCOUNT ON; INSERT INTO t (a) VALUES (1); "
			       "SELECT SCOPE_IDENTITY()");

	CHECK(!v.pins);
	CHECK_EQ_STR(v.sets, "set nocount on\n");
	v = classify("SET @x = 1; SELECT @x");
	CHECK(!v.pins);
	CHECK_EQ_STR(v.sets, "");
	v = classify("update t set v = 1 where k = 2");
	CHECK(!v.pins);
}

static void test_what_pins(void)
{
	static const char *const pins[] = {
	    "SELECT 1; SET NOCOUNT ON",
	    "SET CONTEXT_INFO 0x0102",
	    "SET NOCOUNT ON; SET CONTEXT_INFO 0x01",
	    "CREATE TABLE #t (id INT)",
	    "create table [dbo].x (a int); create table #t (a int)",
	    "SELECT * INTO #x FROM t",
	    "DECLARE c CURSOR FOR SELECT 1",
	    "EXEC sp_setapprole 'r', 'p'",
	    "EXEC sp_set_session_context 'k', 1",
	    "SET IDENTITY_INSERT t ON",
	    "SET FOO ON",
	    "SET LANGUAGE N'fran\xc3\xa7"
	    "ais'",
	    "SET LANGUAGE N'us\x7f"
	    "english'", /* DEL: not printable, not replayed (fuzz find) */
	    "SET TRANSACTION ISOLATION LEVEL",
	    "BEGIN TRAN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
	    "UPDATE t SET nocount = 1", /* harmless false positive */
	};
	static const char *const free_[] = {
	    "SELECT * FROM #t",
	    "SELECT CONTEXT_INFO()",
	    "-- create table #t\nSELECT 1",
	    "/* nested /* */ create table #t */ SELECT 1",
	    "SELECT 'create table #t', N'set context_info 1'",
	    "SELECT [create table #t] FROM x",
	    "BEGIN TRAN; INSERT INTO kv VALUES ('a', 'b'); COMMIT",
	    "WAITFOR DELAY '00:00:30'",
	    "",
	};

	for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++) {
		verdict_t v = classify(pins[i]);

		if (!v.pins)
			fprintf(stderr, "should pin: %s\n", pins[i]);
		CHECK(v.pins);
	}
	for (size_t i = 0; i < sizeof(free_) / sizeof(free_[0]); i++) {
		verdict_t v = classify(free_[i]);

		if (v.pins)
			fprintf(stderr, "should not pin: %s\n", free_[i]);
		CHECK(!v.pins);
	}
}

static void test_small_cap_and_cut_text(void)
{
	uint8_t buf[256];
	char sets[16];
	tds_sql_verdict_t v;
	size_t n = u16("SET NOCOUNT ON; SET ANSI_NULLS ON", buf, sizeof(buf));

	CHECK_EQ_INT(tds_sql_classify(buf, n, sets, sizeof(sets), &v),
		     TP_ETOOBIG);
	CHECK(v.pins);
	/* cut anywhere, odd lengths included: never past the end */
	for (size_t k = 0; k <= n; k++) {
		uint8_t *cut = malloc(k ? k : 1);
		char big[TDS_SETS_MAX];

		memcpy(cut, buf, k);
		CHECK(tds_sql_classify(cut, k, big, sizeof(big), &v) == 0);
		free(cut);
	}
}

/* An RPC payload: ALL_HEADERS, proc (by id or name), flags, @stmt. */
static size_t rpc(uint8_t *out, int proc_id, const char *name, const char *stmt,
		  bool max)
{
	static const uint8_t txn[8];
	size_t n = tds_all_headers_build(out, 64, txn, 1), k;

	if (proc_id) {
		out[n++] = 0xFF;
		out[n++] = 0xFF;
		out[n++] = (uint8_t)proc_id;
		out[n++] = 0;
	} else {
		out[n++] = (uint8_t)strlen(name);
		out[n++] = 0;
		n += u16(name, out + n, 256);
	}
	out[n++] = 0; /* option flags */
	out[n++] = 0;
	out[n++] = 5; /* @stmt */
	n += u16("@stmt", out + n, 16);
	out[n++] = 0;	 /* status */
	out[n++] = 0xE7; /* NVARCHAR */
	out[n++] = max ? 0xFF : 0x40;
	out[n++] = max ? 0xFF : 0x1F;
	memcpy(out + n, "\x09\x04\xD0\x00\x34", 5);
	n += 5;
	k = u16(stmt, out + n + (max ? 12 : 2), 4096);
	if (max) {
		memset(out + n, 0, 8);
		out[n] = (uint8_t)k; /* total (small) */
		out[n + 8] = (uint8_t)k;
		out[n + 9] = (uint8_t)(k >> 8);
		out[n + 10] = out[n + 11] = 0;
		n += 12;
	} else {
		out[n] = (uint8_t)k;
		out[n + 1] = (uint8_t)(k >> 8);
		n += 2;
	}
	return n + k;
}

static void test_rpc(void)
{
	uint8_t buf[8192];
	size_t n;

	n = rpc(buf, 10, NULL, "SELECT @p + 1", false);
	CHECK(!tds_rpc_pins(buf, n));
	n = rpc(buf, 10, NULL, "SET CONTEXT_INFO 0x01", false);
	CHECK(tds_rpc_pins(buf, n));
	n = rpc(buf, 10, NULL, "SET CONTEXT_INFO 0x01", true);
	CHECK(tds_rpc_pins(buf, n));
	/* Local to the call: options and #temp tables end with it. */
	n = rpc(buf, 10, NULL, "SET NOCOUNT ON; CREATE TABLE #t (a int)",
		false);
	CHECK(!tds_rpc_pins(buf, n));
	n = rpc(buf, 10, NULL, "CREATE TABLE ##g (a int)", false);
	CHECK(tds_rpc_pins(buf, n));
	n = rpc(buf, 0, "sp_executesql", "SELECT CONTEXT_INFO()", false);
	CHECK(!tds_rpc_pins(buf, n));
	n = rpc(buf, 11, NULL, "SELECT 1", false); /* sp_prepare */
	CHECK(tds_rpc_pins(buf, n));
	n = rpc(buf, 13, NULL, "SELECT 1", false); /* sp_prepexec */
	CHECK(tds_rpc_pins(buf, n));
	n = rpc(buf, 0, "SP_CURSOROPEN", "SELECT 1", false);
	CHECK(tds_rpc_pins(buf, n));
	n = rpc(buf, 0, "sys.sp_prepare", "SELECT 1", false);
	CHECK(tds_rpc_pins(buf, n));
	n = rpc(buf, 0, "dbo.my_proc", "SELECT 1", false);
	CHECK(!tds_rpc_pins(buf, n));
	/* every truncation: no read past the end */
	n = rpc(buf, 10, NULL, "SET CONTEXT_INFO 0x01", true);
	for (size_t k = 0; k < n; k++) {
		uint8_t *cut = malloc(k ? k : 1);

		memcpy(cut, buf, k);
		(void)tds_rpc_pins(cut, k);
		free(cut);
	}
}

static void test_sets_merge(void)
{
	char list[TDS_SETS_MAX] = "";

	CHECK_EQ_INT(tds_sets_merge(list, sizeof(list),
				    "set nocount on\nset ansi_nulls on\n"),
		     0);
	CHECK_EQ_INT(tds_sets_merge(list, sizeof(list), "set nocount off\n"),
		     0);
	CHECK_EQ_STR(list, "set ansi_nulls on\nset nocount off\n");
	CHECK_EQ_INT(
	    tds_sets_merge(list, sizeof(list),
			   "set transaction isolation level serializable\n"
			   "set transaction isolation level read committed\n"),
	    0);
	CHECK_EQ_STR(list, "set ansi_nulls on\nset nocount off\n"
			   "set transaction isolation level read committed\n");
	CHECK_EQ_INT(tds_sets_merge(list, sizeof(list),
				    "set statistics io on\n"
				    "set statistics time on\n"
				    "set statistics io off\n"),
		     0);
	CHECK_EQ_STR(list, "set ansi_nulls on\nset nocount off\n"
			   "set transaction isolation level read committed\n"
			   "set statistics time on\nset statistics io off\n");
	/* the same again changes nothing */
	CHECK_EQ_INT(tds_sets_merge(list, sizeof(list), "set ansi_nulls on\n"),
		     0);
	CHECK_EQ_STR(list, "set nocount off\n"
			   "set transaction isolation level read committed\n"
			   "set statistics time on\nset statistics io off\n"
			   "set ansi_nulls on\n");
}

static void test_sets_merge_overflow(void)
{
	char list[40] = "set nocount on\n";

	CHECK_EQ_INT(tds_sets_merge(list, sizeof(list),
				    "set ansi_nulls on\nset ansi_padding on\n"),
		     TP_ETOOBIG);
	CHECK_EQ_STR(list, "set nocount on\n");
	CHECK_EQ_INT(tds_sets_merge(list, sizeof(list), "set ansi_nulls on\n"),
		     0);
	CHECK_EQ_STR(list, "set nocount on\nset ansi_nulls on\n");
}

TP_TEST_MAIN(TP_TEST(test_tedious_login_sets_move), TP_TEST(test_set_forms),
	     TP_TEST(test_sets_then_statements), TP_TEST(test_what_pins),
	     TP_TEST(test_small_cap_and_cut_text), TP_TEST(test_rpc),
	     TP_TEST(test_sets_merge), TP_TEST(test_sets_merge_overflow))

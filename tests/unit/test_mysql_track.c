/*
 * test_mysql_track.c - unit tests for the MySQL response tracker: does it
 * tell, packet by packet, when a command is fully answered and whether
 * the server is then outside a transaction?
 *
 * Answers are the ones MariaDB 10.11 sends (captured from the mariadb CLI,
 * PyMySQL and node mysql2), plus the shapes of MySQL 8 with DEPRECATE_EOF,
 * LOCAL INFILE, cursors, multi-statements, 16 MB continuations and
 * pipelined commands.
 *
 * Not here: the packet parsers (test_mysql_codec.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/mysql/mysql.h"
#include "tests/unit/tp_test.h"

#define CAPS                                                               \
	(MY_CAP_PROTOCOL_41 | MY_CAP_TRANSACTIONS | MY_CAP_SECURE_CONN |   \
	 MY_CAP_MULTI_STMTS | MY_CAP_MULTI_RESULTS | MY_CAP_PS_MULTI_RES | \
	 MY_CAP_PLUGIN_AUTH | MY_CAP_SESSION_TRACK)

/* Feeds one packet given as hex payload; returns the events. */
static unsigned feed(my_track_t *t, const char *hex)
{
	uint8_t buf[1024];
	size_t n = 0;
	uint8_t tag;

	for (const char *h = hex; h[0] && h[1]; h += 2) {
		unsigned v;

		sscanf(h, "%2x", &v);
		buf[4 + n++] = (uint8_t)v;
	}
	my_put_header(buf, n, 1);
	return my_track_server(t, buf, n + 4, n + 4, &tag);
}

static unsigned feed_tag(my_track_t *t, const char *hex, uint8_t *tag)
{
	uint8_t buf[256];
	size_t n = 0;

	for (const char *h = hex; h[0] && h[1]; h += 2) {
		unsigned v;

		sscanf(h, "%2x", &v);
		buf[4 + n++] = (uint8_t)v;
	}
	my_put_header(buf, n, 1);
	return my_track_server(t, buf, n + 4, n + 4, tag);
}

static void push(my_track_t *t, uint8_t cmd)
{
	CHECK_EQ_INT(my_track_push(t, my_command_reply(cmd), 0), 0);
}

#define OK_IDLE	 "00000002000000" /* autocommit */
#define OK_TRANS "00000003000000" /* in transaction */
#define OK_MORE	 "0000000a000000" /* more results */
#define EOF_IDLE "fe00000200"
#define EOF_MORE "fe00000a00"
#define COLDEF_A "03646566000000016100000c3f0001000000038100000000"
#define COLDEF_B "03646566000000016200000c210003000000fd0100270000"
#define ERR_1064 "ff2804233432303030796f7520686176652061"

static void test_ping(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	CHECK(!my_track_busy(&t));
	push(&t, MY_COM_PING);
	CHECK(my_track_busy(&t));
	CHECK_EQ_INT(feed(&t, OK_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	CHECK(!my_track_busy(&t));
}

/* `select 1 as a, 'x' as b` from the mariadb CLI (MariaDB's metadata
 * caching adds a byte after the column count). */
static void test_result_set(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "0201"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_B), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, "01310178"), 0);
	CHECK_EQ_INT(feed(&t, "fb0178"), 0); /* a row starting with NULL */
	/* a row whose first value has an 8-byte length: 0xFE, not an EOF */
	CHECK_EQ_INT(feed(&t, "fe0100000000000000780178"), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
}

static void test_in_transaction(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY); /* BEGIN */
	CHECK_EQ_INT(feed(&t, OK_TRANS), MY_EV_DONE | MY_EV_OK);
	push(&t, MY_COM_QUERY); /* a failing statement: still inside */
	CHECK_EQ_INT(feed(&t, ERR_1064), MY_EV_DONE | MY_EV_ERR);
	push(&t, MY_COM_QUERY); /* COMMIT */
	CHECK_EQ_INT(feed(&t, OK_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	/* autocommit off: never idle */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "00000000000000"), MY_EV_DONE | MY_EV_OK);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, ERR_1064), MY_EV_DONE | MY_EV_ERR);
}

/* `SELECT 1; SELECT 2; DO 0` as a multi-statement. */
static void test_multi_results(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, "0131"), 0);
	CHECK_EQ_INT(feed(&t, EOF_MORE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, "0132"), 0);
	CHECK_EQ_INT(feed(&t, EOF_MORE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, OK_MORE), MY_EV_OK); /* an INSERT */
	CHECK_EQ_INT(feed(&t, OK_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	/* an ERR ends the chain; MORE_RESULTS seen before does not stick */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, OK_MORE), MY_EV_OK);
	CHECK_EQ_INT(feed(&t, ERR_1064), MY_EV_DONE | MY_EV_IDLE | MY_EV_ERR);
}

static void test_err_mid_rows(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, "0131"), 0);
	CHECK_EQ_INT(feed(&t, "ff5207233730313030517565727920657865637574"
			      "696f6e2077617320696e746572727570746564"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_ERR);
}

static unsigned client(my_track_t *t, size_t payload_len)
{
	uint8_t hdr[5] = {0, 0, 0, 2, 'x'};

	my_put_header(hdr, payload_len, 2);
	return my_track_client(t, hdr, payload_len ? 5 : 4, payload_len + 4);
}

static void test_local_infile(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(client(&t, 40), 0); /* the command itself */
	CHECK_EQ_INT(feed(&t, "fb2f746d702f782e637376"), MY_EV_INFILE);
	CHECK(my_track_busy(&t));
	CHECK_EQ_INT(client(&t, 16384), MY_EV_DATA);
	CHECK_EQ_INT(client(&t, 100), MY_EV_DATA);
	CHECK_EQ_INT(client(&t, 0), MY_EV_DATA_END);
	CHECK_EQ_INT(client(&t, 9), 0); /* a command again */
	CHECK_EQ_INT(feed(&t, "00020002000000"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	/* the file refused by the server half way: ERR ends it all */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "fb2f78"), MY_EV_INFILE);
	CHECK_EQ_INT(client(&t, 10), MY_EV_DATA);
	CHECK_EQ_INT(feed(&t, ERR_1064), MY_EV_DONE | MY_EV_IDLE | MY_EV_ERR);
	CHECK(!t.infile);
	/* data of exactly 16 MB: the empty packet after a full one is the
	 * end of that packet, not of the file */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "fb2f78"), MY_EV_INFILE);
	CHECK_EQ_INT(client(&t, MY_MAX_PAYLOAD), MY_EV_DATA);
	CHECK_EQ_INT(client(&t, 0), MY_EV_CONT);
	CHECK_EQ_INT(client(&t, 0), MY_EV_DATA_END);
	CHECK_EQ_INT(feed(&t, OK_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
}

/* mysql2's `select ? as x`: COM_STMT_PREPARE then COM_STMT_EXECUTE. */
static void test_prepare_execute(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_STMT_PREPARE);
	CHECK_EQ_INT(feed(&t, "000100000001000100000000"), 0);
	CHECK_EQ_INT(feed(&t, "03646566000000017800000c3f00000000000680000000"
			      "00"),
		     0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	CHECK_EQ_INT(feed(&t, "03646566000000017800000c3f00000000000680000000"
			      "00"),
		     0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	push(&t, MY_COM_STMT_EXECUTE);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, "03646566000000017800000c3f00170000000581001f00"
			      "00"),
		     0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	/* a binary row starts with 0x00: a row, not an OK */
	CHECK_EQ_INT(feed(&t, "00000000000000001440"), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	/* no params, no columns: the PREPARE_OK is all */
	push(&t, MY_COM_STMT_PREPARE);
	CHECK_EQ_INT(feed(&t, "000200000000000000000000"),
		     MY_EV_DONE | MY_EV_IDLE);
	/* columns only */
	push(&t, MY_COM_STMT_PREPARE);
	CHECK_EQ_INT(feed(&t, "000300000002000000000000"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_B), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	/* a failing prepare */
	push(&t, MY_COM_STMT_PREPARE);
	CHECK_EQ_INT(feed(&t, ERR_1064), MY_EV_DONE | MY_EV_IDLE | MY_EV_ERR);
}

/* MySQL 8 with DEPRECATE_EOF: no EOF after definitions, an OK with the
 * 0xFE header after rows. */
static void test_deprecate_eof(void)
{
	my_track_t t;

	my_track_init(&t, CAPS | MY_CAP_DEPRECATE_EOF, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "02"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_B), 0);
	CHECK_EQ_INT(feed(&t, "01310178"), 0);
	/* an OK with the EOF header; in a transaction */
	CHECK_EQ_INT(feed(&t, "fe000003000000"), MY_EV_DONE | MY_EV_OK);
	CHECK(!my_track_busy(&t));
	/* the 0xFE OK is the end even when longer than 9 bytes */
	my_track_init(&t, CAPS | MY_CAP_DEPRECATE_EOF, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, "0131"), 0);
	CHECK_EQ_INT(feed(&t, "fe000002000000"), /* status idle */
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	push(&t, MY_COM_STMT_PREPARE);
	CHECK_EQ_INT(feed(&t, "000100000001000100000000"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), MY_EV_DONE | MY_EV_IDLE);
	push(&t, MY_COM_FIELD_LIST);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, "fe000002000000"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
}

/* A result row of 16 MB + 10 bytes: one full fragment, then the rest. */
static void test_continuation(void)
{
	my_track_t t;
	uint8_t hdr[5] = {0xff, 0xff, 0xff, 3, 0xfe}, tag;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	/* first fragment: a row (its value's length is 8-byte encoded) */
	CHECK_EQ_INT(my_track_server(&t, hdr, 5, MY_MAX_PAYLOAD + 4, &tag), 0);
	/* the continuation starts with 0xFE too, and is short: not an EOF */
	CHECK_EQ_INT(feed(&t, "fe00000200"), MY_EV_CONT);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	/* exactly 2 x 16 MB - 2: two full fragments and an empty one */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_EOF);
	hdr[4] = 0xfe;
	CHECK_EQ_INT(my_track_server(&t, hdr, 5, MY_MAX_PAYLOAD + 4, &tag), 0);
	CHECK_EQ_INT(my_track_server(&t, hdr, 5, MY_MAX_PAYLOAD + 4, &tag),
		     MY_EV_CONT);
	CHECK_EQ_INT(feed(&t, ""), MY_EV_CONT);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	/* client side: a 16 MB COM_QUERY and its continuation */
	CHECK_EQ_INT(client(&t, MY_MAX_PAYLOAD), 0);
	CHECK_EQ_INT(client(&t, 5), MY_EV_CONT);
	CHECK_EQ_INT(client(&t, 5), 0);
}

static void test_pipelined_and_tags(void)
{
	my_track_t t;
	uint8_t tag = 0;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	CHECK_EQ_INT(my_track_push(&t, MY_REPLY_OK, 7), 0);
	CHECK_EQ_INT(my_track_push(&t, MY_REPLY_RESULT, 9), 0);
	CHECK_EQ_INT(my_track_push(&t, MY_REPLY_NONE, 1), 0); /* ignored */
	CHECK_EQ_INT(feed_tag(&t, OK_IDLE, &tag), MY_EV_DONE | MY_EV_OK);
	CHECK_EQ_INT(tag, 7);
	CHECK_EQ_INT(feed_tag(&t, OK_IDLE, &tag),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	CHECK_EQ_INT(tag, 9);
	CHECK(!my_track_busy(&t));
}

/* Rows take a short path through the tracker: they still carry their
 * command's tag, a 16 MB row's continuation is still one, and the end of
 * the rows is still seen. */
static void test_rows_keep_tag_and_continuations(void)
{
	my_track_t t;
	uint8_t big[5] = {0xff, 0xff, 0xff, 4, 0x41}, tag = 0;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	CHECK_EQ_INT(my_track_push(&t, MY_REPLY_RESULT, 5), 0);
	CHECK_EQ_INT(feed_tag(&t, "01", &tag), 0);
	CHECK_EQ_INT(feed_tag(&t, COLDEF_A, &tag), 0);
	CHECK_EQ_INT(feed_tag(&t, EOF_IDLE, &tag), MY_EV_EOF);
	for (int i = 0; i < 3; i++) {
		tag = 0;
		CHECK_EQ_INT(feed_tag(&t, "0131", &tag), 0);
		CHECK_EQ_INT(tag, 5);
	}
	/* a 16 MB row, then its continuation starting like an ERR: a
	 * continuation all the same */
	CHECK_EQ_INT(my_track_server(&t, big, 5, MY_MAX_PAYLOAD + 4, &tag), 0);
	CHECK_EQ_INT(tag, 5);
	CHECK_EQ_INT(feed_tag(&t, "ff0102", &tag), MY_EV_CONT);
	CHECK_EQ_INT(feed_tag(&t, "fb", &tag), 0); /* a NULL row */
	CHECK_EQ_INT(feed_tag(&t, EOF_IDLE, &tag),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	CHECK_EQ_INT(tag, 5);
	CHECK(!my_track_busy(&t));
}

static void test_unsolicited_and_overflow(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	/* MariaDB's "Connection was killed" before it hangs up */
	CHECK_EQ_INT(feed(&t, "ff8707233730313030"), MY_EV_BROKEN);
	CHECK(t.broken);
	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	for (int i = 0; i < MY_TRACK_QUEUE; i++)
		CHECK_EQ_INT(my_track_push(&t, MY_REPLY_OK, 0), 0);
	CHECK_EQ_INT(my_track_push(&t, MY_REPLY_OK, 0), TP_ETOOBIG);
	CHECK(t.broken);
	/* a broken tracker never says idle again */
	CHECK_EQ_INT(feed(&t, OK_IDLE), MY_EV_DONE | MY_EV_OK);
}

static void test_unexpected_packets(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_PING);
	CHECK(feed(&t, "0131") & MY_EV_BROKEN);
	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK(feed(&t, "fe00000200") & MY_EV_BROKEN);
	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK(feed(&t, "00ff") & MY_EV_BROKEN); /* a truncated OK */
	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK(feed(&t, "") & MY_EV_BROKEN);
	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK(feed(&t, "0131") & MY_EV_BROKEN); /* a row instead of EOF */
	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK(feed(&t, "fc0000") & MY_EV_BROKEN); /* zero columns */
}

static void test_cursor_and_fetch(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_STMT_EXECUTE);
	CHECK_EQ_INT(feed(&t, "01"), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	/* EOF with CURSOR_EXISTS: rows come with COM_STMT_FETCH */
	CHECK_EQ_INT(feed(&t, "fe00004200"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	push(&t, MY_COM_STMT_FETCH);
	CHECK_EQ_INT(feed(&t, "00000000000000001440"), 0);
	CHECK_EQ_INT(feed(&t, "fe00004200"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	push(&t, MY_COM_STMT_FETCH);
	CHECK_EQ_INT(feed(&t, "fe0000c200"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
}

static void test_statistics_and_fields(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_STATISTICS);
	CHECK_EQ_INT(feed(&t, "557074696d653a2031"), MY_EV_DONE | MY_EV_IDLE);
	push(&t, MY_COM_FIELD_LIST);
	CHECK_EQ_INT(feed(&t, COLDEF_A), 0);
	CHECK_EQ_INT(feed(&t, COLDEF_B), 0);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	push(&t, MY_COM_FIELD_LIST);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
	push(&t, MY_COM_SET_OPTION);
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
}

/* Session tracking: `SET @x = 1` with session_track_state_change=ON, and
 * the login OK's schema change. */
static void test_session_events(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "000000024000000003020131"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK | MY_EV_PIN);
	push(&t, MY_COM_INIT_DB);
	CHECK_EQ_INT(feed(&t, "0000000240000000080106056170706462"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK | MY_EV_PIN |
			 MY_EV_SCHEMA);
	/* `USE otherdb`: the schema and the state flag together */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "00000002400000000d0108076f746865726462020131"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK | MY_EV_PIN |
			 MY_EV_SCHEMA);
	/* an unreadable block: assume the worst */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "0000000240000000020109"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK | MY_EV_PIN);
	/* state change "0" or no flag: nothing */
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "000000024000000003020130"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
	/* without SESSION_TRACK the same bytes are info text */
	my_track_init(&t, MY_CAP_PROTOCOL_41, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_QUERY);
	CHECK_EQ_INT(feed(&t, "000000024000000003020131"),
		     MY_EV_DONE | MY_EV_IDLE | MY_EV_OK);
}

static void test_stream(void)
{
	my_track_t t;

	my_track_init(&t, CAPS, MY_ST_AUTOCOMMIT);
	push(&t, MY_COM_BINLOG_DUMP);
	CHECK_EQ_INT(feed(&t, "00aabbccdd"), 0);
	CHECK_EQ_INT(feed(&t, "00aabbccdd"), 0);
	CHECK(my_track_busy(&t));
	CHECK_EQ_INT(feed(&t, EOF_IDLE), MY_EV_DONE | MY_EV_IDLE | MY_EV_EOF);
}

TP_TEST_MAIN(TP_TEST(test_ping), TP_TEST(test_result_set),
	     TP_TEST(test_in_transaction), TP_TEST(test_multi_results),
	     TP_TEST(test_err_mid_rows), TP_TEST(test_local_infile),
	     TP_TEST(test_prepare_execute), TP_TEST(test_deprecate_eof),
	     TP_TEST(test_continuation), TP_TEST(test_pipelined_and_tags),
	     TP_TEST(test_unsolicited_and_overflow),
	     TP_TEST(test_unexpected_packets), TP_TEST(test_cursor_and_fetch),
	     TP_TEST(test_statistics_and_fields), TP_TEST(test_session_events),
	     TP_TEST(test_stream),
	     TP_TEST(test_rows_keep_tag_and_continuations))

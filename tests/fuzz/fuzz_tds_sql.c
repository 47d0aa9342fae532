/*
 * fuzz_tds_sql.c - libFuzzer target for codec_sql.c: the session-state
 * verdict on request text, RPC payloads, and the SET list merge.
 *
 * Input: one control byte (the cap given for SET lines), then bytes used
 * as UTF-16LE batch text, as an RPC payload and as procedure text.
 * Checked invariants (a violation traps):
 * - the verdict is the same twice; SET lines are NUL-terminated,
 *   sets_len long, printable ASCII lines "set ...\n";
 * - a smaller cap gives the same verdict or TP_ETOOBIG (and then pins);
 * - merging the lines into an empty list works when they fit, and merging
 *   them again changes nothing (replaying a client's SETs twice leaves
 *   the same list);
 * - RPC and procedure text verdicts never read past the input (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/tds/tds.h"

#define REQUIRE(c)                        \
	do {                              \
		if (!(c))                 \
			__builtin_trap(); \
	} while (0)

static void check_lines(const char *sets, size_t len)
{
	REQUIRE(strlen(sets) == len);
	for (size_t pos = 0; pos < len;) {
		const char *nl = memchr(sets + pos, '\n', len - pos);

		REQUIRE(nl);
		REQUIRE(len - pos >= 4 && memcmp(sets + pos, "set ", 4) == 0);
		for (const char *p = sets + pos; p < nl; p++)
			REQUIRE(*p >= 0x20 && *p < 0x7F);
		pos = (size_t)(nl - sets) + 1;
	}
}

static void check_merge(const char *sets, size_t len)
{
	char *a = calloc(1, TDS_SETS_MAX), *b = calloc(1, TDS_SETS_MAX);

	if (!a || !b)
		abort();
	if (tds_sets_merge(a, TDS_SETS_MAX, sets) == 0) {
		REQUIRE(strlen(a) <= len);
		check_lines(a, strlen(a));
		memcpy(b, a, TDS_SETS_MAX);
		REQUIRE(tds_sets_merge(b, TDS_SETS_MAX, sets) == 0);
		REQUIRE(strcmp(a, b) == 0);
	} else {
		REQUIRE(a[0] == 0); /* unchanged */
	}
	free(a);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *sets, *sets2;
	tds_sql_verdict_t v, v2;
	size_t cap;
	int rc, rc2;

	if (size < 1)
		return 0;
	cap = 1 + (size_t)data[0] * 16;
	data++;
	size--;
	sets = malloc(TDS_SETS_MAX);
	sets2 = malloc(TDS_SETS_MAX);
	if (!sets || !sets2)
		abort();
	rc = tds_sql_classify(data, size, sets, TDS_SETS_MAX, &v);
	REQUIRE(rc == 0 || rc == TP_ETOOBIG);
	REQUIRE(rc == 0 || v.pins);
	rc2 = tds_sql_classify(data, size, sets2, TDS_SETS_MAX, &v2);
	REQUIRE(rc == rc2 && v.pins == v2.pins && v.sets_len == v2.sets_len);
	if (rc == 0) {
		REQUIRE(memcmp(sets, sets2, v.sets_len + 1) == 0);
		check_lines(sets, v.sets_len);
		if (!v.pins)
			check_merge(sets, v.sets_len);
		if (cap < TDS_SETS_MAX) {
			rc2 = tds_sql_classify(data, size, sets2, cap, &v2);
			REQUIRE(rc2 == TP_ETOOBIG
				    ? v2.pins
				    : rc2 == 0 && v2.pins == v.pins &&
					  strcmp(sets, sets2) == 0);
		}
	}
	(void)tds_rpc_pins(data, size);
	(void)tds_sql_rpc_pins(data, size);
	free(sets);
	free(sets2);
	return 0;
}

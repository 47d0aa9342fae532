/*
 * fuzz_connstr.c - connection strings from the environment (Service
 * Connector's variables) through every parser form: no crash, no read past
 * the input, and an error is always one NUL-terminated line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	conf__connstr_t cs;
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0; /* environment values are C strings */
	memset(&cs, 0, sizeof(cs));
	err[0] = 0;
	if (conf__connstr_parse("AZURE_POSTGRESQL_CONNECTIONSTRING", s, &cs,
				err, sizeof(err)) == 0)
		conf__connstr_free(&cs);
	else if (!memchr(err, 0, sizeof(err)) || strchr(err, '\n'))
		__builtin_trap();
	free(s);
	return 0;
}

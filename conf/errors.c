/*
 * errors.c - names and messages of the TP_E* error codes.
 *
 * Both tables are generated from TP_ERRNO_MAP in conf.h, so a code added
 * there gets its name and message here without anyone writing a switch.
 * Not here: errno or libuv codes (callers translate those into TP_E*).
 */
#include "conf/conf.h"

#define ERR_INDEX(code) ((code)-TP_ERR_FIRST_ - 1)
#define ERR_COUNT	ERR_INDEX(TP_ERR_LAST_)

static const char *const err_names[] = {
#define X(name, msg) [ERR_INDEX(TP_E##name)] = "TP_E" #name,
    TP_ERRNO_MAP(X)
#undef X
};

static const char *const err_messages[] = {
#define X(name, msg) [ERR_INDEX(TP_E##name)] = msg,
    TP_ERRNO_MAP(X)
#undef X
};

_Static_assert(sizeof(err_names) / sizeof(err_names[0]) == ERR_COUNT,
	       "one name per error code");

static bool known(int err)
{
	return err > TP_ERR_FIRST_ && err < TP_ERR_LAST_;
}

const char *tp_err_name(int err)
{
	if (err == TP_OK)
		return "TP_OK";
	return known(err) ? err_names[ERR_INDEX(err)] : "TP_EUNKNOWN";
}

const char *tp_strerror(int err)
{
	if (err == TP_OK)
		return "success";
	return known(err) ? err_messages[ERR_INDEX(err)] : "unknown error";
}

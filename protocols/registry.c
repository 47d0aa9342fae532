/*
 * registry.c - the table of wire protocols the engine knows.
 */
#include "protocols/protocol.h"
#include "protocols/pg/pg.h"

const tp_protocol_t *tp_protocol_get(conf_protocol_t id)
{
	switch (id) {
	case CONF_PROTO_POSTGRES:
		return &tp_protocol_pg;
	default:
		return NULL; /* mysql and sqlserver arrive with their issues */
	}
}

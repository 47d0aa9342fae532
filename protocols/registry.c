/*
 * registry.c - the table of wire protocols the engine knows.
 */
#include "protocols/protocol.h"
#include "protocols/pg/pg.h"
#include "protocols/mysql/mysql.h"
#include "protocols/tds/tds.h"

const tp_protocol_t *tp_protocol_get(conf_protocol_t id)
{
	switch (id) {
	case CONF_PROTO_POSTGRES:
		return &tp_protocol_pg;
	case CONF_PROTO_MYSQL:
		return &tp_protocol_mysql;
	case CONF_PROTO_SQLSERVER:
		return &tp_protocol_tds;
	default:
		return NULL;
	}
}

#!/usr/bin/sysbench
-- oltp_read_only with a new connection per transaction: each event connects,
-- runs the same read-only transaction as sysbench's oltp_read_only (BEGIN,
-- 10 point selects, 4 range queries, COMMIT) and disconnects. sysbench 1.0
-- has no --reconnect option; this is what a client without a pool of its own
-- (a CGI script, a serverless function) does.
--
-- Uses oltp_common.lua from sysbench's own directory: the same options
-- (--tables, --table-size, --range-size, --point-selects, ...) and tables.

require("oltp_common")

function prepare_statements()
   prepare_point_selects()
   if not sysbench.opt.skip_trx then
      prepare_begin()
      prepare_commit()
   end
   if sysbench.opt.range_selects then
      prepare_simple_ranges()
      prepare_sum_ranges()
      prepare_order_ranges()
      prepare_distinct_ranges()
   end
end

-- oltp_common's thread_init connects once per thread; here a thread only
-- gets its driver and connects per event.
function thread_init()
   drv = sysbench.sql.driver()
end

function event()
   con = drv:connect()
   stmt = {}
   param = {}
   for t = 1, sysbench.opt.tables do
      stmt[t] = {}
      param[t] = {}
   end
   prepare_statements()

   if not sysbench.opt.skip_trx then
      begin()
   end
   execute_point_selects()
   if sysbench.opt.range_selects then
      execute_simple_ranges()
      execute_sum_ranges()
      execute_order_ranges()
      execute_distinct_ranges()
   end
   if not sysbench.opt.skip_trx then
      commit()
   end

   close_statements()
   con:disconnect()
end

function thread_done()
end

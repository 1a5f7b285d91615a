-- wrk script of bench/bench_signals.py: every request POSTs a distinct signal as JSON.
--   wrk -t2 -c8 -d10s --latency -s bench/signals.lua http://127.0.0.1:PORT -- /webhook/KEY ROUND
-- order_id = ROUND-<thread>-<counter>: unique across threads, rounds and runs (ROUND is new
-- each round), so no signal is a repeat within the idempotency window. Each thread
-- alternates buy and sell of 1 BENCH at a price hint of 100, so cash never runs out and the
-- net position stays within a few units of flat.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  path = args[1] or "/"
  prefix = (args[2] or "r") .. "-" .. tostring(thread_id)
  counter = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local side = "buy"
  if counter % 2 == 0 then side = "sell" end
  local body = string.format(
    '{"symbol":"BENCH","exchange":"paper","action":"%s","quantity":"1","price":"100",'
      .. '"order_id":"%s-%d","comment":"bench"}',
    side, prefix, counter)
  return wrk.format("POST", path, headers, body)
end

-- SPDX-License-Identifier: MIT
-- Test handlers for spec/nginx_spec.lua, run inside nginx under /t/ (see
-- the locations the spec adds). /t/case?name=… runs one case of CASES in
-- the request's content phase and answers { ok = true } or { ok = false,
-- error = … }; the other routes do what the spec needs from outside
-- (a slow query, a saturated thread pool, an abandoned transaction).
local pgstore = require "resty.pgstore"
local cjson = require "cjson.safe"

local ngx = ngx
local _M = {}

local function connect(extra)
  local o = { dsn = ngx.var.pgstore_dsn, application_name = "pgstore-nginx-spec", shared_dict = "pgstore" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(pgstore.connect(o))
end

local function reply(status, v)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(v))
  return ngx.exit(ngx.OK)
end

local function unique(prefix)
  return ("%s_%d_%d"):format(prefix, ngx.worker.pid(), math.random(1, 1e9))
end

-- Assertions inside nginx: a failure raises with the message.
local function eq(a, b, what)
  if a ~= b then error(("%s: expected %s, got %s"):format(what or "value", tostring(b), tostring(a)), 2) end
end
local function ok(v, what)
  if not v then error((what or "assertion") .. " failed", 2) end
  return v
end

-- ---- cases -----------------------------------------------------------------------------

local CASES = {}

function CASES.query(db)
  local rows = assert(db:query("select 1::int as i, 'x'::text as t, null::int as n, true as b, $1::int8 as p", 7))
  eq(rows[1].i, 1, "int"); eq(rows[1].t, "x", "text"); eq(rows[1].n, pgstore.null, "null")
  eq(rows[1].b, true, "bool"); eq(rows[1].p, 7, "param")
  local t = unique("spec_q")
  eq(assert(db:exec("create table " .. t .. " (id int)")), 0, "create")
  eq(assert(db:exec("insert into " .. t .. " select generate_series(1, 3)")), 3, "affected")
  assert(db:exec("drop table " .. t))
end

function CASES.query_error(db)
  local rows, err = db:query("select * from no_such_table_here")
  eq(rows, nil, "rows")
  eq(err.code, "sql", "code"); eq(err.sqlstate, "42P01", "sqlstate")
  ok(tostring(err):find("no_such_table_here", 1, true), "tostring is the message")
  eq(assert(db:query("select 2 as n"))[1].n, 2, "still works")
  -- the server's fields travel from the thread VM with the error
  local t = unique("spec_uq")
  assert(db:exec("create table " .. t .. " (id int primary key)"))
  assert(db:exec("insert into " .. t .. " values (1)"))
  local n, uerr = db:exec("insert into " .. t .. " values (1)")
  eq(n, nil, "duplicate")
  eq(uerr.constraint, t .. "_pkey", "constraint"); eq(uerr.table, t, "table")
  eq(uerr.detail, "Key (id)=(1) already exists.", "detail")
  assert(db:exec("drop table " .. t))
end

function CASES.misuse(db)
  local okc, err = pcall(db.query, db, 42)
  eq(okc, false, "raised")
  ok(err:find("bad argument #1 to 'query' (string expected, got number)", 1, true), "message: " .. err)
  ok(err:find("nginx_app.lua:%d+:"), "points at the caller: " .. err)
  okc, err = pcall(db.run, db, "nginx_app_thread", "raise")
  eq(okc, false, "thread raise")
  ok(err:find("raised in the thread", 1, true), "thread message: " .. err)
  okc, err = pcall(db.query, db, "select $1::text", function() end)
  eq(okc, false, "function argument")
  ok(err:find("cross into a worker thread", 1, true), "says why: " .. err)
end

-- The raise-or-return rule (README, "Errors"): an unknown option and a
-- wrong type raise at this file's line; a right-typed value out of range is
-- nil, err ("invalid").
function CASES.options(db)
  local es = db:events{ table = unique("spec_opt"), notify = false }
  local calls = {
    { "connect", function(o) return pgstore.connect(o) end, { dsn = ngx.var.pgstore_dsn },
      { pool_size = "4" }, { pool_size = 0 } },
    { "events", function(o) return db:events(o) end, nil, { migrate = "yes" }, nil },
    { "kv", function(o) return db:kv(o) end, nil, { table = 1 }, { cleanup_interval = -1 } },
    { "partitions", function(o) return db:partitions(o) end, { name = unique("spec_opt") },
      { count = "8" }, { count = 0 } },
    { "transaction", function(o) return db:transaction(function() return true end, o) end, nil,
      { isolation = 1 }, { isolation = "chaos" } },
    { "try_lock", function(o) return db:try_lock("spec_opt", o) end, nil, { ttl = true }, { mode = "chaos" } },
    { "listen", function(o) return db:listen("spec_opt", o) end, nil, { max_queue = "1" }, { max_queue = 0 } },
    { "append", function(o) return es:append("s", { { type = "E" } }, o) end, nil,
      { expected = true }, { expected = "bogus" } },
  }
  local function with(base, extra)
    local o = {}
    for k, v in pairs(base or {}) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end
  for _, c in ipairs(calls) do
    local name, fn, base, wrong, bad = c[1], c[2], c[3], c[4], c[5]
    local okc, err = pcall(function() fn(with(base, { bogus_option = 1 })) end)
    eq(okc, false, name .. ": unknown option raised")
    ok(err:find("^[^\n]*nginx_app%.lua:%d+: bad argument #%d to '" .. name .. "' %(unknown option 'bogus_option'"),
      name .. ": " .. err)
    okc, err = pcall(function() fn(with(base, wrong)) end)
    eq(okc, false, name .. ": wrong type raised")
    ok(err:find("^[^\n]*nginx_app%.lua:%d+: bad argument"), name .. ": " .. err)
    if bad then
      local res, e = fn(with(base, bad))
      eq(res, nil, name .. ": out of range accepted")
      eq(type(e) == "table" and e.code, "invalid", name .. ": " .. tostring(e))
    end
  end
  local okc, err = pcall(function() es:append("s", "x") end)
  eq(okc, false, "events of the wrong type raised")
  ok(err:find("nginx_app.lua:", 1, true), "at the caller: " .. err)
  eq(assert(db:query("select 1 as n"))[1].n, 1, "still works")
end

function CASES.run(db)
  local n, s = db:run("nginx_app_thread", "sum", { 1, 2, 3 }, "x")
  eq(n, 6, "sum"); eq(s, "x", "second result")
end

local function tx_table(db)
  local t = unique("spec_tx")
  assert(db:exec("create table " .. t .. " (id int primary key, v text)"))
  return t
end

local function count(db, t)
  return assert(db:query("select count(*)::int as n from " .. t))[1].n
end

function CASES.tx_commit(db)
  local t = tx_table(db)
  local a, b = db:transaction(function(tx)
    assert(tx:exec("insert into " .. t .. " values (1, 'a')"))
    assert(tx:exec("update " .. t .. " set v = 'b' where id = 1"))
    eq(assert(tx:query("select v from " .. t))[1].v, "b", "inside")
    return "done", 2
  end)
  eq(a, "done", "result"); eq(b, 2, "second result")
  eq(assert(db:query("select v from " .. t))[1].v, "b", "committed")
  assert(db:exec("drop table " .. t))
end

function CASES.tx_rollback(db)
  local t = tx_table(db)
  local res, err = db:transaction(function(tx)
    assert(tx:exec("insert into " .. t .. " values (1, 'a')"))
    return nil, "changed my mind"
  end)
  eq(res, nil, "result"); eq(err, "changed my mind", "error")
  local okc, rerr = pcall(db.transaction, db, function(tx)
    assert(tx:exec("insert into " .. t .. " values (2, 'a')"))
    error("boom")
  end)
  eq(okc, false, "raised"); ok(tostring(rerr):find("boom"), "re-raised")
  eq(count(db, t), 0, "nothing written")
  local finished
  db:transaction(function(tx) finished = tx end)
  okc, rerr = pcall(finished.query, finished, "select 1")
  eq(okc, false, "finished tx raises")
  ok(rerr:find("finished transaction", 1, true), rerr)
  assert(db:exec("drop table " .. t))
end

function CASES.tx_retry(db)
  local t = tx_table(db)
  local attempts = 0
  assert(db:transaction(function(tx)
    attempts = attempts + 1
    assert(tx:exec("insert into " .. t .. " values ($1, 'a')", attempts))
    if attempts == 1 then
      local _, err = tx:exec("do $$ begin raise exception 'conflict' using errcode = '40001'; end $$")
      eq(err.sqlstate, "40001", "serialization failure")
      return nil, err
    end
    return true
  end, { isolation = "serializable" }))
  eq(attempts, 2, "attempts")
  eq(assert(db:query("select id from " .. t))[1].id, 2, "only the second attempt committed")
  assert(db:exec("drop table " .. t))
end

function CASES.tx_nested(db)
  local t = tx_table(db)
  assert(db:transaction(function(tx)
    assert(tx:exec("insert into " .. t .. " values (1, 'a')"))
    local r, err = tx:nested(function(inner)
      assert(inner:exec("insert into " .. t .. " values (2, 'b')"))
      return nil, "undo the inner"
    end)
    eq(r, nil, "nested result"); eq(err, "undo the inner", "nested error")
    assert(tx:lock("spec-xact-lock"))
    eq(assert(tx:try_lock("spec-xact-lock")), true, "re-entrant in one transaction")
    return true
  end))
  eq(count(db, t), 1, "outer kept, inner rolled back")
  assert(db:exec("drop table " .. t))
end

function CASES.tx_timeout(db)
  local t = tx_table(db)
  local res, err = db:transaction(function(tx)
    assert(tx:exec("insert into " .. t .. " values (1, 'a')"))
    ngx.sleep(2.5) -- past the timeout: the reaper (every second) rolls back
    return tx:exec("insert into " .. t .. " values (2, 'a')")
  end, { timeout = 0.5 })
  eq(res, nil, "result"); eq(err.code, "timeout", "code")
  eq(count(db, t), 0, "rolled back")
  assert(db:exec("drop table " .. t))
end

function CASES.tx_stores(db)
  local es = db:events{ table = unique("spec_ev") }
  local kv = db:kv{ table = unique("spec_kv"), cleanup_interval = 0 }
  assert(es:migrate()); assert(kv:migrate())
  local res, err = db:transaction(function(tx)
    assert(es:append("s", { { type = "A", data = { n = 1 } } }, { tx = tx }))
    assert(kv:set("k", "v", nil, { tx = tx }))
    return nil, "no"
  end)
  eq(err, "no", "rolled back")
  eq(es:version("s"), 0, "no event"); eq(kv:get("k"), nil, "no value")
  assert(db:transaction(function(tx)
    assert(es:append("s", { { type = "A", data = { n = 1 } } }, { tx = tx, expected = "no_stream" }))
    assert(kv:set("k", "v", nil, { tx = tx }))
    eq(kv:get("k", { tx = tx }), "v", "read inside")
    return true
  end))
  eq(es:version("s"), 1, "event committed"); eq(kv:get("k"), "v", "value committed")
end

function CASES.acquire(db)
  local conn = assert(db:acquire())
  assert(conn:begin("repeatable read"))
  eq(assert(conn:tx_status()), "intrans", "in a transaction")
  local pid = assert(conn:backend_pid())
  eq(assert(conn:query("select pg_backend_pid() as p"))[1].p, pid, "pinned")
  assert(conn:commit())
  assert(conn:release())
  local okc, err = pcall(conn.query, conn, "select 1")
  eq(okc, false, "released raises"); ok(err:find("closed connection", 1, true), err)
end

function CASES.events(db)
  local es = db:events{ table = unique("spec_ev") }
  local r = assert(es:append("a", { { type = "A", data = { list = { 1, 2 } }, metadata = { by = "me" } },
                                    { type = "B" } }))
  eq(r.count, 2, "count"); eq(r.last_version, 2, "version")
  local _, err = es:append("a", { { type = "C" } }, { expected = 1 })
  eq(err.code, "conflict", "conflict"); eq(err.expected, 1, "expected"); eq(err.actual, 2, "actual")
  _, err = es:append("a", { { data = 1 } })
  eq(err.code, "invalid", "invalid")
  local evs = assert(es:read("a"))
  eq(#evs, 2, "read"); eq(evs[1].data.list[2], 2, "decoded"); eq(evs[1].metadata.by, "me", "metadata")
  eq(evs[2].data, pgstore.null, "null data")
  local raw = assert(es:read("a", { raw = true }))
  eq(type(raw[1].data), "string", "raw")
  local token = assert(db:causal_token())
  eq(type(token) == "string" and token:match("^%x+/%x+$") ~= nil, true, "a causal token: " .. tostring(token))
  eq(#assert(es:read("a", { after_lsn = token })), 2, "read after the token")
  local all, cursor = assert(es:read_all{ after = 0 })
  eq(#all, 2, "read_all"); eq(cursor, all[2].position, "cursor")
  eq(es:version("a"), 2, "version()"); eq(es:status("a"), "active", "status")
  eq(es:latest_position(), all[2].position, "latest")
  es:upcast(function(e) e.up = true; return e end)
  eq(assert(es:read("a"))[1].up, true, "upcaster")
  assert(es:tombstone("a", "gone"))
  _, err = es:append("a", { { type = "C" } })
  eq(err.code, "deleted", "tombstoned")
  local many = assert(es:append_many{ { stream = "m1", events = { { type = "X" } } },
                                      { stream = "m2", events = { { type = "Y" } } } })
  eq(#many, 2, "append_many")
  _, err = es:append_many{ { stream = "m1", events = { { type = "X" } } },
                           { stream = "m2", events = { { type = "Y" } }, expected = 5 } }
  eq(err.code, "conflict", "append_many conflict"); eq(err.batch, 2, "batch")
  eq(err.expected, 5, "batch expected"); eq(err.actual, 1, "batch actual")
  -- inside the caller's transaction: rolled back with it; a look-alike tx raises
  local r, rerr = db:transaction(function(tx)
    local in_tx = assert(es:append_many({ { stream = "m3", events = { { type = "X" } } } }, { tx = tx }))
    eq(#in_tx, 1, "append_many in tx")
    return nil, "roll back"
  end)
  eq(r, nil, "rolled back"); eq(rerr, "roll back", "rolled back error")
  eq(es:version("m3"), 0, "append_many in a rolled back tx wrote nothing")
  local okc, merr = pcall(function() es:append_many({ { stream = "m3", events = { { type = "X" } } } }, { tx = {} }) end)
  eq(okc, false, "fake tx raises")
  ok(tostring(merr):find("option 'tx' must be the transaction given by db:transaction", 1, true), merr)
  okc, merr = pcall(function() es:append("m3", { { type = "X", dat = 1 } }) end)
  eq(okc, false, "unknown event field raises")
  ok(tostring(merr):find("unknown field 'dat'", 1, true), merr)
  eq(es:version("m3"), 0, "nothing written")
  local codec = db:events{ table = es.table_name, codec = {
    encode = function(v) return cjson.encode({ wrapped = v }) end,
    decode = function(s) return cjson.decode(s).wrapped end } }
  assert(codec:append("c", { { type = "W", data = { z = 1 } } }))
  eq(assert(codec:read("c"))[1].data.z, 1, "custom codec round trip")
  eq(assert(es:read("c"))[1].data.wrapped.z, 1, "stored wrapped")
end

function CASES.stores(db)
  local kv = db:kv{ table = unique("spec_kv"), cleanup_interval = 0 }
  assert(kv:set("a:1", "x\0y")); assert(kv:set("a:2", "z", 0.2)); assert(kv:set("b", "w"))
  eq(kv:get("a:1"), "x\0y", "bytes")
  eq(assert(kv:delete_prefix("a:")), 2, "delete_prefix")
  eq(kv:get("a:1"), nil, "gone")
  assert(kv:set("t", "v", 0.2)); ngx.sleep(0.3)
  eq(kv:get("t"), nil, "expired")
  eq(assert(kv:cleanup()), 1, "cleanup")
  local okc, err = pcall(db.kv, db, { phase_hook = function() end })
  eq(okc, false, "phase_hook refused"); ok(err:find("phase_hook", 1, true), err)
  local ss = db:snapshots{ table = unique("spec_ss") }
  assert(ss:save("s", 3, { n = 3 }))
  local snap = assert(ss:load("s"))
  eq(snap.version, 3, "snapshot version"); eq(snap.state.n, 3, "snapshot state")
  local cp = db:checkpoints{ table = unique("spec_cp") }
  assert(cp:save("c", 10)); eq(cp:load("c"), 10, "checkpoint")
  local _, cerr = cp:save("c", 11, { expected = 9 })
  eq(cerr.code, "conflict", "checkpoint conflict")
  local se = db:sessions{ table = unique("spec_se") }
  assert(se:save("u", { version = 1, state = { a = 1 } }))
  eq(assert(se:load("u")).state.a, 1, "session")
  local xs = db:exec_checkpoints{ table = unique("spec_xs") }
  assert(xs:save("run-1", { step = 2 })); eq(assert(xs:load("run-1")).step, 2, "exec checkpoint")
end

function CASES.kv_cleanup(db)
  local kv = db:kv{ table = unique("spec_kvc"), cleanup_interval = 0.3 }
  assert(kv:set("gone", "v", 0.1)); assert(kv:set("kept", "v"))
  local deadline = ngx.now() + 5
  local rows
  repeat
    ngx.sleep(0.1)
    rows = assert(db:query("select count(*)::int as n from " .. kv.sopts.table))[1].n
  until rows == 1 or ngx.now() > deadline
  eq(rows, 1, "the expired row was removed by the worker's cleanup loop")
  local st = kv:cleaner_stats()
  ok(st.runs >= 1 and st.removed >= 1, "cleaner_stats counts it")
  kv:close()
end

function CASES.locks(db)
  local key = unique("spec-lock")
  local lock = assert(db:lock(key, { timeout = 2 }))
  eq(lock:held(), true, "held")
  local other = connect({ key = "spec-other-pool" })
  eq(other:try_lock(key), nil, "held elsewhere")
  local _, err = other:lock(key, { timeout = 0.2 })
  eq(err.code, "timeout", "waits then times out")
  assert(lock:release())
  local l2 = assert(other:try_lock(key))
  local token2 = l2:token()
  assert(l2())
  eq(assert(db:with_lock(key, function(l) return l:key() end)), key, "with_lock")
  -- Fencing: a later hold's token is larger; the old one no longer guards.
  local l3 = assert(db:lock(key, { timeout = 2 }))
  ok(l3:token() > token2, "tokens grow: " .. tostring(token2) .. " then " .. tostring(l3:token()))
  eq(assert(db:transaction(function(tx) return l3:guard(tx) end)), true, "the holder's guard passes")
  local _, gerr = db:transaction(function(tx) return db:lock_guard(tx, key, token2) end)
  eq(gerr and gerr.code, "lease_lost", "a stale token's guard fails")
  -- held() asks the server: false once the lock's backend is gone.
  local pid = assert(db:query([[select pid from pg_locks where locktype = 'advisory' and granted
    and pid <> pg_backend_pid() and objid = ($1::bigint & 4294967295)::oid]],
    require("pgstore.locks").key(key)))[1]
  if pid then assert(db:query("select pg_terminate_backend($1)", pid.pid)) end
  ok(pid ~= nil, "the lock's backend found")
  eq(l3:held(), false, "held() after the backend was terminated")
  l3:release()
end

function CASES.listen(db)
  local ch = unique("spec_ch")
  local l = assert(db:listen(ch))
  assert(db:notify(ch, "hello"))
  local n = assert(l:wait(3))
  eq(n.channel, ch, "channel"); eq(n.payload, "hello", "payload")
  local _, err = l:wait(0.05)
  eq(err.code, "timeout", "nothing more")
  local _, cerr = db:listen("bad channel!")
  eq(cerr.code, "invalid", "channel checked")
  l:close()
end

function CASES.relay(db)
  local ch = unique("spec_relay")
  local r = assert(db:relay(ch))
  assert(r:broadcast{ kind = "local" })
  local change, origin = r:next(1)
  eq(change.kind, "local", "own broadcast"); eq(origin, "local", "origin")
  assert(db:notify(ch, cjson.encode{ kind = "remote" }))
  change, origin = r:next(3)
  eq(change and change.kind, "remote", "remote change"); eq(type(origin), "number", "origin pid")
  local _, err = r:next(0.1)
  eq(err.code, "timeout", "own broadcast came once")
  -- a change over a NOTIFY payload goes through the relay table
  local big = { kind = "big", blob = ("x"):rep(100000) }
  assert(r:broadcast(big))
  change = r:next(1)
  eq(change and #change.blob, 100000, "large change delivered locally")
  local rows = assert(db:query("SELECT count(*)::int AS n FROM pgstore_relay WHERE channel = $1", ch))
  eq(rows[1].n, 1, "stored in the relay table")
  local id = assert(db:run("pgstore.relay_table", "store", nil, ch, cjson.encode(big), 60))
  assert(db:notify(ch, "@" .. id)) -- as another server announces one
  change, origin = r:next(3)
  eq(change and #change.blob, 100000, "a remote large change read back"); eq(type(origin), "number", "its origin")
  assert(db:notify(ch, "@999999999"))
  _, err = r:next(3)
  eq(err and err.code, "lost", "a large change gone is a loss"); eq(err.reason, "unreadable", "its reason")
  local _, toobig = r:broadcast({ blob = ("y"):rep(2000000) })
  eq(toobig and toobig.code, "invalid", "over max_change")
  r:close()
  -- a full queue loses the oldest changes, and says so before the rest
  local small = assert(db:relay(ch, { max_queue = 3 }))
  for i = 1, 10 do assert(db:notify(ch, cjson.encode{ i = i })) end
  ngx.sleep(0.5)
  _, err = small:next(1)
  eq(err and err.code, "lost", "the overflow reported first"); eq(err.reason, "overflow", "its reason")
  eq(err.lost, 7, "how many")
  for i = 8, 10 do eq((small:next(1) or {}).i, i, "then the changes kept, in order") end
  eq(small:stats().overflow, 7, "counted")
  small:close()
end

function CASES.partitions(db)
  local pm = assert(db:partitions{ name = unique("spec_parts"), count = 4, lease = 5, renew = 1 })
  local deadline = ngx.now() + 5
  local n = 0
  repeat
    ngx.sleep(0.05)
    n = 0
    for _ in pairs(pm:owned()) do n = n + 1 end
  until n == 4 or ngx.now() > deadline
  eq(n, 4, "a lone member owns every partition")
  local changes = pm:changes()
  eq(#changes.acquired, 4, "acquired reported")
  local p = pm:partition_for("some-stream")
  assert(db:transaction(function(tx) return pm:guard(tx, p) end))
  local _, err = db:transaction(function(tx) return pm:guard(tx, p, 999999) end)
  eq(err.code, "lease_lost", "a stale token is refused")
  assert(pm:close())
end

function CASES.subscribe(db)
  local es = db:events{ table = unique("spec_sub") }
  assert(es:append("x", { { type = "A", data = 1 }, { type = "B", data = 2 } }))
  local sub = assert(db:subscribe{ name = unique("consumer"), events = es, from = "start" })
  local batch = assert(sub:next(3))
  eq(#batch, 2, "caught up"); eq(batch[2].data, 2, "decoded")
  -- the one state machine: an ack it cannot cover is refused, as in pgstore
  local acked, err = sub:ack(batch[2].position + 1000)
  eq(acked, nil, "an ack past the delivered cursor"); eq(err.code, "invalid", "its code")
  assert(sub:ack(batch[2].position))
  acked, err = sub:ack(batch[1].position)
  eq(acked, nil, "an ack behind the last one"); eq(err.code, "invalid", "its code")
  local bad
  bad, err = db:subscribe{ name = unique("consumer"), events = es, from = -7 }
  eq(bad, nil, "from = -7"); eq(err.code, "invalid", "its code")
  assert(es:append("x", { { type = "C", data = 3 } }))
  batch = assert(sub:next(3))
  eq(#batch, 1, "live"); eq(batch[1].type, "C", "type")
  eq(#assert(sub:next(0.1)), 0, "nothing more")
  -- the same consumer on another store starts from that store's own checkpoint
  local name = unique("consumer")
  local mine = assert(db:subscribe{ name = name, events = es })
  batch = assert(mine:next(3))
  eq(#batch, 3, "all of the first store")
  assert(mine:ack(batch[3].position))
  local other = db:events{ table = unique("spec_sub_other") }
  assert(other:append("y", { { type = "D", data = 4 } }))
  local theirs = assert(db:subscribe{ name = name, events = other })
  batch = assert(theirs:next(3))
  eq(#batch, 1, "the second store from its start"); eq(batch[1].type, "D", "its event")
  eq(assert(db:checkpoints{ store = es }):load(name), 3, "the first store's checkpoint")
  eq(assert(db:checkpoints{ store = other }):load(name), nil, "none yet on the second")
end

-- Acks through the proxy of spec/nginx_spec.lua (on port arg_port), which
-- cuts checkpoint writes around their commit: an ack fails with an unknown
-- outcome, and may or may not have moved the checkpoint. The subscriber
-- must go on delivering every event exactly once, never wedged in `conflict`.
function CASES.subscribe_unknown_ack(db)
  local port = ok(tonumber(ngx.var.arg_port), "a proxy port")
  local cut = connect({ dsn = ngx.var.pgstore_dsn:gsub("port=%d+", "port=" .. port), key = "spec-cut-acks" })
  local es = db:events{ table = unique("spec_sub_cut"), notify = false }
  local total = 200
  for i = 1, total / 5 do
    local b = {}
    for j = 1, 5 do b[j] = { type = "A", data = { i = i, j = j } } end
    assert(es:append("acks", b))
  end
  local name = unique("cut_consumer")
  local sub = assert(cut:subscribe{ name = name, events = es, batch = 1 })
  local seen, delivered, unknown, last = {}, 0, 0, 0
  for _ = 1, total + 10 do
    local rows = assert(sub:next(1))
    if #rows == 0 then break end
    local pos = rows[1].position
    ok(not seen[pos], "position " .. pos .. " delivered twice")
    ok(pos > last, "global order")
    seen[pos], last, delivered = true, pos, delivered + 1
    local acked, err = sub:ack(pos)
    if not acked then
      eq(err.code, "connection", "an ack fails only with an unknown outcome (" .. tostring(err) .. ")")
      unknown = unknown + 1
    end
  end
  eq(delivered, total, "events delivered")
  ok(unknown > 0, "no ack was cut")
  -- The last ack goes through in the end, and stores exactly that cursor.
  local acked, err
  for _ = 1, 20 do
    acked, err = sub:ack(last)
    if acked then break end
    eq(err.code, "connection", "the final ack (" .. tostring(err) .. ")")
  end
  ok(acked, "the final ack went through")
  eq(assert(db:checkpoints{ store = es }):load(name), last, "the stored checkpoint")
  -- A restarted subscriber starts after it: nothing is delivered again.
  local again = assert(db:subscribe{ name = name, events = es })
  eq(#assert(again:next(0.2)), 0, "events delivered again after a restart")
  return { unknown = unknown }
end

-- ---- routes ------------------------------------------------------------------------------

function _M.route()
  local route = ngx.var.uri:match("^/t/(.+)$")
  local db = connect()
  if route == "case" then
    local f = CASES[ngx.var.arg_name]
    if not f then return reply(404, { ok = false, error = "no such case" }) end
    local okc, res = xpcall(f, debug.traceback, db)
    return reply(200, { ok = okc, error = not okc and tostring(res) or nil, result = okc and res or nil })
  elseif route == "sleep" then
    local rows, err = db:query("select pg_sleep($1::float8)::text as slept", tonumber(ngx.var.arg_s) or 1)
    if not rows then return reply(500, { error = tostring(err) }) end
    return reply(200, { slept = true })
  elseif route == "small" then
    -- A pool of one connection for this worker.
    local small = connect({ pool_size = 1, queue_timeout = tonumber(ngx.var.arg_wait) or 0.2,
                            key = "spec-small" })
    local rows, err = small:query("select pg_sleep($1::float8)::text as slept", tonumber(ngx.var.arg_s) or 0)
    if not rows then return reply(503, { code = err.code, message = err.message }) end
    return reply(200, { slept = true })
  elseif route == "toosmall" then
    -- thread_pool tiny has one thread: too few for any pool.
    local _, err = pgstore.connect{ dsn = ngx.var.pgstore_dsn, thread_pool = "tiny", pool_size = 1,
                                    key = "spec-tiny" }
    return reply(200, { code = err and err.code, message = err and err.message })
  elseif route == "abandon" then
    -- Leaves a transaction open: ngx.exit ends the request inside fn.
    local t = ngx.var.arg_table
    db:transaction(function(tx)
      assert(tx:exec("insert into " .. t .. " values (1, 'abandoned')"))
      reply(200, { exited = true })
    end, { timeout = tonumber(ngx.var.arg_timeout) or 30 })
    return reply(500, { error = "not reached" })
  elseif route == "stats" then
    return reply(200, pgstore.stats(db))
  elseif route == "connect_init_worker" then
    return reply(200, { error = ngx.shared.pgstore:get("init_worker_error") })
  end
  return reply(404, { error = "no such route" })
end

return _M

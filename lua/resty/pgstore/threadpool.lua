-- SPDX-License-Identifier: MIT
-- resty.pgstore.threadpool — what nginx.conf's `thread_pool NAME threads=N
-- max_queue=M;` says, read from the running nginx, so that connect can
-- check the configuration rule (resty.pgstore.call) before anything runs.
--
-- nginx exports ngx_thread_pool_get and ngx_cycle (dynamic modules link
-- against them); the pool's struct is private to ngx_thread_pool.c:
--   mutex, queue { first, last }, waiting, cond, log, name { len, data },
--   threads, max_queue, file, line.
-- The sizes of the mutex and condition variable differ between platforms,
-- so the reading looks for the `name` field itself — its length followed
-- by a pointer to the very bytes asked for — and takes the two words after
-- it. That layout has held since nginx 1.7.11; when the name cannot be
-- found, read() says it does not know rather than guess.
local ffi = require "ffi"

local C = ffi.C
local tonumber, pcall = tonumber, pcall

local _M = {}

local available = pcall(ffi.cdef, [[
  typedef struct { size_t len; const char *data; } pgstore_ngx_str_t;
  void *pgstore_ngx_thread_pool_get(void *cycle, pgstore_ngx_str_t *name) asm("ngx_thread_pool_get");
  extern void *pgstore_ngx_cycle asm("ngx_cycle");
]]) or pcall(ffi.typeof, "pgstore_ngx_str_t")

-- Words of the struct searched for the name: the mutex and the condition
-- variable take at most 48 bytes each on the platforms nginx runs on.
local SEARCH_WORDS = 32

-- read(name) → { threads = N, max_queue = M } | false (no such pool) | nil
-- (cannot be known here).
function _M.read(name)
  if not available then return nil end
  local ok, res = pcall(function()
    local s = ffi.new("pgstore_ngx_str_t", #name, name)
    local pool = C.pgstore_ngx_thread_pool_get(C.pgstore_ngx_cycle, s)
    if pool == nil then return false end
    local words = ffi.cast("const size_t *", pool)
    for i = 0, SEARCH_WORDS - 1 do
      if words[i] == #name then
        local data = ffi.cast("const char * const *", words + i + 1)[0]
        if data ~= nil and ffi.string(data, #name) == name then
          local threads = tonumber(words[i + 2])
          local max_queue = tonumber(ffi.cast("const ptrdiff_t *", words)[i + 3])
          if threads >= 1 and threads <= 1e6 then
            return { threads = threads, max_queue = max_queue }
          end
        end
      end
    end
    return nil
  end)
  if not ok then return nil end
  return res
end

return _M

-- SPDX-License-Identifier: MIT
-- Installing as a user would, from a copy of the checkout: `cmake --install`
-- to a prefix that is then moved, the README's C example linked with
-- `pkg-config --libs pgstore` alone, the installed host running a script
-- with its build and source folders gone, and `luarocks make` into a
-- private tree leaving the checkout clean. Builds twice (Release, -j2).
local T = require "testenv"

local function sh(cmd)
  local out, rc = T.sh(cmd)
  assert(rc == 0, ("`%s` failed (%d):\n%s"):format(cmd, rc, out))
  return out
end

-- The checkout's tracked files (as they are now) in DIR, as a git
-- repository of their own: a fresh clone, whatever the suite's build/ holds.
local function copy_checkout(dir)
  sh(("mkdir -p %s && cd %s && git ls-files -z | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C %s")
    :format(dir, T.root(), dir))
  sh(("cd %s && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm copy"):format(dir))
end

-- The README's C example: the block after the <!-- c-example --> marker.
local function readme_example(path)
  local readme = assert(io.open(T.root() .. "/README.md")):read("*a")
  local code = assert(readme:match("<!%-%- c%-example %-%->%s*```c\n(.-)\n```"), "no C example in README.md")
  local f = assert(io.open(path, "w"))
  f:write(code, "\n")
  f:close()
end

-- The builds here are plain Release ones whatever the suite runs under:
-- repeating them in the sanitizer pass would test nothing new.
if (os.getenv("PGSTORE_BUILD_DIR") or ""):match("build%-asan/?$") then
  describe("installing", function()
    it("runs in the plain pass only", function() pending("sanitizer pass") end)
  end)
  return
end

describe("installing", function()
  local tmp
  setup(function() tmp = T.tmpdir("install") end)
  teardown(function() if tmp then T.sh("rm -rf " .. tmp) end end)

  it("cmake --install gives a relocatable prefix: pkg-config links the C example, the host runs alone", function()
    copy_checkout(tmp .. "/src")
    sh(("cmake -S %s/src -B %s/build -DCMAKE_BUILD_TYPE=Release -DPGSTORE_TESTS=OFF >/dev/null && cmake --build %s/build -j2 >/dev/null")
      :format(tmp, tmp, tmp))
    sh(("cmake --install %s/build --prefix %s/prefix >/dev/null"):format(tmp, tmp))
    -- Nothing the host or the .pc needs may come from the build or the source.
    sh(("rm -rf %s/build %s/src && mv %s/prefix %s/moved"):format(tmp, tmp, tmp, tmp))
    local prefix = tmp .. "/moved"
    local pc = (sh(("find %s -name pgstore.pc"):format(prefix)):gsub("%s+$", ""))
    assert.matches("/pkgconfig/pgstore.pc$", pc)
    local env = ("PKG_CONFIG_PATH=%s"):format(pc:gsub("/pgstore.pc$", ""))
    assert.equal(prefix .. "/include\n", sh(("realpath $(%s pkg-config --variable=includedir pgstore)"):format(env)))

    readme_example(tmp .. "/example.c")
    sh(("cd %s && export %s && cc -o example example.c $(pkg-config --cflags --libs pgstore)"):format(tmp, env))
    local libdir = (sh(env .. " pkg-config --variable=libdir pgstore"):gsub("%s+$", ""))
    local out = sh(("LD_LIBRARY_PATH=%s %s/example %q install-c-%d"):format(libdir, tmp, T.dsn(), os.time()))
    assert.equal('conflict: expected 0, actual 1\n1 Greeted {"to": "C"}\n', out)

    local script = tmp .. "/hello.lua"
    local f = assert(io.open(script, "w"))
    f:write('print("installed host runs")\n')
    f:close()
    local host = prefix .. "/bin/pgstore"
    assert.matches("^pgstore 0%.1%.0", sh(host .. " --version"))
    out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH %s --dsn %q run %s"):format(tmp, host, T.dsn(), script))
    assert.matches("installed host runs", out)
  end)

  it("luarocks make installs into a tree, self-contained, and leaves the checkout clean", function()
    local src, tree = tmp .. "/rocksrc", tmp .. "/tree"
    copy_checkout(src)
    sh(("cd %s && luarocks --lua-version 5.1 --tree %s make pgstore-0.1.0-1.rockspec >/dev/null")
      :format(src, tree))
    assert.equal("", sh(("cd %s && git status --porcelain"):format(src)))
    -- The C library is linked into pgstore.core, not deployed as a Lua module.
    assert.equal("core.so\n", sh(("cd %s/lib/lua/5.1 && find . -type f | sed 's|.*/||'"):format(tree)))

    local check = tmp .. "/require.lua"
    local f = assert(io.open(check, "w"))
    f:write('local p = require "pgstore" print(p._VERSION, package.searchpath("pgstore.core", package.cpath))\n')
    f:close()
    local out = sh(('env -u LUA_PATH -u LUA_CPATH sh -c \'eval "$(luarocks --lua-version 5.1 --tree %s path)" && luajit %s\'')
      :format(tree, check))
    assert.equal(("0.1.0\t%s/lib/lua/5.1/pgstore/core.so\n"):format(tree), out)

    -- The host finds the tree's modules from its own place, with the source gone.
    sh("rm -rf " .. src)
    local script = tmp .. "/rock.lua"
    f = assert(io.open(script, "w"))
    f:write('print("rock host runs")\n')
    f:close()
    out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH %s/bin/pgstore --dsn %q run %s"):format(tmp, tree, T.dsn(), script))
    assert.matches("rock host runs", out)
  end)
end)

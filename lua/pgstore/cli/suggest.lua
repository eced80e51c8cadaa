-- SPDX-License-Identifier: MIT
-- pgstore.cli.suggest — "did you mean …?" for a mistyped command, option
-- or store name: the closest candidate by edit distance, when it is close
-- enough to be a typo rather than another word.
local _M = {}

-- Levenshtein distance with transpositions counted as one edit
-- ("stauts" is one slip from "status", not two).
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end
_M.distance = distance

-- word, candidates (a list) → the closest candidate, or nil when none is
-- within a third of the word's length (at least one edit).
function _M.closest(word, candidates)
  local best, best_d
  local limit = math.max(1, math.floor(#word / 3))
  for _, c in ipairs(candidates) do
    local d = distance(word, c)
    if d <= limit and (not best_d or d < best_d) then best, best_d = c, d end
  end
  return best
end

-- " (did you mean X?)" or "".
function _M.hint(word, candidates)
  local c = _M.closest(word, candidates)
  return c and (" (did you mean %s?)"):format(c) or ""
end

return _M

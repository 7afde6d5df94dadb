-- window_state.lua: not a script; the prelude of quota.lua and sync.lua, which
-- both read fixed-window and sliding-counter states (scripts.go prepends it).
--
-- window_state(v, p) reads a state v, "L P pp c" (L: µs time of the latest
-- charge; P: the period it was written under; pp and c: the units of L's
-- P-window before and of that window), on the grid of period p. It returns L,
-- P, pp, c as stored, then w = floor(L/p) and the units the state counts in p's
-- windows w-1 and w; nil if v is unreadable. A legacy "w pp c" is taken as
-- written under p. A state of another period P (the limit's Period changed)
-- is moved onto p's grid at L: all its units lie in [start of L's P-window - P,
-- L], so windows w-1 and w each count every unit of the P-windows they
-- overlap, and later windows none. It never undercounts a window a grant can
-- still fall in (of what the state still holds: it expires with the old
-- period's windows).
local function window_state(v, p)
  local L, P, pp, cc = string.match(v, '^(%d+) (%d+) (%d+) (%d+)') -- then " s" if sync.lua marked it
  if not L then
    L, pp, cc = string.match(v, '^(%d+) (%d+) (%d+)$')
    if not L then return nil end
    L, P = (tonumber(L) + 1) * p - 1, p
  end
  L, P, pp, cc = tonumber(L), tonumber(P), tonumber(pp), tonumber(cc)
  local w, prev, cur = math.floor(L / p), pp, cc
  if P ~= p then
    local S = math.floor(L / P) * P
    local function units(j)
      local u = 0
      if j * p < S and (j + 1) * p > S - P then u = u + pp end
      if j * p <= L and (j + 1) * p > S then u = u + cc end
      return u
    end
    prev, cur = units(w - 1), units(w)
  end
  return L, P, pp, cc, w, prev, cur
end


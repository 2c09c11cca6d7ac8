-- ds2api shared limits and credential health: one atomic script, one round trip per call.
--
-- ARGV[1] is a JSON object:
--   p        key prefix, e.g. "ds2api:rt:"
--   ttl      lease seconds for in-flight entries (renewed by the owning process while a request lasts)
--   cd       cooldown settings {base, max, after}: exponential backoff base/max seconds, and how many
--            consecutive failures (other than 429) start a cooldown
--   settle   list of settlements applied first (releases folded into the next call)
--   renew    list of {lease, [bases]} whose in-flight entries get a fresh expiry
--   reserve  optional request for a lease:
--            subj  list of {base, rpm, tpm, concurrency}     (gateway token, team)
--            c     list of {credential id, max_inflight, rpm, tpm, tier}, tier-sorted, preferred first
--            mode  "order" | "least" | "headroom"
--            pin   true: ignore health (an admin pinned this credential)
--            retry true: another attempt of an admitted request (token/team limits not checked or
--                  counted again; their in-flight entry moves to the new lease)
--            est   estimated tokens charged now, corrected at settle time
--            lease lease id
-- Returns JSON {ok = index (0-based) or -1, s = bucket second, why, wait, what, ch = health changes}.
--
-- Key layout under prefix P: "c:<id>" credential health hash; "<base>:if" in-flight sorted set
-- (member lease id, score expiry); "<base>:rq" / "<base>:tk" per-second request / token buckets.
-- Windows are the last 61 whole seconds, so a limit holds for every sliding 60-second window.

local args = cjson.decode(ARGV[1])
local P = args.p
local ttl = args.ttl
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec + tonumber(t[2]) / 1000000
local from = sec - 60
local BUCKET_TTL = 125

local function window(key)
  local flat = redis.call('HGETALL', key)
  local total, oldest, stale = 0, nil, {}
  for i = 1, #flat, 2 do
    local s = tonumber(flat[i])
    if s < from then
      stale[#stale + 1] = flat[i]
    else
      total = total + tonumber(flat[i + 1])
      if oldest == nil or s < oldest then oldest = s end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return total, oldest
end

local function live(base)
  local key = base .. ':if'
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key)
end

-- nil when under every limit, else (seconds until one frees up, which limit)
local function over(base, rpm, tpm, conc, inflight)
  if conc > 0 and inflight >= conc then return 1.0, 'concurrency' end
  if rpm > 0 then
    local n, oldest = window(base .. ':rq')
    if n >= rpm then return oldest + 61 - now, 'requests per minute' end
  end
  if tpm > 0 then
    local n, oldest = window(base .. ':tk')
    if n >= tpm then return oldest + 61 - now, 'tokens per minute' end
  end
  return nil
end

local function add_bucket(key, second, amount)
  if amount ~= 0 and second >= from then
    redis.call('HINCRBY', key, second, amount)
    redis.call('EXPIRE', key, BUCKET_TTL)
  end
end

local changes = {}

-- provider-reported numbers: -1 (or nothing stored) means the provider did not say
local function known(v)
  v = tonumber(v)
  if v == nil or v < 0 then return nil end
  return v
end

local function set_health(hkey, id, status, cool_until, err)
  redis.call('HSET', hkey, 'st', status, 'cu', cool_until)
  changes[#changes + 1] = {id, status, cool_until, err or ''}
end

local function backoff(n)
  local cd = args.cd
  return math.min(cd.base * 2 ^ math.max(n - 1, 0), cd.max)
end

local function settle(s)
  -- s = {lease, bases, second, token delta, credential id, outcome, retry_after, error, headroom, tpm bases}
  local lease, bases, second, delta, id, outcome = s[1], s[2], s[3], s[4], s[5], s[6]
  for _, base in ipairs(bases) do
    redis.call('ZREM', base .. ':if', lease)
  end
  for _, base in ipairs(s[10] or {}) do  -- only where a tokens-per-minute limit counts them
    add_bucket(base .. ':tk', second, delta)
  end
  if id == 0 or outcome == 'client' then return end
  local hkey = P .. 'c:' .. id
  local hr = s[9]
  if type(hr) == 'table' then
    -- headroom: remaining/limit requests and tokens, resets relative to now
    redis.call('HSET', hkey, 'rr', hr[1], 'lr', hr[2], 'rra', now + hr[3],
               'rt', hr[4], 'lt', hr[5], 'rta', now + hr[6], 'hs', now)
  end
  local h = redis.call('HMGET', hkey, 'st', 'cu', 'f')
  local status, cool_until, fails = h[1] or 'ok', tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if outcome == 'ok' then
    redis.call('HSET', hkey, 'f', 0, 'ok_at', now)
    -- a cooldown set from a 429 stands until it ends, even if an older request succeeds meanwhile
    if status == 'invalid' or (status == 'cooling' and cool_until <= now) then
      set_health(hkey, id, 'ok', 0, '')
    end
    return
  end
  fails = fails + 1
  redis.call('HSET', hkey, 'f', fails, 'e', s[8], 'ea', now)
  if outcome == 'auth' then
    if status ~= 'invalid' then set_health(hkey, id, 'invalid', 0, s[8]) end
    return
  end
  local wait = nil
  if outcome == 'rate' then
    wait = s[7]
    if wait <= 0 then wait = backoff(fails) end
  elseif fails >= args.cd.after then
    wait = backoff(fails - args.cd.after + 1)
  end
  if wait ~= nil and status ~= 'invalid' then
    local until_ = math.max(cool_until, now + wait)
    set_health(hkey, id, 'cooling', until_, s[8])
  end
end

for _, s in ipairs(args.settle or {}) do settle(s) end
-- the dashboard listens here for live health tiles
for _, c in ipairs(changes) do
  redis.call('PUBLISH', P .. 'health', cjson.encode({id = c[1], st = c[2], cu = c[3]}))
end

for _, r in ipairs(args.renew or {}) do
  for _, base in ipairs(r[2]) do
    redis.call('ZADD', base .. ':if', 'XX', now + ttl, r[1])
  end
end

local out = {ok = -1, s = sec, ch = changes}
local r = args.reserve
if type(r) ~= 'table' then return cjson.encode(out) end

-- a retry of the same client request was already admitted by the token and team limits
for _, subj in ipairs(r.retry and {} or r.subj) do
  local base = subj[1]
  local wait, what = over(base, subj[2], subj[3], subj[4], subj[4] > 0 and live(base) or 0)
  if wait then
    out.why, out.wait, out.what = 'subject', wait, base .. ' ' .. what
    return cjson.encode(out)
  end
end

local best, best_score, best_tier = nil, nil, nil
local busy_wait, cool_wait, saw_invalid = nil, nil, false
for i, c in ipairs(r.c) do
  local id, cap, rpm, tpm, tier = c[1], c[2], c[3], c[4], c[5]
  if best ~= nil and tier > best_tier then break end
  local base = P .. 'c:' .. id
  local h = redis.call('HMGET', base, 'st', 'cu', 'rr', 'lr', 'rra', 'rt', 'lt', 'rta')
  local n = live(base)
  local ok = true
  if not r.pin then
    local cu, rr, rra = tonumber(h[2]) or 0, known(h[3]), tonumber(h[5]) or 0
    local rt, rta = known(h[6]), tonumber(h[8]) or 0
    if h[1] == 'invalid' then
      ok, saw_invalid = false, true
    elseif cu > now then
      ok = false
      cool_wait = math.min(cool_wait or cu - now, cu - now)
    elseif (rr == 0 and rra > now) or (rt == 0 and rta > now) then
      -- the provider itself said the quota is spent until its reset
      ok = false
      local w = math.max(rr == 0 and rra - now or 0, rt == 0 and rta - now or 0)
      busy_wait = math.min(busy_wait or w, w)
    end
  end
  if ok then
    local wait = over(base, rpm, tpm, cap, n)
    if wait then
      ok = false
      busy_wait = math.min(busy_wait or wait, wait)
    end
  end
  if ok then
    local score = 0
    if r.mode == 'least' then
      score = -n / math.max(cap, 1)
    elseif r.mode == 'headroom' then
      -- fraction of the provider's quota left, counting requests already in flight; unknown = full
      score = 1
      local rr, lr, rra = known(h[3]), known(h[4]), tonumber(h[5]) or 0
      if rr ~= nil and rra > now then
        score = math.min(score, (rr - n) / math.max(lr or rr, 1))
      end
      local rt, lt, rta = known(h[6]), known(h[7]), tonumber(h[8]) or 0
      if rt ~= nil and rta > now then
        score = math.min(score, rt / math.max(lt or rt, 1))
      end
    end
    if best == nil or score > best_score then best, best_score, best_tier = i, score, tier end
    if r.mode == 'order' then break end
  end
end

if best == nil then
  if busy_wait ~= nil then
    out.why, out.wait = 'busy', math.min(busy_wait, cool_wait or busy_wait)
  elseif cool_wait ~= nil then
    out.why, out.wait = 'cooling', cool_wait
  else
    out.why, out.wait = saw_invalid and 'invalid' or 'none', 0
  end
  return cjson.encode(out)
end

local expiry = now + ttl
-- Request and token buckets are kept only where a per-minute limit reads them (a limit set later starts
-- counting then); the in-flight entry always, for concurrency caps and the dashboard.
local function charge(base, requests, rpm, tpm)
  redis.call('ZADD', base .. ':if', expiry, r.lease)
  redis.call('EXPIRE', base .. ':if', ttl + 60)
  if rpm > 0 then add_bucket(base .. ':rq', sec, requests) end
  if tpm > 0 then add_bucket(base .. ':tk', sec, r.est) end
end
for _, subj in ipairs(r.subj) do charge(subj[1], r.retry and 0 or 1, subj[2], subj[3]) end
local chosen = r.c[best]
charge(P .. 'c:' .. chosen[1], 1, chosen[3], chosen[4])
out.ok = best - 1
return cjson.encode(out)

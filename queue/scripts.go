package queue

import "github.com/redis/go-redis/v9"

// The Lua scripts below each touch the keys of one broadcast only (one hash
// tag), so they run on one slot of a Redis Cluster. A *redis.Script holds
// only its source and digest; it is never modified.

// outcomesLua is prepended to scripts that record a batch's outcomes.
// record_outcomes(ledger, record, seq, from, counters) reads pairs of
// member and outcome letter from ARGV[from..]; a member still claimed by
// batch seq ("c<seq>") gets the final "<letter><seq>" and its letter's
// counter in record grows by one. Members claimed by another batch, and
// unknown letters, change nothing, so a batch retried after a partial
// success never counts a device twice.
const outcomesLua = `
local function record_outcomes(ledger, record, seq, from, counters)
  local claim = 'c' .. seq
  local n = {}
  for i = from, #ARGV, 2 do
    local m, o = ARGV[i], ARGV[i+1]
    if counters[o] and redis.call('HGET', ledger, m) == claim then
      redis.call('HSET', ledger, m, o .. seq)
      n[o] = (n[o] or 0) + 1
    end
  end
  for o, c in pairs(n) do redis.call('HINCRBY', record, counters[o], c) end
end
`

// finishLua is appended to scripts that may complete a broadcast: once
// planning is done and every planned device has a final outcome (or was a
// duplicate of another batch), the broadcast leaves queued/sending for
// completed, or killed when a kill dropped part of it, or cancelled.
// finish(record, timeline, now in ms).
const finishLua = `
local function finish(rec, tl, now)
  local f = redis.call('HMGET', rec, 'plan_done', 'planned', 'sent', 'failed', 'invalid_token',
    'cancelled', 'throttled', 'skipped_duplicate', 'state', 'killed_by', 'cancel_requested', 'finished_at',
    'held', 'capped', 'expired')
  if f[1] ~= '1' or f[12] then return '' end
  local done = (tonumber(f[13]) or 0) + (tonumber(f[14]) or 0) + (tonumber(f[15]) or 0)
  for i = 3, 8 do done = done + (tonumber(f[i]) or 0) end
  if done < (tonumber(f[2]) or 0) then return '' end
  redis.call('HSET', rec, 'finished_at', now)
  local st = f[9]
  if st ~= 'queued' and st ~= 'sending' then return '' end
  local final = 'completed'
  if f[11] then final = 'cancelled' elseif f[10] then final = 'killed' end
  redis.call('HSET', rec, 'state', final, 'updated_at', now)
  redis.call('RPUSH', tl, cjson.encode({at = tonumber(now), event = final}))
  return final
end
`

// claimScript claims devices of a batch in the ledger.
// KEYS[1] ledger, KEYS[2] record; ARGV[1] batch sequence, ARGV[2] the
// record counter of new claims (targeted), ARGV[3] the counter of
// duplicates (skipped_duplicate), ARGV[4] the ledger's retention in
// seconds (set when the ledger has none), ARGV[5] the most devices the
// ledger may hold (0 for no cap), ARGV[6..] members.
// Per member it returns 1 (newly claimed), 2 (claimed by this batch
// before, e.g. a retry), 3 (already final for this batch), 0 (owned by
// another batch: a duplicate) or 4 (over the cap: recorded final as
// capped, counted in targeted and capped, never sent). The cap is the
// ledger's own size, so what a broadcast reaches is bounded by what its
// workers claimed, whatever any counter says.
var claimScript = redis.NewScript(`
local seq = ARGV[1]
local claim = 'c' .. seq
local cap = tonumber(ARGV[5])
local size = redis.call('HLEN', KEYS[1])
local out = {}
local new, dup, capped = 0, 0, 0
for i = 6, #ARGV do
  local m = ARGV[i]
  local v = redis.call('HGET', KEYS[1], m)
  if not v and cap > 0 and size >= cap then
    redis.call('HSET', KEYS[1], m, 'o' .. seq)
    size = size + 1
    out[i-5] = 4
    capped = capped + 1
  elseif not v then
    redis.call('HSET', KEYS[1], m, claim)
    size = size + 1
    out[i-5] = 1
    new = new + 1
  elseif v == claim then
    out[i-5] = 2
  elseif string.sub(v, 2) == seq then
    out[i-5] = 3
  else
    out[i-5] = 0
    dup = dup + 1
  end
end
if new + capped > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], new + capped) end
if capped > 0 then redis.call('HINCRBY', KEYS[2], 'capped', capped) end
if dup > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3], dup) end
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return out
`)

// recordScript records final outcomes of devices still claimed by the
// batch, counts them with the batch's other counters, and completes the
// broadcast when it can. KEYS[1] ledger, KEYS[2] record, KEYS[3]
// timeline; ARGV[1] batch sequence, ARGV[2] now in ms, ARGV[3] a kill
// scope to remember ("" for none), ARGV[4] devices retried, ARGV[5]
// devices deferred by a rate limit, ARGV[6..] pairs of member and outcome
// letter. Letters map to counters: s sent, f failed, i invalid_token, x
// cancelled, t throttled, h held (reach budget spent), u cancelled in
// flight (maybe delivered; counted as cancelled), e expired (the TTL ran
// out before a transient failure was overcome). Returns the state the
// broadcast entered, or "".
var recordScript = redis.NewScript(outcomesLua + finishLua + `
record_outcomes(KEYS[1], KEYS[2], ARGV[1], 6,
  {s = 'sent', f = 'failed', i = 'invalid_token', x = 'cancelled', t = 'throttled', u = 'cancelled', h = 'held',
   e = 'expired'})
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[2], 'killed_by', ARGV[3]) end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[2], 'retries', ARGV[4]) end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[2], 'rate_limited_retries', ARGV[5]) end
redis.call('HSET', KEYS[2], 'updated_at', ARGV[2])
return finish(KEYS[2], KEYS[3], ARGV[2])
`)

// planDoneScript marks planning finished and completes the broadcast when
// every planned device already has an outcome (or none was planned).
// KEYS[1] plan, KEYS[2] record, KEYS[3] timeline; ARGV[1] now in ms,
// ARGV[2] kill scope that stopped planning, or "".
var planDoneScript = redis.NewScript(finishLua + `
redis.call('HSET', KEYS[1], 'done', '1')
redis.call('HSET', KEYS[2], 'plan_done', '1', 'updated_at', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[2], 'killed_by', ARGV[2]) end
return finish(KEYS[2], KEYS[3], ARGV[1])
`)

// transitionScript moves a broadcast to a new state when its current state
// is one of the allowed ones, and notes it in the timeline.
// KEYS[1] record, KEYS[2] timeline; ARGV[1] new state, ARGV[2] now in ms,
// ARGV[3] detail for the timeline, ARGV[4] a field to set to "1" ("" for
// none), ARGV[5..] allowed current states. Returns {ok, previous state};
// previous is "" when the broadcast does not exist.
var transitionScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local allowed = false
for i = 5, #ARGV do if ARGV[i] == cur then allowed = true end end
if not allowed then return {0, cur} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], '1') end
local ev = {at = tonumber(ARGV[2]), event = ARGV[1]}
if ARGV[3] ~= '' then ev.detail = ARGV[3] end
redis.call('RPUSH', KEYS[2], cjson.encode(ev))
return {1, cur}
`)

// recallRecordScript records recall outcomes of devices claimed by a recall
// batch and moves the broadcast to recalled once every planned recall has
// an outcome. KEYS[1] recall ledger, KEYS[2] record, KEYS[3] timeline;
// ARGV[1] batch sequence, ARGV[2] now in ms, ARGV[3..] pairs of member and
// outcome letter (s recalled, f recall_failed).
var recallRecordScript = redis.NewScript(outcomesLua + recallFinishLua + `
record_outcomes(KEYS[1], KEYS[2], ARGV[1], 3, {s = 'recalled', f = 'recall_failed'})
return recallFinish(KEYS[2], KEYS[3], ARGV[2])
`)

// recallFinishLua completes a recall once planning is done and every
// planned recall has an outcome.
const recallFinishLua = `
local function recallFinish(rec, tl, now)
  local f = redis.call('HMGET', rec, 'recall_plan_done', 'recall_planned', 'recalled', 'recall_failed',
    'recall_duplicate', 'state')
  if f[1] ~= '1' or f[6] ~= 'recalling' then return '' end
  local done = (tonumber(f[3]) or 0) + (tonumber(f[4]) or 0) + (tonumber(f[5]) or 0)
  if done < (tonumber(f[2]) or 0) then return '' end
  redis.call('HSET', rec, 'state', 'recalled', 'updated_at', now)
  redis.call('RPUSH', tl, cjson.encode({at = tonumber(now), event = 'recalled'}))
  return 'recalled'
end
`

// recallPlanDoneScript marks recall planning finished and completes the
// recall when it can. KEYS[1] recall plan, KEYS[2] record, KEYS[3]
// timeline; ARGV[1] now in ms.
var recallPlanDoneScript = redis.NewScript(recallFinishLua + `
redis.call('HSET', KEYS[1], 'done', '1')
redis.call('HSET', KEYS[2], 'recall_plan_done', '1', 'updated_at', ARGV[1])
return recallFinish(KEYS[2], KEYS[3], ARGV[1])
`)

// swapScript sets a key to a new value only if it still holds the old one.
// KEYS[1] key; ARGV[1] old value, ARGV[2] new value, ARGV[3] TTL in ms.
var swapScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

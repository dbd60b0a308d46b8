package queue

import "github.com/redis/go-redis/v9"

// The Lua scripts below each touch the keys of one broadcast only (one hash
// tag), so they run on one slot of a Redis Cluster. A *redis.Script holds
// only its source and digest; it is never modified.

// outcomesLua is prepended to scripts that record a batch's outcomes.
// record_outcomes(ledger, record, done, seq, from, counters, delayed)
// reads triples of member, outcome letter and audience position (-1 for
// none) from ARGV[from..]; a member still claimed by batch seq ("c<seq>")
// gets the final "<letter><seq>", its letter's counter in record grows by
// one, and its position is set in the done bitmap. Members claimed by
// another batch, and unknown letters, change nothing, so a batch retried
// after a partial success never counts a device twice. A letter may carry
// a reason after a colon ("f:apns/BadDeviceToken"): a device newly
// recorded with it also counts in the record's field "why:<letter>:<reason>"
// (reasons are bounded codes, providers.Result.Code). Letter d is not an
// outcome: the device was handed on untried (deferred by a rate limit or a
// provider pause, or held back by a stale view), so its follow-up knows
// it was never sent; letter r is not an outcome either: a device still
// claimed by the batch and handed on to a retry counts once in retries
// (and its reason in "why:r:<reason>"), and a device the batch no longer
// holds — a copy of the batch recorded it — counts nothing; "d:rate" is a
// rate limit's deferral, and a device
// deferred so for the first time sets its position in the delayed bitmap
// (nil for none) and counts once in rate_limited_retries. It returns how
// many members had no ledger entry at all: their claim was lost (Redis
// came back from an older state), and the batch must run again.
const outcomesLua = `
local function record_outcomes(ledger, record, done, seq, from, counters, delayed)
  local claim = 'c' .. seq
  local n, why = {}, {}
  local lost, late, retried = 0, 0, 0
  for i = from, #ARGV, 3 do
    local m, o, pos = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2])
    local w = nil
    if #o > 2 then w = string.sub(o, 3); o = string.sub(o, 1, 1) end
    local v = redis.call('HGET', ledger, m)
    if counters[o] and v == claim then
      redis.call('HSET', ledger, m, o .. seq)
      n[o] = (n[o] or 0) + 1
      if w then
        local k = 'why:' .. o .. ':' .. w
        why[k] = (why[k] or 0) + 1
      end
      if pos >= 0 then redis.call('SETBIT', done, pos, 1) end
    elseif o == 'r' and v == claim then
      retried = retried + 1
      if w then
        local k = 'why:r:' .. w
        why[k] = (why[k] or 0) + 1
      end
    elseif o == 'd' and v == claim then
      redis.call('HSET', ledger, m, 'd' .. seq)
      if w == 'rate' and delayed and pos >= 0 and redis.call('SETBIT', delayed, pos, 1) == 0 then
        late = late + 1
      end
    elseif not v then
      lost = lost + 1
    end
  end
  for o, c in pairs(n) do redis.call('HINCRBY', record, counters[o], c) end
  if retried > 0 then redis.call('HINCRBY', record, 'retries', retried) end
  for k, c in pairs(why) do redis.call('HINCRBY', record, k, c) end
  if late > 0 then
    redis.call('HINCRBY', record, 'rate_limited_retries', late)
    if redis.call('TTL', delayed) == -1 then
      redis.call('EXPIRE', delayed, math.max(redis.call('TTL', ledger), 1))
    end
  end
  return lost
end
`

// allDoneLua is prepended to scripts that complete a broadcast or a
// recall. all_done(planned, done, scratch) reports whether every position
// set in the planned bitmap is set in the done bitmap: planned XOR done,
// AND planned, has no bit left. The counters only say when to look; this
// says whether it is true, whatever the counters hold.
const allDoneLua = `
local function all_done(planned, done, scratch)
  redis.call('BITOP', 'XOR', scratch, planned, done)
  redis.call('BITOP', 'AND', scratch, scratch, planned)
  local left = redis.call('BITCOUNT', scratch)
  redis.call('DEL', scratch)
  return left == 0
end
`

// finishLua is appended to scripts that may complete a broadcast: once
// planning is done and every planned position has a final outcome, the
// broadcast leaves queued/sending for completed, or killed when a kill
// dropped part of it, or cancelled. Duplicates of another batch never
// count. finish(record, timeline, now in ms, planned, done, scratch).
const finishLua = allDoneLua + `
local function finish(rec, tl, now, planned, done, scratch)
  local f = redis.call('HMGET', rec, 'plan_done', 'planned', 'sent', 'failed', 'invalid_token',
    'cancelled', 'throttled', 'held', 'state', 'killed_by', 'cancel_requested', 'finished_at',
    'capped', 'expired', 'uncertain')
  if f[1] ~= '1' or f[12] then return '' end
  local n = (tonumber(f[13]) or 0) + (tonumber(f[14]) or 0) + (tonumber(f[15]) or 0)
  for i = 3, 8 do n = n + (tonumber(f[i]) or 0) end
  if n < (tonumber(f[2]) or 0) or not all_done(planned, done, scratch) then return '' end
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
// KEYS[1] ledger, KEYS[2] record, KEYS[3] done bitmap; ARGV[1] batch
// sequence, ARGV[2] the record counter of new claims (targeted), ARGV[3]
// the counter of duplicates (skipped_duplicate), ARGV[4] the ledger's
// retention in seconds (set when the ledger has none), ARGV[5] the most
// devices the ledger may hold (0 for no cap), ARGV[6..] pairs of member
// and audience position (-1 for none).
// Per member it returns 1 (newly claimed), 2 (claimed by this batch
// before, e.g. a retry), 5 (handed on untried by this batch before:
// claimed again, known unsent), 3 (already final for this batch), 0 (owned by
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
for i = 6, #ARGV, 2 do
  local m, pos = ARGV[i], tonumber(ARGV[i+1])
  local v = redis.call('HGET', KEYS[1], m)
  local r
  if not v and cap > 0 and size >= cap then
    redis.call('HSET', KEYS[1], m, 'o' .. seq)
    if pos >= 0 then redis.call('SETBIT', KEYS[3], pos, 1) end
    size = size + 1
    r = 4
    capped = capped + 1
  elseif not v then
    redis.call('HSET', KEYS[1], m, claim)
    size = size + 1
    r = 1
    new = new + 1
  elseif v == claim then
    r = 2
  elseif v == 'd' .. seq then
    redis.call('HSET', KEYS[1], m, claim)
    r = 5
  elseif string.sub(v, 2) == seq then
    r = 3
  else
    r = 0
    dup = dup + 1
  end
  out[#out+1] = r
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
// timeline, KEYS[4] planned bitmap, KEYS[5] done bitmap, KEYS[6] scratch,
// KEYS[7] delayed bitmap; ARGV[1] batch sequence, ARGV[2] now in ms,
// ARGV[3] a kill scope to remember ("" for none), ARGV[4] a JSON object:
// "limited_by", the rate limit that deferred devices ("" for none);
// ARGV[5..] triples of member, outcome letter and position. Letters map to
// counters: s sent, f failed, i invalid_token, x cancelled, t throttled, h
// held (reach budget spent), u uncertain (cut short in flight, or claimed
// by an earlier run that recorded nothing: maybe delivered), e expired
// (the TTL ran out before a transient failure was overcome). Returns {the
// state the broadcast entered or "", devices whose claim was lost}.
var recordScript = redis.NewScript(outcomesLua + finishLua + `
local lost = record_outcomes(KEYS[1], KEYS[2], KEYS[5], ARGV[1], 5,
  {s = 'sent', f = 'failed', i = 'invalid_token', x = 'cancelled', t = 'throttled', u = 'uncertain', h = 'held',
   e = 'expired'}, KEYS[7])
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[2], 'killed_by', ARGV[3]) end
local extra = cjson.decode(ARGV[4])
if extra.limited_by and extra.limited_by ~= '' then
  redis.call('HSET', KEYS[2], 'limited_by', extra.limited_by, 'limited_at', ARGV[2])
end
redis.call('HSET', KEYS[2], 'updated_at', ARGV[2])
return {finish(KEYS[2], KEYS[3], ARGV[2], KEYS[4], KEYS[5], KEYS[6]), lost}
`)

// planSaveScript saves a planner's position after it enqueued a page of
// batches: it sets the page's positions in the planned bitmap and adds to
// the planned counter only the positions newly set, so a page planned
// twice never counts twice. It refuses (PLANMOVED) when the stored
// position is not the one the planner started the page from: another
// planner moved it, or Redis came back from an older state; the planner
// then starts again from what is stored. KEYS[1] plan, KEYS[2] record,
// KEYS[3] planned bitmap, KEYS[4..] keys whose retention to renew;
// ARGV[1] expected cursor, ARGV[2] expected seq, ARGV[3] new cursor,
// ARGV[4] new seq, ARGV[5] retention in seconds, ARGV[6] the planned
// counter, ARGV[7..] positions. Returns the number of positions added.
var planSaveScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'cursor', 'seq')
if (f[1] or '0') ~= ARGV[1] or (f[2] or '0') ~= ARGV[2] then
  return redis.error_reply('PLANMOVED planning position moved')
end
local added = 0
for i = 7, #ARGV do
  if redis.call('SETBIT', KEYS[3], ARGV[i], 1) == 0 then added = added + 1 end
end
redis.call('HSET', KEYS[1], 'cursor', ARGV[3], 'seq', ARGV[4])
if added > 0 then redis.call('HINCRBY', KEYS[2], ARGV[6], added) end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return added
`)

// planDoneScript marks planning finished and completes the broadcast when
// every planned device already has an outcome (or none was planned).
// KEYS[1] plan, KEYS[2] record, KEYS[3] timeline, KEYS[4] planned bitmap,
// KEYS[5] done bitmap, KEYS[6] scratch; ARGV[1] now in ms, ARGV[2] kill
// scope that stopped planning, or "".
var planDoneScript = redis.NewScript(finishLua + `
redis.call('HSET', KEYS[1], 'done', '1')
redis.call('HSET', KEYS[2], 'plan_done', '1', 'updated_at', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[2], 'killed_by', ARGV[2]) end
return finish(KEYS[2], KEYS[3], ARGV[1], KEYS[4], KEYS[5], KEYS[6])
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
// an outcome. KEYS[1] recall ledger, KEYS[2] record, KEYS[3] timeline,
// KEYS[4] recall planned bitmap, KEYS[5] recall done bitmap, KEYS[6]
// scratch; ARGV[1] batch sequence, ARGV[2] now in ms, ARGV[3..] triples of
// member, outcome letter (s recalled, f recall_failed) and position.
// Returns {the state the broadcast entered or "", devices whose claim was
// lost}.
var recallRecordScript = redis.NewScript(outcomesLua + recallFinishLua + `
local lost = record_outcomes(KEYS[1], KEYS[2], KEYS[5], ARGV[1], 3, {s = 'recalled', f = 'recall_failed'})
return {recallFinish(KEYS[2], KEYS[3], ARGV[2], KEYS[4], KEYS[5], KEYS[6]), lost}
`)

// recallFinishLua completes a recall once planning is done and every
// planned recall position has an outcome.
const recallFinishLua = allDoneLua + `
local function recallFinish(rec, tl, now, planned, done, scratch)
  local f = redis.call('HMGET', rec, 'recall_plan_done', 'recall_planned', 'recalled', 'recall_failed', 'state')
  if f[1] ~= '1' or f[5] ~= 'recalling' then return '' end
  local n = (tonumber(f[3]) or 0) + (tonumber(f[4]) or 0)
  if n < (tonumber(f[2]) or 0) or not all_done(planned, done, scratch) then return '' end
  redis.call('HSET', rec, 'state', 'recalled', 'updated_at', now)
  redis.call('RPUSH', tl, cjson.encode({at = tonumber(now), event = 'recalled'}))
  return 'recalled'
end
`

// recallPlanDoneScript marks recall planning finished and completes the
// recall when it can. KEYS[1] recall plan, KEYS[2] record, KEYS[3]
// timeline, KEYS[4] recall planned bitmap, KEYS[5] recall done bitmap,
// KEYS[6] scratch; ARGV[1] now in ms.
var recallPlanDoneScript = redis.NewScript(recallFinishLua + `
redis.call('HSET', KEYS[1], 'done', '1')
redis.call('HSET', KEYS[2], 'recall_plan_done', '1', 'updated_at', ARGV[1])
return recallFinish(KEYS[2], KEYS[3], ARGV[1], KEYS[4], KEYS[5], KEYS[6])
`)

// commitIdempotencyScript commits a submission's claim on an idempotency
// key, or binds the key if the claim lapsed; it refuses when another
// submission holds it. KEYS[1] the idempotency key; ARGV[1] the claim,
// ARGV[2] the committed binding, ARGV[3] its TTL in ms.
var commitIdempotencyScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and cur ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// releaseIdempotencyScript deletes an idempotency key only if it still
// holds the given claim. KEYS[1] the idempotency key; ARGV[1] the claim.
var releaseIdempotencyScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)

// createScript writes a new broadcast's record, envelope and first
// timeline event, unless the record exists. KEYS[1] record, KEYS[2]
// envelope, KEYS[3] timeline; ARGV[1] envelope, ARGV[2] timeline event,
// ARGV[3] retention in ms, ARGV[4..] the record's field/value pairs.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return 1
`)

-- Modelport's rate-limit decisions: one call of this script is one atomic decision over
-- all the budgets of a request (see modelport/gateway/ratelimit/store.py for the model).
--
-- KEYS, two per budget: its log (a sorted set: member "<request id>:<amount>", score the
-- time in ms it was made) and its total (a string: the sum of the log's amounts).
-- ARGV[1] the operation: admit | settle | extend
-- ARGV[2] now in ms, or "" for the server's clock (one clock for every replica)
-- ARGV[3] the window in ms
-- ARGV[4] the request id
-- then per budget i, ARGV[3 + 2i] and ARGV[4 + 2i]:
--   admit:  limit, amount           -> {admitted, now, wait, total_1, oldest_1, ...}
--   settle: charged, actual         -> {now}
--   extend: limit, charged; ARGV[5 + 2n] wanted -> {granted, now}
local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[3])
local rid = ARGV[4]
local n = #KEYS / 2
local cutoff = now - window

local function amount_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Drop the entries that left the window; return the total still counted.
local function current(log, total_key)
  local total = tonumber(redis.call('GET', total_key) or '0')
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #old > 0 then
    for _, member in ipairs(old) do total = total - amount_of(member) end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    if total < 0 then total = 0 end
    redis.call('SET', total_key, total, 'PX', window)
  end
  return total
end

-- Milliseconds until `need` of the counted amount has left the window.
local function wait_for(log, need)
  local freed, start = 0, 0
  while true do
    local page = redis.call('ZRANGE', log, start, start + 127, 'WITHSCORES')
    if #page == 0 then return 0 end
    for j = 1, #page, 2 do
      freed = freed + amount_of(page[j])
      if freed >= need then
        local wait = tonumber(page[j + 1]) + window - now
        if wait < 0 then return 0 end
        return wait
      end
    end
    start = start + 128
  end
end

local function oldest(log)
  local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2])
end

local function add(log, total_key, member, at, amount)
  redis.call('ZADD', log, at, member)
  redis.call('INCRBY', total_key, amount)
  redis.call('PEXPIRE', log, window)
  redis.call('PEXPIRE', total_key, window)
end

-- Change what the request is charged from `charged` to `new`: in place while its entry
-- is in the window, otherwise (it left) the rest as an entry of its own, now.
local function recharge(log, total_key, charged, new)
  local member = rid .. ':' .. charged
  local at = redis.call('ZSCORE', log, member)
  if at then
    redis.call('ZREM', log, member)
    if new > 0 then redis.call('ZADD', log, at, rid .. ':' .. new) end
    local total = redis.call('INCRBY', total_key, new - charged)
    if total < 0 then redis.call('SET', total_key, 0, 'KEEPTTL') end
  elseif new > charged then
    -- Named by the new charge, which only grows: unique per request.
    add(log, total_key, rid .. '+' .. new .. ':' .. (new - charged), now, new - charged)
  end
end

if op == 'admit' then
  local totals, admitted, wait = {}, true, 0
  for i = 1, n do
    local limit, amount = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
    local total = current(KEYS[2 * i - 1], KEYS[2 * i])
    totals[i] = total
    if total + amount > limit then
      admitted = false
      if amount > limit or wait < 0 then
        wait = -1
      else
        local w = wait_for(KEYS[2 * i - 1], total + amount - limit)
        if w > wait then wait = w end
      end
    end
  end
  if admitted then
    wait = 0
    for i = 1, n do
      local amount = tonumber(ARGV[4 + 2 * i])
      if amount > 0 then
        add(KEYS[2 * i - 1], KEYS[2 * i], rid .. ':' .. amount, now, amount)
        totals[i] = totals[i] + amount
      end
    end
  end
  local reply = {admitted and 1 or 0, now, wait}
  for i = 1, n do
    reply[#reply + 1] = totals[i]
    reply[#reply + 1] = oldest(KEYS[2 * i - 1])
  end
  return reply
elseif op == 'settle' then
  for i = 1, n do
    local charged, actual = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
    current(KEYS[2 * i - 1], KEYS[2 * i])
    recharge(KEYS[2 * i - 1], KEYS[2 * i], charged, actual)
  end
  return {now}
elseif op == 'extend' then
  local wanted = tonumber(ARGV[5 + 2 * n])
  local room = wanted
  for i = 1, n do
    local limit = tonumber(ARGV[3 + 2 * i])
    local left = limit - current(KEYS[2 * i - 1], KEYS[2 * i])
    if left < room then room = left end
  end
  if room <= 0 then return {0, now} end
  for i = 1, n do
    local charged = tonumber(ARGV[4 + 2 * i])
    recharge(KEYS[2 * i - 1], KEYS[2 * i], charged, charged + room)
  end
  return {room, now}
end
return redis.error_reply('unknown operation ' .. tostring(op))

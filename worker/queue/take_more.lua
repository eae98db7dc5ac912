local out = {}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _ = 1, tonumber(ARGV[1]) do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  local ok, m = pcall(cjson.decode, item)
  local props = ok and type(m) == 'table' and m['properties']
  local info = type(props) == 'table' and props['delivery_info']
  local tag = type(props) == 'table' and props['delivery_tag']
  if type(info) == 'table' and type(tag) == 'string'
      and type(info['exchange']) == 'string' and type(info['routing_key']) == 'string' then
    redis.call('HSET', KEYS[2], tag,
      '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
    redis.call('ZADD', KEYS[3], now, tag)
  else
    tag = ''
  end
  out[#out + 1] = item
  out[#out + 1] = tag
end
return out

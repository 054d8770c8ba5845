"""The Redis backend: every replica's counters in one Redis, updated by one Lua script.

The script reads every limit's TAT, decides with Redis's own clock (so replicas' clocks
never disagree), and writes all of them only if all admit the call: atomic across limits
and across replicas. TATs are written with `%.0f` because Lua's default number format
would round microsecond times; keys expire once their TAT has passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from nexus_server.ratelimit.limits import BackendUnavailable, Decision, Limit, evaluate

PREFIX = "nexus:rl:"

# KEYS[i]: a limit's counter; ARGV[1]: cost; ARGV[1 + i]: KEYS[i]'s calls per minute.
# Returns {now, stored TAT of KEYS[1], ...}; the caller recomputes the decision from them
# with the same arithmetic (gcra.admit) to report remaining and reset.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local stored, fresh, ok = {}, {}, true
for i = 1, #KEYS do
  local q = tonumber(ARGV[i + 1])
  local period = math.max(1, math.floor(60000000 / q))
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  stored[i] = tat
  fresh[i] = math.max(tat, now) + cost * period
  if fresh[i] - now > period * q then ok = false end
end
if ok and cost > 0 then
  for i = 1, #KEYS do
    local ttl = math.floor((fresh[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', fresh[i]), 'PX', ttl)
  end
end
local out = {now}
for i = 1, #KEYS do out[i + 1] = stored[i] end
return out
"""


class RedisBackend:
    def __init__(self, url: str, *, timeout: float = 0.25):
        self.client: Any = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
        )
        self._script = self.client.register_script(GCRA_LUA)

    async def charge(self, limits: Sequence[Limit], cost: int) -> Decision:
        keys = [PREFIX + lim.key for lim in limits]
        args = [cost, *(lim.per_minute for lim in limits)]
        try:
            reply = await self._script(keys=keys, args=args)
        except (TimeoutError, RedisError, OSError) as error:
            raise BackendUnavailable(str(error)) from error
        now, *tats = (int(v) for v in reply)
        decision, _ = evaluate(limits, tats, now, cost)
        return decision

    async def close(self) -> None:
        await self.client.aclose()

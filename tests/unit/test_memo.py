"""The hot paths' bounded memo: plain lookups, forgotten whole at capacity."""

from __future__ import annotations

from nexus_server.common.memo import Memo


def test_a_memo_answers_what_was_put_and_forgets_everything_at_capacity() -> None:
    memo: Memo[str, int] = Memo(capacity=3)
    assert memo.put("a", 1) == 1
    memo.put("b", 2)
    memo.put("c", 3)
    assert (memo.get("a"), memo.get("c"), len(memo)) == (1, 3, 3)
    assert memo.put("d", 4) == 4  # the fourth entry clears the three before it
    assert dict(memo) == {"d": 4}

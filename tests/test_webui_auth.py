"""Sessions and login throttling of the web UI, driven by a hand-moved clock."""

from __future__ import annotations

from migrated.console.web.auth import LoginThrottle, SessionStore, tokens_equal
from migrated.console.web.routes import _safe_next, valid_tz


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_session_lives_until_idle_or_absolute_limit() -> None:
    clock = Clock()
    store = SessionStore(idle=60, absolute=300, clock=clock)
    s = store.create("AKIDadmin", "Europe/Berlin")
    assert store.get(s.token) is s
    assert s.csrf and s.csrf != s.token
    clock.t += 59
    assert store.get(s.token) is s  # touched: idle timer restarts
    clock.t += 59
    assert store.get(s.token) is s
    clock.t += 61
    assert store.get(s.token) is None  # idle too long
    s2 = store.create("AKIDadmin", "UTC")
    for _ in range(7):
        clock.t += 50
        store.get(s2.token)
    assert store.get(s2.token) is None  # absolute lifetime over although never idle


def test_logout_and_unknown_tokens() -> None:
    store = SessionStore()
    s = store.create("AKIDadmin", "UTC")
    assert store.get("") is None and store.get(None) is None and store.get("nope") is None
    store.drop(s.token)
    assert store.get(s.token) is None
    a, b = store.create("AKIDa", "UTC"), store.create("AKIDb", "UTC")
    store.drop_secret_id("AKIDa")
    assert store.get(a.token) is None and store.get(b.token) is b


def test_tokens_equal_refuses_missing() -> None:
    assert tokens_equal("abc", "abc")
    assert not tokens_equal("abc", "abd")
    assert not tokens_equal("", "")
    assert not tokens_equal(None, None)
    assert not tokens_equal("abc", None)


def test_throttle_allows_free_failures_then_doubles_the_wait() -> None:
    clock = Clock()
    th = LoginThrottle(free_failures=3, window=600, base_delay=2, max_delay=20, clock=clock)
    for _ in range(2):
        th.failed("addr:1", "id:x")
        assert th.wait_seconds("addr:1", "id:x") == 0
    th.failed("addr:1", "id:x")  # third failure: now throttled
    assert th.wait_seconds("addr:1") == 2
    assert th.wait_seconds("id:x") == 2
    assert th.wait_seconds("addr:2", "id:y") == 0  # other address, other SecretId: unaffected
    clock.t += 2
    assert th.wait_seconds("addr:1") == 0
    th.failed("addr:1", "id:x")
    assert th.wait_seconds("addr:1") == 4
    for _ in range(5):
        th.failed("addr:1", "id:x")
    assert th.wait_seconds("addr:1") == 20  # capped
    clock.t += 601
    assert th.wait_seconds("addr:1") == 0  # window over: forgotten


def test_success_clears_only_its_keys() -> None:
    clock = Clock()
    th = LoginThrottle(free_failures=1, clock=clock)
    th.failed("addr:1", "id:x")
    th.failed("addr:2", "id:y")
    th.succeeded("addr:1", "id:x")
    assert th.wait_seconds("addr:1", "id:x") == 0
    assert th.wait_seconds("addr:2") > 0


def test_next_url_stays_inside_the_ui() -> None:
    assert _safe_next("/ui/tasks/t-1") == "/ui/tasks/t-1"
    assert _safe_next("/ui/sources?x=1") == "/ui/sources?x=1"
    for bad in ("https://evil.example/ui/", "//evil.example/ui/x", "/api", "", None, "javascript:alert(1)"):
        assert _safe_next(bad) == "/ui/tasks"


def test_time_zone_names_are_checked() -> None:
    assert valid_tz("Asia/Shanghai") == "Asia/Shanghai"
    assert valid_tz("Not/AZone") == "UTC"
    assert valid_tz("../../etc/passwd") == "UTC"
    assert valid_tz("") == "UTC"

"""OpenAICaptioner against the loopback OpenAI-compatible stub: requests, parsing, retries, cache, accounting,
rate limiting; NoCaptioner."""

import base64
import pickle
import socket
import threading

import cv2
import numpy as np
import pytest

from preprocess.caption import captioner as cap
from preprocess.caption.ratelimit import RateLimiter
from preprocess.records import Caption, Segment
from tests.preprocess.openai_stub import OpenAIStub, Reply

KEY_ENV = "VITRA_TEST_CAPTION_KEY"
KEY = "sk-test-0123456789"
SEGMENT = Segment("right", 5, 29)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def frames(seed=0, n=8):
    """(frame index, RGB image) pairs with smooth content (JPEG keeps it within a few grey levels)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8)
    return [(5 + 3 * i, cv2.resize(img, (96, 72), interpolation=cv2.INTER_CUBIC)) for i, img in enumerate(small)]


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def make(stub, tmp_path=None, **kw):
    kw.setdefault("rate_limiter", RateLimiter(1e9))
    kw.setdefault("client_max_retries", 0)
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("model", "gpt-4.1")
    return cap.OpenAICaptioner(base_url=stub.base_url, api_key_env=KEY_ENV,
                               cache_dir=None if tmp_path is None else tmp_path / "cache", **kw)


def decode_data_uri(url):
    data = base64.b64decode(url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_caption_returned_parsed_and_request_shape():
    imgs = frames()
    with OpenAIStub(answer="  Pick up the   spray bottle. ") as stub:
        out = make(stub).caption(imgs, "right", SEGMENT)
    assert stub.errors == [] and stub.count == 1
    assert out == Caption(hand="right", start=5, stop=29, text="Pick up the spray bottle.", model="gpt-4.1",
                          prompt_version="caption_v1", tokens_in=stub.tokens_in, tokens_out=12)
    body, headers = stub.requests[0], stub.headers[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    system, user = body["messages"]
    assert system == {"role": "system", "content": (cap.PROMPTS / "system_v1.txt").read_text()}
    parts = user["content"]
    assert parts[0]["type"] == "text" and "right hand" in parts[0]["text"] and "left" not in parts[0]["text"]
    assert "{" not in parts[0]["text"].replace('{"action"', "")  # every placeholder filled
    assert [p["text"] for p in parts[1::2]] == [f"Frame {i}:" for i in range(1, 9)]
    for part, (_, img) in zip(parts[2::2], imgs):
        assert part["image_url"]["detail"] == "low"
        sent = decode_data_uri(part["image_url"]["url"])
        assert np.abs(sent.astype(int) - img).mean() < 3  # our frames, in order, RGB kept as RGB
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["action"]


def test_large_frames_are_sent_downscaled():
    img = cv2.resize(frames()[0][1], (1920, 1440), interpolation=cv2.INTER_CUBIC)
    with OpenAIStub() as stub:
        make(stub).caption([(0, img)], "left", SEGMENT)
    sent = decode_data_uri(stub.requests[0]["messages"][1]["content"][2]["image_url"]["url"])
    assert sent.shape == (384, 512, 3)
    assert np.abs(sent.astype(int) - cv2.resize(img, (512, 384), interpolation=cv2.INTER_AREA)).mean() < 3


@pytest.mark.parametrize("answer", ["N/A", "n/a.", " N/A "])
def test_not_applicable_is_none(answer):
    with OpenAIStub(answer=answer) as stub:
        out = make(stub).caption(frames(), "left", SEGMENT)
    assert out.text is None and out.hand == "left" and stub.count == 1


def test_rate_limit_then_success_is_retried_honouring_retry_after():
    sleeps = Sleeps()
    with OpenAIStub(script=[Reply.error(429, retry_after_ms=2500)]) as stub:
        out = make(stub, sleep=sleeps, backoff_s=0.1).caption(frames(), "right", SEGMENT)
    assert out.text == "Pick up the spray bottle." and stub.count == 2
    assert sleeps == [2.5]  # the server's retry-after beats our 0.1 s backoff


def test_client_level_retry_on_429():
    with OpenAIStub(script=[Reply.error(429, retry_after_ms=5)]) as stub:
        out = make(stub, client_max_retries=2, max_retries=0).caption(frames(), "right", SEGMENT)
    assert out.text == "Pick up the spray bottle." and stub.count == 2


def test_permanent_500_raises_caption_error_after_backoff():
    sleeps = Sleeps()
    with OpenAIStub(answer=Reply.error(500)) as stub:
        c = make(stub, sleep=sleeps, max_retries=3, backoff_s=1.0, max_backoff_s=30.0)
        with pytest.raises(cap.CaptionError, match="HTTP 500") as info:
            c.caption(frames(), "right", SEGMENT)
    assert info.value.reason == "server_error" and stub.count == 4
    assert len(sleeps) == 3
    for n, s in enumerate(sleeps):  # 1, 2, 4 s times a jitter factor in [0.75, 1]
        assert 0.75 * 2**n <= s <= 2**n
    assert c.usage.requests == 0 and KEY not in str(info.value)


def test_unparsable_output_is_retried_then_fails():
    with OpenAIStub(script=[Reply.malformed()], answer="Open the drawer.") as stub:
        assert make(stub).caption(frames(), "right", SEGMENT).text == "Open the drawer."
    assert stub.count == 2
    with OpenAIStub(answer=Reply.malformed('{"verb": "open"}')) as stub, pytest.raises(cap.CaptionError) as info:
        make(stub, max_retries=2).caption(frames(), "right", SEGMENT)
    assert info.value.reason == "unparsable_output" and stub.count == 3


def test_client_errors_are_not_retried():
    with OpenAIStub(answer=Reply.error(401)) as stub, pytest.raises(cap.CaptionError, match="HTTP 401") as info:
        make(stub).caption(frames(), "right", SEGMENT)
    assert info.value.reason == "api_error" and stub.count == 1


def test_wrong_base_url_path_names_base_url():
    with OpenAIStub() as stub:
        c = cap.OpenAICaptioner(base_url=stub.base_url.removesuffix("/v1"), api_key_env=KEY_ENV,
                                rate_limiter=RateLimiter(1e9), client_max_retries=0, sleep=Sleeps())
        with pytest.raises(cap.CaptionError, match="HTTP 404.*base_url") as info:
            c.caption(frames(), "right", SEGMENT)
    assert info.value.reason == "api_error"


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = cap.OpenAICaptioner(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, max_retries=1,
                            client_max_retries=0, rate_limiter=RateLimiter(1e9), sleep=Sleeps())
    with pytest.raises(cap.CaptionError, match=f"cannot reach http://127.0.0.1:{port}/v1") as info:
        c.caption(frames(), "right", SEGMENT)
    assert info.value.reason == "connection_error"


def test_cache_makes_the_rerun_free(tmp_path):
    imgs = frames()
    with OpenAIStub(answer=lambda prompt: "Wipe the table." if "left hand" in prompt else "Pick up the cup.") as stub:
        first = make(stub, tmp_path).caption(imgs, "right", SEGMENT)
        again = make(stub, tmp_path).caption(imgs, "right", SEGMENT)  # a new captioner: as in a rerun
        assert stub.count == 1
        other_hand = make(stub, tmp_path).caption(imgs, "left", SEGMENT)
        other_images = make(stub, tmp_path).caption(frames(seed=1), "right", SEGMENT)
        assert stub.count == 3
        make(stub, tmp_path, model="gpt-4.1-mini").caption(imgs, "right", SEGMENT)
        edited = make(stub, tmp_path)
        edited.user_prompt += "\nBe brief."
        edited.caption(imgs, "right", SEGMENT)
        make(stub, tmp_path, image_detail="high").caption(imgs, "right", SEGMENT)
        assert stub.count == 6  # another model, prompt text or image detail is another key
    assert first.text == again.text == other_images.text == "Pick up the cup." and not first.cached
    assert other_hand.text == "Wipe the table."
    assert again.cached and again.tokens_in == again.tokens_out == 0 and again.model == "gpt-4.1"
    entries = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert len(entries) == 6 and all(e.endswith(".json") and not e.startswith(".") for e in entries)


def test_damaged_cache_entries_are_asked_again(tmp_path):
    with OpenAIStub() as stub:
        make(stub, tmp_path).caption(frames(), "right", SEGMENT)
        (entry,) = [p for p in (tmp_path / "cache").rglob("*.json")]
        entry.write_text('{"text": "Pick')  # cut short
        assert not make(stub, tmp_path).caption(frames(), "right", SEGMENT).cached
        entry.write_text("[]")
        assert not make(stub, tmp_path).caption(frames(), "right", SEGMENT).cached
        assert make(stub, tmp_path).caption(frames(), "right", SEGMENT).cached  # rewritten whole
    assert stub.count == 3


def test_na_answers_are_cached_too(tmp_path):
    with OpenAIStub(answer="N/A") as stub:
        a = make(stub, tmp_path).caption(frames(), "left", SEGMENT)
        b = make(stub, tmp_path).caption(frames(), "left", SEGMENT)
    assert a.text is None and b.text is None and b.cached and stub.count == 1


def test_token_accounting_sums_the_servers_usage(tmp_path):
    with OpenAIStub(script=[Reply.malformed()], answer="Pick up the cup.") as stub:
        c = make(stub, tmp_path, price_in_per_m=2.0, price_out_per_m=8.0)
        outs = [c.caption(frames(seed=s, n=n), "right", SEGMENT) for s, n in ((0, 8), (1, 3), (2, 5))]
        outs.append(c.caption(frames(seed=1, n=3), "right", SEGMENT))  # cached: costs nothing
        assert stub.count == 4
        tokens_in, tokens_out = stub.tokens_in, stub.tokens_out
    assert (c.usage.requests, c.usage.cache_hits) == (4, 1)
    assert (c.usage.tokens_in, c.usage.tokens_out) == (tokens_in, tokens_out)
    assert sum(o.tokens_in for o in outs) == tokens_in and sum(o.tokens_out for o in outs) == tokens_out
    assert outs[0].tokens_out == 24  # the malformed first answer is billed to its caption too
    assert c.cost_usd() == pytest.approx(tokens_in * 2.0e-6 + tokens_out * 8.0e-6)
    assert cap.Usage(tokens_in=1_000_000, tokens_out=1_000_000).cost_usd() == pytest.approx(10.0)  # GPT-4.1


def test_long_retry_after_is_honoured_beyond_our_backoff_cap():
    sleeps = Sleeps()
    with OpenAIStub(script=[Reply(status=429, headers=(("retry-after", "90"),))]) as stub:
        make(stub, sleep=sleeps, backoff_s=0.1, max_backoff_s=30).caption(frames(), "right", SEGMENT)
    assert sleeps == [90.0] and stub.count == 2


def test_threads_share_one_captioner(tmp_path):
    c = None
    results = {}

    def work(i):
        results[i] = c.caption(frames(seed=i, n=2), "right", SEGMENT)

    with OpenAIStub(answer=lambda prompt: "Pick up the cup.") as stub:
        c = make(stub, tmp_path)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stub.count == 12 and stub.errors == []
        assert (c.usage.requests, c.usage.tokens_in, c.usage.tokens_out) == (12, stub.tokens_in, stub.tokens_out)
    assert all(r.text == "Pick up the cup." for r in results.values()) and len(results) == 12


def test_rate_limiter_spacing_with_a_fake_clock():
    now = [100.0]
    waits = []
    lock = threading.Lock()

    def sleep(s):
        with lock:
            waits.append(s)

    limiter = RateLimiter(120, clock=lambda: now[0], sleep=sleep)  # one request every 0.5 s
    slots = []

    def worker():
        for _ in range(25):
            slot = limiter.acquire()
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == [100.0 + 0.5 * i for i in range(200)]
    assert sorted(waits) == [0.5 * i for i in range(1, 200)]  # the clock stood still: each waits its turn
    now[0] = 1000.0  # idle for a long time: the next request goes at once, no burst credit after it
    assert limiter.acquire() == 1000.0 and limiter.acquire() == 1000.5


def test_shared_limiter_is_shared_by_captioners_of_one_endpoint():
    with OpenAIStub() as stub:
        a = cap.OpenAICaptioner(base_url=stub.base_url, api_key_env=KEY_ENV, rate_limit_rpm=77)
        b = cap.OpenAICaptioner(base_url=stub.base_url, api_key_env=KEY_ENV, rate_limit_rpm=77)
        c = cap.OpenAICaptioner(base_url=stub.base_url, model="other", api_key_env=KEY_ENV, rate_limit_rpm=77)
    assert a._limiter is b._limiter and a._limiter is not c._limiter
    assert a._limiter.interval == pytest.approx(60 / 77)


def test_configuration_errors(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(cap.CaptionConfigError, match=KEY_ENV):
        cap.OpenAICaptioner(base_url="http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    monkeypatch.setenv(KEY_ENV, KEY)
    for bad in ("127.0.0.1:8000/v1", "ftp://host/v1", "http:///v1"):
        with pytest.raises(cap.CaptionConfigError, match="base_url"):
            cap.OpenAICaptioner(base_url=bad, api_key_env=KEY_ENV)
    c = cap.OpenAICaptioner(base_url="http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    assert KEY not in repr(c)
    with pytest.raises(ValueError, match="hand"):
        c.caption(frames(), "both", SEGMENT)
    with pytest.raises(ValueError, match="frame 5: expected an"):
        c.caption([(5, np.zeros((4, 4, 3)))], "left", SEGMENT)


def test_pickled_captioner_works_in_another_worker(tmp_path):
    with OpenAIStub() as stub:
        c = pickle.loads(pickle.dumps(make(stub, tmp_path, sleep=Sleeps())))
        assert c.caption(frames(), "right", SEGMENT).text == "Pick up the spray bottle." and stub.count == 1


def test_no_captioner():
    out = cap.NoCaptioner().caption(frames(), "left", SEGMENT)
    assert out == Caption(hand="left", start=5, stop=29, text=None, model="none", prompt_version="none")

"""Instructions for atomic hand actions from a vision-language model behind an OpenAI-compatible API.

`OpenAICaptioner.caption(frames, hand, segment)` sends the overlay frames (`overlay.overlay_frames`) as
low-detail JPEG data URIs with the prompt of `prompts/caption_v1.txt` (system prompt `system_v1.txt`) to
`/chat/completions`, asks for the structured output `{"action": string}` (strict json_schema) and maps
"N/A" to `text=None` (VITRA §III: GPT-4.1 on 8 frames with the future palm trajectory drawn). Any
OpenAI-compatible server works (vLLM, Ollama) through `base_url`.

- Retries: the client's own retries (`client_max_retries`) and then ours, with exponential backoff, on rate
  limits (honouring retry-after), 408/409/5xx, connection errors and timeouts, and on output that does not
  parse. Other HTTP errors (bad request, auth) are not retried. What still fails raises `CaptionError`,
  whose `reason` the runner records for the segment.
- Rate limit: `rate_limit_rpm` requests per minute *per process*, shared by every captioner (and thread) of
  this process with the same endpoint and model (`ratelimit.shared_rate_limiter`); with several worker
  processes give each its share.
- Cache: answers are stored under `cache_dir`, keyed by sha256 of model, prompt version, prompt texts, image
  detail, hand and image bytes, so a rerun makes no API call.
- `Caption.model` is the model name the server reports (e.g. a dated snapshot of `model`).
- Accounting: `usage` totals requests, cache hits and tokens (failed parses included: they are billed);
  `cost_usd` prices them per 1M tokens, GPT-4.1 list prices by default (pass your model's prices).
The API key is read from the environment variable named by `api_key_env` and never logged.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import openai

from preprocess.caption.cache import ResponseCache, cache_key
from preprocess.caption.ratelimit import RateLimiter, shared_rate_limiter
from preprocess.errors import ConfigError
from preprocess.records import HANDS, Caption, Segment

PROMPTS = Path(__file__).parent / "prompts"
PROMPT_VERSION = "caption_v1"
SYSTEM_PROMPT = "system_v1"
NOT_APPLICABLE = "N/A"
JPEG_QUALITY = 90
MAX_IMAGE_SIDE = 512  # `detail: low` images are seen at 512 px at most; larger ones only cost upload time
RETRYABLE_STATUS = (408, 409, 429)  # and every status >= 500
MAX_RETRY_AFTER_S = 600.0
# USD per 1M tokens, GPT-4.1 list prices (2025-04); other models or servers: pass their own.
PRICE_IN_PER_M = 2.00
PRICE_OUT_PER_M = 8.00

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "caption", "strict": True,
        "schema": {"type": "object", "properties": {"action": {"type": "string"}}, "required": ["action"],
                   "additionalProperties": False},
    },
}


class CaptionConfigError(ConfigError):
    """The captioner cannot be set up (missing API key, bad base_url, bad limits)."""


class CaptionError(RuntimeError):
    """Captioning a segment failed after all retries; `reason` is a short code for failure counts:
    'rate_limited' | 'server_error' | 'connection_error' | 'unparsable_output' | 'refused' | 'api_error'."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class _Unparsable(Exception):
    pass


@dataclasses.dataclass
class Usage:
    requests: int = 0  # HTTP calls that got an answer (failed ones excluded)
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def cost_usd(self, price_in_per_m: float = PRICE_IN_PER_M, price_out_per_m: float = PRICE_OUT_PER_M) -> float:
        return (self.tokens_in * price_in_per_m + self.tokens_out * price_out_per_m) / 1e6


def read_prompt(name: str) -> str:
    return (PROMPTS / f"{name}.txt").read_text()


def parse_action(content: str | None) -> str | None:
    """The instruction in a model answer `{"action": ...}`; None for N/A. Raises _Unparsable."""
    try:
        action = json.loads(content or "")["action"]
    except (ValueError, KeyError, TypeError) as e:
        raise _Unparsable(f"answer is not {{\"action\": string}}: {content!r:.200}") from e
    if not isinstance(action, str) or not action.strip():
        raise _Unparsable(f"empty or non-string action: {content!r:.200}")
    action = " ".join(action.split())
    return None if action.rstrip(".").upper() == NOT_APPLICABLE else action


def encode_jpeg(image: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> bytes:
    """RGB uint8 image -> JPEG bytes, downscaled so its longer side is at most `max_side`."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def _check_base_url(base_url: str | None) -> None:
    if base_url is None:
        return
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CaptionConfigError(f"base_url must be an http(s) URL such as https://api.openai.com/v1, "
                                 f"got {base_url!r}")


class OpenAICaptioner:
    """See the module docstring. `sleep` and `rate_limiter` are injectable for tests."""

    def __init__(self, base_url: str | None = None, model: str = "gpt-4.1", api_key_env: str = "OPENAI_API_KEY",
                 rate_limit_rpm: float = 500.0, max_retries: int = 5, cache_dir: str | os.PathLike | None = None,
                 *, client_max_retries: int = 2, timeout_s: float = 60.0, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, price_in_per_m: float = PRICE_IN_PER_M,
                 price_out_per_m: float = PRICE_OUT_PER_M, image_detail: str = "low",
                 rate_limiter: RateLimiter | None = None, sleep: Callable[[float], None] = time.sleep):
        _check_base_url(base_url)
        if not os.environ.get(api_key_env):
            raise CaptionConfigError(f"no API key: the environment variable {api_key_env} is unset or empty "
                                     f"(local OpenAI-compatible servers accept any non-empty value)")
        if max_retries < 0 or client_max_retries < 0:
            raise CaptionConfigError(f"retries must be >= 0, got {max_retries} and {client_max_retries}")
        if image_detail not in ("low", "high", "auto"):
            raise CaptionConfigError(f"image_detail must be low, high or auto, got {image_detail!r}")
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.rate_limit_rpm, self.max_retries, self.client_max_retries = rate_limit_rpm, max_retries, client_max_retries
        self.timeout_s, self.backoff_s, self.max_backoff_s = timeout_s, backoff_s, max_backoff_s
        self.price_in_per_m, self.price_out_per_m = price_in_per_m, price_out_per_m
        self.image_detail, self.prompt_version = image_detail, PROMPT_VERSION
        self.system_prompt, self.user_prompt = read_prompt(SYSTEM_PROMPT), read_prompt(PROMPT_VERSION)
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.usage = Usage()
        self._sleep = sleep
        self._limiter = rate_limiter or shared_rate_limiter((base_url, model), rate_limit_rpm)
        self._lock = threading.Lock()
        self._client = self._make_client()

    @property
    def name(self) -> str:
        return self.model

    def _make_client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=os.environ[self.api_key_env],
                             max_retries=self.client_max_retries, timeout=self.timeout_s)

    def __repr__(self) -> str:
        return f"OpenAICaptioner(model={self.model!r}, base_url={self.base_url!r}, prompt={self.prompt_version!r})"

    def __getstate__(self) -> dict:  # for worker processes: the client, lock and limiter are rebuilt there
        state = dict(self.__dict__)
        for k in ("_client", "_lock", "_limiter", "_sleep"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sleep, self._lock = time.sleep, threading.Lock()
        self._limiter = shared_rate_limiter((self.base_url, self.model), self.rate_limit_rpm)
        self._client = self._make_client()

    def cost_usd(self) -> float:
        return self.usage.cost_usd(self.price_in_per_m, self.price_out_per_m)

    def messages(self, images: Sequence[bytes], hand: str) -> list[dict]:
        content = [{"type": "text", "text": self.user_prompt.format(hand=hand, n=len(images))}]
        for i, jpeg in enumerate(images, 1):
            url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
            content += [{"type": "text", "text": f"Frame {i}:"},
                        {"type": "image_url", "image_url": {"url": url, "detail": self.image_detail}}]
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": content}]

    def caption(self, frames_with_overlay: Sequence[tuple[int, np.ndarray]], hand: str, segment: Segment) -> Caption:
        """The instruction for `hand` over `segment` from (frame index, RGB image) pairs; text None for N/A."""
        if hand not in HANDS:
            raise ValueError(f"hand must be one of {HANDS}, got {hand!r}")
        if not frames_with_overlay:
            raise ValueError("no frames to caption")
        for t, img in frames_with_overlay:
            if np.ndim(img) != 3 or np.shape(img)[-1] != 3 or np.asarray(img).dtype != np.uint8:
                raise ValueError(f"frame {t}: expected an (H, W, 3) uint8 RGB image, got {np.shape(img)} "
                                 f"{np.asarray(img).dtype}")
        images = [encode_jpeg(np.asarray(img)) for _, img in frames_with_overlay]
        key = cache_key(self.model, self.prompt_version, self.system_prompt, self.user_prompt, self.image_detail,
                        hand, *images)
        record = dict(hand=hand, start=segment.start, stop=segment.stop, prompt_version=self.prompt_version)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None and {"text", "model"} <= hit.keys():  # else: an entry of another layout, redo it
            with self._lock:
                self.usage.cache_hits += 1
            return Caption(**record, text=hit["text"], model=hit["model"], cached=True)
        text, model, tokens_in, tokens_out = self._ask(self.messages(images, hand))
        if self.cache is not None:
            self.cache.put(key, {"text": text, "model": model, "tokens_in": tokens_in, "tokens_out": tokens_out})
        return Caption(**record, text=text, model=model, tokens_in=tokens_in, tokens_out=tokens_out)

    def _backoff(self, attempt: int, error: Exception) -> float:
        """Exponential backoff with jitter, or longer when the server asks (retry-after, up to 10 min)."""
        wait = min(self.backoff_s * 2**attempt, self.max_backoff_s) * random.uniform(0.75, 1.0)
        headers = getattr(getattr(error, "response", None), "headers", None) or {}
        try:
            if "retry-after-ms" in headers:
                asked = float(headers["retry-after-ms"]) / 1000
            else:
                asked = float(headers.get("retry-after", 0))
        except ValueError:  # an HTTP-date retry-after: keep our own backoff
            asked = 0.0
        return max(wait, min(asked, MAX_RETRY_AFTER_S))

    def _ask(self, messages: list[dict]) -> tuple[str | None, str, int, int]:
        """(text, model, tokens in, tokens out summed over attempts) with retries; raises CaptionError."""
        tokens_in = tokens_out = 0
        for attempt in range(self.max_retries + 1):
            self._limiter.acquire()
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, response_format=RESPONSE_FORMAT)
                usage = response.usage
                used_in, used_out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                tokens_in, tokens_out = tokens_in + used_in, tokens_out + used_out
                with self._lock:
                    self.usage.requests += 1
                    self.usage.tokens_in += used_in
                    self.usage.tokens_out += used_out
                message = response.choices[0].message
                if getattr(message, "refusal", None):
                    raise CaptionError("refused", f"the model refused: {message.refusal!r:.200}")
                if response.choices[0].finish_reason == "length":
                    raise _Unparsable("the answer was cut off at the token limit")
                return parse_action(message.content), response.model or self.model, tokens_in, tokens_out
            except openai.APIConnectionError as e:  # includes timeouts
                reason, error = "connection_error", e
                detail = f"cannot reach {self.base_url or 'the default OpenAI endpoint'}: {e}"
            except openai.APIStatusError as e:
                if e.status_code not in RETRYABLE_STATUS and e.status_code < 500:
                    hint = (f" (is base_url {self.base_url!r} right? it usually ends in /v1)"
                            if e.status_code == 404 else "")
                    raise CaptionError("api_error", f"HTTP {e.status_code} from {self.model}: {e.message}{hint}") from e
                reason = "rate_limited" if e.status_code == 429 else "server_error"
                error, detail = e, f"HTTP {e.status_code}: {e.message}"
            except _Unparsable as e:
                reason, error, detail = "unparsable_output", e, str(e)
            if attempt < self.max_retries:
                self._sleep(self._backoff(attempt, error))
        raise CaptionError(reason, f"{detail} (gave up after {self.max_retries + 1} attempts)")


class NoCaptioner:
    """Captioning switched off: every segment gets text None."""

    name = "none"

    def __init__(self):
        self.usage = Usage()

    def caption(self, frames_with_overlay, hand: str, segment: Segment) -> Caption:
        return Caption(hand=hand, start=segment.start, stop=segment.stop, text=None, model="none",
                       prompt_version="none")

    def cost_usd(self) -> float:
        return 0.0

"""Graded 0-3 relevance judgments from any OpenAI-compatible chat-completions endpoint.

The prompt is UMBRELA's (Upadhyay et al., "UMBRELA: UMbrela is the (Open-Source Reproduction of
the) Bing RELevance Assessor", 2024), itself a reproduction of Thomas et al., "Large language
models can accurately predict searcher preferences", SIGIR 2024. Answers are parsed strictly:
``##final score: N`` with N in 0..3 (or a reply that is just the digit); anything else is a
malformed answer and is retried like a transient error.

Only the standard library is used (``urllib`` + a thread pool). Every parsed judgment is stored
in an SQLite cache keyed by a hash of (endpoint model, messages, sampling parameters) before it
is used, so a rerun, or a resumed job, never sends a request that already got an answer.
Failures are never cached.

A circuit breaker ends the job when the endpoint is down rather than trying every pair
(``timeout x attempts`` each): after ``max_consecutive_failures`` connection failures or
timeouts in a row (across all threads; any HTTP reply, even a 500, resets the count), or at the
first 401/403 (a bad key fails every request alike). The job stops with :class:`EndpointDown`;
every answer received so far is in the cache and every finished batch in the partial file, so
rerunning the same command resumes without re-sending anything that was answered.

Prompts are templates with ``{query}`` and ``{passage}`` placeholders; every other brace is
literal text (``{"score": 2}`` needs no escaping).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import random
import re
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rerankforge.data.groups import Group
from rerankforge.errors import ConfigError, RerankforgeError
from rerankforge.labels.job import Labeler, QueryLabels

log = logging.getLogger(__name__)

UMBRELA_PROMPT = """Given a query and a passage, you must provide a score on an integer scale of 0 to 3 with the following meanings:
0 = represent that the passage has nothing to do with the query,
1 = represents that the passage seems related to the query but does not answer it,
2 = represents that the passage has some answer for the query, but the answer may be a bit unclear, or hidden amongst extraneous information and
3 = represents that the passage is dedicated to the query and contains the exact answer.

Important Instruction: Assign category 1 if the passage is somewhat related to the topic but not completely, category 2 if passage presents something very important related to the entire topic but also has some extra information and category 3 if the passage only and entirely refers to the topic. If none of the above satisfies give it category 0.

Query: {query}
Passage: {passage}

Split this problem into steps:
Consider the underlying intent of the search.
Measure how well the content matches a likely intent of the query (M).
Measure how trustworthy the passage is (T).
Consider the aspects above and the relative importance of each, and decide on a final score (O). Final score must be an integer value only.
Do not provide any code in result. Provide each score in the format of: ##final score: score without providing any reasoning."""

_FINAL = re.compile(r"##\s*final\s+score\s*:\s*\**\s*(\d+)\b", re.IGNORECASE)
_BARE = re.compile(r"^\s*(\d)\s*\.?\s*$")


class MalformedAnswer(ValueError):
    pass


def parse_grade(text: str, max_grade: int = 3) -> int:
    """The grade in ``##final score: N``; a reply consisting of the digit alone is accepted too.
    Several final scores that disagree, a grade outside 0..max_grade or no score is malformed."""
    found = {int(m) for m in _FINAL.findall(text)}
    if not found:
        bare = _BARE.match(text)
        if bare:
            found = {int(bare.group(1))}
    if len(found) != 1:
        raise MalformedAnswer(f"expected one '##final score: N', got {text[:200]!r}")
    grade = found.pop()
    if not 0 <= grade <= max_grade:
        raise MalformedAnswer(f"grade {grade} outside 0..{max_grade}")
    return grade


class JudgmentCache:
    """SQLite, one row per answered request; WAL + one write transaction per row, so a killed
    process leaves every committed row intact and nothing half-written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                         "grade INTEGER NOT NULL, answer TEXT NOT NULL, created REAL NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT grade FROM judgments WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def put(self, key: str, model: str, grade: int, answer: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?)",
                             (key, model, grade, answer, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RetryableError(Exception):
    pass


class ConnectionFailure(RetryableError):
    """No HTTP reply at all (refused, reset, timed out): what the circuit breaker counts."""


class AuthError(RuntimeError):
    """401/403: every other request would fail the same way."""


class EndpointDown(RerankforgeError):
    """The circuit breaker opened: the job stops (resumable)."""


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render_prompt(template: str, **values: str) -> str:
    """``template`` with ``{name}`` replaced by ``values[name]`` for the names given, in one pass
    (a query containing ``{passage}`` stays as it is); all other braces are literal, unlike
    ``str.format``, which fails on a prompt showing JSON such as ``{"score": 2}``."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive connection failures / timeouts, or at once on
    :meth:`trip`; thread-safe. ``check()`` raises :class:`EndpointDown` once open."""

    def __init__(self, threshold: int = 5, where: str = ""):
        if threshold < 1:
            raise ConfigError(f"max_consecutive_failures must be >= 1, got {threshold}")
        self.threshold, self.where = threshold, where
        self._lock = threading.Lock()
        self.consecutive = 0
        self.reason: str | None = None

    def check(self) -> None:
        if self.reason is not None:
            raise EndpointDown(self.reason)

    def success(self) -> None:
        with self._lock:
            self.consecutive = 0

    def failure(self, detail: str) -> None:
        with self._lock:
            self.consecutive += 1
            if self.consecutive >= self.threshold and self.reason is None:
                self.reason = (f"{self.where}: {self.consecutive} consecutive connection failures or timeouts "
                               f"(last: {detail})")

    def trip(self, detail: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = f"{self.where}: {detail} (check the API key and --api-key-env)"


@dataclass
class ChatClient:
    """POST ``{base_url}/chat/completions``; retries 429, 5xx, timeouts, connection errors and
    malformed answers with exponential backoff and full jitter (a 429's Retry-After is honoured
    up to ``backoff_max``). Other 4xx replies (bad key, unknown model) are not retried."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 64
    seed: int | None = None
    max_consecutive_failures: int = 5

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.max_consecutive_failures, self.base_url)

    def payload(self, prompt: str) -> dict:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def cache_key(self, prompt: str) -> str:
        return hashlib.sha256(json.dumps(self.payload(prompt), sort_keys=True).encode()).hexdigest()

    def _post(self, body: dict) -> str:
        req = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:200].decode("utf-8", "replace")
            self.breaker.success()  # the endpoint answered
            if err.code == 429 or err.code >= 500:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                raise RetryableError(f"HTTP {err.code}: {detail}", _seconds(retry_after)) from None
            if err.code in (401, 403):
                raise AuthError(f"HTTP {err.code}: {detail}") from None
            raise RuntimeError(f"HTTP {err.code}: {detail}") from None
        except (TimeoutError, socket.timeout) as err:
            raise ConnectionFailure(f"timed out after {self.timeout}s ({err})") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (TimeoutError, socket.timeout)):
                raise ConnectionFailure(f"timed out after {self.timeout}s") from None
            raise ConnectionFailure(f"connection failed: {err.reason}") from None
        except (ConnectionError, OSError, http.client.HTTPException) as err:
            raise ConnectionFailure(f"connection failed: {err!r}") from None
        self.breaker.success()
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise RetryableError(f"malformed response body {raw[:200]!r}") from None

    def _sleep(self, attempt: int, hint: float | None) -> None:
        delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt))
        if hint is not None:
            delay = max(delay, min(hint, self.backoff_max))
        time.sleep(delay)

    def judge(self, prompt: str) -> tuple[int, str, int]:
        """(grade, raw answer, attempts); raises RuntimeError when retries are exhausted and
        :class:`EndpointDown` once the circuit breaker is open (also before sending)."""
        body = self.payload(prompt)
        last = ""
        for attempt in range(self.max_retries + 1):
            self.breaker.check()
            try:
                answer = self._post(body)
                return parse_grade(answer), answer, attempt + 1
            except AuthError as err:
                self.breaker.trip(str(err))
                self.breaker.check()
            except ConnectionFailure as err:
                last, hint = str(err.args[0]), None
                self.breaker.failure(last)
                self.breaker.check()
            except RetryableError as err:
                last = str(err.args[0])
                hint = err.args[1] if len(err.args) > 1 else None
            except MalformedAnswer as err:
                last, hint = f"malformed answer: {err}", None
            if attempt < self.max_retries:
                log.debug("retrying (%d/%d): %s", attempt + 1, self.max_retries, last)
                self._sleep(attempt, hint)
        raise RuntimeError(f"gave up after {self.max_retries + 1} attempts: {last}")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class APILabeler(Labeler):
    """``<field> = grade`` (0..3) judged by a chat-completions endpoint, ``concurrency`` requests
    in flight; pairs whose requests kept failing are reported (``QueryLabels.failed``)."""

    kind = "llm-api"

    def __init__(self, client: ChatClient, cache: JudgmentCache, prompt: str = UMBRELA_PROMPT,
                 concurrency: int = 8, field: str = "label", max_passage_chars: int | None = 4000):
        for key in ("{query}", "{passage}"):
            if key not in prompt:
                raise ConfigError(f"the API prompt must contain {key}")
        unknown = sorted(set(_PLACEHOLDER.findall(prompt)) - {"query", "passage"})
        if unknown:
            log.info("API prompt: %s left as literal text (placeholders are {query} and {passage})",
                     ", ".join(f"{{{u}}}" for u in unknown))
        if field not in ("teacher", "label"):
            raise ConfigError(f"field must be 'teacher' or 'label', got {field!r}")
        if concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        self.client, self.cache, self.prompt = client, cache, prompt
        self.field = field
        self.fields = (field,)
        self.max_passage_chars = max_passage_chars
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm-api")
        self.concurrency = concurrency
        self.errors: list[str] = []

    def settings(self):
        return {"base_url": self.client.base_url, "model": self.client.model, "prompt": self.prompt,
                "field": self.field, "temperature": self.client.temperature, "max_tokens": self.client.max_tokens,
                "max_passage_chars": self.max_passage_chars}

    def _one(self, prompt: str) -> tuple[int | None, str | None, dict]:
        key = self.client.cache_key(prompt)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, None, {"cache_hits": 1}
        try:
            grade, answer, attempts = self.client.judge(prompt)
        except RuntimeError as err:
            return None, str(err), {"requests_failed": 1}
        self.cache.put(key, self.client.model, grade, answer)
        return grade, None, {"requests": 1, "retries": attempts - 1}

    def label(self, groups: Sequence[Group], texts) -> list[QueryLabels]:
        jobs = []
        for gi, (g, ts) in enumerate(zip(groups, texts)):
            for c, t in zip(g.candidates, ts):
                passage = t[: self.max_passage_chars] if self.max_passage_chars else t
                jobs.append((gi, c.doc_id, render_prompt(self.prompt, query=g.query, passage=passage)))
        futures = [self.pool.submit(self._one, prompt) for _, _, prompt in jobs]
        results = [QueryLabels({self.field: {}}) for _ in groups]
        for (gi, doc_id, _), fut in zip(jobs, futures):
            try:
                grade, error, counts = fut.result()
            except EndpointDown as err:
                for f in futures:
                    f.cancel()
                raise EndpointDown(f"label llm-api stopped: {err}. Every answer received so far is kept in "
                                   f"{self.cache.path} and finished queries in the job's .partial file: rerun the "
                                   f"same command to resume") from None
            r = results[gi]
            for k, v in counts.items():
                r.info[k] = r.info.get(k, 0) + v
            if error is None:
                r.values[self.field][doc_id] = float(grade)
            else:
                r.failed.append(doc_id)
                self.errors.append(f"{groups[gi].query_id}/{doc_id}: {error}")
                log.warning("query %s doc %s: %s", groups[gi].query_id, doc_id, error)
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.cache.close()

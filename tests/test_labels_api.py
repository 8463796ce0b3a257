"""The chat-completions labeler against a real HTTP server on 127.0.0.1 with fixed rules:
timeouts, 429, 500, 401, malformed bodies and answers are retried or reported; the cache
means a rerun never re-sends an answered request."""

import json
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rerankforge.cli import main
from rerankforge.data.groups import Candidate, Group, read_groups, write_groups
from rerankforge.labels import partial_path, run_label_job
from rerankforge.labels.api import APILabeler, ChatClient, JudgmentCache, MalformedAnswer, parse_grade

# marker word in the passage -> list of replies, one per request (the last one repeats):
# an int is a grade answered properly; ("status", code) an HTTP error; "sleep" a reply too late;
# "garbled" a well-formed body with an unparsable answer; "notjson" a broken body.
RULES = {
    "alpha": [3],
    "beta": [0],
    "gamma": [2],
    "flaky429": [("status", 429), 1],
    "flaky500": [("status", 500), ("status", 503), 3],
    "slow": ["sleep", 2],
    "garbled": ["garbled", 2],
    "notjson": ["notjson", 1],
    "dead": [("status", 500)],
    "denied": [("status", 401)],
}
EXPECTED = {"alpha": 3, "beta": 0, "gamma": 2, "flaky429": 1, "flaky500": 3, "slow": 2, "garbled": 2, "notjson": 1}


class Server:
    def __init__(self, delay=2.0):
        self.counts = Counter()
        self.auth = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                marker = next(m for m in RULES if f"Passage: {m} " in prompt)
                with owner.lock:
                    n = owner.counts[marker]
                    owner.counts[marker] += 1
                    owner.auth.append(self.headers.get("Authorization"))
                replies = RULES[marker]
                reply = replies[min(n, len(replies) - 1)]
                if reply == "sleep":
                    time.sleep(delay)
                    reply = 0  # arrives after the client gave up
                if isinstance(reply, tuple):
                    self.send_response(reply[1])
                    if reply[1] == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "nope"}')
                    return
                if reply == "notjson":
                    data = b"<html>bad gateway</html>"
                else:
                    text = "Well, it depends." if reply == "garbled" else f"##final score: {reply}"
                    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the client timed out and closed the socket

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_api_groups(path, markers_by_query):
    groups = [Group(f"q{i}", f"query number {i}", [Candidate(m, f"{m} text of the passage") for m in markers])
              for i, markers in enumerate(markers_by_query)]
    write_groups(path, groups)
    return path


def labeler_for(server, cache_path, **kw):
    client = ChatClient(server.url, "tiny-judge", api_key="sk-test", timeout=kw.pop("timeout", 1.0), max_retries=3,
                        backoff_base=0.01, backoff_max=0.05)
    return APILabeler(client, JudgmentCache(cache_path), concurrency=4, **kw)


@pytest.mark.parametrize("text,grade", [
    ("##final score: 2", 2), ("M: 2, T: 1\n##Final Score: **3**", 3), ("1", 1), (" 0.\n", 0),
    ("##final score: 1\n##final score: 1", 1),
])
def test_parse_grade(text, grade):
    assert parse_grade(text) == grade


@pytest.mark.parametrize("text", ["", "relevant", "##final score: 4", "score 2 or 3",
                                  "##final score: 1 ##final score: 2", "12"])
def test_parse_grade_rejects(text):
    with pytest.raises(MalformedAnswer):
        parse_grade(text)


def test_retries_failures_and_cache(tmp_path):
    groups = make_api_groups(tmp_path / "g.jsonl", [["alpha", "flaky429", "slow"], ["beta", "garbled", "dead"],
                                                     ["gamma", "flaky500", "notjson"]])
    out, cache = tmp_path / "o.jsonl", tmp_path / "cache.sqlite"
    with Server() as server:
        labeler = labeler_for(server, cache)
        summary = run_label_job(labeler, groups, out, batch_queries=2, progress=False)
        first_counts = dict(server.counts)

        got = {c.doc_id: c.label for g in read_groups(out) for c in g.candidates}
        assert {d: got[d] for d in EXPECTED} == EXPECTED
        assert got["dead"] is None  # reported, left unlabelled (a 401 stops the job: tests/test_faults.py)
        assert summary.failed_pairs == 1 and summary.failed_queries == ["q1"]
        assert any("HTTP 500" in e for e in labeler.errors)
        assert first_counts["dead"] == 4  # 1 + max_retries
        for marker in ("flaky429", "slow", "garbled", "notjson"):
            assert first_counts[marker] == 2, marker
        assert first_counts["flaky500"] == 3
        assert {m: first_counts[m] for m in ("alpha", "beta", "gamma")} == {"alpha": 1, "beta": 1, "gamma": 1}
        assert set(server.auth) == {"Bearer sk-test"}
        assert summary.info["requests"] == 8 and summary.info["requests_failed"] == 1

        db = sqlite3.connect(cache)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] == len(EXPECTED)  # failures never cached
        db.close()
        assert partial_path(out).exists()  # unfinished queries remain to be retried

        # Rerun: q0 and q2 are resumed, q1 recomputed, yet only the failed request goes out again.
        summary2 = run_label_job(labeler_for(server, cache), groups, out, batch_queries=2, progress=False)
        delta = {m: server.counts[m] - first_counts.get(m, 0) for m in RULES}
        assert delta == {**{m: 0 for m in RULES}, "dead": 4}
        assert summary2.resumed == 2 and summary2.computed == 1
        assert summary2.info["cache_hits"] == 2

        # A fresh job (new output, --restart) over the same cache re-sends nothing that was answered.
        before = dict(server.counts)
        run_label_job(labeler_for(server, cache), groups, tmp_path / "o2.jsonl", progress=False, restart=True)
        assert {m: server.counts[m] - before.get(m, 0) for m in EXPECTED} == {m: 0 for m in EXPECTED}
        assert {c.doc_id: c.label for g in read_groups(tmp_path / "o2.jsonl") for c in g.candidates
                if c.doc_id in EXPECTED} == EXPECTED


def test_cache_key_depends_on_model_and_prompt():
    a = ChatClient("http://x/v1", "m1")
    assert a.cache_key("p") == ChatClient("http://y/v1", "m1").cache_key("p")
    assert a.cache_key("p") != ChatClient("http://x/v1", "m2").cache_key("p")
    assert a.cache_key("p") != a.cache_key("q")


def test_cli_llm_api(tmp_path, monkeypatch):
    groups = make_api_groups(tmp_path / "g.jsonl", [["alpha", "flaky429"], ["beta"]])
    out = tmp_path / "o.jsonl"
    monkeypatch.setenv("JUDGE_KEY", "sk-env")
    with Server() as server:
        cfg = tmp_path / "api.yaml"
        cfg.write_text(f"base_url: {server.url}\nmodel: tiny-judge\napi_key_env: JUDGE_KEY\nbackoff_base: 0.01\n"
                       f"field: teacher\n")
        rc = main(["label", "llm-api", "--config", str(cfg), "--groups", str(groups), "--out", str(out),
                   "--concurrency", "2", "--no-progress"])
        assert rc == 0
        assert set(server.auth) == {"Bearer sk-env"}
        n = sum(server.counts.values())
        rc = main(["label", "llm-api", "--config", str(cfg), "--groups", str(groups), "--out",
                   str(tmp_path / "again.jsonl"), "--cache", str(out) + ".cache.sqlite", "--no-progress"])
        assert rc == 0 and sum(server.counts.values()) == n
    assert [c.teacher for g in read_groups(out) for c in g.candidates] == [3.0, 1.0, 0.0]
    with pytest.raises(SystemExit):
        main(["label", "llm-api", "--concurrency", "many"])

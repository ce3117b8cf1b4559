"""The usage ledger: one SQLite row per completed request, and `tinyseek usage` to read the totals.

Prices follow DeepSeek's structure: dollars per million tokens for input that hit the context cache,
input that missed it, and output (reasoning included). The defaults are DeepSeek-R1's launch prices
(deepseek-reasoner, January 2025: $0.14 hit, $0.55 miss, $2.19 output); a server sets its own with
`--price-hit/--price-miss/--price-output`. The cost of a request is computed when it is recorded, so a
price change applies only to later requests.

Keys are never stored: a row holds a key id, `key-` + the first 12 hex digits of the key's SHA-256
(or `anonymous` when the server has no keys). `tinyseek serve` prints the id of each configured key, and holds
the keys themselves only as SHA-256 digests (`ApiKeys`); it may be given `sha256:HEX` instead of a key.

The database is opened per call with `check_same_thread=False` under a lock, so the server's request
handlers (several threads) may record concurrently. It is kept in SQLite's write-ahead-log mode: a row is durable
once `record` returns (before the response or the stream's usage chunk that shows it is sent), so a server killed
with SIGKILL loses no billed request and bills none twice; the next server (or `tinyseek usage`, which may read
while a server writes) replays the log on opening.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from tinyseek.config import CommandParser
from tinyseek.errors import TinyseekError

ANONYMOUS = "anonymous"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,                 -- unix time the request finished
    day TEXT NOT NULL,                -- UTC date, YYYY-MM-DD
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prompt_cache_hit_tokens INTEGER NOT NULL,
    prompt_cache_miss_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_key_day ON requests (key_id, day);
"""


def key_id(key: str | None) -> str:
    """What the ledger stores for an API key: a short hash, never the key itself."""
    if not key:
        return ANONYMOUS
    return "key-" + key_digest(key).hex()[:12]


def key_digest(key: str) -> bytes:
    """SHA-256 of a key; `sha256:HEX` (64 hex digits) is taken as the digest itself, so a server's configuration
    need not hold the key."""
    if key.startswith("sha256:"):
        try:
            d = bytes.fromhex(key[7:])
        except ValueError:
            d = b""
        if len(d) != 32:
            raise TinyseekError("api key: sha256: must be followed by 64 hex digits (a SHA-256 digest)")
        return d
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """The server's API keys, held only as SHA-256 digests. A presented key is hashed and compared with every
    digest by `hmac.compare_digest`, without stopping at a match: the time taken says nothing about which key
    matched or how much of one did (the digests all have one length, whatever the keys' lengths)."""

    def __init__(self, keys: tuple[str, ...] | list[str]):
        self._digests = [(d, "key-" + d.hex()[:12]) for d in (key_digest(k) for k in keys)]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def hashed(self) -> tuple[str, ...]:
        """The keys as `sha256:HEX`, what a configuration may keep in place of the keys."""
        return tuple("sha256:" + d.hex() for d, _ in self._digests)

    def check(self, presented: str) -> str | None:
        """The key id of a presented key, or None when it is none of the server's."""
        d = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for digest, kid in self._digests:
            if hmac.compare_digest(digest, d):
                found = kid
        return found


@dataclass(frozen=True)
class Prices:
    """Dollars per million tokens, in DeepSeek's three-part structure."""

    cache_hit: float = 0.14
    cache_miss: float = 0.55
    output: float = 2.19

    def cost(self, hit: int, miss: int, output: int) -> float:
        return (hit * self.cache_hit + miss * self.cache_miss + output * self.output) / 1e6


class Ledger:
    """Append-only usage records in one SQLite file."""

    def __init__(self, path: str | Path, prices: Prices = Prices()):
        self.path = Path(path)
        self.prices = prices
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")  # persistent: the file stays in WAL mode
            self._db.executescript(_SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise TinyseekError(f"{self.path}: not a usable SQLite ledger ({e})") from None

    def record(
        self,
        key: str,
        model: str,
        request_id: str,
        hit: int,
        miss: int,
        completion: int,
        reasoning: int,
        now: float | None = None,
    ) -> float:
        """Store one request's usage (key is the key id); returns its cost in dollars."""
        import time

        now = time.time() if now is None else now
        day = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%d")
        cost = self.prices.cost(hit, miss, completion)
        with self._lock:
            self._db.execute(
                "INSERT INTO requests (ts, day, key_id, model, request_id, prompt_cache_hit_tokens,"
                " prompt_cache_miss_tokens, completion_tokens, reasoning_tokens, cost_usd)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, day, key, model, request_id, hit, miss, completion, reasoning, cost),
            )
            self._db.commit()
        return cost

    def totals(self, key: str | None = None, by_day: bool = False) -> list[dict]:
        """Summed usage per key (and per UTC day when by_day), optionally for one key id only."""
        group = "key_id, day" if by_day else "key_id"
        where, args = ("WHERE key_id = ?", (key,)) if key is not None else ("", ())
        with self._lock:
            cur = self._db.execute(
                f"SELECT {group}, COUNT(*), SUM(prompt_cache_hit_tokens), SUM(prompt_cache_miss_tokens),"
                f" SUM(completion_tokens), SUM(reasoning_tokens), SUM(cost_usd)"
                f" FROM requests {where} GROUP BY {group} ORDER BY {group}",
                args,
            )
            rows = cur.fetchall()
        out = []
        for r in rows:
            head = {"key_id": r[0], "day": r[1]} if by_day else {"key_id": r[0]}
            n, hit, miss, comp, reas, cost = r[-6:]
            out.append(
                {
                    **head,
                    "requests": n,
                    "prompt_cache_hit_tokens": hit,
                    "prompt_cache_miss_tokens": miss,
                    "prompt_tokens": hit + miss,
                    "completion_tokens": comp,
                    "reasoning_tokens": reas,
                    "total_tokens": hit + miss + comp,
                    "cost_usd": cost,
                }
            )
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_ledger() -> Path:
    """Where `tinyseek serve` keeps its ledger unless told (`--db`): the user's state directory
    ($XDG_STATE_HOME, else ~/.local/state) under tinyseek/, not whatever directory the server was started in."""
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tinyseek" / "usage.sqlite"


def cli_usage(argv: list[str]) -> int:
    p = CommandParser(prog="tinyseek usage", description="Usage totals per key and UTC day from a server's ledger.")
    p.add_argument(
        "--db",
        default=str(default_ledger()),
        help="the SQLite ledger written by `tinyseek serve` (its --db; default: the server's default)",
    )
    p.add_argument("--key-id", default=None, help="only this key id (as printed by `tinyseek serve`)")
    args = p.parse_args(argv)
    if not Path(args.db).is_file():
        raise TinyseekError(f"{args.db}: no such ledger file")
    ledger = Ledger(args.db)
    rows = ledger.totals(args.key_id, by_day=True)
    ledger.close()
    cols = [
        "key_id",
        "day",
        "requests",
        "prompt_cache_hit_tokens",
        "prompt_cache_miss_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cost_usd",
    ]
    names = ["key", "day", "requests", "hit", "miss", "output", "reasoning", "cost $"]
    table = [[f"{r[c]:.6f}" if c == "cost_usd" else str(r[c]) for c in cols] for r in rows]
    widths = [max([len(n)] + [len(t[i]) for t in table]) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    if not table:
        print("(no requests recorded)")
    return 0

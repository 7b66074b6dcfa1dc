"""Secret-shaped sample values for the guardrail, audit and detector tests: generated when
imported (seeded, the same on every run), so the repository holds no string a secret
scanner would flag.
"""

from __future__ import annotations

import random
import string

from sidecar.policy.detectors import luhn_ok

ALNUM = string.ascii_letters + string.digits
B32 = string.ascii_uppercase + "234567"
B64 = ALNUM + "+/"


def rand(n: int, alphabet: str = ALNUM, seed: str = "") -> str:
    """`n` characters drawn from `alphabet`, the same on every run for the same arguments."""
    rng = random.Random(f"{seed}|{n}|{alphabet}")
    classes = [c for c in (string.digits, string.ascii_uppercase, string.ascii_lowercase) if set(c) & set(alphabet)]
    while True:  # a draw with every class of the alphabet in it, like a real token
        s = "".join(rng.choices(alphabet, k=n))
        if all(set(s) & set(c) for c in classes):
            return s


def with_check_digit(prefix: str) -> str:
    """`prefix` plus the digit that makes it pass the Luhn check."""
    return next(prefix + d for d in string.digits if luhn_ok(prefix + d))


AWS_ID = "AKIA" + rand(16, B32, "aws")
AWS_SECRET = rand(40, B64.replace("+", ""), "aws-secret")
ANTHROPIC = "sk-ant-api03-" + rand(93, ALNUM + "-_", "ant") + "AA"
OPENAI_PROJ = "sk-proj-" + rand(48, ALNUM + "-_", "oai")
OPENAI_OLD = "sk-" + rand(20, ALNUM, "oai-old") + "T3BlbkFJ" + rand(20, ALNUM, "oai-old2")
GITHUB = "ghp_" + rand(36, ALNUM, "gh")
GITHUB_PAT = "github_pat_" + rand(22, ALNUM, "pat1") + "_" + rand(59, ALNUM, "pat2")
SLACK = f"xoxb-{rand(12, string.digits, 's1')}-{rand(13, string.digits, 's2')}-{rand(24, ALNUM, 's3')}"
STRIPE = "sk_live_" + rand(24, ALNUM, "stripe")
HF = "hf_" + "".join(rand(17, string.ascii_uppercase, "hf1")[i] + rand(17, string.ascii_lowercase, "hf2")[i] for i in range(17))
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9."
    + rand(43, ALNUM + "-_", "jwt")
)
PEM_BODY = "\n".join(rand(64, B64, f"pem{i}") for i in range(6))
VISA = with_check_digit("453914880343646")
MASTERCARD = with_check_digit("542523343010990")

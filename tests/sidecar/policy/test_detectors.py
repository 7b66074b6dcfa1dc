"""Each detector against what it must catch and against look-alikes it must leave alone.

Secret-shaped values are generated at test time (seeded), so the repository holds no string
a secret scanner would flag.
"""

from __future__ import annotations

import json

import pytest

from sidecar.policy.detectors import DETECTORS, TEST_CARDS, luhn_ok
from sidecar.testing import captures
from sidecar.testing.secret_samples import (
    ALNUM,
    ANTHROPIC,
    AWS_ID,
    AWS_SECRET,
    B32,
    B64,
    GITHUB,
    GITHUB_PAT,
    HF,
    JWT,
    MASTERCARD,
    OPENAI_OLD,
    OPENAI_PROJ,
    PEM_BODY,
    SLACK,
    STRIPE,
    VISA,
    rand,
    with_check_digit,
)

POSITIVE: list[tuple[str, str, str]] = [
    # (detector, text, the part that must be flagged)
    ("aws_access_key", f"export AWS_ACCESS_KEY_ID={AWS_ID}", AWS_ID),
    ("aws_access_key", f'"AccessKeyId": "ASIA{rand(16, B32, "asia")}"', "ASIA" + rand(16, B32, "asia")),
    ("aws_secret_key", f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    ("aws_secret_key", f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET),
    ("google_api_key", f"key=AIza{rand(35, ALNUM + '-_', 'g')}&q=x", "AIza" + rand(35, ALNUM + "-_", "g")),
    ("google_oauth_token", f"token: ya29.{rand(60, ALNUM + '-_', 'ya')}", "ya29." + rand(60, ALNUM + "-_", "ya")),
    (
        "azure_storage_key",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={rand(86, B64, 'az')}==;EndpointSuffix=core.windows.net",
        rand(86, B64, "az") + "==",
    ),
    ("anthropic_key", f"ANTHROPIC_API_KEY={ANTHROPIC}", ANTHROPIC),
    ("openai_key", f"OPENAI_API_KEY='{OPENAI_PROJ}'", OPENAI_PROJ),
    ("openai_key", f"api_key = {OPENAI_OLD}", OPENAI_OLD),
    ("github_token", f"git clone https://{GITHUB}@github.com/o/r", GITHUB),
    ("github_token", f"GH_TOKEN={GITHUB_PAT}", GITHUB_PAT),
    ("gitlab_token", f"PRIVATE-TOKEN: glpat-{rand(20, ALNUM + '-_', 'gl')}", "glpat-" + rand(20, ALNUM + "-_", "gl")),
    ("slack_token", f"SLACK_BOT_TOKEN={SLACK}", SLACK),
    (
        "slack_webhook",
        f"curl -X POST https://hooks.slack.com/services/T{rand(8, B32, 'sw1')}/B{rand(10, B32, 'sw2')}/{rand(24, ALNUM, 'sw3')}",
        f"https://hooks.slack.com/services/T{rand(8, B32, 'sw1')}/B{rand(10, B32, 'sw2')}/{rand(24, ALNUM, 'sw3')}",
    ),
    ("stripe_key", f"stripe.api_key = '{STRIPE}'", STRIPE),
    ("npm_token", f"//registry.npmjs.org/:_authToken=npm_{rand(36, ALNUM, 'npm')}", "npm_" + rand(36, ALNUM, "npm")),
    ("pypi_token", f"password = pypi-AgEIcHlwaS5vcmc{rand(70, ALNUM + '-_', 'pypi')}", "pypi-AgEIcHlwaS5vcmc" + rand(70, ALNUM + "-_", "pypi")),
    ("huggingface_token", f"HF_TOKEN={HF}", HF),
    ("jwt", f"Cookie: session={JWT}; Path=/", JWT),
    ("bearer_token", f"curl -H 'Authorization: Bearer {rand(40, ALNUM, 'bearer')}' https://api", rand(40, ALNUM, "bearer")),
    (
        "private_key",
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n",
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----",
    ),
    (
        "private_key",  # a GCP service-account file read by a tool: newlines are "\n" escapes
        '"private_key": "-----BEGIN PRIVATE KEY-----\\n' + PEM_BODY.replace("\n", "\\n") + '\\n-----END PRIVATE KEY-----\\n"',
        "-----BEGIN PRIVATE KEY-----\\n" + PEM_BODY.replace("\n", "\\n") + "\\n-----END PRIVATE KEY-----",
    ),
    (
        "private_key",  # cut off before its END line (a truncated tool output)
        f"$ cat id_ed25519\n-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}",
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}",
    ),
    ("password_in_url", "DATABASE_URL=postgresql://app:Zr8!kq2Lw7@db.internal:5432/prod", "Zr8!kq2Lw7"),
    ("password_in_url", "mongodb+srv://admin:Hx7pQ2mZ9w@cluster0.mongodb.net/db", "Hx7pQ2mZ9w"),
    ("password_in_url", "REDIS_URL=redis://:Tq3vWx8pL2@cache:6379/0", "Tq3vWx8pL2"),
    (
        "connection_string_password",
        "Server=tcp:db.acme.net,1433;Database=prod;User ID=app;Password=Qm4!vT8rZ2;Encrypt=true",
        "Qm4!vT8rZ2",
    ),
    ("connection_string_password", 'conn = "Data Source=db01;Pwd=Lk3@pQ9z"', "Lk3@pQ9z"),
    ("email", "Please reply to jane.doe@acme-corp.com by Friday.", "jane.doe@acme-corp.com"),
    ("email", "author = 'Mario Rossi <mario.rossi@azienda.it>'", "mario.rossi@azienda.it"),
    ("email", "cc: first.last+billing@mail.company.io", "first.last+billing@mail.company.io"),
    ("phone", "Call me on +1 415 555 0142 tomorrow", "+1 415 555 0142"),
    ("phone", "Tel. +44 20 7946 0958", "+44 20 7946 0958"),
    ("phone", "Büro: +49 (0)30 1234567", "+49 (0)30 1234567"),
    ("phone", "office (415) 555-0142", "(415) 555-0142"),
    ("phone", "cell 415-555-0142.", "415-555-0142"),
    ("phone", 'twilio.send(to="+14155550142")', "+14155550142"),
    ("card_number", f"card: {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}", f"{VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}"),
    ("card_number", f"pan={MASTERCARD}", MASTERCARD),
    ("card_number", f"{VISA[:4]}-{VISA[4:8]}-{VISA[8:12]}-{VISA[12:]}", f"{VISA[:4]}-{VISA[4:8]}-{VISA[8:12]}-{VISA[12:]}"),
]

NEGATIVE: list[tuple[str, str]] = [
    # (detector, text it must not flag)
    ("aws_access_key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"),  # the AWS docs' example
    ("aws_access_key", f"{AWS_ID}9"),  # longer than a key
    ("aws_access_key", f"X{AWS_ID}"),
    ("aws_access_key", AWS_ID.lower()),
    ("aws_secret_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("aws_secret_key", "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}"),
    ("aws_secret_key", "secret_key = os.environ['AWS_SECRET_ACCESS_KEY']"),
    ("google_api_key", "const key = 'AIzaSy...';"),
    ("azure_storage_key", "AccountKey=<your-account-key>;"),
    ("anthropic_key", "ANTHROPIC_API_KEY=sk-ant-test"),
    ("anthropic_key", "export ANTHROPIC_API_KEY=sk-ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("openai_key", "OPENAI_API_KEY=sk-proj-your-api-key-here-0123456789abcdefghijklmnop"),
    ("openai_key", "disk-proj-cleanup-task-0123456789012345678901234567890123456789"),
    ("github_token", "def ghp_token_value(): return None"),
    ("github_token", "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("slack_token", "xoxo-hugs-and-kisses-from-the-team"),
    ("slack_webhook", "post to https://hooks.slack.com/services/... (see docs)"),
    ("stripe_key", "publishable: pk_live_" + rand(24, ALNUM, "pk")),
    ("stripe_key", "STRIPE_KEY=sk_test_xxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("npm_token", "echo $npm_config_registry $npm_package_version"),
    ("huggingface_token", "from huggingface_hub import hf_hub_download_with_retries_and_cache"),
    ("huggingface_token", "hf_TokenizerFastConversionHelpersXy"),  # CamelCase, not random
    ("jwt", "the header eyJhbGciOiJIUzI1NiJ9 decodes to {alg: HS256}"),
    ("bearer_token", "curl -H 'Authorization: Bearer ${GITHUB_TOKEN}' https://api"),
    ("bearer_token", "headers = {'Authorization': f'Bearer {token}'}"),
    ("bearer_token", "Bearer tokens are sent in the Authorization header."),
    ("private_key", "-----BEGIN PUBLIC KEY-----\n" + PEM_BODY + "\n-----END PUBLIC KEY-----"),
    ("private_key", "-----BEGIN CERTIFICATE-----\n" + PEM_BODY + "\n-----END CERTIFICATE-----"),
    ("private_key", 'if line.startswith("-----BEGIN PRIVATE KEY-----"):\n    in_key = True'),
    ("password_in_url", "DATABASE_URL=postgres://user:${DB_PASSWORD}@localhost/db"),
    ("password_in_url", "postgres://postgres:postgres@localhost:5432/postgres"),  # stock dev creds
    ("password_in_url", "postgresql://user:password@localhost/db"),
    ("password_in_url", 'f"mysql://root:{password}@{host}/app"'),
    ("password_in_url", "amqp://guest:guest@localhost:5672//"),
    ("password_in_url", "postgres://app:<password>@db/app and postgresql://app:%s@db/app"),
    ("password_in_url", "git clone git@github.com:org/repo.git https://github.com/org/repo http://localhost:8080/x"),
    ("password_in_url", "https://user@host.com/path?x=a:b"),
    ("connection_string_password", "db.connect(host=h, password=password)"),
    ("connection_string_password", "password=self.password"),
    ("connection_string_password", "Server=db;Password={0};"),
    ("connection_string_password", "Server=db;Password=$(DB_PASSWORD);"),
    ("email", "git clone git@github.com:anthropics/claude-code.git"),
    ("email", "Co-Authored-By: Claude <noreply@anthropic.com>"),
    ("email", "send to user@example.com or admin@test.example.org or a@b.test"),
    ("email", "npm i @types/node@20.1.0 left-pad@1.3.0"),
    ("email", "docker pull ghcr.io/org/image@sha256:0123abcd"),
    ("email", "result = x@self.weights + b"),
    ("email", "icons: logo@2x.png, logo@3x.webp; module test_foo@bar.py"),
    ("email", "ssh deploy@10.0.0.5 and postgres@localhost"),
    ("phone", "released 2026-11-28 at 12:30:45"),
    ("phone", "hosts 192.168.100.200 and 10.0.0.1; version v1.12.3"),
    ("phone", "ssn-like 123-45-6789 and plain 1234567890 and 1732800000"),
    ("phone", "+1 hour; @@ -12,7 +12,8 @@"),
    ("phone", "+12345678 added in the diff\n+20260101 another line"),
    ("phone", "x = y +4915112345678"),
    ("phone", "ports 8080-8090, ISBN 978-3-16-148410-0"),
    ("phone", "uuid 123e4567-e89b-12d3-a456-426614174000"),
    ("phone", "call 012-345-6789 or 555-555-5555"),
    ("card_number", "Stripe test card 4242 4242 4242 4242, also 4111111111111111"),
    ("card_number", "timestamp_ms = 1732800000000"),
    ("card_number", f"bad checksum {VISA[:-1]}{(int(VISA[-1]) + 1) % 10}"),
    ("card_number", "hash 12345678901234567890123456 and hex 0x" + VISA),
    ("card_number", f"mixed {VISA[:4]}-{VISA[4:8]} {VISA[8:12]} {VISA[12:]}"),
    ("card_number", "id 9999999999999995 and 0000000000000000"),
    ("card_number", f"dotted {VISA[:4]}.{VISA[4:8]}.{VISA[8:12]}.{VISA[12:]}"),
]


def flagged(name: str, text: str) -> list[str]:
    return [text[s:e] for s, e in DETECTORS[name].find(text)]


@pytest.mark.parametrize(("name", "text", "secret"), POSITIVE, ids=[f"{p[0]}-{i}" for i, p in enumerate(POSITIVE)])
def test_detector_flags_the_sensitive_part(name: str, text: str, secret: str) -> None:
    assert flagged(name, text) == [secret]


@pytest.mark.parametrize(("name", "text"), NEGATIVE, ids=[f"{n[0]}-{i}" for i, n in enumerate(NEGATIVE)])
def test_detector_leaves_look_alikes_alone(name: str, text: str) -> None:
    assert flagged(name, text) == []


def test_every_detector_has_positive_and_negative_cases() -> None:
    assert {p[0] for p in POSITIVE} == set(DETECTORS)
    assert {n[0] for n in NEGATIVE} >= set(DETECTORS) - {"gitlab_token", "google_oauth_token", "pypi_token"}


def test_no_detector_fires_on_any_claude_code_capture() -> None:
    """Claude Code's own prompts (system prompt, 24 tool schemas, skills, tool results) are
    the largest false-positive trap there is: nothing in them may be flagged."""
    files = captures.all_captures()
    assert len(files) >= 9
    for f in files:
        text = json.dumps(json.loads(f.read_text())["body"], ensure_ascii=False)
        hits = {d.name: [text[s : e] for s, e in d.find(text)] for d in DETECTORS.values()}
        assert not any(hits.values()), (f.name, {k: v for k, v in hits.items() if v})


def test_luhn() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert all(luhn_ok(c) for c in TEST_CARDS)


def test_several_secrets_in_one_text_are_all_found_in_order() -> None:
    text = f"a={AWS_ID}\nb={GITHUB}\nc={AWS_ID}"
    assert flagged("aws_access_key", text) == [AWS_ID, AWS_ID]
    assert flagged("github_token", text) == [GITHUB]


def test_anchored_windows_find_matches_at_the_edges_of_long_texts() -> None:
    filler = "lorem ipsum dolor sit amet " * 4000
    text = f"{AWS_ID} {filler} jane.doe@acme-corp.com {filler}{GITHUB}"
    assert flagged("aws_access_key", text) == [AWS_ID]
    assert flagged("email", text) == ["jane.doe@acme-corp.com"]
    assert flagged("github_token", text) == [GITHUB]


def test_amex_in_its_own_grouping_is_a_card() -> None:
    amex = with_check_digit("37620812345678")
    assert amex not in TEST_CARDS
    grouped = f"{amex[:4]} {amex[4:10]} {amex[10:]}"
    assert flagged("card_number", f"amex {grouped}") == [grouped]

"""The policy gate: the stage that enforces the policy on every request before it leaves.

In order, cheapest refusal first:

1. the model allow/deny lists (400 `invalid_request_error`);
2. rate limits (429 `rate_limit_error` with `retry-after`) and budgets (429
   `billing_error` until the reset, see sidecar.policy.budgets), admitted
   atomically: a concurrency slot, then every bucket and every budget, or nothing. A
   budget reserves the worst case (input at the dearest rate plus `max_tokens` of
   output); when only less fits, `max_tokens` is lowered to what fits (a `clamp`
   decision, thinking kept valid), down to MIN_OUTPUT_TOKENS;
3. tool rules: denied tools leave the `tools` array, and a response filter turns any call
   of a denied tool into a refusal the model can read;
4. guardrails: block (400 `policy_blocked`), redact (the body is rewritten), or warn.

An admitted request under a budget carries the budget's standing to the client as Claude
Code's unified headers (sidecar.gateway.unified), in place of the upstream's own.

After the response (`on_complete`) the reservations are settled with the reported usage,
made safe first (and so recorded by the ledger): no negative counts, and an answer that
broke off before its final usage, or reported none, is charged what it delivered.
Every decision is recorded on the request (`ctx.decide`) for the audit log. With no policy
configured the gate does nothing at all: the body is not even parsed.

`count_tokens` calls are not metered (they are free) but get the same tool and guardrail
treatment, so their count matches the request that will follow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sidecar.config import Config
from sidecar.errors import ConfigError, PolicyBlocked, PolicyDenied, PolicyStale, SidecarError
from sidecar.events import EventBus
from sidecar.gateway import unified
from sidecar.ledger import reports
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import Ledger
from sidecar.paths import Paths
from sidecar.pipeline import EventFilter, Reply, RequestContext
from sidecar.policy import estimate
from sidecar.policy.budgets import Budgets, Reservation, usd
from sidecar.policy.config import BudgetConfig
from sidecar.policy.guardrails import Finding, Guardrails, Outcome, rules_for
from sidecar.policy.limits import RateLimits, Ticket
from sidecar.policy.model import Policy
from sidecar.policy.tools import ToolRules, ToolUseFilter
from sidecar.providers import tokens as request_tokens
from sidecar.sync.leases import LeaseHold, LeaseManager

log = logging.getLogger(__name__)

KEY_FILE = "redaction.key"
# A request is clamped to what a budget has room for, but never below this many output
# tokens: a shorter answer is rarely useful, so below it the request is refused instead.
MIN_OUTPUT_TOKENS = 1024
MIN_THINKING_TOKENS = 1024  # the API's minimum thinking budget_tokens


@dataclass
class _Held:
    """What an admitted request holds until it completes."""

    reservation: Reservation | None = None
    ticket: Ticket | None = None
    lease: LeaseHold | None = None
    tools: ToolUseFilter | None = None


class PolicyGate:
    """Enforces one Policy on the request path (a Stage)."""

    _leases: LeaseManager | None = None

    def __init__(
        self,
        policy: Policy,
        *,
        tz: ZoneInfo,
        pricing: Pricing,
        key: bytes,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.tz = tz
        self.pricing = pricing
        self.bus = bus
        self.budgets = Budgets(policy.budget, tz, clock, self._threshold)
        self.limits = RateLimits(policy.limits, monotonic)
        self.guardrails = Guardrails(policy.guardrails, key)
        self.tools = ToolRules(policy.tools)
        self.history = estimate.OutputHistory(policy.budget.default_output_tokens)
        self._key = key
        self.key_path: Path | None = None  # where the redaction key is, for a policy that newly needs it
        self.spent_since: Callable[[float], float] | None = None  # the ledger's spend, for a newly budgeted period
        # Set by the sync service: why requests are refused now (the org's policy is stale and it fails closed).
        self.closed: Callable[[], str | None] | None = None
        # Set by the app: the models a request may be served by (the router's targets for it);
        # a reservation is priced by the dearest, not by the name the client asked for.
        self.models_for: Callable[[RequestContext], Iterable[str | None]] | None = None
        self._flags()
        self._held: dict[str, _Held] = {}

    def _flags(self) -> None:
        self._metered = self.budgets.configured or self.limits.configured
        self._rewrites = self.guardrails.active or self.tools.active
        access = self.policy.access
        self.active = (
            self._metered or self._leases is not None or self._rewrites or bool(access.models or access.deny_models or access.providers)
        )

    def apply_budget(self, budget: BudgetConfig) -> bool:
        """Put new budget limits in force now (a config reload); False when that needs a restart."""
        if not self.budgets.reconfigure(budget):
            return False
        self.history.default_tokens = budget.default_output_tokens
        self.policy = replace(self.policy, rules=replace(self.policy.rules, budget=budget))
        self._flags()
        return True

    def apply_policy(self, policy: Policy) -> None:
        """Put `policy` in force now (a central push or a config reload), every section.

        Requests in flight keep what they hold: their reservations and tickets settle in the
        budgets and buckets they were admitted under, their tool filter keeps its rules."""
        rules, old = policy.rules, self.policy.rules
        guardrails = self.guardrails
        if rules.guardrails != old.guardrails:
            if rules_for(rules.guardrails) and len(self._key) < 32:
                self._key = load_key(self.key_path) if self.key_path is not None else secrets.token_bytes(32)
            guardrails = Guardrails(rules.guardrails, self._key)
        if not self.budgets.reconfigure(rules.budget, self.spent_since):
            raise ConfigError("a newly budgeted period needs the ledger's spend so far; restart the sidecar to apply it")
        self.limits.reconfigure(rules.limits)
        self.guardrails = guardrails
        if rules.tools != old.tools:
            self.tools = ToolRules(rules.tools)
        self.history.default_tokens = rules.budget.default_output_tokens
        self.policy = policy
        self._flags()

    @property
    def leases(self) -> LeaseManager | None:
        """The shared pools' leases (set by the sync service while enrolled), enforced with the budgets."""
        return self._leases

    @leases.setter
    def leases(self, manager: LeaseManager | None) -> None:
        self._leases = manager
        self._flags()

    # ------------------------------------------------------------------ the stage

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Refuse, rewrite or admit `ctx` (see the module docstring)."""
        if self.closed is not None and (reason := self.closed()) is not None:
            ctx.decide("sync", "deny", reason)
            raise PolicyStale(reason)
        if not self.active:
            return None
        model = ctx.head.model
        if not self.policy.model_allowed(model):
            reason = f"the model {model!r} is not allowed by the policy"
            ctx.decide("model", "deny", reason)
            raise PolicyDenied(f"{reason} ({_allowed_models(self.policy)})")
        if self.policy.access.providers:
            ctx.provider_allowed = self.policy.provider_allowed
        held = _Held()
        leases = self._leases
        # A device with leases is metered while a shared pool applies to it (or it does not
        # know yet); with no pool anywhere it costs nothing here.
        if (self._metered or (leases is not None and leases.applies)) and not ctx.count_tokens:
            await self._admit(ctx, held)
            if held.reservation is not None and (cap := unified.fullest(self.budgets.caps())) is not None:
                ctx.unified_headers = unified.standing(cap)
        self._held[ctx.id] = held
        if self._rewrites:
            self._rewrite(ctx, held)
        return None

    def on_response(self, ctx: RequestContext) -> EventFilter | None:
        """The tool filter (denied tool calls in the answer are refused), when tool rules apply."""
        held = self._held.get(ctx.id)
        return None if held is None else held.tools

    def on_complete(self, ctx: RequestContext) -> None:
        """Settle what the request reserved with the usage it is charged (`estimate.charge`)."""
        held = self._held.pop(ctx.id, None)
        if held is None:
            return
        metered = held.ticket is not None or held.reservation is not None or held.lease is not None
        usage = estimate.charge(ctx, "budget") if metered else ctx.summary.usage
        if held.ticket is not None:
            self.limits.settle(held.ticket, usage.input_tokens + usage.cache_write_tokens, usage.output_tokens, ctx.attempts > 0)
        if held.reservation is not None or held.lease is not None:
            cost = self._cost(ctx)
            if held.reservation is not None:
                self.budgets.settle(held.reservation, cost)
            if held.lease is not None:
                held.lease.owner.settle(held.lease, cost)
        if ctx.status == 200 and ctx.outcome == "ok" and usage.output_tokens:
            self.history.record(ctx.head.model, usage.output_tokens)
        if held.tools is not None and held.tools.refused:
            names = ", ".join(sorted(set(held.tools.refused)))
            ctx.decide("tools", "deny", f"refused {len(held.tools.refused)} call(s) of denied tools in the response: {names}")

    # ------------------------------------------------------------------ admission

    async def _admit(self, ctx: RequestContext, held: _Held) -> None:
        stage, slot = "limits", False
        try:
            slot = await self.limits.acquire_slot()
            tokens_in = request_tokens.estimate(ctx.body, ctx.json)
            tokens_out = self.history.estimate(ctx.head.model, ctx.head.max_tokens)
            self.limits.check(tokens_in, tokens_out)
            if self.budgets.configured:
                stage = "budget"
                held.reservation = self._reserve(ctx, tokens_in)
                if ctx.head.max_tokens is not None and ctx.head.max_tokens >= 0:
                    tokens_out = min(tokens_out, ctx.head.max_tokens)
            # Taken with no await since the check: requests waiting for a lease below must
            # not all pass the same check before any of them has taken from the buckets.
            held.ticket = self.limits.take(slot, tokens_in, tokens_out)
            if (leases := self._leases) is not None:
                stage = "lease"
                held.lease = await self._lease(ctx, leases, tokens_in, held.reservation)
        except BaseException as e:
            if held.ticket is not None:
                self.limits.settle(held.ticket, 0, 0, dispatched=False)  # gives the slot and the tokens back
                held.ticket = None
            elif slot:
                self.limits.release_slot()
            if held.reservation is not None:
                self.budgets.settle(held.reservation, 0.0)  # refused by the shared pool: nothing was spent
                held.reservation = None
            if isinstance(e, SidecarError):
                ctx.decide(stage, "deny", e.message)
            raise
        if self.limits.configured:
            ctx.decide("limits", "allow", f"took 1 request, ~{tokens_in:,} input and ~{tokens_out:,} output tokens")

    async def _lease(self, ctx: RequestContext, leases: LeaseManager, tokens_in: int, res: Reservation | None) -> LeaseHold | None:
        """Hold the same worst case in the shared pools' leases as the budgets reserved."""
        if res is not None:
            amount = res.amount
        else:
            base, per_token, wanted = self._worst_case(ctx, tokens_in)
            amount = base + per_token * wanted
        hold = await leases.admit(amount)
        if hold is not None:
            ctx.decide("lease", "allow", f"held {usd(amount)} in the shared budget's lease")
        return hold

    def _reserve(self, ctx: RequestContext, tokens_in: int) -> Reservation:
        """Reserve the worst case the provider can bill; lower max_tokens when only that fits."""
        asked = ctx.head.max_tokens
        base, per_token, wanted = self._worst_case(ctx, tokens_in)
        res, tokens = self.budgets.reserve_output(base, per_token, wanted, MIN_OUTPUT_TOKENS)
        if per_token > 0 and tokens != asked:
            self._clamp(ctx, tokens, asked)
        ctx.decide("budget", "allow", f"reserved {usd(res.amount)} for ~{tokens_in:,} input and up to {tokens:,} output tokens")
        return res

    def _worst_case(self, ctx: RequestContext, tokens_in: int) -> tuple[float, float, int]:
        """What the provider can bill at most: input at the dearest rate (base), the price of
        one output token, and the output tokens asked for (max_tokens, or the default)."""
        asked = ctx.head.max_tokens
        models = {ctx.head.model} if self.models_for is None else set(self.models_for(ctx))
        costs = [estimate.worst_case(self.pricing, model, tokens_in) for model in models]
        base, per_token = max(c[0] for c in costs), max(c[1] for c in costs)
        return base, per_token, estimate.NO_MAX_TOKENS if asked is None else max(0, asked)

    def _clamp(self, ctx: RequestContext, tokens: int, asked: int | None) -> None:
        """Set the request's max_tokens to `tokens`, keeping a thinking budget valid (< max_tokens)."""
        body = ctx.json()
        body["max_tokens"] = tokens
        ctx.head.max_tokens = tokens
        note = ""
        thinking = body.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if isinstance(thinking, dict) and isinstance(budget, int) and budget >= tokens:
            if tokens // 2 >= MIN_THINKING_TOKENS:
                body["thinking"] = {**thinking, "budget_tokens": tokens // 2}
                note = f"; thinking budget_tokens lowered from {budget:,} to {tokens // 2:,}"
            else:
                del body["thinking"]
                note = f"; thinking turned off (its minimum is {MIN_THINKING_TOKENS:,} tokens)"
        ctx.replace_body(body)
        was = "none" if asked is None else f"{asked:,}"
        ctx.decide("budget", "clamp", f"max_tokens lowered from {was} to {tokens:,}, what the budget has room for{note}")

    def _cost(self, ctx: RequestContext) -> float:
        """The request's cost exactly as the ledger prices it."""
        u = ctx.summary.usage
        cost, _ = self.pricing.cost_of_first(ctx.provider, ctx.billed_models, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens)
        return cost

    # ------------------------------------------------------------------ rewriting

    def _rewrite(self, ctx: RequestContext, held: _Held) -> None:
        body = ctx.json()
        changed = False
        if self.tools.active:
            try:
                removed = self.tools.strip(body)
            except SidecarError as e:
                ctx.decide("tools", "deny", e.message)
                raise
            if removed:
                changed = True
                ctx.decide("tools", "strip", f"removed {len(removed)} denied tool(s) from the request: {', '.join(removed)}")
            if not ctx.count_tokens:
                held.tools = ToolUseFilter(self.tools)
        if self.guardrails.active:
            outcome = self.guardrails.apply(body)
            self._guardrail_decisions(ctx, outcome)
            changed = changed or outcome.changed
        if changed:
            ctx.replace_body(body)

    def _guardrail_decisions(self, ctx: RequestContext, out: Outcome) -> None:
        if out.blocked:
            reason = _findings(out.blocked)
            ctx.decide("guardrail", "deny", reason)
            first = out.blocked[0]
            raise PolicyBlocked(
                f"the prompt holds {first.rule.detector.label} ({first.where}), which the guardrail policy blocks "
                f"({reason}). Remove it from the conversation (e.g. with /rewind) and try again."
            )
        if out.redacted:
            ctx.decide("guardrail", "redact", _findings(out.redacted))
        if out.warned:
            ctx.decide("guardrail", "warn", _findings(out.warned))

    # ------------------------------------------------------------------ reporting

    def _threshold(self, event: dict[str, Any]) -> None:
        log.warning(
            "%s budget: %.0f%% used (%s of %s)",
            event["period"], event["fraction"] * 100, usd(event["spent_usd"]), usd(event["limit_usd"]),
        )  # fmt: skip
        if self.bus is not None:
            self.bus.publish("budget_threshold", event)

    def allows_provider(self, provider: str) -> bool:
        """Whether the policy lets requests go to `provider` (for the router's target choice)."""
        return self.policy.provider_allowed(provider)

    def state(self) -> dict[str, Any]:
        """The PolicyState of the control API (docs/control-api.md)."""
        p = self.policy
        about = {"version": p.version, "source": p.source, "digest": p.digest}
        if not self._metered and self._leases is None:
            return {"configured": False, "policy": about}
        return {
            "configured": True,
            "timezone": self.tz.key,
            "budgets": self.budgets.state(),
            "limits": self.limits.state(),
            "guardrails": {r.detector.name: r.mode for r in self.guardrails.scanner.rules},
            "tools": {"allow": list(p.tools.allow), "deny": list(p.tools.deny)},
            "policy": about,
        }


def _findings(found: list[Finding]) -> str:
    """`aws_access_key x2 in messages[3].content[0]; email in system[2]` (never the values)."""
    parts = []
    for f in found[:8]:
        count = f" x{f.count}" if f.count > 1 else ""
        parts.append(f"{f.rule.detector.name}{count} in {f.where}")
    more = f"; and {len(found) - 8} more" if len(found) > 8 else ""
    return "; ".join(parts) + more


def _allowed_models(p: Policy) -> str:
    a = p.access
    if a.models:
        return "allowed: " + ", ".join(a.models)
    return "denied: " + ", ".join(a.deny_models)


# ---------------------------------------------------------------------- building the gate


def load_key(path: Path) -> bytes:
    """The redaction key at `path`, created (32 random bytes, mode 0600) when missing."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) >= 32:
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def spent_since(db_file: Path) -> Callable[[float], float]:
    """A reader of the ledger: USD spent on requests that started at or after an epoch."""

    def read(start: float) -> float:
        if not db_file.exists():
            return 0.0
        db = open_db(db_file)
        try:
            row = db.execute("SELECT COALESCE(SUM(cost_usd), 0.0) FROM usage WHERE ts >= ?", [start]).fetchone()
            return float(row[0])
        finally:
            db.conn.close()

    return read


async def open_policy(cfg: Config, paths: Paths, ledger: Ledger, bus: EventBus) -> PolicyGate:
    """The policy gate for `cfg`, its budgets loaded with the ledger's spend so far.

    Call it after `ledger.start()`. The gate holds no resources: there is nothing to close.
    """
    policy = Policy.from_config(cfg)
    key = b""
    if rules_for(policy.guardrails):
        key = await asyncio.to_thread(load_key, paths.data_dir / KEY_FILE)
    gate = PolicyGate(policy, tz=reports.local_zone(cfg.usage.timezone), pricing=ledger.pricing, key=key, bus=bus)
    gate.key_path = paths.data_dir / KEY_FILE
    gate.spent_since = spent_since(paths.db_file)
    if gate.budgets.configured:
        await asyncio.to_thread(gate.budgets.load, spent_since(paths.db_file))
    return gate
